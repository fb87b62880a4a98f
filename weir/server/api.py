"""The HTTP API: health, status and workflows as JSON, errors as ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from weir.schemas.common import format_duration
from weir.server.deploy import Applied, Deployer
from weir.server.follower import Follower
from weir.workflows.findings import Finding
from weir.workflows.validation import LoadedWorkflow

OPEN_PATHS = {"/api/openapi.json"}
_RESUME = re.compile(r"^/api/runs/[^/]+/steps/[^/]+/resume$")
"""A resume link carrying its signature (``run.resume_url``) needs no token: the handler checks the signature."""
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_params",
    429: "too_many_requests",
    503: "unavailable",
}


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code or ERROR_CODES.get(status, "error"), "message": message}}, status_code=status
    )


STORE_RETRY_AFTER_SECONDS = 5
"""What a request refused while the run database does not answer is told to wait (API and webhooks)."""


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """503 with Retry-After when the run database does not answer: the request changed nothing."""
    response = error(503, f"{exc}; nothing was changed, try again shortly", "unavailable")
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - Starlette only routes HTTPException here
    messages = {
        404: f"no such endpoint: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))


class TokenAuth:
    """Require ``Authorization: Bearer <token>`` on /api/* (except the OpenAPI document) when a token is set.

    The token is read from that header only (never from the query string or a cookie, where it would
    end up in logs and browser history), and a request that sends the header twice is refused.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            self.token is None
            or scope["type"] != "http"
            or not path.startswith("/api/")
            or path in OPEN_PATHS
            or (_RESUME.match(path) and "sig" in parse_qs(scope.get("query_string", b"").decode("latin-1")))
        ):
            await self.app(scope, receive, send)
            return
        sent = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(sent) > 1:  # a proxy may judge the first and weir the last: accept neither
            response = error(401, f"the Authorization header was sent {len(sent)} times; send it exactly once")
            await response(scope, receive, send)
            return
        header = sent[0] if sent else b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            reason = "missing" if not header else "invalid"
            response = error(
                401, f"{reason} API token: send 'Authorization: Bearer <token>' with the server's --api-token"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _finding(f: Finding) -> dict[str, Any]:
    loc = f.location
    return {
        "code": f.code,
        "severity": str(f.severity),
        "file": loc.file,
        "line": loc.line,
        "column": loc.column,
        "message": f.message,
    }


def _triggers(loaded: LoadedWorkflow, base_url: str, now: datetime) -> dict[str, Any]:
    from weir.workflows.cron import CronError, parse_schedule

    model = loaded.model
    schedules = []
    for schedule in model.on.schedule:
        try:
            parsed = parse_schedule(schedule.cron, schedule.every, schedule.timezone)
            upcoming = [t.isoformat() for t in parsed.next_fire_times(now, 3)] if model.enabled else []
        except CronError:
            upcoming = []
        entry: dict[str, Any] = {"timezone": schedule.timezone, "next_fire_times": upcoming}
        if schedule.cron is not None:
            entry["cron"] = schedule.cron
        elif schedule.every is not None:
            entry["every"] = format_duration(schedule.every)
        schedules.append(entry)
    webhooks = [
        {
            "path": hook.path,
            "methods": hook.methods,
            "url": f"{base_url}/hooks/{hook.path.strip('/')}",
            "auth": hook.auth.type,
            "response": hook.response,
        }
        for hook in model.on.webhook
    ]
    return {"schedules": schedules, "webhooks": webhooks}


def _workflow(loaded: LoadedWorkflow, base_url: str, now: datetime, *, full: bool = False) -> dict[str, Any]:
    model = loaded.model
    data: dict[str, Any] = {
        "name": loaded.name,
        "description": model.description,
        "tags": model.tags,
        "enabled": model.enabled,
        "file": loaded.document.path,
        "triggers": _triggers(loaded, base_url, now),
    }
    if full:
        data["params"] = {n: p.model_dump(mode="json", exclude_none=True) for n, p in model.params.items()}
        data["steps"] = [{"id": s.id, "uses": s.uses, "needs": s.needs} for s in model.steps]
        data["outputs"] = sorted(model.outputs)
    return data


class RunSummaries(Protocol):
    """Where the workflows API reads the runs it shows with a workflow (summaries, as the runs API gives them)."""

    async def recent(self, workflow: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs of ``workflow``, newest first."""
        ...

    async def last(self, workflows: list[str]) -> dict[str, dict[str, Any]]:
        """The newest run of each of ``workflows`` that has one."""
        ...


class Api:
    """Route handlers over the deployer and follower of this process."""

    def __init__(
        self,
        deployer: Deployer,
        follower: Follower,
        public_url: str,
        *,
        runs: RunSummaries | None = None,
    ) -> None:
        self.deployer = deployer
        self.follower = follower
        self.public_url = public_url.rstrip("/")
        self.runs = runs

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/api/openapi.json", self.openapi),
            Route("/api/status", self.status),
            Route("/api/workflows", self.workflows),
            Route("/api/workflows/{name}", self.workflow),
        ]

    def _active(self) -> Applied:
        if self.deployer.active is None:
            raise HTTPException(503, "no valid revision has been applied yet; see /api/status for the rejected one")
        return self.deployer.active

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.deployer.active is None:
            return error(503, "not ready: no valid revision applied yet (see /api/status)")
        return JSONResponse({"status": "ready", "revision": self.deployer.active.info.sha})

    async def status(self, request: Request) -> Response:
        active, rejected, sync = self.deployer.active, self.deployer.rejected, self.follower.state
        return JSONResponse(
            {
                "revision": None
                if active is None
                else {
                    "sha": active.info.sha,
                    "message": active.info.message,
                    "author": active.info.author,
                    "committed_at": _iso(active.info.committed_at),
                    "applied_at": _iso(active.applied_at),
                    "workflows": len(active.revision.workflows),
                    "warnings": [_finding(f) for f in active.warnings],
                },
                "rejected": None
                if rejected is None
                else {
                    "sha": rejected.info.sha,
                    "message": rejected.info.message,
                    "seen_at": _iso(rejected.seen_at),
                    "files": sorted({f.location.file for f in rejected.findings}),
                    "findings": [_finding(f) for f in rejected.findings],
                },
                "sync": {
                    "repo": self.follower.source,
                    "branch": self.follower.branch,
                    "path": self.follower.settings.path,
                    "last_sync": _iso(sync.last_sync),
                    "error": sync.last_error,
                },
            }
        )

    async def workflows(self, request: Request) -> Response:
        active, now = self._active(), datetime.now(UTC)
        items = [_workflow(w, self.public_url, now) for _, w in sorted(active.revision.workflows.items())]
        if self.runs is not None:
            last = await self.runs.last([item["name"] for item in items])
            for item in items:
                item["last_run"] = last.get(item["name"])
        return JSONResponse({"workflows": items, "revision": active.info.sha})

    async def workflow(self, request: Request) -> Response:
        active = self._active()
        name = request.path_params["name"]
        loaded = active.revision.workflows.get(name)
        if loaded is None:
            from weir.text import did_you_mean

            return error(404, f"no workflow named '{name}'{did_you_mean(name, active.revision.workflows)}")
        data = _workflow(loaded, self.public_url, datetime.now(UTC), full=True)
        data["recent_runs"] = await self.runs.recent(name, 20) if self.runs else []
        return JSONResponse(data)

    async def openapi(self, request: Request) -> Response:
        from weir.server.openapi import openapi_document

        return JSONResponse(openapi_document(api_token=self.follower.settings.api_token is not None))
