"""A realistic request mix shared by the benchmarks and the load tests.

Browser User-Agents of the major families, page paths, referrers (search, social, direct,
internal), UTM tags and client IPs spread over the public address space. Deterministic for a
given seed so that two runs in one benchmark see the same traffic.
"""

from __future__ import annotations

import ipaddress
import json
import random

BROWSER_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/{v}.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/{v}.0.6778.73 Mobile/15E148 Safari/604.1",
]
PATHS = ["/", "/pricing", "/blog", "/blog/how-we-built-it", "/docs/getting-started", "/docs/api",
         "/about", "/contact", "/signup", "/login", "/features/shields", "/changelog"]
REFERRERS = ["", "", "", "https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/item?id=1",
             "https://t.co/abc", "https://www.reddit.com/r/selfhosted/", "https://site.test/pricing",
             "https://github.com/example/repo", "https://www.bing.com/search?q=gateway"]
UTMS = ["", "", "", "", "?utm_source=newsletter&utm_medium=email&utm_campaign=nov",
        "?utm_source=twitter&utm_medium=social", "?ref=producthunt", "?gclid=abc123"]


def user_agents(n: int = 60, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [rnd.choice(BROWSER_UAS).format(v=rnd.randint(118, 132), m=rnd.randint(0, 6)) for _ in range(n)]


def client_ips(n: int = 2000, seed: int = 2) -> list[str]:
    rnd = random.Random(seed)
    out = []
    while len(out) < n:
        ip = ipaddress.IPv4Address(rnd.randint(0x01000000, 0xDF000000))
        if ip.is_global:
            out.append(str(ip))
    return out


def bodies(domain: str = "site.test", n: int = 400, seed: int = 3) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        path = rnd.choice(PATHS) + rnd.choice(UTMS)
        ev: dict[str, object] = {"n": "pageview", "u": f"https://{domain}{path}", "d": domain}
        ref = rnd.choice(REFERRERS)
        if ref:
            ev["r"] = ref
        if rnd.random() < 0.1:
            ev = {"n": "Signup", "u": f"https://{domain}/signup", "d": domain, "p": {"plan": rnd.choice(["free", "pro"])}}
        elif rnd.random() < 0.1:
            ev = {"n": "engagement", "u": f"https://{domain}{rnd.choice(PATHS)}", "d": domain,
                  "sd": rnd.randint(0, 100), "e": rnd.randint(100, 60000)}
        out.append(json.dumps(ev, separators=(",", ":")))
    return out


MIXES = ("repeat", "visitors", "flood")

# wrk (LuaJIT): a new IPv4 address spread over the public space per call, from the Park-Miller
# generator (period 2^31 - 1, exact in LuaJIT's doubles) whose state `x` the script seeds.
LUA_ADDRESS = """local function address()
  x = (x * 48271) % 2147483647
  return string.format("%d.%d.%d.%d", 1 + math.floor(x / 8388608) % 223,
    math.floor(x / 32768) % 256, math.floor(x / 128) % 256, x % 256)
end"""


def _dress(ua: str, domain: str) -> dict[str, str]:
    """What the browser `ua` claims to be sends with a tracker POST to a loopback gateway."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser_headers import browser_headers  # the one helper for browser headers

    headers = browser_headers(ua, f"https://{domain}/")
    return {k: v for k, v in headers.items() if k not in ("user-agent", "content-type")}


def wrk_lua(domain: str = "site.test", mix: str = "repeat") -> str:
    """A wrk script for one traffic mix. Every browser User-Agent comes with the headers that
    browser sends (tests/browser_headers.py), except the bare half of the flood.

    * `repeat`: 4000 prebuilt requests from 60 browser UAs, 2000 client IPs and 400 bodies,
      cycled: every client and body comes back (what the gateway's memos see in steady traffic);
    * `visitors`: visitor after visitor never seen before, each sending 1 to 5 requests from
      one address and one of the common User-Agents: a pageview, then engagement events (their
      own engagement time: a new body) or more pageviews. Tens of thousands of visitors a run;
    * `flood`: every request a new address, a new User-Agent and a new page, half of them with a
      browser's headers and half bare (nothing repeats: what a flood of made-up clients costs).
    """
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r} (expected one of {', '.join(MIXES)})")
    uas, ips, bs = user_agents(), client_ips(), bodies(domain)

    def lua_list(items: list[str]) -> str:
        return "{" + ",".join(json.dumps(s) for s in items) + "}"

    def lua_table(d: dict[str, str]) -> str:
        return "{" + ",".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in d.items()) + "}"

    dress = "{" + ",".join(lua_table(_dress(ua, domain)) for ua in uas) + "}"
    common = f"""
local uas = {lua_list(uas)}
local dress = {dress}
local bodies = {lua_list(bs)}
local function headers(k, ua, ip, dressed)
  local h = {{}}
  if dressed then
    for name, value in pairs(dress[k]) do h[name] = value end
  end
  h["Content-Type"] = "text/plain"
  h["User-Agent"] = ua
  h["X-Forwarded-For"] = ip
  return h
end
"""
    if mix == "repeat":
        return common + f"""
local ips = {lua_list(ips)}
local reqs = {{}}
local i = 0
init = function(args)
  math.randomseed(7)
  for n = 1, 4000 do
    local k = math.random(#uas)
    reqs[n] = wrk.format("POST", "/api/event", headers(k, uas[k], ips[math.random(#ips)], true),
                         bodies[math.random(#bodies)])
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""
    # New addresses spread over the IPv4 space: the Park-Miller generator (period 2^31 - 1,
    # exact in LuaJIT's doubles) seeded by the clock, so each run sees new clients.
    pages = [json.loads(b) for b in bs]
    urls = [p["u"] for p in pages]
    refs = [p.get("r", "") for p in pages]
    return common + f"""
local urls = {lua_list(urls)}
local refs = {lua_list(refs)}
local flood = {"true" if mix == "flood" else "false"}
local x = 1
local left, k, ip = 0, 1, ""
init = function(args)
  x = os.time() % 2147483646 + 1
end
{LUA_ADDRESS}
request = function()
  if flood then
    ip = address()
    local n = x % #uas + 1
    local body = '{{"n":"pageview","u":"https://{domain}/p/' .. x .. '","d":"{domain}"}}'
    return wrk.format("POST", "/api/event", headers(n, uas[n] .. " r" .. x, ip, x % 2 == 0), body)
  end
  local body
  if left == 0 then  -- a new visitor: 1 to 5 requests from one address and User-Agent
    ip = address()
    k = x % #uas + 1
    left = x % 5 + 1
    body = bodies[x % #bodies + 1]
  else
    local p = (x + left) % #urls + 1
    if left % 2 == 1 then
      local r = refs[p] ~= "" and (',"r":"' .. refs[p] .. '"') or ""
      body = '{{"n":"engagement","u":"' .. urls[p] .. '","d":"{domain}"' .. r .. ',"sd":' .. (x % 101) ..
        ',"e":' .. (x % 600000 + 100 + left) .. '}}'
    else
      body = bodies[p]
    end
  end
  left = left - 1
  return wrk.format("POST", "/api/event", headers(k, uas[k], ip, true), body)
end
"""


def eval_list_sources() -> dict[str, list[str]]:
    """The real shield lists from the shared evaluation corpora (read in place, never copied into
    the project), as `[lists]` sources; empty when the corpora are not next to the project."""
    from pathlib import Path

    d = Path(__file__).resolve().parents[2] / "shared" / "eval" / "lists"
    files = {
        "referrer_spam": ["referrer-spam-matomo.txt"],
        "datacenter_ips": ["datacenter-x4bnet-ipv4.txt", "datacenter-x4bnet-ipv6.txt"],
        "threat_ips": ["threat-ipsum-level3.txt"],
    }
    out = {kind: [str(d / n) for n in names if (d / n).is_file()] for kind, names in files.items()}
    return {kind: paths for kind, paths in out.items() if paths}


def lists_toml() -> str:
    """A `[lists]` table using `eval_list_sources()`, with the background refresh off."""
    sources = eval_list_sources()
    if not sources:
        return ""
    text = '[lists]\nrefresh_interval = 0\n'
    for kind, paths in sources.items():
        text += f"[lists.{kind}]\nsources = {json.dumps(paths)}\n"
    return text
