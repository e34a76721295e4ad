"""Anchored `*` wildcard patterns (page paths, host names) compiled into one matcher.

Wildcards follow the reference: `*` (and `**`, the same thing) matches any run of characters,
`/` and `.` included, and a pattern must match the whole value. A `PatternSet` keeps the exact
values in a set and turns every wildcard pattern into one regex built from a trie of them, so
shared prefixes are matched once and five hundred patterns cost about what five do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["PatternSet", "canonical_pattern", "wildcard_regex"]


class PatternSet:
    """Anchored `*` patterns compiled into one matcher: a set for exact values plus one regex
    built from a trie of the wildcard patterns."""

    __slots__ = ("exact", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.exact = frozenset(p for p in self.patterns if "*" not in p)
        wild = sorted({p for p in self.patterns if "*" in p})
        self._regex = re.compile(_trie_regex(wild), re.DOTALL) if wild else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, value: str) -> bool:
        if value in self.exact:
            return True
        return self._regex is not None and self._regex.fullmatch(value) is not None


def _tokens(pattern: str) -> list[str]:
    # `**` is the same as `*` (reference semantics), so runs of stars collapse to one token.
    out: list[str] = []
    for char in pattern:
        if char == "*":
            if not out or out[-1] != "*":
                out.append("*")
        else:
            out.append(char)
    return out


def canonical_pattern(pattern: str) -> str:
    """The pattern with runs of stars collapsed: two patterns that match the same values."""
    return "".join(_tokens(pattern))


_END = ""


def _trie_regex(patterns: Sequence[str]) -> str:
    trie: dict[str, Any] = {}
    for pattern in patterns:
        node = trie
        for token in _tokens(pattern):
            node = node.setdefault(token, {})
        node[_END] = {}
    return _node_regex(trie)


def _node_regex(node: dict[str, Any]) -> str:
    ends_here = _END in node
    branches = [
        (".*" if token == "*" else re.escape(token)) + _node_regex(child)
        for token, child in sorted(node.items())
        if token != _END
    ]
    if not branches:
        return ""
    if len(branches) == 1 and not ends_here:
        return branches[0]
    alternation = "(?:" + "|".join(branches) + ")"
    return alternation + "?" if ends_here else alternation


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """The reference's translation of one pattern: escape, `**`/`*` → `.*`, anchored."""
    return re.compile("".join(".*" if t == "*" else re.escape(t) for t in _tokens(pattern)), re.DOTALL)
