"""Small pieces every API handler uses: JSON answers, query parameters, times."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from gateway.runtime import Runtime

__all__ = ["BadRequest", "api_time", "db_time", "json", "parse_time", "query_int", "query_text", "runtime"]

_JSON = "application/json"
_NO_STORE = {"cache-control": "no-store"}


class BadRequest(Exception):
    """A request parameter is unusable: answered 400 `{"errors": {field: [message]}}`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def response(self) -> HTTPResponse:
        return json({"errors": {self.field: [self.message]}}, 400)


def json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    """A JSON answer that no cache keeps (console answers are per key and change by the second)."""
    return HTTPResponse(orjson.dumps(body), status=status, headers={**_NO_STORE, **(headers or {})},
                        content_type=_JSON)


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.ctx.runtime
    return rt


def query_text(request: Request, name: str, *, max_chars: int = 200) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_chars:
        raise BadRequest(name, f"must be at most {max_chars} characters")
    return str(value)


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(name, f"must be an integer from {lo} to {hi}") from None
    if not lo <= n <= hi:
        raise BadRequest(name, f"must be an integer from {lo} to {hi}")
    return n


def parse_time(request: Request, name: str, default: float) -> float:
    """A time parameter: ISO 8601 (a date, or a date and time; UTC unless it says otherwise) or
    Unix seconds. Unix seconds as a float."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BadRequest(name, "must be an ISO 8601 time (2026-12-04T10:00:00Z) or Unix seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not 0 <= seconds < 32503680000:  # year 3000
        raise BadRequest(name, "is out of range")
    return seconds


def db_time(seconds: float) -> str:
    """Unix seconds as the sinks' "YYYY-MM-DD HH:MM:SS" UTC text."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def api_time(text: str) -> str:
    """The sinks' "YYYY-MM-DD HH:MM:SS" UTC text as the API writes times: "YYYY-MM-DDTHH:MM:SSZ"."""
    return text.replace(" ", "T") + "Z" if text and not text.endswith("Z") else text
