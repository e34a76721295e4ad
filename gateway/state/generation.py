"""One counter that every memo of derived answers follows.

What the request path remembers about a client (its context with the geo answer, the verdicts
of the client-only steps, its visitor ids) holds as long as the data it was derived from: the
site files, the shield lists, the geo database and the day's salt. Whoever replaces one of them
bumps the worker's `Generation`; a memo records the value it was filled at and starts afresh
when the value has moved. One rule, in one place, instead of a clearing rule per memo.

Caches of pure functions (a User-Agent's parse, a URL's fields, a body's parse) depend on no
such data and do not follow it.
"""

from __future__ import annotations

__all__ = ["Generation"]


class Generation:
    """A counter that only goes up. Not locked: bumped and read on one event loop."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> int:
        self.value += 1
        return self.value
