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
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from weir.connectors.registry import ConnectorRegistry
from weir.schemas.common import NAME_PATTERN
from weir.schemas.repo import RepoConfig
from weir.schemas.workflow import Workflow
from weir.text import did_you_mean
from weir.types import SourceLocation
from weir.workflows.findings import Finding, Severity, has_errors
from weir.workflows.source import CONFIG_FILE, Document, Entry, SourceTree, content_key, parse_document

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


def validate_tree(
    tree: SourceTree, registry: ConnectorRegistry, cache: ValidationCache | None = None
) -> ValidationResult:
    """Check every file of ``tree`` and the rules that span files; return the revision and all findings.

    With ``cache`` (the server keeps one), a file whose bytes, path and weir.toml are those of a
    revision validated before is not read, parsed or checked again: its findings are reused. The
    findings are the same as without a cache.
    """
    from weir.workflows.checks import check_connections, check_subflows

    cache = cache if cache is not None else ValidationCache()
    cache.start(registry)
    findings: list[Finding] = []
    for relpath, entry in sorted(tree.entries.items()):
        if entry.problem and (relpath.endswith((".toml", ".json")) or entry.is_link):
            # A link could pull in files from outside the directory. Git does not say whether a link points to a
            # file or a folder, so every link is reported, not only those named like workflow files.
            link = entry.is_link
            findings.append(
                Finding(
                    "W106" if link else "W100",
                    Severity.ERROR,
                    SourceLocation(tree.display(relpath)),
                    f"{relpath} {entry.problem}; workflow files must be regular files inside the automation "
                    f"directory: {'replace the link with a copy of the file' if link else 'remove it or rename it'}",
                )
            )

    config, config_doc, config_key = _load_config(tree, findings)
    revision = Revision(tree, config, config_doc)
    documents = [p for p in tree.documents() if p != CONFIG_FILE and tree.contains(p)]
    excluded = config.exclude
    first_path: dict[str, str] = {}
    results: dict[str, _FileResult] = {}
    for relpath in documents:
        if excluded and any(fnmatch.fnmatchcase(relpath, glob) for glob in excluded):
            continue
        result = cache.file(tree, relpath)
        findings.extend(result.findings)
        loaded = result.loaded
        if loaded is None:
            continue
        name = loaded.name
        if name in first_path:
            findings.append(
                loaded.document.finding(
                    "W206",
                    f"workflow name '{name}' is already used by {tree.display(first_path[name])}; set a unique 'name'",
                    ("name",),
                )
            )
            continue
        first_path[name] = relpath
        revision.workflows[name] = loaded
        results[name] = result

    if config_doc is not None:
        check_connections(config_doc, config, registry, findings)
    view = _View(revision, {name: (r.relpath, r.key) for name, r in results.items()})
    for name, loaded in revision.workflows.items():
        findings.extend(cache.checked(results[name], loaded, view, config_key))
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


# --- per-file results, reused while nothing they depend on changed --------------------------------


@dataclass
class CacheStats:
    """What one ``validate_tree`` call did with each workflow file: for the log and for tests."""

    parsed: list[str] = field(default_factory=list)
    """Files read, parsed and schema-checked (not found in the cache), by path in the directory."""
    checked: list[str] = field(default_factory=list)
    """Workflows whose per-file checks ran (their file, weir.toml or what they refer to changed)."""
    reused: int = 0
    """Files whose parse and checks both came from the cache."""


@dataclass
class _FileResult:
    """What one file gives on its own: the findings of reading and parsing it, and its workflow."""

    relpath: str
    key: str
    """The file's content key (blob sha or hash of the bytes)."""
    findings: list[Finding]
    loaded: LoadedWorkflow | None
    checked: _Checked | None = None


@dataclass(frozen=True)
class _Checked:
    """The findings of a workflow's per-file checks and everything they depended on besides the file."""

    config: str | None
    """The content key of weir.toml they ran with (connection names and types)."""
    reads: tuple[tuple[str, str, Hashable], ...]
    """What they looked at in other files: (kind, name, what it was), see ``_View.seen``."""
    findings: tuple[Finding, ...]


class ValidationCache:
    """Per-file results of ``validate_tree``, kept from one revision to the next.

    Parsing, the schema check and a workflow's own checks (``WorkflowChecker``) are most of the
    work; for a file they depend only on

    - its bytes and its path, named by ``(prefix, path, content key)`` where the content key is
      the Git blob sha (read without reading the blob) or a hash of the bytes;
    - weir.toml (its connections): the per-file checks are keyed by weir.toml's content key, so
      any change to it checks every workflow again;
    - what the checks looked up in other files: a subflow's params, whether a script file exists,
      the names offered in a "did you mean". Each look-up is recorded while the checks run, with
      what it found; the result is reused only when every look-up finds the same in the new
      revision.

    The rules that span files (unique names, webhook paths, subflow cycles, connections) run over
    the whole revision every time; they are cheap. Only the results used by the current and the
    previous ``validate_tree`` call are kept, so memory stays bounded by two revisions. A cache is
    bound to one connector registry (a different one empties it) and is not thread-safe: the
    server validates one revision at a time.
    """

    def __init__(self) -> None:
        self._current: dict[tuple[str, str, str], _FileResult] = {}
        self._previous: dict[tuple[str, str, str], _FileResult] = {}
        self._registry: ConnectorRegistry | None = None
        self.last = CacheStats()
        """What the last ``validate_tree`` call with this cache did."""

    def __len__(self) -> int:
        return len(self._current.keys() | self._previous.keys())

    def start(self, registry: ConnectorRegistry) -> None:
        """Begin a revision: results of the revision before the previous one are dropped."""
        if registry is not self._registry:
            self._current, self._previous, self._registry = {}, {}, registry
        self._previous, self._current = self._current, {}
        self.last = CacheStats()

    def file(self, tree: SourceTree, relpath: str) -> _FileResult:
        """The file read, parsed and schema-checked: from the cache when its bytes are known."""
        entry = tree.entries[relpath]
        raw: bytes | None = None
        try:
            if entry.key is None:  # no name for the bytes without reading them
                raw = entry.load()
            key = entry.key or content_key(raw or b"")
            cache_key = (tree.prefix, relpath, key)
            found = self._current.get(cache_key) or self._previous.get(cache_key)
            if found is not None:
                self._current[cache_key] = found
                return found
            if raw is None:
                raw = entry.load()
        except OSError as exc:  # not cached: the next revision tries again
            return _FileResult(relpath, "", _unreadable(tree, relpath, exc), None)
        self.last.parsed.append(relpath)
        result = _FileResult(relpath, key, *_parse_workflow(tree.display(relpath), relpath, raw))
        self._current[cache_key] = result
        return result

    def checked(
        self, result: _FileResult, loaded: LoadedWorkflow, view: _View, config: str | None
    ) -> Sequence[Finding]:
        """The findings of ``loaded``'s own checks: reused when nothing they depended on changed."""
        from weir.workflows.checks import WorkflowChecker

        done = result.checked
        if done is not None and done.config == config and all(view.seen(*read[:2]) == read[2] for read in done.reads):
            if result.relpath not in self.last.parsed:
                self.last.reused += 1
            return done.findings
        assert self._registry is not None  # noqa: S101 - start() ran
        findings: list[Finding] = []
        view.record()
        WorkflowChecker(loaded, view.revision, self._registry, findings).run()
        result.checked = _Checked(config, view.reads(), tuple(findings))
        self.last.checked.append(result.relpath)
        return findings


def _parse_workflow(display: str, relpath: str, raw: bytes) -> tuple[list[Finding], LoadedWorkflow | None]:
    """Parse one workflow file and check it against the schema; its findings and its workflow (None if unusable)."""
    doc, findings = parse_document(display, raw)
    if doc is None:
        return findings, None
    model = schema_check(doc, Workflow, findings)
    if model is None:
        return findings, None
    name = _workflow_name(doc, relpath, model, findings)
    if name is None:
        return findings, None
    return findings, LoadedWorkflow(name, relpath, doc, model)


_ABSENT = "absent"
_V = TypeVar("_V")


class _Watched(Mapping[str, _V]):
    """A read-only mapping that notes which keys were looked up, and whether all of them were listed.

    The per-file checks see the other workflows and the tree's entries through these, so the
    cache learns what a workflow's findings depend on without a list kept by hand next to the
    checks. It is a Mapping, not a dict: a check that reached for a dict-only method would fail
    loudly instead of reading something unrecorded.
    """

    def __init__(self, data: Mapping[str, _V]) -> None:
        self._data = data
        self.looked_up: set[str] = set()
        self.listed = False

    def __getitem__(self, key: str) -> _V:
        self.looked_up.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        self.listed = True
        return iter(self._data)

    def __len__(self) -> int:
        self.listed = True
        return len(self._data)


class _View:
    """The revision as the per-file checks see it: other workflows and entries are looked up through ``_Watched``.

    ``seen`` says what a look-up finds in this revision, so a recorded one can be compared with
    it: a workflow by its path and content key (its params come from its bytes), an entry by its
    problem and blob sha (the checks ask whether a script file exists and is a regular file), and
    a listing by the sorted names (a "did you mean" offers them).
    """

    def __init__(self, revision: Revision, workflows: Mapping[str, tuple[str, str]]) -> None:
        self._revision = revision
        self._workflows = workflows
        self._names: tuple[str, ...] | None = None
        self._paths: tuple[str, ...] | None = None
        self._watched_workflows: _Watched[LoadedWorkflow] = _Watched(revision.workflows)
        self._watched_entries: _Watched[Entry] = _Watched(revision.tree.entries)
        self.revision = Revision(
            SourceTree(self._watched_entries, revision.tree.prefix),
            revision.config,
            revision.config_document,
            typing.cast(dict[str, LoadedWorkflow], self._watched_workflows),
        )

    def record(self) -> None:
        """Forget the look-ups recorded so far: the next workflow's checks start."""
        for watched in (self._watched_workflows, self._watched_entries):
            watched.looked_up.clear()
            watched.listed = False

    def reads(self) -> tuple[tuple[str, str, Hashable], ...]:
        """The look-ups since ``record``, each with what it found."""
        found: list[tuple[str, str]] = [("workflow", name) for name in sorted(self._watched_workflows.looked_up)]
        found += [("entry", path) for path in sorted(self._watched_entries.looked_up)]
        if self._watched_workflows.listed:
            found.append(("workflows", ""))
        if self._watched_entries.listed:
            found.append(("entries", ""))
        return tuple((kind, name, self.seen(kind, name)) for kind, name in found)

    def seen(self, kind: str, name: str) -> Hashable:
        if kind == "workflow":
            return self._workflows.get(name, _ABSENT)
        if kind == "entry":
            entry = self._revision.tree.entries.get(name)
            return _ABSENT if entry is None else (entry.problem, entry.key)
        if kind == "workflows":
            if self._names is None:
                self._names = tuple(sorted(self._revision.workflows))
            return self._names
        if self._paths is None:
            self._paths = tuple(sorted(self._revision.tree.entries))
        return self._paths


def _load_config(tree: SourceTree, findings: list[Finding]) -> tuple[RepoConfig, Document | None, str | None]:
    """weir.toml read, parsed and schema-checked, and its content key (None when there is none to read)."""
    if not tree.contains(CONFIG_FILE):
        return RepoConfig(), None, None
    try:
        raw = tree.entries[CONFIG_FILE].load()
    except OSError as exc:
        findings.extend(_unreadable(tree, CONFIG_FILE, exc))
        return RepoConfig(), None, None
    doc, problems = parse_document(tree.display(CONFIG_FILE), raw)
    findings.extend(problems)
    if doc is None:
        return RepoConfig(), None, content_key(raw)
    model = schema_check(doc, RepoConfig, findings)
    return (model or RepoConfig()), doc, content_key(raw)


def _unreadable(tree: SourceTree, relpath: str, exc: OSError) -> list[Finding]:
    reason = exc.strerror or str(exc)
    message = f"cannot read {relpath}: {reason}; check that the file is readable by the user running weir"
    return [Finding("W100", Severity.ERROR, SourceLocation(tree.display(relpath), 1, 1), message)]


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
