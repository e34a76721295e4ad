"""The Sanic application: routes to the handlers of gateway/handlers.py, and the worker's
`Runtime`, built when the worker starts and closed, after every buffered event is flushed,
when it stops.

`create_app(config_path)` is the factory every worker process calls.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sanic import Request, Sanic
from sanic.exceptions import PayloadTooLarge, SanicException
from sanic.response import HTTPResponse

from gateway import handlers
from gateway.api import console, events, openapi, web
from gateway.config import load_gateway_config
from gateway.lifecycle import main_process_gone
from gateway.runtime import Runtime, tune_collector

__all__ = ["create_app"]

log = logging.getLogger("gateway")


async def _start(app: Sanic[Any, Any]) -> None:
    runtime = Runtime(app.ctx.config)
    app.ctx.runtime = runtime
    runtime.start()
    tune_collector()


async def _stop(app: Sanic[Any, Any]) -> None:
    if main_process_gone():
        log.warning("the gateway process is gone: worker %d stops", os.getpid())
    runtime: Runtime | None = getattr(app.ctx, "runtime", None)
    if runtime is not None:
        await runtime.close()


async def _too_large(request: Request, exc: Exception) -> HTTPResponse:
    """413 for a body over Sanic's limit, which refuses it before any handler runs: in the
    shape of the API that was asked (`{"error": ...}` on the server-side events API)."""
    if request.path.rstrip("/") == events.PATH:
        return events.too_large(request)
    return await handlers.too_large(request, exc)


def create_app(config_path: str) -> Sanic[Any, Any]:
    config = load_gateway_config(config_path)
    app: Sanic[Any, Any] = Sanic("edge_gateway")
    # The largest body any route takes: a gzip server-side batch is checked again once inflated,
    # and /api/event checks its own, smaller limit.
    app.config.REQUEST_MAX_SIZE = max(config.limits.max_body_bytes, config.server_api.max_body_bytes)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    app.config.REQUEST_TIMEOUT = 10
    app.config.KEEP_ALIVE_TIMEOUT = 30
    app.ctx.config = config
    app.ctx.openapi = openapi.served(config.server_api)
    app.register_listener(_start, "before_server_start")
    app.register_listener(_stop, "before_server_stop")

    app.add_route(handlers.event, "/api/event", methods=["POST"], name="event")
    app.add_route(handlers.preflight, "/api/event", methods=["OPTIONS"], name="preflight")
    app.add_route(handlers.health, "/health", methods=["GET"], name="health")
    app.add_route(handlers.ready, "/ready", methods=["GET"], name="ready")
    app.add_route(handlers.metrics, "/metrics", methods=["GET"], name="metrics")
    app.add_route(handlers.script, "/js/script.js", methods=["GET", "HEAD"], name="script")
    if config.tracker.alias_path is not None:
        app.add_route(handlers.script, config.tracker.alias_path, methods=["GET", "HEAD"], name="script_alias")
    site = "/api/v1/sites/<domain:str>"
    app.add_route(openapi.openapi, "/api/v1/openapi.json", methods=["GET"], name="openapi")
    app.add_route(events.ingest, events.PATH, methods=["POST"], name="server_events")
    app.add_route(console.me, "/api/v1/me", methods=["GET"], name="me")
    app.add_route(console.summary, f"{site}/summary", methods=["GET"], name="summary")
    app.add_route(console.top, f"{site}/top", methods=["GET"], name="top")
    app.add_route(console.drops, f"{site}/drops", methods=["GET"], name="drops")
    app.add_route(console.events, f"{site}/events", methods=["GET"], name="events")
    app.add_route(console.shields_get, f"{site}/shields", methods=["GET"], name="shields_get")
    app.add_route(console.shields_put, f"{site}/shields", methods=["PUT"], name="shields_put")
    app.add_route(console.shields_history, f"{site}/shields/history", methods=["GET"], name="shields_history")
    app.add_route(console.shields_dry_run, f"{site}/shields/dry-run", methods=["POST"], name="shields_dry_run")
    app.add_route(web.dashboard, "/console/", methods=["GET"], name="console")
    app.add_route(web.sign_in, "/console/sign-in", methods=["POST"], name="console_sign_in")
    app.add_route(web.sign_out, "/console/sign-out", methods=["POST"], name="console_sign_out")
    app.add_route(web.asset, "/console/static/<name:str>", methods=["GET"], name="console_asset")
    app.exception(PayloadTooLarge)(_too_large)
    app.exception(SanicException)(handlers.http_error)
    return app
