"""The downloadable detection lists: their kinds, their text formats, and the live matchers.

Three kinds of list come from outside the registries (the gateway fetches and stores them, see
gateway/lists.py; this module never touches the network or the disk):

| kind             | parsed as                                                  | matcher            |
|------------------|------------------------------------------------------------|--------------------|
| `referrer_spam`  | one host per line                                          | `SpamReferrerList` |
| `datacenter_ips` | CIDRs, addresses, ranges per line; or a JSON range file    | `IntervalSet`      |
| `threat_ips`     | the first field of each line                               | `IntervalSet`      |

`LiveLists` holds the matchers the shields read on every event; a reloaded list replaces one
attribute, which readers in the same process see at once and whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from typing import Protocol

from shields.hosts import SpamReferrerList, normalise_host
from shields.intervals import IntervalSet, IPAddress, parse_network

__all__ = ["DATACENTER_IPS", "LIST_KINDS", "REFERRER_SPAM", "THREAT_IPS", "AsnLookup", "LiveLists", "build_matcher",
           "parse_entries"]

REFERRER_SPAM = "referrer_spam"
DATACENTER_IPS = "datacenter_ips"
THREAT_IPS = "threat_ips"
LIST_KINDS: tuple[str, ...] = (REFERRER_SPAM, DATACENTER_IPS, THREAT_IPS)


class AsnLookup(Protocol):
    """An address → AS number table (geo.AsnTable)."""

    def lookup(self, ip: IPAddress) -> int | None: ...


class LiveLists:
    """The matchers the shields read on every event. Replaced attribute by attribute on reload.

    Assigning an attribute is atomic for readers in the same process, so a shield sees either
    the old list or the new one. Empty lists match nothing. `asn_table` (None when no ASN table
    is installed) with `hosting_asns` and `vpn_asns` (shields/hosting.py) let the dc_ip shield
    judge a network by its AS number.
    """

    __slots__ = ("referrer_spam", "datacenter_ips", "threat_ips", "hosting_asns", "vpn_asns", "asn_table")

    def __init__(
        self,
        referrer_spam: SpamReferrerList | None = None,
        datacenter_ips: IntervalSet | None = None,
        threat_ips: IntervalSet | None = None,
        hosting_asns: frozenset[int] | None = None,
        vpn_asns: frozenset[int] | None = None,
        asn_table: AsnLookup | None = None,
    ) -> None:
        self.referrer_spam = referrer_spam if referrer_spam is not None else SpamReferrerList(())
        self.datacenter_ips = datacenter_ips if datacenter_ips is not None else IntervalSet()
        self.threat_ips = threat_ips if threat_ips is not None else IntervalSet()
        self.hosting_asns = hosting_asns if hosting_asns is not None else frozenset()
        self.vpn_asns = vpn_asns if vpn_asns is not None else frozenset()
        self.asn_table = asn_table

    def replace(self, kind: str, matcher: SpamReferrerList | IntervalSet) -> None:
        """Swap in the matcher of one kind (`build_matcher`'s answer)."""
        check_kind(kind)
        setattr(self, kind, matcher)


def check_kind(kind: str) -> None:
    if kind not in LIST_KINDS:
        raise ValueError(f"unknown list {kind!r} (expected one of {', '.join(LIST_KINDS)})")


def _iter_json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _iter_json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _iter_json_strings(v)


def parse_entries(kind: str, text: str) -> tuple[list[str], int]:
    """Canonical entries of one source's text and the number of lines that did not parse."""
    check_kind(kind)
    if kind == REFERRER_SPAM:
        hosts: list[str] = []
        bad = 0
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            host = normalise_host(line)
            if host and "." in host:
                hosts.append(host)
            else:
                bad += 1
        return hosts, bad
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        # Cloud range files (AWS, Google, Oracle...) are JSON of many shapes; every string in
        # them that is a network is an entry, everything else (regions, services) is ignored.
        try:
            doc = json.loads(stripped)
        except ValueError:
            return [], 1
        nets = [s.strip() for s in _iter_json_strings(doc) if "/" in s and _is_network(s.strip())]
        return nets, 0
    entries: list[str] = []
    bad = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        token = line.replace(",", " ").split()[0]
        if _is_network(token):
            entries.append(token)
        else:
            bad += 1
    return entries, bad


def _is_network(token: str) -> bool:
    try:
        parse_network(token)
    except ValueError:
        return False
    return True


def build_matcher(kind: str, entries: Sequence[str]) -> SpamReferrerList | IntervalSet:
    """The matcher for a stored list's lines (canonical entries, one per line)."""
    check_kind(kind)
    if kind == REFERRER_SPAM:
        return SpamReferrerList(entries)
    return IntervalSet.from_lines(entries)
