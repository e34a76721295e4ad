"""The OpenAPI 3.1 document: valid, complete, and true of the live server (Schemathesis)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gatewayproc import Gateway
from openapi_spec_validator import validate

SITES = {"shop": 'domain = "shop.test"\n[shields]\npage_blocklist = ["/admin/*"]\n',
         "other": 'domain = "other.test"\n'}
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


def test_the_served_document_is_valid_openapi_3_1_and_names_every_route(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    r = gw.client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    from gateway.app import create_app

    app = create_app(str(gw.config))
    served = {(re.sub(r"<(\w+):\w+>", r"{\1}", route.path if route.path.startswith("/") else "/" + route.path),
               method.lower()) for route in app.router.routes for method in route.methods}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    api = {(p, m) for p, m in served if p.startswith("/api/") and m != "options" and p != "/api/v1/openapi.json"}
    assert api == documented
    assert doc["components"]["schemas"]["ServerBatch"]["properties"]["events"]["maxItems"] == 1000


def test_the_documented_batch_maximum_is_the_configured_one(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES, extra="[server_api]\nmax_events = 250\n")
    doc = gw.client.get("/api/v1/openapi.json").json()
    validate(doc)
    assert doc["components"]["schemas"]["ServerBatch"]["properties"]["events"]["maxItems"] == 250
    key = gw.key("shop.test", "ingest")
    for n, status in ((250, 202), (251, 400)):
        r = gw.api("POST", "/api/v1/events", key, content=json.dumps({"events": [{"name": "a", "path": "/"}] * n}))
        assert r.status_code == status, r.text


def _schemathesis(gw: Gateway, key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run Schemathesis against the live gateway; every exchange is kept as a HAR file, `gw.base /
    "schemathesis.har"`."""
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{gw.url}/api/v1/openapi.json",
           "--checks", CHECKS, "-H", f"Authorization: Bearer {key}", "--max-examples", "25",
           "--workers", "1", "--seed", "1", "--no-color", "--report", "har",
           "--report-har-path", str(gw.base / "schemathesis.har"), *extra]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    # Run from a scratch folder: Schemathesis keeps a cache of examples in its working directory.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=gw.config.parent)


def test_schemathesis_finds_no_5xx_and_every_answer_conforms(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    key = gw.key("shop.test", "manage")
    for i in range(3):  # some stored events and drop records, so the lists have rows to answer with
        gw.post({"n": "pageview", "u": f"https://shop.test/p{i}", "d": "shop.test"}, ip=f"203.0.113.{i + 1}")
        gw.post({"n": "pageview", "u": f"https://shop.test/admin/{i}", "d": "shop.test"}, ip="203.0.113.9")
    gw.wait_rows(3)
    # POST /api/v1/events has its own run with an ingest key (below): a manage key there is a
    # failed attempt (401), and twenty of them would rate-limit this client for every operation.
    done = _schemathesis(gw, key, "--exclude-path", "/api/v1/events")
    summary = "\n".join(done.stdout.splitlines()[-40:])
    print(summary)
    assert done.returncode == 0, summary + done.stderr[-3000:]
    assert "Traceback" not in gw.log() and "Exception occurred" not in gw.log()
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed", done.stdout), summary
    # The run reached the real site, not only unknown ones: every GET operation answered 200 at
    # least once for shop.test (the key's site), and so did the writes and the dry run.
    doc = gw.client.get("/api/v1/openapi.json").json()
    answered = _answers(gw.base / "schemathesis.har")
    for template, ops in doc["paths"].items():
        path = template.replace("{domain}", "shop.test")
        for method in ops:
            if method == "get" or (template.startswith("/api/v1/sites/") and method in ("put", "post")):
                assert 200 in answered.get((method.upper(), path), Counter()), (method, path, answered.get((method.upper(), path)))
    assert 202 in answered[("POST", "/api/event")]  # and some generated events were accepted


def _answers(har: Path) -> dict[tuple[str, str], Counter[int]]:
    """(method, path) -> the statuses the gateway answered, from a HAR file."""
    out: dict[tuple[str, str], Counter[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        key = (entry["request"]["method"].upper(), unquote(urlsplit(entry["request"]["url"]).path))
        out.setdefault(key, Counter())[int(entry["response"]["status"])] += 1
    return out


def test_schemathesis_with_an_ingest_key_over_the_server_events_api(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(sites=SITES)
    key = gw.key("shop.test", "ingest")
    done = _schemathesis(gw, key, "--include-path", "/api/v1/events", "--max-examples", "60")
    summary = "\n".join(done.stdout.splitlines()[-40:])
    print(summary)
    assert done.returncode == 0, summary + done.stderr[-3000:]
    assert "Traceback" not in gw.log() and "Exception occurred" not in gw.log()
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed", done.stdout), summary
    assert re.search(r"Selected: 1/\d+", done.stdout), summary  # only POST /api/v1/events
    assert gw.wait_rows(1), "no generated event was valid: the schema does not describe what is accepted"
