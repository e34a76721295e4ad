"""The shield chain: which shields run, in which order, and how report-only and switches apply.

The order is the precedence of drop reasons (first objection wins), as in the reference:

    spam_referrer → verification_agent → dc_ip → threat_ip → site_hostname_allowlist →
    site_page_blocklist → site_ip_blocklist → site_country_blocklist → bot

Per site (`SiteConfig.shields`): a shield named in `disabled` is skipped; a shield named in
`report_only`, or a rule marked report-only, yields a would-drop verdict that is returned for
counting while the chain goes on; IP-based shields (dc_ip, threat_ip, site_ip_blocklist) are
skipped for a client on the site's `ip_allowlist`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

from shields.base import Shield
from shields.bots import VERIFICATION_AGENT_UA, BotMatcher, BotShield, VerificationAgentShield
from shields.iplists import DatacenterShield, ThreatShield
from shields.lists import LiveLists
from shields.model import ClientContext, Event, SiteConfig, Verdict
from shields.referrers import SpamReferrerShield
from shields.rules import SiteCountryShield, SiteHostnameShield, SiteIPShield, SitePageShield, ip_allowlisted

__all__ = ["ChainResult", "ShieldChain", "ShieldReport", "default_chain", "explain", "run_chain"]


class ChainResult(NamedTuple):
    """The verdict that drops the event (None: keep it) and the report-only verdicts met first.

    A tuple, so `dropped, would_drop = chain(event, client, site)` works.
    """

    dropped: Verdict | None
    would_drop: tuple[Verdict, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ShieldReport:
    """One shield's outcome for `explain`: drop, would_drop, pass, disabled, or exempt."""

    reason: str
    outcome: str
    detail: str = ""


def default_chain(
    lists: LiveLists,
    bots: BotMatcher | None = None,
    *,
    verification_agent_ua: str = VERIFICATION_AGENT_UA,
    include_spam_referrer: bool = True,
) -> tuple[Shield, ...]:
    """Every shield in precedence order, reading list data through `lists` (hot-reloadable).

    `bots` defaults to `BotMatcher.default()` (about 0.1 s to build: do it once per process).
    Pass `include_spam_referrer=False` when the gateway checks spam referrers before the site
    lookup (so a spam referrer on an unknown domain counts as spam_referrer), with
    `SpamReferrerShield(lists).check_any_site`.
    """
    matcher = bots if bots is not None else BotMatcher.default()
    chain: list[Shield] = []
    if include_spam_referrer:
        chain.append(SpamReferrerShield(lists))
    chain += [
        VerificationAgentShield(verification_agent_ua),
        DatacenterShield(lists),
        ThreatShield(lists),
        SiteHostnameShield(),
        SitePageShield(),
        SiteIPShield(),
        SiteCountryShield(),
        BotShield(matcher),
    ]
    return tuple(chain)


def run_chain(chain: Sequence[Shield], event: Event, client: ClientContext, site: SiteConfig) -> ChainResult:
    """Run the shields in order; stop at the first enforced objection."""
    rules = site.shields
    disabled = rules.disabled
    report_only = rules.report_only
    would: list[Verdict] = []
    allowlisted: bool | None = None  # looked up once, only if an IP-based shield runs
    for shield in chain:
        reason = shield.reason.value
        if disabled and reason in disabled:
            continue
        if getattr(shield, "ip_based", False):
            if allowlisted is None:
                allowlisted = ip_allowlisted(client, site)
            if allowlisted:
                continue
        verdict = shield.check(event, client, site)
        if verdict is None:
            continue
        if verdict.report_only or reason in report_only:
            would.append(verdict if verdict.report_only else dataclasses.replace(verdict, report_only=True))
            continue
        return ChainResult(verdict, tuple(would))
    return ChainResult(None, tuple(would))


class ShieldChain:
    """A chain bound to its shields: `chain(event, client, site) -> ChainResult`.

    This is the callable the gateway's pipeline takes as its chain runner.
    """

    __slots__ = ("shields",)

    def __init__(self, shields: Sequence[Shield]) -> None:
        self.shields = tuple(shields)

    def __call__(self, event: Event, client: ClientContext, site: SiteConfig) -> ChainResult:
        return run_chain(self.shields, event, client, site)

    def explain(self, event: Event, client: ClientContext, site: SiteConfig) -> list[ShieldReport]:
        return explain(self.shields, event, client, site)


def explain(chain: Sequence[Shield], event: Event, client: ClientContext, site: SiteConfig) -> list[ShieldReport]:
    """Every shield's outcome in order, including those after the one that drops (for the
    operator's `explain` command). The first `drop` is what `run_chain` would return."""
    rules = site.shields
    allowlisted = ip_allowlisted(client, site)
    reports = []
    for shield in chain:
        reason = shield.reason.value
        if reason in rules.disabled:
            reports.append(ShieldReport(reason, "disabled", "switched off for this site"))
            continue
        if getattr(shield, "ip_based", False) and allowlisted:
            reports.append(ShieldReport(reason, "exempt", "client on the site's ip_allowlist"))
            continue
        verdict = shield.check(event, client, site)
        if verdict is None:
            detail = ""
            if isinstance(shield, BotShield) and client.user_agent:
                detail = "no bot evidence in the User-Agent"
            reports.append(ShieldReport(reason, "pass", detail))
        elif verdict.report_only or reason in rules.report_only:
            reports.append(ShieldReport(reason, "would_drop", verdict.detail))
        else:
            detail = verdict.detail
            if isinstance(shield, BotShield) and not event.automation:
                evidence = shield.matcher.find(client.user_agent)
                detail = f"{detail}: {evidence}" if evidence else detail
            reports.append(ShieldReport(reason, "drop", detail))
    return reports
