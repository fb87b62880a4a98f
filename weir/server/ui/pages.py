"""The UI's pages: workflows and revisions, one workflow, runs, one run (and its live state for the page's script)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from weir.records import RunRecord
from weir.server.api import _triggers
from weir.server.ui.forms import param_fields
from weir.server.ui.render import Renderer
from weir.server.views import log_line, run_detail, run_summary
from weir.types import RunStatus
from weir.workflows.validation import LoadedWorkflow

if TYPE_CHECKING:
    from weir.server.app import Runtime

RUNS_PER_PAGE = 50
MAX_RUNS_PER_PAGE = 500
RECENT_RUNS = 20
LOG_LINES = 5000
NOTICES = {
    "cancel-requested": "Cancel requested: the run stops at its next step boundary.",
    "already-finished": "The run had already finished; nothing to cancel.",
    "not-finished": "A run can be rerun once it has finished.",
    "resumed": "The waiting step was resumed.",
    "not-waiting": "That step is not waiting for a resume call (any more).",
    "rerun-skipped": "The rerun was not started: the workflow is at its concurrency limit.",
    "rerun-unavailable": "The rerun was not started: the run's revision or workflow can no longer be loaded.",
}
"""Messages a redirect can ask the run page to show (by code, so no text from the URL is reflected)."""


class Pages:
    """GET handlers over the started runtime; every one returns HTML (or, for ``live``, JSON for the page's script)."""

    def __init__(self, runtime: Runtime, renderer: Renderer) -> None:
        self.runtime = runtime
        self.render = renderer

    # -- helpers shared with the actions ------------------------------------------------------------

    def not_found(self, request: Request, what: str, hint: str = "") -> Response:
        return self.render.page(request, "not_found.html", {"what": what, "hint": hint}, status_code=404)

    def unavailable(self, request: Request) -> Response:
        return self.render.page(request, "starting.html", {}, status_code=503)

    def workflow_model(self, name: str) -> LoadedWorkflow | None:
        active = self.runtime.deployer.active
        return None if active is None else active.revision.workflows.get(name)

    async def run_or_none(self, run_id: str) -> RunRecord | None:
        store = self.runtime.store
        return None if store is None else await store.get_run(run_id)

    # -- pages ----------------------------------------------------------------------------------------

    async def workflows(self, request: Request) -> Response:
        runtime, now = self.runtime, datetime.now(UTC)
        active, rejected = runtime.deployer.active, runtime.deployer.rejected
        rows = []
        if active is not None:
            workflows = sorted(active.revision.workflows.items())
            store = runtime.store
            last = await store.last_runs([name for name, _ in workflows]) if store is not None else {}
            for name, loaded in workflows:
                rows.append(
                    {
                        "name": name,
                        "description": loaded.model.description,
                        "enabled": loaded.model.enabled,
                        "triggers": _triggers(loaded, runtime.public_url, now),
                        "last_run": run_summary(last[name]) if name in last else None,
                    }
                )
        revision = None
        if active is not None:
            info = active.info
            revision = {
                "sha": info.sha,
                "short": info.short,
                "message": info.message.strip(),
                "author": info.author,
                "committed_at": info.committed_at,
                "applied_at": active.applied_at,
                "warnings": [str(f) for f in sorted(active.warnings, key=lambda f: f.sort_key)],
            }
        rejected_view = None
        if rejected is not None:
            rejected_view = {
                "sha": rejected.info.sha,
                "short": rejected.info.short,
                "message": rejected.info.message.strip(),
                "seen_at": rejected.seen_at,
                "newest": active is None or rejected.seen_at >= active.applied_at,
                "findings": [str(f) for f in sorted(rejected.findings, key=lambda f: f.sort_key)],
            }
        follower = runtime.follower
        sync: dict[str, Any] = {"source": "stored revisions", "last_sync": None, "error": None}
        if follower is not None:
            state = follower.state
            sync = {"source": follower.source, "last_sync": state.last_sync, "error": state.last_error}
        context = {"workflows": rows, "revision": revision, "rejected": rejected_view, "sync": sync}
        return self.render.page(request, "workflows.html", context)

    async def workflow(self, request: Request) -> Response:
        name = request.path_params["name"]
        loaded = self.workflow_model(name)
        if loaded is None:
            return self.not_found(request, f"workflow '{name}'", "It is not in the applied revision.")
        return await self.workflow_page(request, loaded)

    async def workflow_page(
        self,
        request: Request,
        loaded: LoadedWorkflow,
        *,
        submitted: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        problem: str | None = None,
        status_code: int = 200,
    ) -> Response:
        model = loaded.model
        recent = []
        if self.runtime.store is not None:
            page = await self.runtime.store.list_runs(workflow=loaded.name, limit=RECENT_RUNS)
            recent = [run_summary(r) for r in page.runs]
        context = {
            "name": loaded.name,
            "model": model,
            "file": loaded.document.path,
            "triggers": _triggers(loaded, self.runtime.public_url, datetime.now(UTC)),
            "fields": param_fields(model.params, submitted, errors),
            "problem": problem,
            "recent": recent,
        }
        return self.render.page(request, "workflow.html", context, status_code=status_code)

    async def runs(self, request: Request) -> Response:
        store = self.runtime.store
        if store is None:
            return self.unavailable(request)
        query = request.query_params
        workflow = query.get("workflow") or None
        status = query.get("status") or None
        problems = []
        if status is not None and status not in {s.value for s in RunStatus}:
            problems.append(f"'{status}' is not a run status; showing every status.")
            status = None
        raw_limit = query.get("limit", str(RUNS_PER_PAGE))
        limit = int(raw_limit) if raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_RUNS_PER_PAGE else RUNS_PER_PAGE
        cursor = query.get("cursor") or None
        page = await store.list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor)
        active = self.runtime.deployer.active
        names = sorted(active.revision.workflows) if active else []
        if workflow and workflow not in names:
            names.append(workflow)
        filters = {k: v for k, v in {"workflow": workflow, "status": status}.items() if v}
        if limit != RUNS_PER_PAGE:
            filters["limit"] = str(limit)
        context = {
            "runs": [run_summary(r) for r in page.runs],
            "next_cursor": page.next_cursor,
            "cursor": cursor,
            "filters": filters,
            "workflow": workflow or "",
            "status": status or "",
            "workflow_names": names,
            "statuses": [s.value for s in RunStatus],
            "problems": problems,
        }
        return self.render.page(request, "runs.html", context)

    async def run(self, request: Request) -> Response:
        return await self.run_page(request, request.path_params["run_id"])

    async def run_page(
        self,
        request: Request,
        run_id: str,
        *,
        resume_errors: dict[str, str] | None = None,
        resume_values: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        store = self.runtime.store
        if store is None:
            return self.unavailable(request)
        run = await store.get_run(run_id)
        if run is None:
            return self.not_found(request, f"run '{run_id}'", "It may have been pruned (--keep-runs) or never existed.")
        records = await store.get_steps(run.id)
        detail = run_detail(run, records)
        logs = [log_line(r) for r in await store.get_logs(run.id, after=0, limit=LOG_LINES)]
        uses = self._step_uses(run)
        for step in detail["steps"]:
            step["uses"] = uses.get(step["id"])
            step["resumable"] = (
                step["status"] == "waiting"
                and step["phase"] == "main"
                and uses.get(step["id"])
                in (
                    "wait",
                    None,
                )
            )
        _add_bars(detail)
        notice = NOTICES.get(request.query_params.get("notice", ""))
        context = {
            "run": detail,
            "finished": run.finished,
            "cancellable": not run.finished,
            "children": [s for s in detail["steps"] if s["child_run_id"]],
            "logs": logs,
            "last_log": logs[-1]["id"] if logs else 0,
            "logs_cut": len(logs) >= LOG_LINES,
            "state": _state(detail),
            "notice": notice,
            "resume_errors": resume_errors or {},
            "resume_values": resume_values or {},
        }
        return self.render.page(request, "run.html", context, status_code=status_code)

    async def live(self, request: Request) -> Response:
        """For the run page's script: the status, log lines after ``?after=``, and a digest of the step states."""
        store = self.runtime.store
        if store is None:
            return JSONResponse({"error": "starting"}, status_code=503)
        run = await store.get_run(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        after = request.query_params.get("after", "0")
        lines = await store.get_logs(run.id, after=int(after) if after.isdigit() else 0, limit=1000)
        detail = run_detail(run, await store.get_steps(run.id))
        return JSONResponse(
            {
                "status": str(run.status),
                "finished": run.finished,
                "logs": [log_line(r) for r in lines],
                "state": _state(detail),
            },
            headers={"Cache-Control": "no-store"},
        )

    # -- helpers --------------------------------------------------------------------------------------

    def _step_uses(self, run: RunRecord) -> dict[str, str]:
        """Step id -> ``uses`` in the revision the run started on (empty when that revision is not loaded)."""
        engine = self.runtime.engine
        deployment = engine.deployments.get(run.revision) if engine else None
        loaded = deployment.revision.workflows.get(run.workflow) if deployment else None
        return {step.id: step.uses for step in loaded.model.steps} if loaded else {}


def _add_bars(detail: dict[str, Any]) -> None:
    """Each step's place on the run's time line: ``bar = (x, width)`` out of 1000, or None before it started."""

    def moment(value: str | None) -> float | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None

    now = datetime.now(UTC).timestamp()
    begin = moment(detail["started_at"]) or moment(detail["created_at"]) or now
    end = moment(detail["finished_at"]) or now
    for step in detail["steps"]:
        started = moment(step["started_at"])
        step["bar"] = None
        if started is None or end <= begin:
            continue
        finished = moment(step["finished_at"]) or end
        x = max(0.0, min(1000.0, (started - begin) / (end - begin) * 1000))
        width = max(4.0, min(1000.0 - x, (finished - started) / (end - begin) * 1000))
        step["bar"] = (round(x, 1), round(width, 1))


def _state(detail: dict[str, Any]) -> str:
    """A digest of what the run page shows about steps: it changes when any step's status or attempts change."""
    shape = [detail["status"], detail["outputs"] is not None]
    for step in detail["steps"]:
        items = step.get("items", [])
        shape.append([step["phase"], step["id"], step["status"], step["attempts"], [i["status"] for i in items]])
    return hashlib.sha256(json.dumps(shape, default=str).encode()).hexdigest()[:16]
