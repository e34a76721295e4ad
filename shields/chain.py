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
from collections.abc import Callable, Sequence
from typing import NamedTuple

from shields.base import Shield
from shields.bots import VERIFICATION_AGENT_UA, BotMatcher, BotShield, VerificationAgentShield
from shields.iplists import DatacenterShield, ThreatShield
from shields.lists import LiveLists
from shields.model import ClientContext, Event, SiteConfig, Verdict
from shields.referrers import SpamReferrerShield
from shields.rules import (SiteCountryShield, SiteHostnameShield, SiteIPShield, SitePageShield, compiled_rules,
                           ip_allowlisted)

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


class _Step(NamedTuple):
    check: Callable[[Event, ClientContext, SiteConfig], Verdict | None]
    ip_based: bool
    report_only: bool  # the site lists this reason under report_only
    memo_key: Shield | None  # the shield, when its verdict depends on the client alone


def _plan(chain: Sequence[Shield], site: SiteConfig) -> tuple[tuple[_Step, ...], bool]:
    """The steps that can object for this site, and whether the site has an IP allowlist.

    Shields the site disabled are left out, and so are rule shields for which the site has no
    rules (`applies(site)` false): they could only ever pass.
    """
    rules = site.shields
    steps = []
    for shield in chain:
        reason = shield.reason.value
        if reason in rules.disabled:
            continue
        applies = getattr(shield, "applies", None)
        if applies is not None and not applies(site):
            continue
        steps.append(_Step(shield.check, getattr(shield, "ip_based", False), reason in rules.report_only,
                           shield if getattr(shield, "client_only", False) else None))
    return tuple(steps), bool(compiled_rules(site).ip_allow)


_PASSED = ChainResult(None, ())
_UNSET = object()


def _run(steps: tuple[_Step, ...], has_allowlist: bool, event: Event, client: ClientContext,
         site: SiteConfig) -> ChainResult:
    would: list[Verdict] = []
    allowlisted: bool | None = None if has_allowlist else False  # looked up once, if needed
    memo = client.memo
    for check, ip_based, report_only, memo_key in steps:
        if ip_based:
            if allowlisted is None:
                allowlisted = ip_allowlisted(client, site)
            if allowlisted:
                continue
        if memo_key is None or memo is None:
            verdict = check(event, client, site)
        else:
            # A client-only shield's raw verdict, kept with a reused client context. The site's
            # switches (allowlist above, report-only below) still apply on every event.
            verdict = memo.get(memo_key, _UNSET)
            if verdict is _UNSET:
                verdict = memo[memo_key] = check(event, client, site)
        if verdict is None:
            continue
        if verdict.report_only or report_only:
            would.append(verdict if verdict.report_only else dataclasses.replace(verdict, report_only=True))
            continue
        return ChainResult(verdict, tuple(would))
    return ChainResult(None, tuple(would)) if would else _PASSED


def run_chain(chain: Sequence[Shield], event: Event, client: ClientContext, site: SiteConfig) -> ChainResult:
    """Run the shields in order; stop at the first enforced objection."""
    return _run(*_plan(chain, site), event, client, site)


class ShieldChain:
    """A chain bound to its shields: `chain(event, client, site) -> ChainResult`.

    This is the callable the gateway's pipeline takes as its chain runner. The per-site plan
    (which shields can object for this site) is worked out once per site object and kept.
    """

    __slots__ = ("shields", "_plans")
    MAX_PLANS = 4096

    def __init__(self, shields: Sequence[Shield]) -> None:
        self.shields = tuple(shields)
        # id(site) -> (site, plan). Holding the site keeps its id from being reused while cached.
        self._plans: dict[int, tuple[SiteConfig, tuple[tuple[_Step, ...], bool]]] = {}

    def __call__(self, event: Event, client: ClientContext, site: SiteConfig) -> ChainResult:
        entry = self._plans.get(id(site))
        if entry is None or entry[0] is not site:
            if len(self._plans) >= self.MAX_PLANS:
                self._plans.clear()  # sites were reloaded many times over: start afresh
            entry = (site, _plan(self.shields, site))
            self._plans[id(site)] = entry
        steps, has_allowlist = entry[1]
        return _run(steps, has_allowlist, event, client, site)

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
