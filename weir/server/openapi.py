"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json.

The schemas describe what the handlers return (``api.py``, ``runs_api.py``, ``hooks.py`` and the
shapes of ``views.py``); ``tests/server/test_openapi.py`` checks real answers of a running server
against them, and that every route the app serves is listed here.
"""

from __future__ import annotations

from typing import Any

from weir import __version__
from weir.records import Phase
from weir.types import RunStatus, StepStatus

MAX_LIST_LIMIT = 500
"""The largest ``limit`` of ``GET /api/runs`` (the handler's ``MAX_LIMIT``)."""
MAX_QUERY_NUMBER = 10**18 - 1
"""The largest whole number a query parameter takes: 18 digits (``runs_api.whole_number``)."""
HOOK_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

JSON = "application/json"
_ANY: dict[str, Any] = {}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRS = {"type": "array", "items": _STR}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_STR_OR_NULL = {"type": ["string", "null"]}
_MS = {"type": ["number", "null"], "description": "Milliseconds from start to finish; null until finished."}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An object schema; every property is required unless ``required`` names them."""
    return {"type": "object", "required": list(properties if required is None else required), "properties": properties}


def _obj(
    required: tuple[str, ...] | None = None, optional: dict[str, Any] | None = None, **props: Any
) -> dict[str, Any]:
    """An object schema whose ``props`` are all required, plus ``optional`` ones."""
    return _object({**props, **(optional or {})}, tuple(props) if required is None else required)


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _nullable(name: str) -> dict[str, Any]:
    return {"anyOf": [_ref(name), {"type": "null"}]}


_RUN_SUMMARY = {
    "id": _STR,
    "workflow": _STR,
    "status": _ref("RunStatus"),
    "revision": {"type": "string", "description": "Sha of the revision the run executes."},
    "trigger": {"type": ["string", "null"], "description": "The trigger's type: manual, webhook, schedule, rerun, …"},
    "created_at": {"type": "string", "format": "date-time"},
    "started_at": _TIME,
    "finished_at": _TIME,
    "duration_ms": _MS,
    "error": _STR_OR_NULL,
    "parent_run_id": _STR_OR_NULL,
    "rerun_of": _STR_OR_NULL,
}
_USAGE = _obj(input_tokens=_INT, output_tokens=_INT)
_FINDING = _obj(code=_STR, severity={"enum": ["error", "warning"]}, file=_STR, line=_INT, column=_INT, message=_STR)

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        error={
            **_obj(code=_STR, message=_STR),
            "description": "``code`` is stable (not_found, invalid_params, …); ``message`` says what to do.",
        }
    ),
    "InvalidParams": _obj(
        error=_obj(
            code={"const": "invalid_params"},
            message=_STR,
            params={"type": "object", "additionalProperties": _STR, "description": "Param name → what is wrong."},
        )
    ),
    "InvalidPayload": _obj(
        error=_obj(
            ("code", "message"),
            code={"const": "invalid_payload"},
            message=_STR,
            optional={"details": {"type": "array", "items": _obj(path=_STR, message=_STR)}},
        )
    ),
    "RunStatus": {"enum": [s.value for s in RunStatus]},
    "StepStatus": {"enum": [s.value for s in StepStatus]},
    "Finding": _FINDING,
    "Health": _obj(status={"const": "ok"}),
    "Ready": _obj(status={"const": "ready"}, revision=_STR),
    "Status": _obj(
        revision={
            "anyOf": [
                _obj(
                    sha=_STR,
                    message=_STR,
                    author=_STR,
                    committed_at=_TIME,
                    applied_at=_TIME,
                    workflows=_INT,
                    warnings=_list(_ref("Finding")),
                ),
                {"type": "null"},
            ],
            "description": "The applied revision; null before the first valid one.",
        },
        rejected={
            "anyOf": [
                _obj(sha=_STR, message=_STR, seen_at=_TIME, files=_STRS, findings=_list(_ref("Finding"))),
                {"type": "null"},
            ],
            "description": "The last rejected revision and why; it stays after a later revision applies.",
        },
        sync=_obj(repo=_STR, branch=_STR_OR_NULL, path=_STR, last_sync=_TIME, error=_STR_OR_NULL),
    ),
    "Triggers": _obj(
        schedules={
            "type": "array",
            "items": _obj(
                ("timezone", "next_fire_times"),
                timezone=_STR,
                next_fire_times={"type": "array", "items": {"type": "string", "format": "date-time"}},
                optional={"cron": _STR, "every": _STR},
            ),
        },
        webhooks={
            "type": "array",
            "items": _obj(path=_STR, methods=_STRS, url=_STR, auth=_STR, response={"enum": ["async", "sync"]}),
        },
    ),
    "WorkflowSummary": _obj(
        ("name", "description", "tags", "enabled", "file", "triggers"),
        name=_STR,
        description=_STR_OR_NULL,
        tags=_STRS,
        enabled=_BOOL,
        file=_STR,
        triggers=_ref("Triggers"),
        optional={"last_run": _nullable("RunSummary")},
    ),
    "Workflow": _obj(
        name=_STR,
        description=_STR_OR_NULL,
        tags=_STRS,
        enabled=_BOOL,
        file=_STR,
        triggers=_ref("Triggers"),
        params={
            "type": "object",
            "additionalProperties": {"type": "object"},
            "description": "The workflow's [params] as written (type, default, enum, …).",
        },
        steps={"type": "array", "items": _obj(id=_STR, uses=_STR, needs=_STRS)},
        outputs={**_STRS, "description": "Names of the workflow's outputs."},
        recent_runs={"type": "array", "items": _ref("RunSummary"), "maxItems": 20},
    ),
    "RunSummary": _object(_RUN_SUMMARY),
    "RunPage": _obj(
        runs=_list(_ref("RunSummary")),
        next_cursor={**_STR_OR_NULL, "description": "Pass as ``cursor`` for the next page; null on the last."},
    ),
    "Run": _object(
        {
            **_RUN_SUMMARY,
            "trigger": {"type": "object", "description": "What started the run: type plus its details."},
            "params": {"type": "object"},
            "outputs": {"description": "The workflow's [outputs]; null until the run succeeded."},
            "wake_at": _TIME,
            "cancel_requested": _BOOL,
            "usage": _USAGE,
            "steps": _list(_ref("Step")),
        }
    ),
    "Step": _obj(
        id=_STR,
        phase={"enum": [p.value for p in Phase]},
        status=_ref("StepStatus"),
        attempts=_INT,
        started_at=_TIME,
        finished_at=_TIME,
        duration_ms=_MS,
        input=_ANY,
        output=_ANY,
        error=_STR_OR_NULL,
        error_kind=_STR_OR_NULL,
        wake_at=_TIME,
        child_run_id=_STR_OR_NULL,
        note={**_STR_OR_NULL, "description": "Why the step looks this way: cached, reused from run …, fallback."},
        usage=_USAGE,
        optional={
            "items": {
                "type": "array",
                "description": "One entry per foreach item, present on foreach steps.",
                "items": _obj(
                    index=_INT,
                    status=_ref("StepStatus"),
                    attempts=_INT,
                    duration_ms=_MS,
                    output=_ANY,
                    error=_STR_OR_NULL,
                ),
            }
        },
    ),
    "LogLine": _obj(
        id={"type": ["integer", "null"]},
        at={"type": "string", "format": "date-time"},
        level=_STR,
        step=_STR_OR_NULL,
        item={"type": ["integer", "null"]},
        message=_STR,
    ),
    "Logs": _obj(run_id=_STR, status=_ref("RunStatus"), logs=_list(_ref("LogLine"))),
    "RunAccepted": _obj(run_id=_STR),
    "CancelAccepted": _obj(run_id=_STR, status=_ref("RunStatus"), cancel_requested={"const": True}),
    "RerunAccepted": _obj(run_id={**_STR, "description": "The new run."}, rerun_of=_STR),
    "Resumed": _obj(run_id=_STR, step=_STR, status={"const": "resumed"}),
    "Synced": _obj(applied={**_BOOL, "description": "Whether a new revision was applied."}),
    "ManualRun": {
        **_obj((), params={"type": "object", "description": "The workflow's params; checked against [params]."}),
        "additionalProperties": False,
    },
    "Rerun": _object(
        {
            "from": {
                "enum": ["start", "failed"],
                "default": "start",
                "description": "failed: reuse the outputs of the steps that succeeded and run the rest.",
            }
        },
        required=(),
    ),
    "HookAccepted": {
        "anyOf": [
            _obj(run_id=_STR),
            _obj(run_id=_STR, status={"const": "running"}),
            _obj(("ignored",), ignored={"const": True}, optional={"reason": _STR}),
            _obj(skipped={"const": True}),
        ],
        "description": "Run started (a sync webhook still running after its timeout says so), ignored by the "
        "webhook's filter, or skipped by the workflow's concurrency policy.",
    },
    "HookAnswered": {
        "anyOf": [
            _obj(run_id=_STR, duplicate={"const": True}),
            _obj(run_id=_STR, status=_ref("RunStatus"), outputs=_ANY),
        ],
        "description": "A redelivery (same idempotency key) names the first run; a sync webhook answers with "
        "the finished run's status and outputs.",
    },
    "WebhookRejected": {"anyOf": [_ref("InvalidPayload"), _ref("InvalidParams")]},
    "WorkflowList": _obj(workflows=_list(_ref("WorkflowSummary")), revision=_STR),
    "GitPong": _obj(pong={"const": True}),
    "GitSyncRequested": _obj(sync={"const": "requested"}),
    "OpenApiDocument": _obj(("openapi", "info", "paths"), openapi=_STR, info={"type": "object"}, paths={}),
}

_ERRORS = {
    400: "The request cannot be used (e.g. its body is not JSON); the message says what to send.",
    401: "Missing or wrong API token (the server was started with --api-token).",
    404: "Not found.",
    413: "The body is larger than --max-body.",
    503: "Not ready: no revision is applied yet.",
}
_STARTING = "The server is starting; try again in a moment."
Errors = dict[int, str | tuple[str, str]]
"""Error statuses of an operation: a description (schema Error), or (schema, description)."""


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(
    op_id: str,
    summary: str,
    ok: dict[int, tuple[str, str]],
    errors: Errors,
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    secured: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """One operation; ``ok`` maps statuses to (schema, description)."""
    responses = {str(status): _json(_ref(name), text) for status, (name, text) in ok.items()}
    for status, entry in sorted({**({401: ""} if secured else {}), **errors}.items()):
        name, text = entry if isinstance(entry, tuple) else ("Error", entry or _ERRORS[status])
        responses[str(status)] = _json(_ref(name), text)
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if not secured:
        op["security"] = []
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STR, "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"required": False, "description": description, "content": {JSON: {"schema": schema}}}


def _paths() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}

    def add(route: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        method, path = route.split(" ")
        operation = paths.setdefault(path, {})[method.lower()] = _op(*args, **kwargs)
        return operation

    add("GET /healthz", "healthz", "Liveness", {200: ("Health", "The process answers.")}, {}, secured=False)
    add(
        "GET /readyz",
        "readyz",
        "Readiness: a revision is applied and the run database answers",
        {200: ("Ready", "Ready; the applied revision.")},
        {503: "Not ready: no valid revision applied yet, or the database does not answer."},
        secured=False,
    )
    metrics = add(
        "GET /metrics",
        "metrics",
        "Prometheus metrics",
        {},
        {401: "Missing or wrong metrics token."},
        secured=False,
        description="Runs by workflow and status, step durations, webhook requests, sync errors, queue depth, "
        "LLM tokens. Needs 'Authorization: Bearer <token>' only when the server has a metrics token.",
    )
    metrics["security"] = [{}, {"metrics": []}]
    metrics["responses"]["200"] = {
        "description": "The Prometheus text exposition format.",
        "content": {"text/plain": {"schema": _STR}},
    }
    add(
        "POST /hooks/_git",
        "gitPush",
        "Push notification: sync the followed repository now",
        {200: ("GitPong", "A GitHub ping event."), 202: ("GitSyncRequested", "A sync was requested.")},
        {
            400: "The signature header is malformed.",
            401: "X-Hub-Signature-256 is missing or does not match --git-webhook-secret.",
            404: "Push notifications are off: the server has no --git-webhook-secret.",
        },
        secured=False,
        body=_body(_ANY, "A GitHub push (or ping) event."),
        description="Signed like a GitHub webhook (X-Hub-Signature-256) with --git-webhook-secret.",
    )
    for method in HOOK_METHODS:
        _add_hook(add, method)
    document = {200: ("OpenApiDocument", "The OpenAPI 3.1 document.")}
    add("GET /api/openapi.json", "openapi", "This document", document, {}, secured=False)
    add(
        "GET /api/status",
        "status",
        "Applied revision, last rejected revision and its findings, last sync",
        {200: ("Status", "The server's state.")},
        {},
    )
    add(
        "POST /api/sync",
        "sync",
        "Fetch and apply the followed branch now",
        {200: ("Synced", "The sync finished.")},
        {503: "This process does not follow a repository, or it is starting."},
    )
    add(
        "GET /api/workflows",
        "listWorkflows",
        "Workflows of the applied revision with triggers, next fire times and their last run",
        {200: ("WorkflowList", "The workflows, by name.")},
        {503: ""},
    )
    name = _path_param("name", "The workflow's name.")
    add(
        "GET /api/workflows/{name}",
        "getWorkflow",
        "One workflow with its params, steps, outputs and recent runs",
        {200: ("Workflow", "The workflow.")},
        {404: "No workflow with this name in the applied revision.", 503: ""},
        params=[name],
    )
    add(
        "POST /api/workflows/{name}/runs",
        "startRun",
        "Start a run of the workflow",
        {202: ("RunAccepted", "The run is queued.")},
        {
            400: 'The body is not JSON or not {"params": {...}}.',
            404: "No workflow with this name.",
            409: "The workflow is at its concurrency limit (policy skip); no run started.",
            422: ("InvalidParams", "The params do not fit the workflow's [params]."),
            503: _STARTING,
        },
        params=[name],
        body=_body(_ref("ManualRun"), "The run's params; an empty body means no params."),
    )
    _add_runs(add)
    return paths


def _add_runs(add: Any) -> None:
    run_id = [_path_param("run_id", "The run's id.")]
    errors: Errors = {404: "No run with this id.", 503: _STARTING}
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 50}
    add(
        "GET /api/runs",
        "listRuns",
        "Runs, newest first, a page at a time",
        {200: ("RunPage", "One page of runs.")},
        {400: "status is not a run status, or limit is out of range.", 503: _STARTING},
        params=[
            _query("workflow", _STR, "Only runs of this workflow."),
            _query(
                "status",
                {"anyOf": [_ref("RunStatus"), {"const": ""}]},
                "Only runs with this status; empty means any status.",
            ),
            _query("limit", limit, "Runs per page."),
            _query("cursor", _STR, "The next_cursor of the previous page."),
        ],
    )
    add(
        "GET /api/runs/{run_id}",
        "getRun",
        "A run: status, params, trigger, revision, steps, outputs, token usage",
        {200: ("Run", "The run.")},
        errors,
        params=run_id,
    )
    logs = add(
        "GET /api/runs/{run_id}/logs",
        "getRunLogs",
        "The run's log lines (follow=1: server-sent events until the run finishes)",
        {200: ("Logs", "Up to 5000 log lines after ``after``.")},
        {**errors, 400: "after is not a whole number."},
        params=[
            *run_id,
            _query("follow", _STR, "Anything but empty, 0 or false streams text/event-stream."),
            _query(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_NUMBER, "default": 0},
                "Only lines with a larger id.",
            ),
        ],
    )
    logs["responses"]["200"]["content"]["text/event-stream"] = {"schema": _LOG_EVENT}
    add(
        "POST /api/runs/{run_id}/cancel",
        "cancelRun",
        "Cancel a queued, running or waiting run",
        {202: ("CancelAccepted", "Cancellation requested; status is the run's status now.")},
        {**errors, 409: "The run has already finished."},
        params=run_id,
    )
    add(
        "POST /api/runs/{run_id}/rerun",
        "rerunRun",
        "Run a finished run again, as a new run with rerun_of set",
        {202: ("RerunAccepted", "The new run is queued.")},
        {
            **errors,
            400: 'The body is not JSON, or "from" is not "start" or "failed".',
            409: "The run has not finished, or its revision or workflow cannot be run any more.",
        },
        params=run_id,
        body=_body(_ref("Rerun"), 'Empty means {"from": "start"}.'),
    )
    resume = add(
        "POST /api/runs/{run_id}/steps/{step_id}/resume",
        "resumeStep",
        "Resume a waiting `wait` step; the JSON body becomes the step's output",
        {202: ("Resumed", "The step got its output; the run goes on.")},
        {
            **errors,
            400: "The body is not JSON.",
            401: "Missing or wrong API token, or a sig that is not valid for this run and step.",
            409: "The step is not waiting for a resume call.",
        },
        params=[
            *run_id,
            _path_param("step_id", "The waiting step's id."),
            _query("sig", _STR, "The signature of run.resume_url('step'); with it no API token is needed."),
        ],
        body=_body(_ANY, "Any JSON value; empty means null."),
        description="Either the API token or the `sig` of the signed link from `run.resume_url('step')` "
        "(send that link to whoever approves) authorizes the call.",
    )
    resume["security"] = [{"bearer": []}, {"resumeSignature": []}]


_LOG_EVENT = {
    "description": "With follow, the schema of each server-sent event (OpenAPI 3.1 reads the schema of an event "
    "stream per event): one 'log' event per line, then one 'end' event once the run has finished.",
    "oneOf": [
        _obj(
            event={"const": "log"},
            id={"type": "string", "pattern": "^[0-9]+$", "description": "The line's id (use it as after=)."},
            data={"type": "string", "contentMediaType": JSON, "contentSchema": _ref("LogLine")},
        ),
        _obj(
            event={"const": "end"},
            data={
                "type": "string",
                "contentMediaType": JSON,
                "contentSchema": _obj(run_id=_STR, status={"anyOf": [_ref("RunStatus"), {"const": "deleted"}]}),
            },
        ),
    ],
}


def _add_hook(add: Any, method: str) -> None:
    hook = add(
        f"{method.upper()} /hooks/{{path}}",
        f"webhook{method.title()}",
        "Trigger the workflow whose [[on.webhook]] has this path",
        {
            200: ("HookAnswered", "A redelivery, or a sync webhook's finished run."),
            202: ("HookAccepted", "Started, ignored by the filter, or skipped."),
        },
        {
            400: "The body does not parse as its Content-Type says.",
            401: "The webhook's auth (token, hmac-sha256, github, slack) refused the request.",
            404: "No webhook with this path, or its workflow is disabled.",
            405: "The webhook does not accept this method (the Allow header lists those it does).",
            413: "",
            422: (
                "WebhookRejected",
                "The payload does not match the webhook's schema (invalid_payload, with details) or the params "
                "it maps to do not fit the workflow (invalid_params, with params).",
            ),
            503: "No revision applied yet, or the secret the webhook's auth names is not set.",
        },
        params=[_path_param("path", "The webhook's path; it may contain slashes.")],
        body=_body(_ANY, "JSON and form bodies are parsed; anything else is passed on as text."),
        secured=False,
        description="Each webhook has its own auth (its `auth` table), so the API token is not used here.",
    )
    hook["responses"]["405"]["headers"] = {"Allow": {"schema": _STR, "description": "The methods it accepts."}}


def openapi_document(*, api_token: bool = True) -> dict[str, Any]:
    """The document: every endpoint of ``create_app`` with its parameters, bodies, answers and errors.

    ``api_token``: the server has an API token. A server without one (loopback only) serves a document
    whose /api/* operations need no credentials, so clients and API testers see what it enforces.
    """
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "weir",
            "version": __version__,
            "description": "The HTTP API of weir serve. Errors are JSON, "
            '{"error": {"code": "...", "message": "..."}}, also for 404 on unknown paths and 405 on methods an '
            "endpoint does not accept. /api/* needs 'Authorization: Bearer <token>' when the server has an API "
            "token (--api-token or WEIR_API_TOKEN); /api/openapi.json and a resume call with a valid sig do not.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The server's --api-token."},
                "metrics": {"type": "http", "scheme": "bearer", "description": "The server's metrics token."},
                "resumeSignature": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "sig",
                    "description": "The signature in run.resume_url('step'): an HMAC of the run and step ids.",
                },
            },
            "schemas": SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
    if not api_token:
        document["security"] = []
        resume = document["paths"]["/api/runs/{run_id}/steps/{step_id}/resume"]["post"]
        resume["security"] = [{}, {"resumeSignature": []}]  # a sig, when sent, must still be valid
    return document
