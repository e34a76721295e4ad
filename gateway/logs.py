"""Logging set-up for every process of the gateway (CLI, workers, shipper)."""

from __future__ import annotations

import logging
import os

__all__ = ["setup_logging"]

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def setup_logging(level: int | None = None) -> None:
    """Log to stderr at `level` (a `logging` level); by default `GATEWAY_LOG_LEVEL` or INFO."""
    if level is None:
        named = logging.getLevelName(os.environ.get("GATEWAY_LOG_LEVEL", "INFO").upper())
        level = named if isinstance(named, int) else logging.INFO
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger().setLevel(level)
