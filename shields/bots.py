"""Bot User-Agent detection: the `bot` and `verification_agent` shields.

Detection knowledge comes from data packages on PyPI, loaded at start-up (never copied here):

* `is-bot` — the isbot pattern list (npm `isbot`), broad and heuristic;
* `crawlerdetect` — Crawler-Detect's crawler patterns;
* `crawler-user-agents` — the crawler-user-agents pattern list;
* `ai-crawler-index` — AI crawler and fetcher tokens;

plus three small files of our own in `shields/data/`: extra patterns for gaps
(`bot_patterns.txt`), tokens that never identify a bot and are blanked before matching
(`bot_masks.txt`, e.g. the device-model slot of an Android UA, where makers put names such as
"Bot Tab" or "Spider 8"), and whole User-Agents known to be human (`bot_allowlist.txt`).

Thousands of patterns are compiled into two structures: an Aho-Corasick automaton over the
lower-cased UA for every pattern that is a plain literal (optionally anchored at the start or
end), and one `regex` alternation for the few dozen real regular expressions. A bounded LRU cache
sits in front, so a UA seen before costs one dictionary lookup (~0.1 µs).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import ahocorasick
import regex

from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict

# The gates below read a pattern's syntax tree from CPython's own regular expression parser,
# which `re` keeps private (`re._parser`, `sre_parse` before 3.11). No public module parses
# regex syntax, and the patterns come from data packages that change weekly, so a hand-written
# parser would have to track the whole syntax. The parser has kept its tree shape since
# Python 2; tests/test_shields_bots.py pins the literals found for typical patterns, so a
# change shows up there. Without the parser (another Python), every real regex runs on every
# UA: the same verdicts, more slowly.
try:
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - not on CPython 3.11+
    _sre = _sre_parser = None

__all__ = [
    "VERIFICATION_AGENT_UA",
    "BotMatcher",
    "BotPattern",
    "BotShield",
    "VerificationAgentShield",
    "load_bot_patterns",
]

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"

#: The User-Agent of the gateway's own verification agent (the installation checker). Its
#: events are dropped as `verification_agent`, never counted as visits and never as bots.
VERIFICATION_AGENT_UA = "Edge Gateway Verification Agent"

# A UA longer than this is matched on its first MAX_UA_CHARS characters: real browsers send a
# few hundred, and the cap bounds the cost of a hostile header.
MAX_UA_CHARS = 2048

_REGEX_META = frozenset(".^$*+?{}[]\\|()")
_LEADING_STAR = regex.compile(r"^\[(?:\\.|[^\]\\])*\]\*")


@dataclass(frozen=True, slots=True)
class BotPattern:
    """One detection pattern (a regular expression) and its origin.

    Most sources are written to be matched case-insensitively; crawler-user-agents is written
    for case-sensitive matching ("Sonic" is a crawler, "Hypersonic" in a web view is not).
    """

    pattern: str
    source: str
    case_sensitive: bool = False


@dataclass(frozen=True, slots=True)
class _Gated:
    """A real regular expression, run only when the automaton saw one of its literals."""

    compiled: Any
    label: str


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str  # lower-case
    original: str | None  # the exact spelling, when the pattern is case-sensitive
    at_start: bool
    at_end: bool
    label: str


def _as_literal(pattern: str) -> tuple[str, bool, bool] | None:
    """Return (text, anchored at start, anchored at end) when `pattern` is a plain literal."""
    at_start = pattern.startswith("^")
    if at_start:
        pattern = pattern[1:]
    at_end = pattern.endswith("$") and not pattern.endswith("\\$")
    if at_end:
        pattern = pattern[:-1]
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            # `\/`, `\.`, `\-`, `\ ` are escaped punctuation; `\d`, `\b`, `\w` are classes.
            if i + 1 < len(pattern) and not pattern[i + 1].isalnum():
                out.append(pattern[i + 1])
                i += 2
                continue
            return None
        if char in _REGEX_META:
            return None
        out.append(char)
        i += 1
    text = "".join(out)
    if not text:
        return None
    return text, at_start, at_end


def _read_pattern_file(path: Path) -> list[str]:
    """Lines of a data file, without blank lines and `#` comments (a `#` inside a pattern must
    be escaped as `\\#`)."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _package_patterns(name: str) -> list[BotPattern]:
    """Patterns from one data package, or [] with a warning when it is not installed."""
    try:
        if name == "is-bot":
            mod: Any = importlib.import_module("is_bot._patterns")
            return [BotPattern(p, name) for p in sorted(mod.default_patterns)]
        if name == "crawlerdetect":
            mod = importlib.import_module("crawlerdetect.providers.crawlers")
            return [BotPattern(p, name) for p in mod.data]
        if name == "crawler-user-agents":
            mod = importlib.import_module("crawleruseragents")
            return [BotPattern(e["pattern"], name, case_sensitive=True) for e in mod.CRAWLER_USER_AGENTS_DATA]
        if name == "ai-crawler-index":
            mod = importlib.import_module("ai_crawler_index")
            # Records whose token is a note rather than a User-Agent start with "(".
            return [
                BotPattern(regex.escape(rec["ua"]), name)
                for rec in mod.CRAWLERS
                if rec.get("ua") and not rec["ua"].startswith("(")
            ]
    except (ImportError, AttributeError, KeyError, TypeError) as exc:
        log.warning("bot pattern package %s unavailable (%s): bot detection is weaker", name, exc)
        return []
    raise ValueError(f"unknown bot pattern package {name!r}")


PACKAGE_SOURCES: tuple[str, ...] = ("is-bot", "crawlerdetect", "crawler-user-agents", "ai-crawler-index")


def load_bot_patterns(
    packages: Sequence[str] = PACKAGE_SOURCES,
    extra_file: Path | None = DATA_DIR / "bot_patterns.txt",
    ignore_file: Path | None = DATA_DIR / "bot_ignore.txt",
) -> list[BotPattern]:
    """Every detection pattern from the installed data packages and our own pattern file,
    less the package patterns listed in the ignore file (those that flag real browsers; a
    tighter replacement usually sits in the pattern file)."""
    ignored = set(_read_pattern_file(ignore_file)) if ignore_file else set()
    patterns: list[BotPattern] = []
    for name in packages:
        patterns.extend(p for p in _package_patterns(name) if p.pattern not in ignored)
    if extra_file is not None:
        patterns.extend(BotPattern(p, extra_file.name) for p in _read_pattern_file(extra_file))
    return patterns


def _required_literals(pattern: str) -> frozenset[str] | None:
    """Lower-case literals of which at least one occurs in every text `pattern` matches.

    Used as Aho-Corasick keys that gate a real regular expression: the regex runs only when
    one of its literals is present, so a human UA pays for one automaton pass, not for dozens
    of regex scans. None when no literal of three or more characters is required (such
    patterns run on every UA).
    """
    if _sre_parser is None:
        return None
    try:
        tree = _sre_parser.parse(pattern, re.IGNORECASE)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None  # syntax only the `regex` module knows: always run it
    found = _required_in(list(tree))
    return frozenset(found) if found else None


def _required_in(items: list[Any]) -> list[str] | None:
    candidates: list[list[str]] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) >= 3:
            candidates.append(["".join(run).lower()])
        run.clear()

    for op, arg in items:
        if op is _sre.LITERAL:
            run.append(chr(arg))
            continue
        flush()
        if op is _sre.SUBPATTERN:
            sub = _required_in(list(arg[-1]))
            if sub:
                candidates.append(sub)
        elif op is _sre.BRANCH:
            alternatives = [_required_in(list(branch)) for branch in arg[1]]
            if all(alternatives):
                candidates.append([lit for alt in alternatives if alt for lit in alt])
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and arg[0] >= 1:
            sub = _required_in(list(arg[2]))
            if sub:
                candidates.append(sub)
    flush()
    if not candidates:
        return None
    # Fewest alternatives first, then the longest shortest literal: the most selective gate.
    return min(candidates, key=lambda c: (len(c), -min(len(x) for x in c)))


class BotMatcher:
    """Decides whether a User-Agent belongs to a bot, crawler, headless browser or HTTP tool.

    Build once (start-up or list reload) and share; `is_bot` is cheap and never raises. The
    cache makes an instance stateful but bounded; use one per worker process.

    Matching runs in up to two passes. The raw UA first: no evidence, no bot (the common case
    for humans, one automaton pass and one small regex). With evidence, a UA known to be human
    (the allowlist) passes; otherwise the mask patterns blank out free-text slots that never
    identify a bot (device models and the like) and the remainder must still show evidence.
    """

    def __init__(
        self,
        patterns: Iterable[BotPattern | str],
        masks: Iterable[str] = (),
        allowlist: Iterable[str] = (),
        cache_size: int = 50_000,
    ) -> None:
        automaton: Any = ahocorasick.Automaton()
        keys: dict[str, list[_Literal | _Gated]] = {}
        always: list[tuple[str, str]] = []
        seen: set[tuple[str, bool]] = set()
        for item in patterns:
            pat = item if isinstance(item, BotPattern) else BotPattern(item, "custom")
            if (pat.pattern, pat.case_sensitive) in seen:
                continue
            seen.add((pat.pattern, pat.case_sensitive))
            label = f"{pat.source}:{pat.pattern}"
            literal = _as_literal(pat.pattern)
            if literal is not None:
                text, at_start, at_end = literal
                lower = text.lower()
                original = text if pat.case_sensitive and lower != text else None
                keys.setdefault(lower, []).append(_Literal(lower, original, at_start, at_end, label))
                continue
            # A scoped flag keeps case-sensitive sources case-sensitive inside the one
            # case-insensitive alternation.
            source = f"(?-i:{pat.pattern})" if pat.case_sensitive else pat.pattern
            # A leading "[...]*" cannot change whether a search matches, only where; dropping
            # it removes a quadratic scan ("[a-z0-9_-]*(bot|crawl|...)").
            source = _LEADING_STAR.sub("", source, count=1) if not source.startswith("^") else source
            compiled = regex.compile(source, regex.IGNORECASE)  # fails here, naming the pattern
            gate = _required_literals(pat.pattern)
            if gate is None:
                always.append((source, label))
            else:
                gated = _Gated(compiled, label)
                for lit in gate:
                    keys.setdefault(lit, []).append(gated)
        for key, entries in keys.items():
            automaton.add_word(key, tuple(entries))
        self._automaton = automaton
        self._has_keys = bool(keys)
        if keys:
            automaton.make_automaton()
        self.literal_count = sum(1 for e in keys.values() for x in e if isinstance(x, _Literal))
        self.gated_count = len({id(x) for e in keys.values() for x in e if isinstance(x, _Gated)})
        self.always_count = len(always)
        self._always_labels = [label for _, label in always]
        # The ungated rest in two alternations (each alternative its own group, so a top-level
        # `|` inside one pattern cannot leak into its neighbours): the patterns anchored at the
        # start are tried at position 0 only, the others scan.
        start_patterns = [p for p, _ in always if p.startswith("^")]
        scan_patterns = [p for p, _ in always if not p.startswith("^")]
        self._always_start = (
            regex.compile("|".join(f"(?:{p})" for p in start_patterns), regex.IGNORECASE) if start_patterns else None
        )
        self._always_any = (
            regex.compile("|".join(f"(?:{p})" for p in scan_patterns), regex.IGNORECASE) if scan_patterns else None
        )
        mask_list = list(masks)
        self._mask = regex.compile("|".join(f"(?:{m})" for m in mask_list), regex.IGNORECASE) if mask_list else None
        allow_list = list(allowlist)
        self._allow = (
            regex.compile("|".join(f"(?:{a})" for a in allow_list), regex.IGNORECASE) if allow_list else None
        )
        # The evidence cache is functools' LRU: bounded like cachetools.LRUCache, but written in
        # C, so a hit costs ~0.1 µs instead of ~2 µs, which matters on every event.
        self._evidence_of = functools.lru_cache(maxsize=cache_size)(self.find)

    @classmethod
    def default(cls, cache_size: int = 50_000) -> BotMatcher:
        """The matcher built from the installed data packages and `shields/data/`."""
        return cls(
            load_bot_patterns(),
            masks=_read_pattern_file(DATA_DIR / "bot_masks.txt"),
            allowlist=_read_pattern_file(DATA_DIR / "bot_allowlist.txt"),
            cache_size=cache_size,
        )

    def is_bot(self, user_agent: str) -> bool:
        """True for a bot; an empty or blank User-Agent is a bot (every browser sends one)."""
        return self._evidence_of(user_agent) is not None

    def evidence(self, user_agent: str) -> str | None:
        """`find`'s answer, from the cache when the User-Agent was seen before."""
        return self._evidence_of(user_agent)

    def find(self, user_agent: str) -> str | None:
        """The evidence ("source:pattern") that makes `user_agent` a bot, or None for a human.

        Uncached (`evidence` and `is_bot` are the cached ones): for the benchmarks and tests.
        """
        ua = user_agent.strip()[:MAX_UA_CHARS]
        if not ua:
            return "empty User-Agent"
        if " " not in ua and "+(" in ua:
            # A form-encoded UA ("Mozilla/5.0+(iPhone;+CPU...") forwarded by a server-side
            # sender: judge the UA it encodes, not its encoding.
            ua = ua.replace("+", " ")
        evidence = self._evidence(ua)
        if evidence is None:
            return None
        if self._allow is not None and self._allow.fullmatch(ua):
            return None
        if self._mask is not None:
            masked = self._mask.sub("", ua)
            if masked != ua:
                return self._evidence(masked) if masked.strip() else None
        return evidence

    def _evidence(self, ua: str) -> str | None:
        if self._has_keys:
            lowered = ua.lower()
            same_length = len(lowered) == len(ua)
            last = len(lowered) - 1
            for end, entries in self._automaton.iter(lowered):
                for entry in entries:
                    if isinstance(entry, _Gated):
                        if entry.compiled.search(ua) is not None:
                            return entry.label
                        continue
                    start = end - len(entry.text) + 1
                    if entry.at_start and start != 0:
                        continue
                    if entry.at_end and end != last:
                        continue
                    if entry.original is not None:
                        # Lower-casing can change the length of non-ASCII text; then fall back
                        # to a plain substring test.
                        if same_length:
                            if ua[start : end + 1] != entry.original:
                                continue
                        elif entry.original not in ua:
                            continue
                    return str(entry.label)
        if (self._always_start is not None and self._always_start.match(ua) is not None) or (
            self._always_any is not None and self._always_any.search(ua) is not None
        ):
            return self._label_for(ua)
        return None

    def _label_for(self, ua: str) -> str:
        """Name the ungated pattern that matched (slow; only runs for bots, and is cached)."""
        for label in self._always_labels:
            pattern = label.split(":", 1)[1]
            if regex.search(pattern, ua, regex.IGNORECASE):
                return label
        return "regex"

    def cache_info(self) -> tuple[int, int]:
        """(entries, capacity) of the verdict cache, for metrics."""
        info = self._evidence_of.cache_info()
        return info.currsize, int(info.maxsize or 0)


class BotShield:
    """Drops bots: a bot User-Agent, an empty one, or automation the tracker itself reported."""

    reason: ClassVar[DropReason] = DropReason.BOT
    evidence: ClassVar[tuple[str, ...]] = ("automation", "empty_user_agent", "user_agent")

    def __init__(self, matcher: BotMatcher) -> None:
        self.matcher = matcher

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if event.automation:
            return Verdict(DropReason.BOT, detail="automation reported by the tracker", evidence="automation")
        evidence = self.matcher.evidence(client.user_agent)
        if evidence is not None:
            if not client.user_agent.strip():
                return Verdict(DropReason.BOT, detail="no User-Agent", evidence="empty_user_agent")
            return Verdict(DropReason.BOT, detail=f"bot User-Agent: {evidence}", evidence="user_agent")
        return None


class VerificationAgentShield:
    """Drops the gateway's own verification agent, so installation checks never count as visits."""

    reason: ClassVar[DropReason] = DropReason.VERIFICATION_AGENT
    client_only: ClassVar[bool] = True
    evidence: ClassVar[tuple[str, ...]] = ("user_agent",)

    def __init__(self, user_agent: str = VERIFICATION_AGENT_UA) -> None:
        self.user_agent = user_agent

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        # A prefix test, so the agent may append its version ("... Agent/1.2").
        if client.user_agent.startswith(self.user_agent):
            return Verdict(DropReason.VERIFICATION_AGENT, detail="gateway verification agent", evidence="user_agent")
        return None
