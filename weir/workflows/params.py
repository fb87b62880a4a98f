"""Check the params of a run against the workflow's ``[params]`` and fill in defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weir.errors import ParamsInvalid
from weir.schemas.workflow import Workflow
from weir.text import did_you_mean
from weir.workflows.checks import param_problem


def resolve_params(name: str, workflow: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a run: ``given`` checked against ``[params]``, defaults added.

    Raises ``ParamsInvalid`` naming every param that is missing, unknown or of the wrong type,
    so a caller sees all problems at once (the API answers them as 422).
    """
    declared = workflow.params
    problems: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    for key, value in given.items():
        param = declared.get(key)
        if param is None:
            known = ", ".join(sorted(declared)) or "none"
            problems[key] = f"is not declared{did_you_mean(key, declared)} (the workflow's params: {known})"
            continue
        problem = param_problem(param, value)
        if problem:
            problems[key] = problem
        resolved[key] = value
    for key, param in declared.items():
        if key in given:
            continue
        if param.default is not None:
            resolved[key] = param.default
        elif param.required:
            problems[key] = f"is required ({param.type}{': ' + param.description if param.description else ''})"
        else:
            resolved[key] = None
    if problems:
        raise ParamsInvalid(name, problems)
    return resolved
