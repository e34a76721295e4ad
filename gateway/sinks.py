"""Choosing the sink named by `[sink] type`."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.spool import Sink


def open_sink(config: GatewayConfig) -> Sink:
    if config.sink.type == "clickhouse":
        from gateway.sink_clickhouse import ClickHouseSink

        opts = config.sink.options
        return ClickHouseSink(config.sink.url, database=config.sink.database,
                              user=opts.get("user"), password=opts.get("password"))
    from gateway.sink_sqlite import SQLiteSink

    return SQLiteSink(config.sqlite_path)
