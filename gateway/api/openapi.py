"""The OpenAPI 3.1 document of every endpoint, served at `/api/v1/openapi.json`.

Built here in code, so the enumerations (drop reasons, intervals, scopes) come from the same
constants the handlers use. tests/test_openapi.py validates it against the OpenAPI 3.1 schema
and runs Schemathesis against the live server with it: every answer must conform.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from gateway.config import ServerApiConfig
from gateway.ingest.server_events import EVENT_ID, MAX_EVENT_ID, MAX_IGNORED, MAX_UA
from gateway.store.queries import INTERVALS, TOP_FIELDS
from shields.model import DropReason

__all__ = ["DOCUMENT", "document", "openapi", "served"]

REASONS = sorted(r.value for r in DropReason)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY = {"Retry-After": {"description": "Seconds to wait before trying again.",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_ERROR = _ref("Error")
_FIELD_ERRORS = _ref("FieldErrors")

_AUTH_ANSWERS: dict[str, Any] = {
    "401": _json(_ERROR, "No key, or a malformed, unknown or revoked one.",
                 {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}),
    "403": _json(_ERROR, "The key's scope does not allow this (or a cross-site request rode the console cookie)."),
    "404": _json(_ERROR, "No such site for this key: another site's domain answers exactly as one that does not exist."),
    "429": _json(_ERROR, "Too many failed key attempts from this client.", _RETRY),
    "503": _json(_ERROR, "The keys or the site file cannot be read right now.", _RETRY),
}
_BAD = {"400": _json(_FIELD_ERRORS, "A parameter or the body is unusable; the field is named.")}

_DOMAIN = {"name": "domain", "in": "path", "required": True, "description": "The site's domain (or an alias).",
           "schema": {"type": "string", "maxLength": 253}, "example": "shop.test"}


def _q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_TIME = {"type": "string", "maxLength": 40,
         "description": "ISO 8601 (2026-12-04, 2026-12-04T10:00:00Z) or Unix seconds."}
_FROM = _q("from", "Start of the window (default: 24 h before `to`).", _TIME)
_TO = _q("to", "End of the window (default: now).", _TIME)
_LIMIT = _q("limit", "How many, newest first (50 by default).", {"type": "integer", "minimum": 1, "maximum": 200})


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], *, scope: str = "read",
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"summary": summary, "parameters": [_DOMAIN, *params], "security": [{"key": []}],
            "x-scope": scope, "responses": {"200": ok, **_BAD, **_AUTH_ANSWERS, **(extra or {})}}


_COUNT_MAP = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
              "propertyNames": {"enum": REASONS}}
_RULE = {"oneOf": [
    {"type": "string", "maxLength": 250},
    {"type": "object", "required": ["value"], "additionalProperties": False,
     "properties": {"value": {"type": "string", "maxLength": 250}, "report_only": {"type": "boolean"}}},
]}
_NAMES = {"type": "array", "items": {"type": "string", "maxLength": 80}, "maxItems": 50}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "FieldErrors": {"type": "object", "required": ["errors"], "properties": {"errors": {
        "type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
    "Event": {
        "type": "object",
        "description": "One event (docs/event-api.md): Plausible's Events API fields and aliases.",
        "allOf": [{"anyOf": [{"required": ["name"]}, {"required": ["n"]}]},
                  {"anyOf": [{"required": ["url"]}, {"required": ["u"]}]},
                  {"anyOf": [{"required": ["domain"]}, {"required": ["d"]}]}],
        "properties": {
            "name": {"type": "string"}, "n": {"type": "string"},
            "url": {"type": "string"}, "u": {"type": "string"},
            "domain": {"type": "string"}, "d": {"type": "string"},
            "referrer": {"type": ["string", "null"]}, "r": {"type": ["string", "null"]},
            "props": {"type": ["object", "string", "null"]}, "p": {"type": ["object", "string", "null"]},
            "m": {"type": ["object", "string", "null"]}, "meta": {"type": ["object", "string", "null"]},
            "hashMode": {}, "h": {}, "interactive": {}, "i": {},
            "revenue": {}, "$": {}, "v": {}, "sd": {}, "e": {},
        },
    },
    "EventAnswer": {
        "type": "object", "required": ["accepted"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "dropped": {"type": "integer", "minimum": 1},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["index", "errors"],
                "properties": {"index": {"type": "integer"}, "errors": {"type": "object"}}}},
        },
    },
    "EventErrors": {"type": "object", "required": ["errors"], "properties": {"errors": {"type": "object"}}},
    "Me": {"type": "object", "required": ["key", "site", "scope"], "properties": {
        "key": {"type": "string"}, "site": {"type": "string"}, "scope": {"enum": ["read", "manage", "ingest"]},
        "label": {"type": "string"}}},
    "Bucket": {"type": "object", "required": ["start", "accepted", "dropped", "would_drop"], "properties": {
        "start": {"type": "string", "format": "date-time"}, "accepted": {"type": "integer", "minimum": 0},
        "dropped": _COUNT_MAP, "would_drop": _COUNT_MAP}},
    "Summary": {"type": "object", "required": ["site", "from", "to", "interval", "buckets", "totals"], "properties": {
        "site": {"type": "string"}, "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"}, "interval": {"enum": list(INTERVALS)},
        "buckets": {"type": "array", "items": _ref("Bucket")},
        "totals": {"type": "object", "required": ["accepted", "dropped", "would_drop"], "properties": {
            "accepted": {"type": "integer", "minimum": 0}, "dropped": _COUNT_MAP, "would_drop": _COUNT_MAP}}}},
    "Top": {"type": "object", "required": ["site", "from", "to", *TOP_FIELDS], "properties": {
        "site": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        **{f: {"type": "array", "items": {"type": "object", "required": ["value", "records"], "properties": {
            "value": {"type": "string"}, "records": {"type": "integer", "minimum": 1}}}} for f in TOP_FIELDS}}},
    "Drop": {"type": "object", "required": ["id", "timestamp", "reason", "evidence", "detail", "name", "hostname",
                                            "pathname", "referrer_host", "country", "browser", "device"],
             "description": "One dropped event as its site's owner sees it: never an IP address or a raw User-Agent.",
             "properties": {
                 "id": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
                 "reason": {"enum": REASONS}, "evidence": {"type": "string"},
                 "detail": {"type": "string", "description": "Which rule, list or pattern; addresses blanked."},
                 "name": {"type": "string"}, "hostname": {"type": "string"}, "pathname": {"type": "string"},
                 "referrer_host": {"type": "string"}, "country": {"type": "string"}, "browser": {"type": "string"},
                 "device": {"type": "string"}}},
    "Drops": {"type": "object", "required": ["site", "drops", "next"], "properties": {
        "site": {"type": "string"}, "drops": {"type": "array", "items": _ref("Drop")},
        "next": {"type": ["string", "null"], "description": "Pass as `before` for the next page."}}},
    "StoredEvent": {"type": "object", "required": ["id", "name", "timestamp", "page", "hostname", "pathname",
                                                   "referrer", "props", "revenue"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
        "page": {"type": "string"}, "hostname": {"type": "string"}, "pathname": {"type": "string"},
        "referrer": {"type": ["string", "null"]},
        "props": {"type": "object", "additionalProperties": {"type": "string"}},
        "revenue": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["amount", "currency"], "properties": {
            "amount": {"type": "string"}, "currency": {"type": "string"}}}]}}},
    "Events": {"type": "object", "required": ["site", "events", "next"], "properties": {
        "site": {"type": "string"}, "events": {"type": "array", "items": _ref("StoredEvent")},
        "next": {"type": ["string", "null"]}}},
    "ShieldRules": {
        "type": "object", "additionalProperties": False,
        "description": "A site file's [shields] table (docs/shields.md), as JSON.",
        "properties": {
            "ip_blocklist": {"type": "array", "items": _RULE}, "ip_allowlist": {"type": "array", "items": _RULE},
            "country_blocklist": {"type": "array", "items": _RULE}, "page_blocklist": {"type": "array", "items": _RULE},
            "hostname_allowlist": {"type": "array", "items": _RULE},
            "disabled": _NAMES, "report_only": _NAMES, "ignore": _NAMES}},
    "Shields": {"type": "object", "required": ["site", "file", "version", "shields"], "properties": {
        "site": {"type": "string"}, "file": {"type": "string"}, "version": {"type": "string"},
        "shields": _ref("ShieldRules")}},
    "ShieldsPut": {"type": "object", "required": ["shields"], "properties": {
        "shields": _ref("ShieldRules"),
        "version": {"type": "string", "description": "The version read; a different current version answers 409."}}},
    "History": {"type": "object", "required": ["site", "versions"], "properties": {
        "site": {"type": "string"}, "versions": {"type": "array", "maxItems": 20, "items": {
            "type": "object", "required": ["version", "saved_at", "saved_by", "shields"], "properties": {
                "version": {"type": "string"}, "saved_at": {"type": "string", "format": "date-time"},
                "saved_by": {"type": "string"}, "shields": _ref("ShieldRules")}}}}},
    "DryRunRequest": {"type": "object", "required": ["shields"], "properties": {
        "shields": _ref("ShieldRules"), "days": {"type": "integer", "minimum": 1,
                                                 "description": "Look-back, at most [retention] drops_days."}}},
    "Tally": {"type": "object", "required": ["total", "by_reason", "samples"], "properties": {
        "total": {"type": "integer", "minimum": 0}, "by_reason": _COUNT_MAP,
        "samples": {"type": "array", "maxItems": 5, "items": {"type": "object"}}}},
    "DryRun": {"type": "object", "required": ["site", "days", "from", "to", "events_examined", "drop_records_examined",
                                              "would_drop", "would_let_back_in", "rules", "switches", "notes"],
               "properties": {
                   "site": {"type": "string"}, "days": {"type": "integer"}, "from": {"type": "string"},
                   "to": {"type": "string"}, "events_examined": {"type": "integer", "minimum": 0},
                   "drop_records_examined": {"type": "integer", "minimum": 0},
                   "would_drop": _ref("Tally"), "would_let_back_in": _ref("Tally"),
                   "rules": {"type": "array", "items": {"type": "object", "required": ["list", "rule", "change",
                                                                                       "replayable"], "properties": {
                       "list": {"type": "string"}, "rule": {"type": "string"}, "change": {"enum": ["added", "removed"]},
                       "replayable": {"type": "boolean"}, "would_drop": {"type": "integer"},
                       "would_let_back_in": {"type": "integer"}, "samples": {"type": "array"}}}},
                   "switches": {"type": "array", "items": {"type": "object", "required": ["reason", "change"]}},
                   "notes": {"type": "array", "items": {"type": "string"}}}},
}

_SERVER_FIELDS: dict[str, Any] = {
    **{n: {"type": "string", "description": "The event's name (`name` and its aliases)."}
       for n in ("name", "eventName", "event_name", "event", "type", "event_type")},
    **{n: {"type": "string", "description": "The page's URL, or a path on the key's site."}
       for n in ("url", "pageUrl", "page_url", "page")},
    "path": {"type": "string", "description": "A path on the key's site, when no URL is given."},
    **{n: {"type": ["object", "null"], "description": "Custom properties (as `props` on /api/event)."}
       for n in ("props", "properties", "metadata", "meta")},
    **{n: {"type": ["string", "null"]} for n in ("referrer", "referer", "referrerUrl")},
    **{n: {"type": ["string", "integer"], "description": "ISO 8601, or Unix milliseconds; from [server_api] "
                                                          "max_age (7 days) ago to 5 minutes ahead."}
       for n in ("timestamp", "ts", "time", "occurredAt", "occurred_at", "sentAt")},
    **{f"utm{k.title()}": {"type": "string"} for k in ("source", "medium", "campaign", "content", "term")},
    "utm": {"type": "object", "properties": {k: {"type": "string"} for k in
                                             ("source", "medium", "campaign", "content", "term")}},
    "ip": {"type": "string", "maxLength": 64, "description": "The visitor's IP address (never stored)."},
    **{n: {"type": "string", "maxLength": MAX_UA, "description": "The visitor's User-Agent (never stored)."}
       for n in ("userAgent", "user_agent", "ua")},
    **{n: {"type": ["string", "integer"], "description": "The sender's anonymous visitor id (hashed daily)."}
       for n in ("anonymousId", "anonymous_id", "visitorId", "visitor_id")},
    **{n: {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID,
           "description": "Makes a retried event stored once."}
       for n in EVENT_ID},
    **{n: {"type": "boolean", "description": "false: dropped as no_consent."}
       for n in ("consentGiven", "consent_given", "consent")},
    "revenue": {}, "interactive": {}, "hashMode": {},
}
_SERVER_ERRORS = {"type": "array", "items": {"type": "object", "required": ["index", "errors"], "properties": {
    "index": {"type": "integer", "minimum": 0}, "errors": {"type": "object", "additionalProperties": {
        "type": "array", "items": {"type": "string"}}}}}}
_LINES = {"type": "array", "items": {"type": "string"}}
SCHEMAS.update({
    "ServerEvent": {"type": "object", "description": "One server-side event (docs/server-api.md). Identity fields "
                                                     "(email, userId, traits...) are never stored: listed in "
                                                     "`ignored`.",
                    "allOf": [{"anyOf": [{"required": [n]} for n in ("name", "eventName", "type", "event_type")]},
                              {"anyOf": [{"required": [n]} for n in ("url", "pageUrl", "path")]}],
                    "properties": _SERVER_FIELDS},
    "ServerBatch": {"type": "object", "required": ["events"], "properties": {
        # maxItems: [server_api] max_events, set by `document` for the gateway's own config
        "events": {"type": "array", "minItems": 1, "items": _ref("ServerEvent")}}},
    "ServerAnswer": {"type": "object", "required": ["accepted"], "properties": {
        "accepted": {"type": "integer", "minimum": 0}, "dropped": {"type": "integer", "minimum": 1},
        "ignored": {**_LINES, "maxItems": MAX_IGNORED}, "errors": _SERVER_ERRORS, "details": _LINES}},
    "ServerErrors": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "errors": _SERVER_ERRORS, "details": _LINES, "ignored": _LINES}},
})

_SITE = "/api/v1/sites/{domain}"

PATHS: dict[str, Any] = {
    "/api/event": {
        "post": {
            "summary": "Record a page view or custom event (the tracker's endpoint; no authentication).",
            "description": "Plausible's Events API: the site is chosen by `domain`. The body is parsed as JSON "
                           "whatever the Content-Type (beacons send text/plain). A JSON array is a batch.",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event")}]}},
                "text/plain": {"schema": {"type": "string"}}}},
            "responses": {
                "202": _json(_ref("EventAnswer"), "Accepted (and how many were dropped: the reason is not told)."),
                "400": _json(_ref("EventErrors"), "The event is invalid; every problem listed by field."),
                "413": _json(_ref("EventErrors"), "The body is larger than [limits] max_body_bytes."),
                "429": _json(_ref("EventErrors"), "The site's rate limit.", _RETRY),
                "503": _json(_ref("EventErrors"), "The spool cannot take more right now.", _RETRY),
            },
        },
    },
    "/api/v1/events": {
        "post": {
            "summary": "Record server-side events in batches, with an ingest key (docs/server-api.md).",
            "description": "The key decides the site. The visitor is the forwarded `ip` and `userAgent`, or an "
                           "`anonymousId`. `Content-Encoding: gzip` is accepted.",
            "security": [{"key": []}], "x-scope": "ingest",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("ServerBatch"),
                "example": {"events": [{"eventName": "signup", "pageUrl": "https://shop.test/welcome",
                                        "ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                                        "properties": {"plan": "pro"}, "eventId": "signup-8841",
                                        "email": "never-stored@example.com"}]}}}},
            "responses": {
                "202": _json(_ref("ServerAnswer"), "Every event accepted (or dropped by the shields: `dropped`)."),
                "207": _json(_ref("ServerAnswer"), "Some events were invalid (`errors`, `details`); the valid "
                                                   "ones were kept."),
                "400": _json(_ref("ServerErrors"), "The body is unusable, or no event in it is valid."),
                "401": _json(_ERROR, "No key, a malformed, unknown or revoked one, a key of another scope than "
                                     "ingest, or a key whose site is no longer configured.",
                             _AUTH_ANSWERS["401"]["headers"]),
                "403": _json(_ERROR, "A cross-site request rode the console cookie."),
                "413": _json(_ERROR, "The body, as sent or after gzip is undone, is larger than [server_api] "
                                     "max_body_bytes, or it inflates more than max_inflation_ratio; or the batch "
                                     "has more valid events than the key's bucket holds (burst)."),
                "429": _json(_ERROR, "The key's events per minute, or too many failed key attempts.", _RETRY),
                "503": _json(_ERROR, "The keys cannot be checked, or the spool cannot take more, right now.", _RETRY),
            },
        },
    },
    "/api/v1/me": {"get": {
        "summary": "The key's id, site and scope.", "security": [{"key": []}],
        "responses": {"200": _json(_ref("Me"), "The key."), **{k: v for k, v in _AUTH_ANSWERS.items() if k != "404"}}}},
    f"{_SITE}/summary": {"get": _get(
        "Accepted, dropped and would-drop events per reason per bucket.",
        [_FROM, _TO, _q("interval", "Bucket size (hour by default).", {"enum": list(INTERVALS)})],
        _json(_ref("Summary"), "Every bucket of the window, empty ones included."))},
    f"{_SITE}/top": {"get": _get(
        "The most frequent values among the drop records: pages, referrer hosts, countries, evidence...",
        [_FROM, _TO, _q("limit", "Values per list.", {"type": "integer", "minimum": 1, "maximum": 100})],
        _json(_ref("Top"), "Top values (drop records are a sample under floods; counts are exact in summary)."))},
    f"{_SITE}/drops": {"get": _get(
        "Recent drop records, newest first.",
        [_q("reason", "Only this drop reason.", {"enum": REASONS}),
         _q("evidence", "Only this evidence label.", {"type": "string", "maxLength": 60}), _LIMIT,
         _q("before", "The `next` of an earlier answer.", {"type": "string", "maxLength": 64})],
        _json(_ref("Drops"), "Drop records."))},
    f"{_SITE}/events": {"get": _get(
        "Recent accepted events, newest first.",
        [_q("name", "Only events of this name.", {"type": "string", "maxLength": 120}), _LIMIT,
         _q("before", "The `next` of an earlier answer.", {"type": "string", "maxLength": 120})],
        _json(_ref("Events"), "Events."))},
    f"{_SITE}/shields": {
        "get": _get("The site's shield rules (its file's [shields] table) and their version.", [],
                    _json(_ref("Shields"), "The rules.")),
        "put": {**_get("Replace the site's shield rules: validated as a file edit, written atomically, kept in "
                       "the history, reloaded by every worker within a second.", [],
                       _json(_ref("Shields"), "Saved."), scope="manage",
                       extra={"409": _json(_ERROR, "The rules changed since `version`."),
                              "413": _json(_ref("EventErrors"), "The body is too large.")}),
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ShieldsPut")}}}},
    },
    f"{_SITE}/shields/history": {"get": _get("The last 20 saved versions, newest first; PUT one to roll back.", [],
                                             _json(_ref("History"), "Versions."))},
    f"{_SITE}/shields/dry-run": {"post": {
        **_get("What proposed rules would have dropped or let back in over the last days, with samples.", [],
               _json(_ref("DryRun"), "The replay; `notes` says what could not be replayed (IP rules).")),
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DryRunRequest")}}}}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Edge tracker gateway", "version": "1",
             "description": "The event endpoint, the server-side events API and the site console API "
                            "(docs/event-api.md, docs/server-api.md, docs/console.md).",
             "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"}},
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"key": {"type": "http", "scheme": "bearer",
                                    "description": "A per-site key from `edge-gateway keys create` (read, manage "
                                                   "or ingest), or the web console's cookie holding one per "
                                                   "site (a request about a site uses that site's key)."}},
    },
}

def document(api: ServerApiConfig | None = None) -> dict[str, Any]:
    """The document for a gateway whose `[server_api]` is `api` (the defaults when None): the
    limits a client can check before sending are the configured ones."""
    api = api or ServerApiConfig()
    doc = copy.deepcopy(DOCUMENT)
    doc["components"]["schemas"]["ServerBatch"]["properties"]["events"]["maxItems"] = api.max_events
    return doc


def served(api: ServerApiConfig) -> bytes:
    """The body `GET /api/v1/openapi.json` answers with: made once, when the app is created."""
    return orjson.dumps(document(api))


async def openapi(request: Request) -> HTTPResponse:
    """`GET /api/v1/openapi.json`."""
    return HTTPResponse(request.app.ctx.openapi, content_type="application/json",
                        headers={"cache-control": "public, max-age=300", "access-control-allow-origin": "*"})
