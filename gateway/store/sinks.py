"""Choosing the sink named by `[sink] type`."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.store.spool import Sink


def open_sink(config: GatewayConfig) -> Sink:
    """The configured sink: the embedded SQLite file, or ClickHouse."""
    if config.sink.type == "clickhouse":
        from gateway.store.clickhouse import open_clickhouse_sink

        return open_clickhouse_sink(config.sink, retry_window=config.server_api.max_age_seconds)
    from gateway.store.sqlite import SQLiteSink

    return SQLiteSink(config.sqlite_path)
