"""The references for `make bench`: a bare Sanic app that parses the JSON body and answers 202.

`POST /api/event` takes the tracker's bodies and `POST /api/v1/events` the server API's
`{"events": [...]}` batches (bench/bench_server_api.py): each answers how many events it read.

Same Sanic, same worker count, same request mix as the gateway: the ratio of the two req/s
figures is the cost of everything the gateway does on top of HTTP and JSON.

With `parse` as third argument the app runs the gateway's own body parser (validation, aliases,
URL fields) instead of a plain `orjson.loads`, and nothing else: the ratio of that to the bare
app is what parsing alone costs, the floor under any full pipeline.

With `floor` it does, on top of the bare app, only what no durable gateway can skip: it reads
every request header the gateway judges a client by, and appends one record per request to a
file with one `write(2)` before it answers (the spool's unit of work). Its ratio to the bare
app is the most any gateway of this design could reach on this machine.
"""

from __future__ import annotations

import sys

import orjson
from multidict import istr
from sanic import Request, Sanic
from sanic.response import HTTPResponse

_ONE = orjson.dumps({"accepted": 1})


def create_app(mode: str = "") -> Sanic:
    app = Sanic("bare_reference")
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    parse = mode == "parse"
    if parse:
        from gateway.ingest.body import parse_body
    if mode == "floor":
        import os
        import tempfile

        from gateway.ingest.clients import HEADERS

        keys = tuple(istr(h) for h in HEADERS)
        fd, spool = tempfile.mkstemp(prefix="bench-floor-")
        os.unlink(spool)  # written to, never read

    @app.post("/api/event")
    async def event(request: Request) -> HTTPResponse:
        if mode == "floor":
            body = orjson.loads(request.body)
            get = request.headers.get
            values = tuple(map(get, keys))
            record = (body.get("n"), body.get("u"), body.get("d"), body.get("r"), values[0], values[4])
            os.write(fd, orjson.dumps(record) + b"\n")
            return HTTPResponse(_ONE, status=202, content_type="application/json",
                                headers={"access-control-allow-origin": "*"})
        if parse:
            result = parse_body(request.body)
            n = sum(len(item.events) for item in result.items)
        else:
            body = orjson.loads(request.body)
            n = len(body) if isinstance(body, list) else 1
        return HTTPResponse(orjson.dumps({"accepted": n}), status=202, content_type="application/json",
                            headers={"access-control-allow-origin": "*"})

    @app.post("/api/v1/events")
    async def events(request: Request) -> HTTPResponse:
        body = orjson.loads(request.body)
        n = len(body["events"]) if isinstance(body, dict) and isinstance(body.get("events"), list) else 0
        return HTTPResponse(orjson.dumps({"accepted": n}), status=202, content_type="application/json")

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return HTTPResponse(b'{"status":"ok"}', content_type="application/json")

    return app


if __name__ == "__main__":
    from functools import partial

    from sanic.worker.loader import AppLoader

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    loader = AppLoader(factory=partial(create_app, sys.argv[3] if len(sys.argv) > 3 else ""))
    app = loader.load()
    app.prepare(host="127.0.0.1", port=port, workers=workers, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)
