"""The built-in actions: transform, script, workflow, sleep, wait, log, fail.

Their inputs are declared here like a connector's, so ``weir check`` validates
``with`` for built-ins and plugins the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from weir.connectors.base import ActionInput, ActionSpec
from weir.schemas.common import Duration

SCRIPT_LANGUAGES = ("python", "bash", "node", "pwsh")


class TransformInput(ActionInput):
    output: Any = Field(description="Any value; templates inside are rendered to native values.")


class ScriptInput(ActionInput):
    lang: Literal["python", "bash", "node", "pwsh"] = Field(description="Interpreter: python, bash, node or pwsh.")
    run: str | None = Field(None, description="Inline code. Never rendered as a template.")
    file: str | None = Field(None, description="Path of a script inside the automation directory.")
    input: Any = Field(None, description="Data for the script: JSON on stdin and in the file $WEIR_INPUT.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables (rendered strings).")
    args: list[str] = Field(default_factory=list, description="Command-line arguments, passed without a shell.")

    @model_validator(mode="after")
    def _run_or_file(self) -> ScriptInput:
        if (self.run is None) == (self.file is None):
            raise ValueError("a script step takes exactly one of 'run' (inline code) or 'file' (a path)")
        return self


class WorkflowInput(ActionInput):
    workflow: str = Field(description="Name of the workflow to run as a child run.")
    params: dict[str, Any] = Field(default_factory=dict, description="Params of the child run.")


class SleepInput(ActionInput):
    duration: Duration | None = Field(None, description="How long to sleep, e.g. '1d'.")
    until: str | None = Field(None, description="ISO 8601 time to sleep until.")

    @model_validator(mode="after")
    def _duration_or_until(self) -> SleepInput:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a sleep step takes exactly one of 'duration' or 'until'")
        return self


class WaitInput(ActionInput):
    timeout: Duration = Field(timedelta(hours=24), description="How long to wait for the resume call. Default 24h.")
    message: str | None = Field(None, description="Shown in the UI next to the Resume button.")


class LogInput(ActionInput):
    message: str = Field(description="The line to log.")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level. Default info.")


class FailInput(ActionInput):
    message: str = Field(description="The run's error message.")


def _builtin(name: str, model: type[ActionInput], *, idempotent: bool, description: str) -> ActionSpec:
    return ActionSpec(
        connector="",
        name=name,
        input_model=model,
        output_model=None,
        idempotent=idempotent,
        needs_connection=False,
        description=description,
    )


BUILTIN_ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        _builtin("transform", TransformInput, idempotent=True, description="Compute a value from templates."),
        _builtin("script", ScriptInput, idempotent=False, description="Run python, bash, node or pwsh code."),
        _builtin("workflow", WorkflowInput, idempotent=True, description="Run another workflow as a child run."),
        _builtin("sleep", SleepInput, idempotent=True, description="Pause the run durably."),
        _builtin("wait", WaitInput, idempotent=True, description="Pause until the resume call (approvals)."),
        _builtin("log", LogInput, idempotent=True, description="Write a line to the run's log."),
        _builtin("fail", FailInput, idempotent=True, description="Fail the run with a message."),
    )
}
