"""Locust scenarios for the gateway: real-looking traffic, mixed by weight.

User classes (each one a kind of client; pick them on the command line or with `--mix`):

- `BrowserUser`: a human visit: a landing pageview (referrer, UTM tags), SPA navigations,
  engagement events (`sd`, `e`), custom events with props; desktop and mobile browsers,
  addresses from residential-looking ranges in `X-Forwarded-For`. Now and then a pageview from
  a copy of the site on a domain the gateway does not know (`unknown_site`).
- `BotUser`: crawlers, headless browsers and HTTP libraries (`bot`).
- `ReferrerSpammer`: referrers from the spam list (`spam_referrer`).
- `DatacenterUser`: browser User-Agents from datacenter ranges (`dc_ip`).
- `Abuser`: malformed JSON and wrong field types (400), oversized bodies (413).
- `Flooder`: one visitor hammering a rate-limited site (202 until the bucket is empty, then 429
  with `Retry-After`).

Every request is checked against what the gateway must answer (status code and the
`accepted`/`dropped` counts); a mismatch is a Locust failure whose message says what was
expected. Request names are stable per kind (`human: pageview`, `bot: crawler`, ...).

What was sent, and what the gateway should therefore have counted (accepted events, drops by
reason, status codes), is tallied per process and written as JSON at the end of the run to
`--tally-file`; `loadtests/run.py` compares it with the gateway's `/metrics` and its sink.

Sample User-Agents, referrers, address ranges and pages are read from `loadtests/data/`. The
address ranges and the spam hosts there are the ones `run.py` installs as the gateway's
`datacenter_ips` and `referrer_spam` lists, so the expected drops hold for a gateway it started.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser_headers import browser_headers  # noqa: E402  (the one helper for browser headers)
ENDPOINT = "/api/event"

# Defaults; each can be set in locust.conf, on the command line or by environment variable.
DEFAULT_SITE = "example.com"  # the example site of config/sites/
DEFAULT_FLOOD_SITE = "flood.example.net"  # a site with [rate_limit]
DEFAULT_UNKNOWN_SITE = "copy-of-example.invalid"  # no site file declares it
OVERSIZED_BYTES = 70 * 1024  # above the default [limits] max_body_bytes (64 KiB)
# Latency counts from this long after the last user has started: the first requests of users
# that have just started, all at once, measure Locust's ramp-up, not the gateway.
SETTLE_SECONDS = 2.0


# --- sample data ---------------------------------------------------------------------------


def _lines(name: str) -> list[str]:
    """Non-empty, non-comment lines of a data file."""
    out = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    if not out:
        raise SystemExit(f"loadtests/data/{name} has no entries")
    return out


def _pairs(name: str) -> list[tuple[str, str]]:
    """`<kind><TAB><value>` lines."""
    out = []
    for line in _lines(name):
        kind, _, value = line.partition("\t")
        if not value:
            raise SystemExit(f"loadtests/data/{name}: {line!r} is not '<kind><TAB><value>'")
        out.append((kind.strip(), value.strip()))
    return out


def _networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s, strict=False) for s in _lines(name)]


BROWSER_UAS = _pairs("browser_uas.txt")
DESKTOP_UAS = [ua for kind, ua in BROWSER_UAS if kind == "desktop"]
MOBILE_UAS = [ua for kind, ua in BROWSER_UAS if kind != "desktop"]
BOT_UAS = _pairs("bot_uas.txt")
BOT_KINDS = sorted({kind for kind, _ in BOT_UAS})
REFERRERS = _lines("referrers.txt")
SPAM_HOSTS = _lines("spam_referrers.txt")
RESIDENTIAL = _networks("residential_ips.txt")
DATACENTER = _networks("datacenter_ips.txt")
PAGES = _lines("pages.txt")
UTM_TAGS = _lines("utm_tags.txt")


def random_address(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    net = random.choice(networks)
    # Skip the network and broadcast addresses of small v4 blocks.
    offset = random.randrange(1, net.num_addresses - 1) if net.num_addresses > 2 else 0
    return str(net.network_address + offset)


def browser_ua() -> str:
    return random.choice(MOBILE_UAS if random.random() < 0.45 else DESKTOP_UAS)


# --- options -------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_kw: Any) -> None:
    group = parser.add_argument_group("gateway load test")
    group.add_argument("--mix", default="", env_var="LOADTEST_MIX",
                       help="class weights, e.g. 'BrowserUser=80 BotUser=8 Flooder=0'; 0 leaves a class out "
                            "(classes named on the command line always run)")
    group.add_argument("--site", default=DEFAULT_SITE, env_var="LOADTEST_SITE",
                       help="domain of the site the traffic is for")
    group.add_argument("--flood-site", default=DEFAULT_FLOOD_SITE, env_var="LOADTEST_FLOOD_SITE",
                       help="domain of a site with [rate_limit], for Flooder")
    group.add_argument("--unknown-site", default=DEFAULT_UNKNOWN_SITE, env_var="LOADTEST_UNKNOWN_SITE",
                       help="a domain no site file declares")
    group.add_argument("--tally-file", default="", env_var="LOADTEST_TALLY_FILE",
                       help="write what was sent and what the gateway should have counted here (JSON)")


@dataclass(frozen=True, slots=True)
class Settings:
    site: str = DEFAULT_SITE
    flood_site: str = DEFAULT_FLOOD_SITE
    unknown_site: str = DEFAULT_UNKNOWN_SITE
    tally_file: str = ""


def _settings(environment: Environment) -> Settings:
    opts = environment.parsed_options
    if opts is None:  # used as a library
        return Settings()
    return Settings(site=opts.site, flood_site=opts.flood_site, unknown_site=opts.unknown_site,
                    tally_file=opts.tally_file)


def parse_mix(text: str) -> dict[str, float]:
    """'A=3 B=1.5, C=0' -> {'A': 3.0, 'B': 1.5, 'C': 0.0}."""
    mix: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or weight < 0:
            raise SystemExit(f"--mix: {item!r} is not <UserClass>=<weight ≥ 0>")
        mix[name] = weight
    return mix


@events.init.add_listener
def _apply_mix(environment: Environment, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not opts.mix:
        return
    mix = parse_mix(opts.mix)
    known = set(environment.available_user_classes or {}) or {cls.__name__ for cls in environment.user_classes}
    unknown = sorted(set(mix) - known)
    if unknown:
        raise SystemExit(f"--mix: no user class {unknown[0]!r} (known: {', '.join(sorted(known))})")
    named = set(opts.user_classes or ())
    keep = []
    for cls in environment.user_classes:
        weight = mix.get(cls.__name__, cls.weight)
        if weight > 0:
            cls.weight = weight
            keep.append(cls)
        elif cls.__name__ in named:  # asked for by name: runs with its default weight
            keep.append(cls)
    if not keep:
        raise SystemExit("--mix leaves no user class to run")
    environment.user_classes[:] = keep


# --- what the gateway should have counted --------------------------------------------------


class Tally:
    """Per process: answers by request name and status, the counts they imply, and latencies."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.unanswered: Counter[str] = Counter()  # connection errors, timeouts
        self.accepted: Counter[str] = Counter()  # events the gateway should have accepted, by name
        self.dropped: Counter[str] = Counter()  # events it should have dropped, by reason
        self.mismatches: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()  # (name, message)
        # Latency in 0.1 ms buckets, once every user has started (ramp-up is not steady state).
        self.latency: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.steady_since: float | None = None
        self.stopped_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "statuses": {name: {str(k): v for k, v in c.items()} for name, c in self.statuses.items()},
            "unanswered": dict(self.unanswered),
            "accepted": dict(self.accepted),
            "dropped": dict(self.dropped),
            "mismatches": dict(self.mismatches),
            "failures": [[name, msg, n] for (name, msg), n in self.failures.most_common()],
            "latency_tenth_ms": {name: {str(k): v for k, v in c.items()} for name, c in self.latency.items()},
            "steady_since": self.steady_since,
            "stopped_at": self.stopped_at,
        }


TALLY = Tally()


@events.test_start.add_listener
def _reset_tally(environment: Environment, **_kw: Any) -> None:
    TALLY.reset()


@events.spawning_complete.add_listener
def _steady(user_count: int, **_kw: Any) -> None:
    if TALLY.steady_since is None:
        TALLY.steady_since = time.time() + SETTLE_SECONDS


@events.request.add_listener
def _latency(name: str, response_time: float, **_kw: Any) -> None:
    now = time.time()
    since = TALLY.steady_since
    # Only requests started in the steady window count (not the last spawned users' first ones).
    if since is not None and TALLY.stopped_at is None and now - response_time / 1000 >= since:
        TALLY.latency[name][int(response_time * 10)] += 1


@events.test_stop.add_listener
def _write_tally(environment: Environment, **_kw: Any) -> None:
    TALLY.stopped_at = time.time()
    path = _settings(environment).tally_file
    if not path or isinstance(environment.runner, MasterRunner):
        return
    if isinstance(environment.runner, WorkerRunner):  # one file per worker process
        path = f"{path}.{os.getpid()}"
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(TALLY.as_dict(), fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


# --- expectations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """What the gateway must answer to one request."""

    status: int = 202
    accepted: int = 0
    drop_reason: str | None = None  # one event dropped for this reason (status 202)
    error_field: str | None = None  # a 400 must name this field in "errors"
    flood: bool = False  # 202 accepted=1, or 429 with Retry-After (rate_limited)

    def describe(self) -> str:
        if self.flood:
            return "202 accepted=1 or 429 with Retry-After"
        if self.drop_reason:
            return f"drop as {self.drop_reason} (202 accepted=0 dropped=1)"
        if self.status == 202:
            return f"202 accepted={self.accepted}"
        return f"{self.status}" + (f" naming {self.error_field!r}" if self.error_field else "")


ACCEPT = Expect(accepted=1)
FLOOD = Expect(flood=True)
HINTS = {
    "spam_referrer": "is the referrer_spam list installed (loadtests/data/spam_referrers.txt)?",
    "dc_ip": "is the datacenter_ips list installed (loadtests/data/datacenter_ips.txt)?",
    "unknown_site": "does a site file declare the --unknown-site domain?",
}


def _body(resp: Any) -> Mapping[str, Any] | None:
    try:
        body = json.loads(resp.content or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def check(resp: Any, name: str, expect: Expect) -> None:
    """Mark the response a success or a failure, and tally what it means."""
    status = resp.status_code
    if not status:  # no answer at all: Locust records the connection error as a failure
        TALLY.unanswered[name] += 1
        TALLY.failures[(name, f"no answer: {resp.error!r}"[:200])] += 1
        return
    TALLY.statuses[name][status] += 1
    body = _body(resp)
    got = f"{status} {_summary(body)}"
    problem = None
    if expect.flood:
        if status == 202 and body is not None and body.get("accepted") == 1 and not body.get("dropped"):
            TALLY.accepted[name] += 1
        elif status == 429 and body is not None and "errors" in body:
            TALLY.dropped["rate_limited"] += 1
            retry = resp.headers.get("retry-after") if resp.headers else None
            if retry is None or not retry.isdigit() or int(retry) < 1:
                problem = f"429 without a Retry-After of whole seconds (got {retry!r})"
        else:
            problem = f"expected {expect.describe()}, got {got}"
            if status == 202 and body is not None and body.get("dropped"):
                problem += "; does a site file declare the --flood-site domain, with [rate_limit]?"
    else:
        # What the gateway should count follows from what was sent, whatever it answered.
        if expect.drop_reason:
            TALLY.dropped[expect.drop_reason] += 1
        elif expect.accepted:
            TALLY.accepted[name] += expect.accepted
        if status != expect.status or body is None:
            problem = f"expected {expect.describe()}, got {got}"
        elif status == 202:
            counts = (body.get("accepted"), body.get("dropped", 0))
            want = (0, 1) if expect.drop_reason else (expect.accepted, 0)
            if counts != want:
                problem = f"expected {expect.describe()}, got {got}"
                if expect.drop_reason in HINTS:
                    problem += f"; {HINTS[expect.drop_reason]}"
        elif not isinstance(body.get("errors"), dict) or (
                expect.error_field and expect.error_field not in body["errors"]):
            problem = f"expected {expect.describe()}, got {got}"
    if problem:
        TALLY.mismatches[name] += 1
        TALLY.failures[(name, problem)] += 1
        resp.failure(problem)
    else:
        resp.success()


def _summary(body: Mapping[str, Any] | None) -> str:
    """A short, stable description of a response body, for failure messages (grouped by text)."""
    if body is None:
        return "(no JSON body)"
    if "errors" in body and isinstance(body["errors"], dict):
        return "errors on " + ",".join(sorted(body["errors"]))
    return f"accepted={body.get('accepted')} dropped={body.get('dropped', 0)}"


# --- user classes --------------------------------------------------------------------------


class _Client(FastHttpUser):
    """Common sending code: one visitor identity (User-Agent, address) per user until changed."""

    abstract = True
    wait_time = between(0.5, 3.0)

    def on_start(self) -> None:
        self.cfg = _settings(self.environment)
        self.ua = browser_ua()
        self.ip = random_address(RESIDENTIAL)
        # Browsers send Fetch Metadata and client hints only to https or loopback endpoints.
        target = urlsplit(self.host or "")
        self.secure = target.scheme == "https" or target.hostname in ("127.0.0.1", "localhost", "::1")

    def send(self, name: str, event: Any, expect: Expect, *, raw: bytes | None = None,
             content_type: str = "text/plain", ua: str | None = None, ip: str | None = None) -> None:
        data = raw if raw is not None else json.dumps(event, separators=(",", ":")).encode()
        agent = ua or self.ua
        page = event.get("u") if isinstance(event, dict) else None
        # A browser's User-Agent comes with what that browser sends (tests/browser_headers.py).
        headers = browser_headers(agent, page if isinstance(page, str) else f"https://{self.cfg.site}/",
                                  secure=self.secure)
        headers.update({"content-type": content_type, "user-agent": agent, "x-forwarded-for": ip or self.ip})
        # bytes, not str: some bodies are deliberately not UTF-8 (Locust's hint is too narrow).
        with self.client.post(ENDPOINT, data=data, headers=headers, name=name,  # type: ignore[arg-type]
                              catch_response=True) as resp:
            check(resp, name, expect)


class BrowserUser(_Client):
    """A person on the site: one visit after another, each with a new identity."""

    weight = 80

    def on_start(self) -> None:
        super().on_start()
        gevent.sleep(random.uniform(0, 2))  # visitors do not arrive in lockstep with Locust's spawning
        self.new_visit()

    def _url(self, path: str, query: str = "") -> str:
        return f"https://{self.cfg.site}{path}{query}"

    @task(6)
    def new_visit(self) -> None:
        """A new visitor lands: pageview with referrer and maybe UTM tags."""
        self.ua = browser_ua()
        self.ip = random_address(RESIDENTIAL)
        self.page = random.choice(PAGES)
        self.referrer = random.choice(REFERRERS) if random.random() < 0.6 else None
        query = random.choice(UTM_TAGS) if random.random() < 0.2 else ""
        event: dict[str, Any] = {"n": "pageview", "u": self._url(self.page, query), "d": self.cfg.site}
        if self.referrer:
            event["r"] = self.referrer
        self.send("human: pageview", event, ACCEPT)

    def _engagement(self) -> dict[str, Any]:
        event: dict[str, Any] = {"n": "engagement", "u": self._url(self.page), "d": self.cfg.site,
                                 "sd": random.randint(5, 100), "e": random.randint(300, 120_000)}
        if self.referrer:
            event["r"] = self.referrer
        return event

    @task(30)
    def navigate(self) -> None:
        """SPA navigation: engagement for the page being left, then a pageview for the new path."""
        self.send("human: engagement", self._engagement(), ACCEPT)
        self.page = random.choice(PAGES)
        event: dict[str, Any] = {"n": "pageview", "u": self._url(self.page), "d": self.cfg.site}
        if self.referrer:  # an SPA keeps the document's original referrer
            event["r"] = self.referrer
        self.send("human: spa navigation", event, ACCEPT)

    @task(15)
    def engage(self) -> None:
        """The tracker reports time on page and scroll depth (tab hidden, page left)."""
        self.send("human: engagement", self._engagement(), ACCEPT)

    @task(10)
    def custom_event(self) -> None:
        """A goal: signup, download, outbound click, or a purchase with revenue."""
        kind = random.randrange(4)
        event: dict[str, Any] = {"u": self._url(self.page), "d": self.cfg.site}
        if kind == 0:
            event.update(n="Signup", p={"plan": random.choice(["free", "team", "business"]),
                                        "source": random.choice(["header", "pricing", "footer"])})
        elif kind == 1:
            event.update(n="File Download", p={"url": f"https://{self.cfg.site}/files/whitepaper.pdf"})
        elif kind == 2:
            event.update(n="Outbound Link: Click", p={"url": "https://github.com/example/analytics"})
        else:
            event.update(n="Purchase", p={"plan": "team"},
                         revenue={"amount": random.choice(["19.00", "49.90", "120"]), "currency": "EUR"})
        if random.random() < 0.2:
            event["i"] = False  # not triggered by a user action
        self.send("human: custom event", event, ACCEPT)

    @task(1)
    def unknown_site(self) -> None:
        """The snippet copied onto a domain nobody registered (a staging copy, a scraper's mirror)."""
        domain = self.cfg.unknown_site
        event = {"n": "pageview", "u": f"https://{domain}{random.choice(PAGES)}", "d": domain}
        self.send("human: unknown site", event, Expect(drop_reason="unknown_site"))


class BotUser(_Client):
    """Crawlers, headless browsers and HTTP libraries that run or imitate the tracker."""

    weight = 8
    wait_time = between(0.2, 2.0)

    @task
    def crawl(self) -> None:
        kind, ua = random.choice(BOT_UAS)
        event: dict[str, Any] = {"n": "pageview", "u": f"https://{self.cfg.site}{random.choice(PAGES)}",
                                 "d": self.cfg.site}
        if random.random() < 0.3:
            event["r"] = random.choice(REFERRERS)
        self.send(f"bot: {kind}", event, Expect(drop_reason="bot"), ua=ua,
                  content_type=random.choice(["text/plain", "application/json"]))


class ReferrerSpammer(_Client):
    """Fake visits whose only purpose is the referrer link in the site's reports."""

    weight = 3
    wait_time = between(0.5, 2.0)

    @task
    def spam(self) -> None:
        host = random.choice(SPAM_HOSTS)
        prefix = random.choice(["", "", "www.", "ru.", "best."])  # spammers rotate subdomains
        referrer = f"{random.choice(['https', 'http'])}://{prefix}{host}/{random.choice(['', 'offer', '?ref=1'])}"
        event = {"n": "pageview", "u": f"https://{self.cfg.site}{random.choice(PAGES)}",
                 "d": self.cfg.site, "r": referrer}
        self.send("spam: referrer", event, Expect(drop_reason="spam_referrer"),
                  ua=browser_ua(), ip=random_address(RESIDENTIAL))


class DatacenterUser(_Client):
    """Scrapers and click farms with browser User-Agents, from cloud and hosting ranges."""

    weight = 4
    wait_time = between(0.5, 2.0)

    @task
    def visit(self) -> None:
        event = {"n": "pageview", "u": f"https://{self.cfg.site}{random.choice(PAGES)}", "d": self.cfg.site}
        self.send("dc: pageview", event, Expect(drop_reason="dc_ip"),
                  ua=browser_ua(), ip=random_address(DATACENTER))


# Bodies that are not valid events, and the field each 400 must name (Plausible's keys).
# Not here: `"n": 5` (an integer name is valid, as for Plausible's 404 goals) and a non-string
# `d` next to a URL with a host (the URL's host is then the domain, as in Plausible).
_WRONG_TYPES: tuple[tuple[dict[str, Any], str], ...] = (
    ({"n": ["pageview"], "u": "https://{site}/", "d": "{site}"}, "event_name"),
    ({"n": True, "u": "https://{site}/", "d": "{site}"}, "event_name"),
    ({"n": "pageview", "u": [], "d": "{site}"}, "url"),
    ({"n": "pageview", "u": 12345, "d": "{site}"}, "url"),
    ({"n": "pageview", "d": "{site}"}, "url"),
    ({"n": "pageview", "u": "https://{site}/#/x", "d": "{site}", "h": "yes"}, "hash_mode"),
    ({"n": "engagement", "u": "https://{site}/", "d": "{site}", "sd": "deep", "e": -5}, "event_name"),
    ({"n": "pageview", "u": "/relative/only", "d": ["{site}"]}, "domain"),
)
_MALFORMED = (
    b'{"n":"pageview","u":"https://',
    b"not json at all",
    b'{"n":"pageview",}',
    b"\xff\xfe{\x00",
    b'"just a string"',
    b"",
)


def _fill(value: Any, site: str) -> Any:
    return value.replace("{site}", site) if isinstance(value, str) else value


class Abuser(_Client):
    """Broken or hostile clients: bodies that are not events, or far too large."""

    weight = 3
    wait_time = between(0.5, 2.0)

    @task(3)
    def malformed_json(self) -> None:
        body = random.choice(_MALFORMED)
        self.send("abuse: malformed json", None, Expect(status=400), raw=body)

    @task(3)
    def wrong_types(self) -> None:
        template, field = random.choice(_WRONG_TYPES)
        event = {k: _fill(v, self.cfg.site) for k, v in template.items()}
        self.send("abuse: wrong types", event, Expect(status=400, error_field=field))

    @task(1)
    def oversized(self) -> None:
        padding = "x" * OVERSIZED_BYTES
        event = {"n": "pageview", "u": f"https://{self.cfg.site}/", "d": self.cfg.site, "p": {"junk": padding}}
        self.send("abuse: oversized body", event, Expect(status=413))


class Flooder(_Client):
    """One visitor sending as fast as it can to a site with a rate limit."""

    weight = 2
    wait_time = between(0.02, 0.1)

    @task
    def flood(self) -> None:
        site = self.cfg.flood_site
        event = {"n": "pageview", "u": f"https://{site}{random.choice(PAGES)}", "d": site}
        self.send("flood: pageview", event, FLOOD)
