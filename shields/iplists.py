"""Datacenter and threat addresses: the `dc_ip` and `threat_ip` shields.

A client counts as datacenter when a trusted proxy says so (`ClientContext.ip_type == "dc_ip"`),
when its address is in the datacenter ranges, or when its ASN (filled by geo/ from an ASN
database) is one of the hosting networks in `data/hosting_asns.txt`. The ranges are downloaded
lists read through `LiveLists` (shields/lists.py), so a reloaded list takes effect without
rebuilding anything.
"""

from __future__ import annotations

from pathlib import Path

from shields.intervals import parse_asn_lines
from shields.lists import LiveLists
from shields.model import ClientContext, DropReason, Event, SiteConfig, Verdict

__all__ = ["HOSTING_ASNS_FILE", "DatacenterShield", "ThreatShield", "load_hosting_asns"]

HOSTING_ASNS_FILE = Path(__file__).parent / "data" / "hosting_asns.txt"


def load_hosting_asns(path: Path = HOSTING_ASNS_FILE) -> frozenset[int]:
    """The curated hosting/cloud AS numbers shipped in `shields/data/`."""
    return parse_asn_lines(path.read_text(encoding="utf-8").splitlines())


class DatacenterShield:
    """Drops traffic from datacenters and clouds: proxy header, address ranges or hosting ASN.

    IP-based: a site's `ip_allowlist` exempts the client. Client-only: the verdict depends on
    the client context and the loaded lists alone.
    """

    reason = DropReason.DC_IP
    ip_based = True
    client_only = True

    def __init__(self, lists: LiveLists) -> None:
        self.lists = lists

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip_type == "dc_ip":
            return Verdict(DropReason.DC_IP, detail="classified dc_ip by a trusted proxy", evidence="proxy_header")
        if client.ip is not None and self.lists.datacenter_ips.contains(client.ip):
            return Verdict(DropReason.DC_IP, detail="address in datacenter ranges", evidence="ip_list")
        if client.asn is not None and client.asn in self.lists.hosting_asns:
            return Verdict(DropReason.DC_IP, detail=f"hosting network AS{client.asn}", evidence="hosting_asn")
        return None


class ThreatShield:
    """Drops traffic from addresses on threat lists, or classified `threat_ip` by a trusted proxy."""

    reason = DropReason.THREAT_IP
    ip_based = True
    client_only = True

    def __init__(self, lists: LiveLists) -> None:
        self.lists = lists

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip_type == "threat_ip":
            return Verdict(DropReason.THREAT_IP, detail="classified threat_ip by a trusted proxy", evidence="proxy_header")
        if client.ip is not None and self.lists.threat_ips.contains(client.ip):
            return Verdict(DropReason.THREAT_IP, detail="address on a threat list", evidence="ip_list")
        return None
