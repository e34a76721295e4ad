"""Exception types of the shields library."""

from __future__ import annotations


class RuleError(ValueError):
    """A site's shield rules (or the `[lists]` settings) cannot be used.

    `source` is the file, `key` the dotted key with an index where there is one
    (`shields.ip_blocklist[3]`), `reason` what is wrong, in words a site owner can act on. The
    gateway wraps it into its own ConfigError and keeps the last good config.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {reason}" if where else reason)
