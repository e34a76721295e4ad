"""Exception types the gateway raises for operator-facing problems."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration file is unusable. The message names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")
