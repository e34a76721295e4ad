"""Which autonomous systems are hosting networks, which are VPN services, and which carry people.

Machines, not people, send from clouds, VPS and dedicated-server networks. An AS number tells
which network an address belongs to (the ASN table geo/ installs), and two things tell what that
network is: our curated lists (`data/hosting_asns.txt`, `data/vpn_asns.txt`,
`data/people_asns.txt`), and the organisation name the network registered, read with the rules
of `data/hosting_names.txt` (hosting words such as "hosting", "servers", "data center"; "cloud"
unless an access network's word is there too; never a university, school or government) and
the names of hosting companies in `data/hosting_brands.txt` (Leaseweb, Hetzner, OVH...). A
company's other networks are what its curated ones are: a network registered under the same
name, legal form aside, as a curated one is hosting (or VPN) too.
`classify_networks` runs once per loaded table (about 80,000 names in a fraction of a second)
and gives the sets the `dc_ip` shield looks AS numbers up in.

VPN services are kept apart: they carry people who chose a VPN, and a site may keep them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shields.intervals import parse_asn_lines

__all__ = ["HOSTING", "VPN", "NamingRules", "classify_networks", "company_of", "load_naming_rules"]

DATA: Final = Path(__file__).parent / "data"
HOSTING: Final = "hosting"
VPN: Final = "vpn"
_KINDS: Final = ("people", "vpn", "strong", "weak", "access")


def _asns(name: str) -> frozenset[int]:
    return parse_asn_lines((DATA / name).read_text(encoding="utf-8").splitlines())


@dataclass(frozen=True, slots=True)
class NamingRules:
    """One compiled regular expression per kind of rule in `data/hosting_names.txt`."""

    people: re.Pattern[str]
    vpn: re.Pattern[str]
    strong: re.Pattern[str]
    weak: re.Pattern[str]
    access: re.Pattern[str]
    brand: re.Pattern[str]

    def classify(self, name: str) -> str:
        """`HOSTING`, `VPN` or "" for a network by its organisation name alone."""
        if not name or self.people.search(name):
            return ""
        if self.vpn.search(name):
            return VPN
        if self.strong.search(name):
            return HOSTING
        if (self.weak.search(name) or self.brand.search(name)) and not self.access.search(name):
            return HOSTING
        return ""


def load_naming_rules(path: Path = DATA / "hosting_names.txt", brands: Path = DATA / "hosting_brands.txt") -> NamingRules:
    rules: dict[str, list[str]] = {kind: [] for kind in _KINDS}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, pattern = line.partition(" ")
        if kind not in rules or not pattern.strip():
            raise ValueError(f"{path}:{number}: expected '<{'|'.join(_KINDS)}> <regex>', got {raw!r}")
        rules[kind].append(pattern.strip())
    names = [line.strip().lower() for line in brands.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    rules["brand"] = [r"(?<![\w.])" + re.escape(name) + r"(?![\w])" for name in names]
    never = "(?!x)x"  # an empty kind matches nothing
    compiled = {kind: re.compile("|".join(f"(?:{p})" for p in patterns) or never, re.IGNORECASE)
                for kind, patterns in rules.items()}
    return NamingRules(**compiled)


# Words of a registered name that only say what legal form the company has.
_LEGAL: Final = frozenset(
    "inc incorporated llc ltd limited gmbh co kg corp corporation company bv b.v sa s.a ag ab oy as a/s "
    "pte pvt plc srl s.r.l sp z o.o ou uab llp lp jsc ooo sas sarl spa s.p.a nv n.v kft doo d.o.o the".split())
_WORD: Final = re.compile(r"[a-z0-9][a-z0-9.&/\-]*")


def company_of(name: str) -> str:
    """A registered name without punctuation and legal-form words: "Misaka Network, Inc." and
    "Misaka Network Inc" are both "misaka network"."""
    words = (word.strip(".-,") for word in _WORD.findall(name.lower()))
    return " ".join(word for word in words if word and word not in _LEGAL)


def classify_networks(orgs: Iterable[tuple[int, str]] | Mapping[int, str],
                      rules: NamingRules | None = None) -> tuple[frozenset[int], frozenset[int]]:
    """(hosting AS numbers, VPN AS numbers): the curated lists, the other networks registered by
    the same companies as the curated ones, and every network of `orgs` (AS number →
    organisation) whose name says so, less the networks that carry people."""
    rules = rules or load_naming_rules()
    people, vpn_curated, hosting_curated = _asns("people_asns.txt"), _asns("vpn_asns.txt"), _asns("hosting_asns.txt")
    names = dict(orgs.items() if isinstance(orgs, Mapping) else orgs)
    hosting: set[int] = set(hosting_curated - vpn_curated)
    vpn: set[int] = set(vpn_curated)
    companies = {company_of(names[asn]): kind for kinds, kind in ((hosting, HOSTING), (vpn, VPN))
                 for asn in kinds if asn in names and asn not in people}
    companies.pop("", None)
    for asn, name in names.items():
        if asn in people or asn in vpn_curated or asn in hosting_curated:
            continue
        kind = companies.get(company_of(name)) or rules.classify(name)
        if kind == HOSTING:
            hosting.add(asn)
        elif kind == VPN:
            vpn.add(asn)
    return frozenset(hosting - people), frozenset(vpn - people)
