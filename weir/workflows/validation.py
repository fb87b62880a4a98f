"""Validate a whole automation directory: every check of ``weir check``, as findings.

``validate_tree`` is shared by ``weir check``, ``weir plan`` and the server: a
revision is applied only when it returns no errors. It never stops at the first
problem: every file is parsed and checked, and one bad file hides no other.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ValidationError

from weir.connectors.registry import ConnectorRegistry
from weir.schemas.common import NAME_PATTERN
from weir.schemas.repo import RepoConfig
from weir.schemas.workflow import Workflow
from weir.text import did_you_mean
from weir.types import SourceLocation
from weir.workflows.findings import Finding, Severity, has_errors
from weir.workflows.source import CONFIG_FILE, Document, SourceTree, parse_document

_NAME_RE = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class LoadedWorkflow:
    """A workflow file that passed the schema: its name, where it came from, and its model."""

    name: str
    relpath: str
    document: Document
    model: Workflow


@dataclass
class Revision:
    """The validated content of an automation directory."""

    tree: SourceTree
    config: RepoConfig
    config_document: Document | None
    workflows: dict[str, LoadedWorkflow] = field(default_factory=dict)


@dataclass
class ValidationResult:
    revision: Revision
    findings: list[Finding]

    def ok(self, *, strict: bool = False) -> bool:
        return not has_errors(self.findings, strict=strict)


def validate_tree(tree: SourceTree, registry: ConnectorRegistry) -> ValidationResult:
    """Check every file of ``tree`` and the rules that span files; return the revision and all findings."""
    from weir.workflows.checks import WorkflowChecker, check_connections, check_subflows

    findings: list[Finding] = []
    for relpath, entry in sorted(tree.entries.items()):
        if entry.problem and relpath.endswith((".toml", ".json")):
            link = entry.is_link  # a link could pull in a file from outside the directory
            findings.append(
                Finding(
                    "W106" if link else "W100",
                    Severity.ERROR,
                    SourceLocation(tree.display(relpath)),
                    f"{relpath} {entry.problem}; workflow files must be regular files inside the automation "
                    f"directory: {'replace the link with a copy of the file' if link else 'remove it or rename it'}",
                )
            )

    config, config_doc = _load_config(tree, findings)
    revision = Revision(tree, config, config_doc)
    documents = [p for p in tree.documents() if p != CONFIG_FILE and tree.contains(p)]
    excluded = config.exclude
    first_path: dict[str, str] = {}
    for relpath in documents:
        if excluded and any(fnmatch.fnmatchcase(relpath, glob) for glob in excluded):
            continue
        doc, problems = _read(tree, relpath)
        findings.extend(problems)
        if doc is None:
            continue
        model = schema_check(doc, Workflow, findings)
        if model is None:
            continue
        name = _workflow_name(doc, relpath, model, findings)
        if name is None:
            continue
        if name in first_path:
            findings.append(
                doc.finding(
                    "W206",
                    f"workflow name '{name}' is already used by {tree.display(first_path[name])}; set a unique 'name'",
                    ("name",),
                )
            )
            continue
        first_path[name] = relpath
        revision.workflows[name] = LoadedWorkflow(name, relpath, doc, model)

    if config_doc is not None:
        check_connections(config_doc, config, registry, findings)
    for loaded in revision.workflows.values():
        WorkflowChecker(loaded, revision, registry, findings).run()
    check_subflows(revision, findings)
    _check_webhook_paths(revision, findings)
    if not documents and not findings:
        findings.append(
            Finding(
                "W109",
                Severity.WARNING,
                SourceLocation(tree.prefix.rstrip("/") or "."),
                "no workflow files (*.toml, *.json) found; add one, or name the directory that holds them "
                "(weir check DIR, weir serve --path DIR)",
            )
        )
    findings.sort(key=lambda f: f.sort_key)
    return ValidationResult(revision, findings)


def _load_config(tree: SourceTree, findings: list[Finding]) -> tuple[RepoConfig, Document | None]:
    if not tree.contains(CONFIG_FILE):
        return RepoConfig(), None
    doc, problems = _read(tree, CONFIG_FILE)
    findings.extend(problems)
    if doc is None:
        return RepoConfig(), None
    model = schema_check(doc, RepoConfig, findings)
    return (model or RepoConfig()), doc


def _read(tree: SourceTree, relpath: str) -> tuple[Document | None, list[Finding]]:
    try:
        raw = tree.entries[relpath].load()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"cannot read {relpath}: {reason}; check that the file is readable by the user running weir"
        return None, [Finding("W100", Severity.ERROR, SourceLocation(tree.display(relpath), 1, 1), message)]
    return parse_document(tree.display(relpath), raw)


def _workflow_name(doc: Document, relpath: str, model: Workflow, findings: list[Finding]) -> str | None:
    if model.name:
        return model.name
    stem = PurePosixPath(relpath).stem
    if _NAME_RE.match(stem):
        return stem
    findings.append(
        doc.finding(
            "W107",
            f"the file name '{stem}' is not a valid workflow name ([a-z0-9][a-z0-9_-]{{0,62}}); "
            f'rename the file or set name = "{_suggest_name(stem)}"',
        )
    )
    return None


def _suggest_name(stem: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_") or "workflow"
    return name[:63]


def _check_webhook_paths(revision: Revision, findings: list[Finding]) -> None:
    seen: dict[str, str] = {}
    for loaded in revision.workflows.values():
        for index, hook in enumerate(loaded.model.on.webhook):
            path = hook.path.strip("/")
            if path in seen and seen[path] != loaded.name:
                findings.append(
                    loaded.document.finding(
                        "W207",
                        f"webhook path '{hook.path}' is already served by workflow '{seen[path]}'; "
                        "each path belongs to one workflow, so choose another one",
                        ("on", "webhook", index, "path"),
                    )
                )
            elif path in seen:
                findings.append(
                    loaded.document.finding(
                        "W207",
                        f"webhook path '{hook.path}' appears twice in this workflow; merge the triggers",
                        ("on", "webhook", index, "path"),
                    )
                )
            else:
                seen[path] = loaded.name


# --- schema errors -> findings -------------------------------------------------------------

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "int_from_float": "an integer",
    "none_required": "empty",
}


def schema_check(doc: Document, model: type[BaseModel], findings: list[Finding]) -> Any:
    """Validate ``doc.data`` against ``model``; add one finding per error.

    Returns the model, or None when the file cannot be read as one. When the errors
    sit in keys that can be left out (a misspelt key, a wrong optional value), the
    model of the file without them is returned, so the other checks still run and one
    typo does not hide the rest.
    """
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
    for error in errors:
        path = data_path(doc.data, error["loc"])
        code, message = describe_error(error, path, doc.data, model)
        findings.append(doc.finding(code, message, path))
    pruned = copy.deepcopy(doc.data)
    for _ in range(3):
        if not all(_prune(pruned, data_path(pruned, e["loc"]), e["type"]) for e in errors):
            return None
        try:
            return model.model_validate(pruned)
        except ValidationError as exc:
            errors = exc.errors()
    return None


def _prune(data: Any, path: tuple[str | int, ...], kind: str) -> bool:
    """Drop the dict key at ``path``; False when that cannot make the document valid."""
    if kind == "missing" or not path or not isinstance(path[-1], str):
        return False
    parent = _get(data, path[:-1])
    if not isinstance(parent, dict):
        return False
    parent.pop(path[-1], None)
    return True


def data_path(data: Any, loc: tuple[int | str, ...]) -> tuple[str | int, ...]:
    """The part of a pydantic error location that exists in the data (drops union tags and the like)."""
    path: list[str | int] = []
    current = data
    for part in loc:
        present = (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        )
        if present:
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and part not in current and part == loc[-1]:
            path.append(part)  # a missing or unknown key: name it
            break
        else:
            continue
        path.append(part)
    return tuple(path)


def where(path: tuple[str | int, ...], data: Any) -> str:
    """Words for the place a path points at: "step 'notify'", "webhook 'alerts'", "[concurrency]"."""
    if len(path) >= 2 and path[0] in ("steps", "on_failure") and isinstance(path[1], int):
        step = _get(data, path[:2])
        label = "on_failure step" if path[0] == "on_failure" else "step"
        sid = step.get("id") if isinstance(step, dict) else None
        return f"{label} '{sid}'" if isinstance(sid, str) else f"{label} #{path[1] + 1}"
    if len(path) >= 3 and path[:2] == ("on", "webhook") and isinstance(path[2], int):
        hook = _get(data, path[:3])
        p = hook.get("path") if isinstance(hook, dict) else None
        return f"webhook '{p}'" if isinstance(p, str) else f"webhook #{path[2] + 1}"
    if len(path) >= 3 and path[:2] == ("on", "schedule") and isinstance(path[2], int):
        return f"schedule #{path[2] + 1}"
    if len(path) >= 2 and path[0] == "params":
        return f"param '{path[1]}'"
    if len(path) >= 2 and path[0] == "connections":
        return f"connection '{path[1]}'"
    if path and isinstance(path[0], str) and isinstance(_get(data, path[:1]), dict) and len(path) > 1:
        return f"[{path[0]}]"
    return "the file"


def _get(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def describe_error(
    error: Any,
    path: tuple[str | int, ...],
    data: Any,
    model: type[BaseModel],
) -> tuple[str, str]:
    """A stable code and a sentence for one pydantic error."""
    kind = error["type"]
    key = str(path[-1]) if path and isinstance(path[-1], str) else None
    place = where(path[:-1] if key else path, data)
    value = error.get("input")
    shown = _show(value)
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, path[:-1], data)
        hint = did_you_mean(str(path[-1]), allowed) if allowed else ""
        listing = f"; allowed keys: {', '.join(sorted(allowed))}" if allowed and not hint else ""
        return "W200", f"unknown key '{path[-1]}' in {place}{hint}{listing}"
    if kind == "missing" and path == ("steps",) and model is Workflow:
        return "W202", "the file has no steps; a workflow needs at least one: add a [[steps]] table"
    if kind == "missing":
        return "W202", f"{place} is missing the required key '{key}'"
    if kind == "duration":
        return "W402", f"key '{key}' in {place}: {error['msg']}"
    if kind == "literal_error" and path == ("version",):
        return "W108", f"file format version {shown} is not supported; this weir reads version 1"
    if kind == "literal_error":
        return "W201", f"key '{key}' in {place} must be {error['ctx']['expected']}, not {shown}"
    if kind == "string_pattern_mismatch":
        return (
            "W201",
            f"key '{key}' in {place} is {shown}, which does not match {error['ctx']['pattern']}{_pattern_hint(key)}",
        )
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = error.get("ctx", {}).get("expected_tags", "")
        if kind == "union_tag_not_found":
            return "W202", f"{where(path, data)} needs a 'type' ({expected})"
        return "W201", f"{where(path, data)} has type {_show(error['ctx'].get('tag'))}; use one of {expected}"
    if kind == "too_short" and key == "steps":
        return "W202", "a workflow needs at least one step: add a [[steps]] table"
    if kind in _TYPE_NAMES:
        return "W201", f"key '{key or path[-1] if path else ''}' in {place} must be {_TYPE_NAMES[kind]}, not {shown}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if key:
        return "W201", f"key '{key}' in {place}: {message}"
    return "W201", f"{place}: {message}"


def _pattern_hint(key: str | None) -> str:
    return {
        "id": " (lowercase letters, digits and _)",
        "name": " (lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters)",
        "path": " (letters, digits, /, _ and -)",
    }.get(key or "", "")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def allowed_keys(model: type[BaseModel], path: tuple[str | int, ...], data: Any) -> set[str]:
    """The keys a table at ``path`` may hold, walking the model by the file's key names."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = _fields_by_alias(current, _get(data, path[: path.index(part)]))
        if part not in fields:
            return set()
        current = fields[part]
    return set(_fields_by_alias(current, _get(data, path)))


def _fields_by_alias(annotation: Any, value: Any) -> dict[str, Any]:
    models = _models_in(annotation)
    if len(models) > 1 and isinstance(value, dict):  # a tagged union: pick the member by 'type'
        models = [m for m in models if _type_tag(m) == value.get("type")] or models
    result: dict[str, Any] = {}
    for m in models:
        for name, info in m.model_fields.items():
            result[info.alias or name] = info.annotation
    return result


def _type_tag(model: type[BaseModel]) -> Any:
    info = model.model_fields.get("type")
    args = typing.get_args(info.annotation) if info else ()
    return args[0] if len(args) == 1 else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (list, tuple):
        return _models_in(args[0]) if args else []
    if origin is dict:
        return _models_in(args[1]) if len(args) == 2 else []
    if origin in (typing.Union, types.UnionType):
        return [m for a in args for m in _models_in(a)]
    return []
