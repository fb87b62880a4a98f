"""The workflow file format (version 1), as written in ``*.toml`` and ``*.json`` files.

Each model mirrors one table of the file. Keys that are Python keywords (``on``,
``if``, ``with``) are aliases. Cross-field and cross-file rules (needs exist, no cycles,
templates refer to known names) live in ``weir.workflows.validation``; these models
only say what a well-formed file looks like.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from weir.schemas.common import (
    NAME_PATTERN,
    PARAM_NAME_PATTERN,
    STEP_ID_PATTERN,
    WEBHOOK_PATH_PATTERN,
    Defaults,
    Duration,
    RetryPolicy,
    StrictModel,
)

ParamType = Literal["string", "number", "integer", "boolean", "object", "array"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Param(StrictModel):
    """A typed input of the workflow, available in templates as ``params.<name>``."""

    type: ParamType = Field("string", description="string | number | integer | boolean | object | array.")
    required: bool = Field(False, description="A run without this param is refused (422). A default makes it optional.")
    default: Any = Field(None, description="Value used when the param is not given.")
    description: str | None = Field(None, description="Shown in the UI's run form and in `weir connectors`.")
    enum: list[Any] | None = Field(None, description="The only values allowed.")


class Concurrency(StrictModel):
    """How many runs of this workflow may be active at once."""

    limit: int = Field(1, ge=1, description="Runs of this workflow (per key) at once. Default 1.")
    key: str | None = Field(
        None, description="Template grouping runs, e.g. '{{ params.customer }}'; one limit per key."
    )
    policy: Literal["queue", "skip", "cancel-oldest"] = Field(
        "queue", description="At the limit: queue the new run (default), skip it, or cancel the oldest active run."
    )


class Schedule(StrictModel):
    """A time trigger: a cron expression or a fixed interval."""

    cron: str | None = Field(
        None, description="5 fields (minute hour day month weekday) or @hourly @daily @weekly @monthly @yearly."
    )
    every: Duration | None = Field(None, description="A fixed interval instead of cron, e.g. '15m'.")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in, e.g. 'Europe/Berlin'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Params of the runs this schedule starts.")
    catchup: Literal["none", "latest", "all"] = Field(
        "latest", description="Fires missed while the server was down: none, the latest one (default), or all."
    )
    max_catchup: Duration = Field(
        timedelta(hours=1), description="Only missed fires this recent are caught up. Default 1h."
    )

    @model_validator(mode="after")
    def _cron_or_every(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'every'")
        return self


class NoAuth(StrictModel):
    """Accept unauthenticated requests. Must be written explicitly."""

    type: Literal["none"] = Field(description="No authentication.")


class TokenAuth(StrictModel):
    """A shared token, compared in constant time."""

    type: Literal["token"] = Field(description="A shared token.")
    token: str = Field(description="The expected token, usually '{{ secrets.NAME }}'.")
    header: str = Field(
        "Authorization", description="Header carrying the token; with Authorization the value is 'Bearer <token>'."
    )


class HmacAuth(StrictModel):
    """An HMAC-SHA256 signature of the raw body in a header."""

    type: Literal["hmac-sha256"] = Field(description="HMAC-SHA256 signature of the body.")
    secret: str = Field(description="The signing secret, usually '{{ secrets.NAME }}'.")
    header: str = Field("X-Signature", description="Header carrying the signature.")
    prefix: str = Field("", description="Text before the signature in the header, e.g. 'sha256='.")
    encoding: Literal["hex", "base64"] = Field("hex", description="How the signature is encoded.")


class GithubAuth(StrictModel):
    """GitHub's X-Hub-Signature-256 over the raw body."""

    type: Literal["github"] = Field(description="GitHub webhook signature.")
    secret: str = Field(description="The webhook secret set in GitHub, usually '{{ secrets.NAME }}'.")


class SlackAuth(StrictModel):
    """Slack's v0 request signature, with a 5-minute timestamp window."""

    type: Literal["slack"] = Field(description="Slack request signature.")
    secret: str = Field(description="The Slack app's signing secret, usually '{{ secrets.NAME }}'.")


WebhookAuth = Annotated[NoAuth | TokenAuth | HmacAuth | GithubAuth | SlackAuth, Field(discriminator="type")]


def _post_only() -> list[HttpMethod]:
    return ["POST"]


class Webhook(StrictModel):
    """An HTTP trigger served at ``/hooks/<path>``."""

    path: str = Field(pattern=WEBHOOK_PATH_PATTERN, description="Served at /hooks/<path>; unique in the repo.")
    methods: list[HttpMethod] = Field(default_factory=_post_only, description="Accepted methods. Default POST.")
    auth: WebhookAuth = Field(
        description="How callers prove who they are: none (explicitly), token, hmac-sha256, github or slack."
    )
    filter: str | None = Field(
        None, description='Expression; when false the request is answered 202 {"ignored": true} and no run starts.'
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Params of the run, mapped from 'payload', 'headers' and 'query'."
    )
    payload_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="JSON Schema the payload must match; a mismatch is answered 422."
    )
    idempotency_key: str | None = Field(
        None, description="Template; a repeated key returns the first run and creates none."
    )
    response: Literal["async", "sync"] = Field(
        "async", description="async: answer 202 {run_id} at once; sync: wait up to `timeout` and return the outputs."
    )
    timeout: Duration = Field(timedelta(seconds=30), description="How long a sync webhook waits. Default 30s.")


class Triggers(StrictModel):
    """What starts runs of this workflow besides manual runs."""

    schedule: list[Schedule] = Field(default_factory=list, description="Cron or interval triggers.")
    webhook: list[Webhook] = Field(default_factory=list, description="HTTP triggers.")


class Cache(StrictModel):
    """Reuse the output of an earlier success with the same key."""

    key: str = Field(description="Template; steps with the same rendered key share the cached output.")
    ttl: Duration = Field(description="How long a cached output stays valid, e.g. '1h'.")


class StepBody(StrictModel):
    """An action call without control flow, as used by ``compensate``."""

    uses: str = Field(description="The action: CONNECTOR.ACTION or a built-in.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="The action's inputs.")
    connection: str | None = Field(None, description="Name of a connection from weir.toml.")
    timeout: Duration | None = Field(None, description="Per-attempt timeout.")
    retry: RetryPolicy | None = Field(None, description="Retry policy.")


class Step(StrictModel):
    """One node of the workflow's graph."""

    id: str = Field(pattern=STEP_ID_PATTERN, description="Unique in the workflow: [a-z0-9_]+.")
    name: str | None = Field(None, description="A display name for the UI and logs.")
    description: str | None = Field(None, description="What the step is for.")
    uses: str = Field(
        description="The action: CONNECTOR.ACTION or a built-in (transform, script, workflow, sleep, wait, log, fail)."
    )
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="The action's inputs; any string in it may be a template."
    )
    connection: str | None = Field(None, description="Name of a connection from weir.toml.")
    needs: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(
        default_factory=list, description="Step ids this step waits for."
    )
    if_: str | None = Field(None, alias="if", description="Expression; when false the step is skipped.")
    foreach: str | list[Any] | None = Field(
        None, description="A list, or a template giving one; the step runs once per item (`item`, `index`)."
    )
    matrix: dict[str, list[Any]] | None = Field(
        None, description="Sugar for foreach over the product of these lists; each item is a dict."
    )
    parallel: int = Field(1, ge=1, le=1000, description="With foreach/matrix: items in flight at once. Default 1.")
    retry: RetryPolicy | None = Field(None, description="Retry policy; overrides [defaults].")
    timeout: Duration | None = Field(None, description="Per-attempt timeout; overrides [defaults].")
    on_error: Literal["fail", "continue"] = Field(
        "fail", description="fail (default): the run fails; continue: the run goes on and the step is 'failed'."
    )
    fallback: Any = Field(None, description="Output used when the step failed after its retries (implies continue).")
    compensate: StepBody | None = Field(
        None, description="Undo action run, in reverse order, if the run fails after this step succeeded."
    )
    cache: Cache | None = Field(None, description="Reuse the output of an earlier success with the same key.")
    idempotent: bool | None = Field(
        None, description="May the step run again after a crash interrupted it? Default from the action."
    )

    @model_validator(mode="after")
    def _foreach_or_matrix(self) -> Step:
        if self.foreach is not None and self.matrix is not None:
            raise ValueError("a step takes 'foreach' or 'matrix', not both")
        return self


class Workflow(StrictModel):
    """A workflow file."""

    schema_url: str | None = Field(None, alias="$schema", description="JSON Schema of this file, for editors.")
    version: Literal[1] = Field(1, description="File format version. Only 1 exists.")
    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="Unique in the repo; default the file stem. [a-z0-9][a-z0-9_-]{0,62}."
    )
    description: str | None = Field(None, description="What the workflow does.")
    tags: list[str] = Field(default_factory=list, description="Free labels for filtering.")
    enabled: bool = Field(True, description="false: loaded and checked, but no trigger fires; manual runs still work.")
    params: dict[Annotated[str, Field(pattern=PARAM_NAME_PATTERN)], Param] = Field(
        default_factory=dict, description="Typed inputs, available as params.<name>."
    )
    concurrency: Concurrency | None = Field(None, description="Limit on runs active at once.")
    defaults: Defaults | None = Field(None, description="Applied to every step that does not say otherwise.")
    timeout: Duration | None = Field(None, description="Limit on the whole run; when it passes the run fails.")
    on: Triggers = Field(default_factory=Triggers, description="Schedules and webhooks that start runs.")
    steps: list[Step] = Field(min_length=1, description="The steps, run as a graph by their `needs`.")
    outputs: dict[str, Any] = Field(
        default_factory=dict,
        description="The run's outputs (templates), returned to sync webhooks, parents and the API.",
    )
    on_failure: list[Step] = Field(
        default_factory=list, description="Steps run once when the run fails; run.error is available."
    )
