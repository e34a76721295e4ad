"""A production-like front for the gateway in tests: Debian's nginx terminating TLS on a loopback
port with a throwaway CA, proxying `/api/event` and `/js/` to the gateway (X-Forwarded-For,
X-Forwarded-Proto, X-Forwarded-Http-Version, X-Forwarded-Tls-Version, Host) and serving test
pages; real browsers and HTTP libraries talk to it as they would to a deployed site. nginx records the headers of every event request it proxies, so
tests can compare what real browsers send with tests/browser_headers.py.

Also here: the HTTP libraries the tests send with, and the two real browsers the tests drive (Debian's Chromium through Playwright, and
Debian's Firefox ESR headless with a profile that trusts the test CA), started the same way for
the tests and for `make shields-eval`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOSTS = ("site.test", "collector.test")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--ignore-certificate-errors",
    "--host-resolver-rules=MAP *.test 127.0.0.1, EXCLUDE localhost",
]
# Fields nginx logs for each proxied event: every header the gateway judges a browser by.
LOGGED = ("user-agent", "origin", "accept", "accept-language", "accept-encoding", "content-type", "referer",
          "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_programs() -> list[str]:
    return [p for p in ("nginx", "chromium", "firefox-esr", "certutil") if shutil.which(p) is None
            and not Path(f"/usr/sbin/{p}").exists()]


@dataclass
class TLSFront:
    port: int
    base: Path
    ca_pem: Path
    www: Path

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    @property
    def endpoint(self) -> str:
        return self.url("collector.test", "/api/event")

    def page(self, name: str, html: str) -> str:
        """Serve `html` at https://site.test:PORT/<name> and return that URL."""
        (self.www / name).write_text(html)
        return self.url("site.test", f"/{name}")

    def captured(self) -> list[dict[str, str]]:
        """The headers of every event request proxied so far ("" for an absent one)."""
        log = self.base / "events.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _nginx_conf(base: Path, port: int, gateway_port: int, cert: Path, key: Path, www: Path) -> str:
    fields = ",".join(f'"{h}":"$http_{h.replace("-", "_")}"' for h in LOGGED if h != "content-type")
    fields += ',"content-type":"$content_type","uri":"$request_uri","x-forwarded-http-version":"$server_protocol"'
    fields += ',"x-forwarded-tls-version":"$ssl_protocol"'
    upstream = f"http://127.0.0.1:{gateway_port}"
    proxy = (f"proxy_pass {upstream}; proxy_http_version 1.1; proxy_set_header Host $host; "
             "proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme; "
             "proxy_set_header X-Forwarded-Http-Version $server_protocol; "
             "proxy_set_header X-Forwarded-Tls-Version $ssl_protocol;")
    temp = " ".join(f"{kind}_temp_path {base}/tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
daemon off;
user root;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  {temp}
  types {{ text/html html; application/javascript js mjs; }}
  log_format headers escape=json '{{{fields}}}';
  server {{
    listen 127.0.0.1:{port} ssl http2 default_server;
    listen [::1]:{port} ssl http2 default_server;
    server_name _;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx before 1.23.4 (Debian 12's) leaves 1.3 out by default
    location = /api/event {{ access_log {base}/events.log headers; {proxy} }}
    location /js/ {{ {proxy} }}
    location / {{ root {www}; add_header Cache-Control no-store; }}
  }}
}}
"""


@contextmanager
def tls_front(gateway_port: int, base: Path | None = None) -> Iterator[TLSFront]:
    """nginx on a free loopback port in front of the gateway at `gateway_port`, with a CA made
    for this run (trustme) and a certificate for site.test, collector.test and 127.0.0.1."""
    import trustme

    base = Path(base or tempfile.mkdtemp(prefix="gw-tls-"))
    for d in ("tmp", "www"):
        (base / d).mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*HOSTS, "*.test", "127.0.0.1", "::1", "localhost")
    ca_pem, cert_pem, key_pem = base / "ca.pem", base / "cert.pem", base / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(_nginx_conf(base, port, gateway_port, cert_pem, key_pem, base / "www"))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(base), "-e", str(base / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                               f"{(base / 'error.log').read_text() if (base / 'error.log').exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("nginx did not listen") from None
            time.sleep(0.05)
    try:
        yield TLSFront(port=port, base=base, ca_pem=ca_pem, www=base / "www")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


# --- the browsers -----------------------------------------------------------------------------


def chromium_path() -> str:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def chromium_user_agent(version: str) -> str:
    """Debian Chromium's own User-Agent without the Headless marker (what a person's Chromium of
    the same version sends), from `browser.version` ("156.0.8078.114")."""
    return (f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{version.split('.')[0]}.0.0.0 Safari/537.36")


def firefox_profile(base: Path, ca_pem: Path) -> Path:
    """A fresh Firefox profile that trusts the test CA (its NSS database) and resolves the test
    hosts to loopback, with the first-run, update and telemetry traffic off."""
    profile = base / f"firefox-{time.monotonic_ns()}"
    profile.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{profile}", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-n", "gateway-test-ca", "-t", "C,,", "-i", str(ca_pem), "-d", f"sql:{profile}"],
                   check=True, capture_output=True)
    prefs: dict[str, Any] = {
        "network.dns.localDomains": ",".join(HOSTS),
        "browser.shell.checkDefaultBrowser": False,
        "browser.startup.homepage_override.mstone": "ignore",
        "browser.aboutwelcome.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "datareporting.healthreport.uploadEnabled": False,
        "toolkit.telemetry.enabled": False,
        "app.update.enabled": False,
        "app.update.auto": False,
        "app.normandy.enabled": False,
        "extensions.update.enabled": False,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "browser.safebrowsing.malware.enabled": False,
        "browser.safebrowsing.phishing.enabled": False,
        "browser.safebrowsing.downloads.enabled": False,
        "browser.newtabpage.activity-stream.feeds.snippets": False,
        "media.gmp-manager.updateEnabled": False,
        "browser.region.update.enabled": False,
        "network.trr.mode": 5,
        "security.enterprise_roots.enabled": False,
    }
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()))
    return profile


@contextmanager
def firefox(url: str, base: Path, ca_pem: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's Firefox ESR, headless, on `url` with a fresh trusting profile; closed after."""
    profile = firefox_profile(base, ca_pem)
    env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_DISABLE_CONTENT_SANDBOX": "1"}
    proc = subprocess.Popen(["firefox-esr", "--headless", "--no-remote", "--profile", str(profile), url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(profile, ignore_errors=True)


def firefox_version() -> str:
    out = subprocess.run(["firefox-esr", "--version"], capture_output=True, text=True).stdout
    return out.strip().rsplit(" ", 1)[-1].split("esr")[0]


# --- HTTP libraries, each sending what it sends by default plus the given headers ---------------------

LIBRARIES = ("requests", "httpx", "urllib", "aiohttp", "curl", "wget", "node")


def _send_python(lib: str, url: str, body: bytes, headers: dict[str, str], ca: Path) -> str:
    if lib == "requests":
        import requests

        return requests.post(url, data=body, headers=headers, verify=str(ca), timeout=10).text
    if lib == "httpx":
        import httpx

        return httpx.post(url, content=body, headers=headers, verify=ssl.create_default_context(cafile=str(ca)),
                          timeout=10).text
    if lib == "urllib":
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as r:
            return str(r.read().decode())
    if lib == "aiohttp":
        import aiohttp

        async def go() -> str:
            async with aiohttp.ClientSession() as session:
                async with session.post(url, data=body, headers=headers,
                                        ssl=ssl.create_default_context(cafile=str(ca))) as r:
                    return await r.text()

        return asyncio.run(go())
    raise AssertionError(lib)


def _send_tool(tool: str, url: str, body: bytes, headers: dict[str, str], ca: Path) -> str:
    if tool == "curl":
        cmd = ["curl", "-s", "--cacert", str(ca), "-X", "POST", "--data-binary", body.decode(), url]
        for k, v in headers.items():
            cmd[1:1] = ["-H", f"{k}: {v}"]
    elif tool == "wget":
        cmd = ["wget", "-q", "-O", "-", f"--ca-certificate={ca}", f"--post-data={body.decode()}", url]
        cmd[1:1] = [f"--header={k}: {v}" for k, v in headers.items() if k != "User-Agent"]
        cmd[1:1] = [f"--user-agent={headers['User-Agent']}"]
    elif tool == "node":
        script = ("fetch(process.argv[1], {method: 'POST', headers: JSON.parse(process.argv[2]), body: process.argv[3]})"
                  ".then(r => r.text()).then(t => process.stdout.write(t))")
        cmd = ["node", "-e", script, url, json.dumps(headers), body.decode()]
    else:
        raise AssertionError(tool)
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env, check=True).stdout


def send_with(lib: str, url: str, body: bytes, headers: dict[str, str], ca: Path) -> str:
    """POST `body` to `url` with library `lib` (one of LIBRARIES), trusting `ca`; the answer's body."""
    if lib in ("requests", "httpx", "urllib", "aiohttp"):
        return _send_python(lib, url, body, headers, ca)
    return _send_tool(lib, url, body, headers, ca)
