"""The run endpoints of the API: list, show, logs, manual runs, cancel, rerun, resume, sync."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from weir.errors import ParamsInvalid, WeirError, WorkflowNotFound
from weir.records import RunRecord
from weir.server.api import error
from weir.server.hookauth import HookRejected, parse_body
from weir.server.views import log_line, run_detail, run_summary
from weir.types import RunStatus
from weir.workflows.engine import Engine

MAX_LIMIT = 500
FOLLOW_POLL_SECONDS = 0.25


async def json_body(request: Request, *, default: Any = None) -> Any:
    """The request's JSON body (``default`` when empty); a body that is not JSON is a 400.

    Parsed as strictly as a webhook's body (duplicate keys, NaN, unpaired surrogates, nesting
    deeper than 64): what is stored must be JSON that can be shown again.
    """
    raw = await request.body()
    if not raw.strip():
        return default
    try:
        return parse_body("application/json", raw)
    except HookRejected as exc:
        raise BadRequest(f"{exc.message}; send a JSON object") from None


_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")
"""A whole number in a query parameter: at most 18 digits, well inside a database's 64-bit integers."""


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative integer of at most 18 ASCII digits, else None.

    ``str.isdigit`` is not enough: it accepts digits such as '²' that ``int`` refuses, and any length.
    """
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


class BadRequest(WeirError):
    """A request the API cannot use: answered 400 with the message."""


class RunsApi:
    """Handlers over the engine; ``sync`` is the follower's sync-now (None when it is not available)."""

    def __init__(self, engine: Engine, sync: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.engine = engine
        self.sync_now = sync

    ROUTES = (
        ("/api/runs", "list_runs", "GET"),
        ("/api/runs/{run_id}", "show", "GET"),
        ("/api/runs/{run_id}/logs", "logs", "GET"),
        ("/api/runs/{run_id}/cancel", "cancel", "POST"),
        ("/api/runs/{run_id}/rerun", "rerun", "POST"),
        ("/api/runs/{run_id}/steps/{step_id}/resume", "resume", "POST"),
        ("/api/workflows/{name}/runs", "start", "POST"),
        ("/api/sync", "sync", "POST"),
    )
    """Path, handler name and method of each endpoint."""

    def routes(self) -> list[Route]:
        return [Route(path, getattr(self, name), methods=[method]) for path, name, method in self.ROUTES]

    async def _run(self, request: Request) -> RunRecord:
        run_id = request.path_params["run_id"]
        run = await self.engine.store.get_run(run_id)
        if run is None:
            raise NotFound(f"no run with id '{run_id}'")
        return run

    async def list_runs(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in {s.value for s in RunStatus}:
            choices = ", ".join(s.value for s in RunStatus)
            return error(400, f"status '{status}' is not a run status; use one of {choices}")
        raw_limit = query.get("limit", "50")
        limit = whole_number(raw_limit)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            return error(400, f"limit '{raw_limit}' must be a whole number from 1 to {MAX_LIMIT}")
        page = await self.engine.store.list_runs(
            workflow=query.get("workflow") or None,
            status=status,
            limit=limit,
            cursor=query.get("cursor") or None,
        )
        return JSONResponse({"runs": [run_summary(r) for r in page.runs], "next_cursor": page.next_cursor})

    async def show(self, request: Request) -> Response:
        run = await self._run(request)
        records = await self.engine.store.get_steps(run.id)
        return JSONResponse(run_detail(run, records))

    async def logs(self, request: Request) -> Response:
        run = await self._run(request)
        raw_after = request.query_params.get("after", "0")
        after = whole_number(raw_after)
        if after is None:
            return error(400, f"after '{raw_after}' must be a log line id (a whole number)")
        if request.query_params.get("follow") not in (None, "", "0", "false"):
            return StreamingResponse(
                self._follow(run.id, after),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        lines = await self.engine.store.get_logs(run.id, after=after, limit=5000)
        return JSONResponse({"run_id": run.id, "status": str(run.status), "logs": [log_line(r) for r in lines]})

    async def _follow(self, run_id: str, after: int) -> AsyncIterator[str]:
        """Server-sent events: one ``log`` event per line until the run finished, then one ``end`` event."""
        store = self.engine.store
        while True:
            run = await store.get_run(run_id)
            lines = await store.get_logs(run_id, after=after, limit=1000)
            for record in lines:
                after = record.id or after
                yield f"event: log\nid: {record.id}\ndata: {json.dumps(log_line(record))}\n\n"
            if run is None or (run.finished and not lines):
                status = str(run.status) if run else "deleted"
                yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'status': status})}\n\n"
                return
            if not lines:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)

    async def start(self, request: Request) -> Response:
        body = await json_body(request, default={})
        if not isinstance(body, dict) or not isinstance(body.get("params", {}), dict):
            return error(400, 'send {"params": {...}}: an object whose "params" is an object')
        unknown = set(body) - {"params"}
        if unknown:
            return error(400, f'unknown field(s) {", ".join(sorted(unknown))}; send {{"params": {{...}}}}')
        name = request.path_params["name"]
        try:
            submitted = await self.engine.submit(name, body.get("params", {}), trigger={"type": "manual", "by": "api"})
        except WorkflowNotFound as exc:
            return error(404, str(exc))
        except ParamsInvalid as exc:
            return JSONResponse(
                {"error": {"code": "invalid_params", "message": str(exc), "params": exc.problems}}, status_code=422
            )
        if submitted.run is None:
            return error(409, f"workflow '{name}' is at its concurrency limit (policy skip); no run started")
        return JSONResponse({"run_id": submitted.run.id}, status_code=202)

    async def cancel(self, request: Request) -> Response:
        run = await self._run(request)
        if run.finished:
            return error(
                409, f"run {run.id} already {run.status}; only queued, running and waiting runs can be cancelled"
            )
        cancelled = await self.engine.cancel(run.id)
        status = str(cancelled.status) if cancelled else str(run.status)
        return JSONResponse({"run_id": run.id, "status": status, "cancel_requested": True}, status_code=202)

    async def rerun(self, request: Request) -> Response:
        run = await self._run(request)
        body = await json_body(request, default={})
        start = body.get("from", "start") if isinstance(body, dict) else None
        if start not in ("start", "failed"):
            return error(400, 'send {"from": "failed"} to reuse the steps that succeeded, or {"from": "start"}')
        if not run.finished:
            return error(409, f"run {run.id} is still {run.status}; rerun it once it has finished")
        try:
            new = await self.engine.rerun(run.id, from_failed=start == "failed")
        except WorkflowNotFound as exc:
            return error(409, str(exc))
        except WeirError as exc:
            return error(409, str(exc))
        return JSONResponse({"run_id": new.id, "rerun_of": run.id}, status_code=202)

    async def resume(self, request: Request) -> Response:
        run = await self._run(request)
        step_id = request.path_params["step_id"]
        signature = request.query_params.get("sig")
        # A signature is hex: anything else is wrong (and hmac.compare_digest refuses non-ASCII text).
        if signature is not None and not (
            signature.isascii() and self.engine.verify_resume(run.id, step_id, signature)
        ):
            return error(
                401,
                "the resume link's signature is not valid for this run and step; "
                "use the run.resume_url handed to the step",
            )
        payload = await json_body(request, default=None)
        record = await self.engine.resume(run.id, step_id, payload)
        if record is None:
            return error(409, f"step '{step_id}' of run {run.id} is not waiting for a resume call")
        return JSONResponse({"run_id": run.id, "step": step_id, "status": "resumed"}, status_code=202)

    async def sync(self, request: Request) -> Response:
        if self.sync_now is None:
            return error(503, "this process does not follow a repository")
        applied = await self.sync_now()
        return JSONResponse({"applied": applied}, status_code=200)


class NotFound(WeirError):
    """An unknown run: answered 404."""


async def api_errors(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotFound):
        return error(404, str(exc))
    return error(400, str(exc))
