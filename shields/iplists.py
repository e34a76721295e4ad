"""Datacenter and threat addresses: the `dc_ip` and `threat_ip` shields.

A client counts as datacenter when a trusted proxy says so (`ClientContext.ip_type == "dc_ip"`),
when its address is in the datacenter ranges, or when its network (its AS number, from the ASN
table geo/ installs) is a hosting network or a VPN service (shields/hosting.py). The ranges and
tables are read through `LiveLists` (shields/lists.py), so a reloaded list takes effect without
rebuilding anything.
"""

from __future__ import annotations

from typing import ClassVar

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
    """Drops traffic from datacenters, clouds and VPN services: a trusted proxy's header, the
    datacenter address ranges, or the client's network (its AS number) being a hosting network
    or a VPN service (shields/hosting.py).

    The AS number comes from the ASN table when one is installed (a binary search), else from
    the geo database's answer. VPN networks are named with their own evidence (`vpn_asn`), so a
    site that keeps VPN visitors can say `ignore = ["dc_ip:vpn_asn"]`. IP-based: a site's
    `ip_allowlist` exempts the client. Client-only: the verdict depends on the client context
    and the loaded lists alone.
    """

    reason: ClassVar[DropReason] = DropReason.DC_IP
    ip_based: ClassVar[bool] = True
    client_only: ClassVar[bool] = True
    evidence: ClassVar[tuple[str, ...]] = ("proxy_header", "vpn_asn", "ip_list", "hosting_asn")

    def __init__(self, lists: LiveLists) -> None:
        self.lists = lists

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip_type == "dc_ip":
            return Verdict(DropReason.DC_IP, detail="classified dc_ip by a trusted proxy", evidence="proxy_header")
        lists = self.lists
        ip = client.ip
        table = lists.asn_table
        asn = table.lookup(ip) if table is not None and ip is not None else client.asn
        if asn is not None and asn in lists.vpn_asns:
            return Verdict(DropReason.DC_IP, detail=f"VPN service network AS{asn}", evidence="vpn_asn")
        if ip is not None and lists.datacenter_ips.contains(ip):
            return Verdict(DropReason.DC_IP, detail="address in datacenter ranges", evidence="ip_list")
        if asn is not None and asn in lists.hosting_asns:
            return Verdict(DropReason.DC_IP, detail=f"hosting network AS{asn}", evidence="hosting_asn")
        return None


class ThreatShield:
    """Drops traffic from addresses on threat lists, or classified `threat_ip` by a trusted proxy."""

    reason: ClassVar[DropReason] = DropReason.THREAT_IP
    ip_based: ClassVar[bool] = True
    client_only: ClassVar[bool] = True
    evidence: ClassVar[tuple[str, ...]] = ("proxy_header", "ip_list")

    def __init__(self, lists: LiveLists) -> None:
        self.lists = lists

    def check(self, event: Event, client: ClientContext, site: SiteConfig) -> Verdict | None:
        if client.ip_type == "threat_ip":
            return Verdict(DropReason.THREAT_IP, detail="classified threat_ip by a trusted proxy", evidence="proxy_header")
        if client.ip is not None and self.lists.threat_ips.contains(client.ip):
            return Verdict(DropReason.THREAT_IP, detail="address on a threat list", evidence="ip_list")
        return None
