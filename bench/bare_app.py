"""The references for `make bench`: a bare Sanic app that parses the JSON body and answers 202.

Same Sanic, same worker count, same request mix as the gateway: the ratio of the two req/s
figures is the cost of everything the gateway does on top of HTTP and JSON.

With `parse` as third argument the app runs the gateway's own body parser (validation, aliases,
URL fields) instead of a plain `orjson.loads`, and nothing else: the ratio of that to the bare
app is what parsing alone costs, the floor under any full pipeline.
"""

from __future__ import annotations

import sys

import orjson
from sanic import Request, Sanic
from sanic.response import HTTPResponse


def create_app(parse: bool = False) -> Sanic:
    app = Sanic("bare_reference")
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    if parse:
        from gateway.ingest.body import parse_body

    @app.post("/api/event")
    async def event(request: Request) -> HTTPResponse:
        if parse:
            result = parse_body(request.body)
            n = sum(len(item.events) for item in result.items)
        else:
            body = orjson.loads(request.body)
            n = len(body) if isinstance(body, list) else 1
        return HTTPResponse(orjson.dumps({"accepted": n}), status=202, content_type="application/json",
                            headers={"access-control-allow-origin": "*"})

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return HTTPResponse(b'{"status":"ok"}', content_type="application/json")

    return app


if __name__ == "__main__":
    from functools import partial

    from sanic.worker.loader import AppLoader

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    loader = AppLoader(factory=partial(create_app, len(sys.argv) > 3 and sys.argv[3] == "parse"))
    app = loader.load()
    app.prepare(host="127.0.0.1", port=port, workers=workers, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)
