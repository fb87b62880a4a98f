"""The UI's form posts: start a run, cancel, rerun, resume a waiting step. Each calls the engine and redirects (303).

A form that cannot be used comes back as the page it was posted from, with the problem next to the
field; a run that cannot be acted on (finished, not waiting) redirects back with a notice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from weir.errors import ParamsInvalid, WeirError, WorkflowNotFound
from weir.server.ui.forms import parse_params
from weir.server.ui.pages import Pages

if TYPE_CHECKING:
    from weir.server.app import Runtime

UI_TRIGGER = {"type": "manual", "by": "ui"}


def see_other(path: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(path + (f"?notice={notice}" if notice else ""), status_code=303)


def run_path(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


class Actions:
    """POST handlers; ``form`` is the request's parsed form (the CSRF check has already read it)."""

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.runtime = runtime
        self.pages = pages

    async def start(self, request: Request, form: dict[str, str]) -> Response:
        engine = self.runtime.engine
        if engine is None:
            return self.pages.unavailable(request)
        name = request.path_params["name"]
        loaded = self.pages.workflow_model(name)
        if loaded is None:
            return self.pages.not_found(request, f"workflow '{name}'", "It is not in the applied revision.")
        params, errors = parse_params(loaded.model.params, form)
        if not errors:
            try:
                submitted = await engine.submit(name, params, trigger=dict(UI_TRIGGER))
            except WorkflowNotFound:
                return self.pages.not_found(request, f"workflow '{name}'", "It is not in the applied revision.")
            except ParamsInvalid as exc:
                errors = exc.problems
            else:
                if submitted.run is None:
                    problem = f"Workflow '{name}' is at its concurrency limit (policy skip); no run was started."
                    return await self.pages.workflow_page(
                        request, loaded, submitted=form, problem=problem, status_code=409
                    )
                return see_other(run_path(submitted.run.id))
        problem = "The run was not started: fix the fields marked below."
        return await self.pages.workflow_page(
            request, loaded, submitted=form, errors=errors, problem=problem, status_code=422
        )

    async def cancel(self, request: Request, form: dict[str, str]) -> Response:
        engine = self.runtime.engine
        run = await self.pages.run_or_none(request.path_params["run_id"])
        if engine is None or run is None:
            return await self._missing(request)
        if run.finished:
            return see_other(run_path(run.id), "already-finished")
        await engine.cancel(run.id)
        return see_other(run_path(run.id), "cancel-requested")

    async def rerun(self, request: Request, form: dict[str, str]) -> Response:
        engine = self.runtime.engine
        run = await self.pages.run_or_none(request.path_params["run_id"])
        if engine is None or run is None:
            return await self._missing(request)
        if not run.finished:
            return see_other(run_path(run.id), "not-finished")
        try:
            new = await engine.rerun(run.id, from_failed=form.get("from") == "failed")
        except WorkflowNotFound:
            return see_other(run_path(run.id), "rerun-unavailable")
        except WeirError:
            return see_other(run_path(run.id), "rerun-skipped")
        return see_other(run_path(new.id))

    async def resume(self, request: Request, form: dict[str, str]) -> Response:
        engine = self.runtime.engine
        run = await self.pages.run_or_none(request.path_params["run_id"])
        if engine is None or run is None:
            return await self._missing(request)
        step_id = request.path_params["step_id"]
        text = form.get("body", "")
        try:
            payload = json.loads(text) if text.strip() else None
        except ValueError as exc:
            return await self.pages.run_page(
                request,
                run.id,
                resume_errors={step_id: f"The body is not valid JSON: {exc}"},
                resume_values={step_id: text},
                status_code=400,
            )
        record = await engine.resume(run.id, step_id, payload)
        return see_other(run_path(run.id), "resumed" if record is not None else "not-waiting")

    async def _missing(self, request: Request) -> Response:
        if self.runtime.engine is None:
            return self.pages.unavailable(request)
        run_id = request.path_params["run_id"]
        return self.pages.not_found(request, f"run '{run_id}'", "It may have been pruned or never existed.")
