"""A fake PagerDuty Events API v2: ``POST /v2/enqueue`` with PagerDuty's answers.

202 ``{"status": "success", "message": "Event processed", "dedup_key"}`` for a
valid event; 400 ``{"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}`` for a malformed one (routing key length, unknown
event_action, missing payload fields, bad severity, over-long summary or
dedup_key); 429 and 5xx when told to. Alerts are kept by dedup key, so a repeated
trigger updates one alert, as PagerDuty does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"
SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Received:
    """One request as the fake saw it."""

    headers: dict[str, str]
    json: Any


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    body: Any
    delay: float


@dataclass
class FakePagerDuty:
    """State of the fake; ``app`` serves it. Call ``reset()`` between tests."""

    requests: list[Received] = field(default_factory=list)
    alerts: dict[str, str] = field(default_factory=dict)
    """Alert status (triggered, acknowledged, resolved) by dedup key."""
    _failures: list[_Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/v2/enqueue", self._enqueue, methods=["POST"])])

    def reset(self) -> None:
        self.requests.clear()
        self.alerts.clear()
        self._failures.clear()

    def fail_next(
        self, count: int, status: int, *, headers: dict[str, str] | None = None, body: Any = None, delay: float = 0
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (after ``delay`` seconds) instead of serving them."""
        self._failures.extend(_Failure(status, headers or {}, body, delay) for _ in range(count))

    async def _enqueue(self, request: Request) -> Response:
        raw = await request.body()
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        self.requests.append(Received(dict(request.headers), event))
        if self._failures:
            failure = self._failures.pop(0)
            if failure.delay:
                await asyncio.sleep(failure.delay)
            body = (
                failure.body
                if failure.body is not None
                else {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.  Please retry later.",
                }
            )
            return JSONResponse(body, failure.status, headers=failure.headers)
        if not request.headers.get("content-type", "").startswith("application/json") or not isinstance(event, dict):
            return _invalid(["Malformed JSON: the body must be a JSON object"])
        errors = _problems(event)
        if errors:
            return _invalid(errors)
        action = event["event_action"]
        key = event.get("dedup_key") or uuid.uuid4().hex
        self.alerts[key] = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[action]
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": key}, 202)


def _problems(event: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str) or len(routing_key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif routing_key != ROUTING_KEY:
        errors.append("'routing_key' does not match an integration")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is missing and is required for acknowledge and resolve events")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            for name in ("summary", "source", "severity"):
                if not payload.get(name):
                    errors.append(f"'payload.{name}' is missing or blank")
            if payload.get("severity") and payload["severity"] not in SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning or info)")
            if len(str(payload.get("summary", ""))) > 1024:
                errors.append("'payload.summary' is too long (max 1024 characters)")
            unknown = set(payload) - {
                "summary",
                "source",
                "severity",
                "timestamp",
                "component",
                "group",
                "class",
                "custom_details",
            }
            errors.extend(f"'payload.{name}' is not a known field" for name in sorted(unknown))
    unknown = set(event) - {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "links",
        "images",
        "client",
        "client_url",
    }
    errors.extend(f"'{name}' is not a known field" for name in sorted(unknown))
    return errors


def _invalid(errors: list[str]) -> JSONResponse:
    return JSONResponse({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)
