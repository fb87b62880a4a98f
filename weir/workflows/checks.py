"""The semantic checks of one workflow, and the rules that connect workflows and connections.

Each ``_check_*`` method adds findings; none raises. Paths passed to
``Document.finding`` are key paths as written in the file, so findings point at
the key or list element at fault.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from weir.connectors.base import ActionSpec
from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConnectorNotFound, TemplateError
from weir.schemas.repo import RepoConfig
from weir.schemas.workflow import Param, Step
from weir.text import did_you_mean
from weir.workflows import templating
from weir.workflows.builtins import BUILTIN_ACTIONS
from weir.workflows.findings import Finding, Severity
from weir.workflows.source import Document, is_inside
from weir.workflows.templating import Ref, Templates, default_templates
from weir.workflows.validation import data_path, describe_error, where

if TYPE_CHECKING:
    from weir.workflows.validation import LoadedWorkflow, Revision

Path = tuple[str | int, ...]

JINJA_NAMES = {"range", "dict", "namespace", "true", "false", "none", "True", "False", "None"}
GLOBAL_NAMES = JINJA_NAMES | {"params", "workflow", "run", "secrets", "env", "now", "always", "failure"}
WEBHOOK_NAMES = JINJA_NAMES | {"payload", "headers", "query", "secrets", "env", "now", "workflow"}
RUN_ATTRIBUTES = {"id", "error", "trigger", "started_at", "resume_url"}
WORKFLOW_ATTRIBUTES = {"name", "revision"}
STEP_ATTRIBUTES = {"output", "status", "error", "attempts"}

RESERVED_HOOK_PATH = "_git"
"""``/hooks/_git`` is the push endpoint of ``weir serve`` (``--git-webhook-secret``)."""


def resolve_action(uses: str, registry: ConnectorRegistry) -> ActionSpec:
    """The built-in or connector action that ``uses`` names; raise ConnectorNotFound with a hint."""
    if uses in BUILTIN_ACTIONS:
        return BUILTIN_ACTIONS[uses]
    if "." not in uses:
        raise ConnectorNotFound(
            f"'{uses}' is not a built-in action{did_you_mean(uses, BUILTIN_ACTIONS)}; built-ins are "
            f"{', '.join(BUILTIN_ACTIONS)}, connector actions are written CONNECTOR.ACTION (e.g. slack.post_message)"
        )
    return registry.action(uses)


def is_template(value: object) -> bool:
    """True for a string with template syntax; any other value is never one."""
    return isinstance(value, str) and templating.is_template(value)


def validate_inputs(
    doc: Document,
    model: type[BaseModel],
    value: dict[str, Any],
    base: Path,
    findings: list[Finding],
    *,
    label: str,
    missing_code: str = "W502",
    other_code: str = "W501",
) -> None:
    """Validate action inputs or connection settings, accepting a template wherever a value is expected."""
    try:
        model.model_validate(value)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if error["type"] not in _KEY_ERRORS and (is_template(error.get("input")) or _under_template(value, loc)):
                continue  # a template may render to a fitting value; a misspelt or missing key never does
            path = data_path(value, loc)
            code, message = describe_error(error, path, value, model)
            code = missing_code if code == "W202" else other_code if code in ("W200", "W201") else code
            message = message.replace("in the file", f"in {label}").replace("the file", label)
            findings.append(doc.finding(code, message, base + path))


_KEY_ERRORS = ("extra_forbidden", "missing")


def _under_template(value: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and part < len(value)
        ):
            value = value[part]
        else:
            return False
        if is_template(value):
            return True
    return False


class WorkflowChecker:
    """Every check that concerns one workflow file."""

    def __init__(
        self,
        loaded: LoadedWorkflow,
        revision: Revision,
        registry: ConnectorRegistry,
        findings: list[Finding],
        templates: Templates | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.doc = loaded.document
        self.data = loaded.document.data
        self.revision = revision
        self.registry = registry
        self.findings = findings
        self.templates = templates or default_templates()

    @functools.cached_property
    def _all_steps(self) -> dict[str, None]:
        """The ids of the main and on_failure steps, in file order (a dict: fast lookups, stable hints)."""
        return dict.fromkeys([s.id for s in self.model.steps] + [s.id for s in self.model.on_failure])

    def add(self, code: str, message: str, path: Path, severity: Severity = Severity.ERROR) -> None:
        self.findings.append(self.doc.finding(code, message, path, severity))

    def run(self) -> None:
        main = self._check_graph("steps", self.model.steps)
        handlers = self._check_graph("on_failure", self.model.on_failure)
        self._check_params()
        for group, steps, ancestors in (
            ("steps", self.model.steps, main),
            ("on_failure", self.model.on_failure, handlers),
        ):
            for index, step in enumerate(steps):
                self._check_step(group, index, step, ancestors)
        self._check_triggers()
        self._check_outputs()

    # --- graph -------------------------------------------------------------------------------

    def _check_graph(self, group: str, steps: list[Step]) -> dict[str, Reach] | None:
        """Unique ids, known needs, no cycles; return the steps each step may read (its transitive needs).

        None when the steps form a cycle: the cycle is the error to fix, and which step may run
        first is then undefined, so W303 is not reported for them.
        """
        ids: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.id in ids:
                self.add(
                    "W205",
                    f"step id '{step.id}' is used twice (first by step #{ids[step.id] + 1}); "
                    "give each step a unique id",
                    (group, index, "id"),
                )
            else:
                ids[step.id] = index
        needs: dict[str, list[str]] = {}
        for index, step in enumerate(steps):
            known = []
            for n, need in enumerate(step.needs):
                if need in ids:
                    known.append(need)
                elif group == "on_failure" and need in {s.id for s in self.model.steps}:
                    self.add(
                        "W203",
                        f"on_failure step '{step.id}' needs main step '{need}'; on_failure steps "
                        "run after the run failed and may only need other on_failure steps",
                        (group, index, "needs", n),
                    )
                else:
                    self.add(
                        "W203",
                        f"step '{step.id}' needs unknown step '{need}'{did_you_mean(need, ids)}",
                        (group, index, "needs", n),
                    )
            needs[step.id] = known
        cycle = _find_cycle(needs)
        if cycle:
            first = cycle[0]
            self.add(
                "W204",
                f"steps depend on each other in a cycle: {' -> '.join(cycle)}; remove one of these needs",
                (group, ids[first], "needs"),
            )
            return None
        bits = {sid: 1 << index for index, sid in enumerate(needs)}
        return {sid: Reach(bits, mask) for sid, mask in _ancestor_masks(needs, bits).items()}

    # --- params ------------------------------------------------------------------------------

    def _check_params(self) -> None:
        for name, param in self.model.params.items():
            if param.default is not None:
                problem = param_problem(param, param.default)
                if problem:
                    self.add("W213", f"default of param '{name}' {problem}", ("params", name, "default"))
            if param.required and param.default is not None:
                self.add(
                    "W214",
                    f"param '{name}' is required and has a default; the default makes it optional, so drop one of them",
                    ("params", name, "required"),
                    Severity.WARNING,
                )
            if param.enum is not None and param.default is not None and param.default not in param.enum:
                self.add(
                    "W213", f"default of param '{name}' is not one of its enum values", ("params", name, "default")
                )

    def check_param_values(self, values: dict[str, Any], base: Path, what: str, workflow: Any = None) -> None:
        """Params given by a trigger or a parent: known names, fitting types, required ones present."""
        params = (workflow or self.model).params
        for name, value in values.items():
            if name not in params:
                self.add(
                    "W213",
                    f"{what} sets unknown param '{name}'{did_you_mean(name, params)}; "
                    f"declared params: {', '.join(params) or 'none'}",
                    (*base, name),
                )
            elif not is_template(value):
                problem = param_problem(params[name], value)
                if problem:
                    self.add("W213", f"{what} sets param '{name}' to a value that {problem}", (*base, name))
        for name, param in params.items():
            if param.required and param.default is None and name not in values:
                self.add("W213", f"{what} does not set required param '{name}'; add it to the trigger's params", base)

    # --- steps -------------------------------------------------------------------------------

    def _check_step(self, group: str, index: int, step: Step, ancestors: dict[str, Reach] | None) -> None:
        base: Path = (group, index)
        spec = self._check_action(step.uses, step.with_, step.connection, (*base,))
        if step.compensate is not None:
            self._check_action(
                step.compensate.uses, step.compensate.with_, step.compensate.connection, (*base, "compensate")
            )
        if step.parallel > 1 and step.foreach is None and step.matrix is None:
            self.add(
                "W214",
                f"step '{step.id}' sets parallel = {step.parallel} without foreach or matrix, where it has no "
                "effect: add foreach or matrix, or remove parallel",
                (*base, "parallel"),
                Severity.WARNING,
            )
        names = GLOBAL_NAMES | {"steps", "payload", "headers", "query"}
        if step.foreach is not None or step.matrix is not None:
            names = names | {"item", "index"}
        visible = None if ancestors is None else ancestors.get(step.id, Reach({}, 0))
        if group == "on_failure" and visible is not None:
            visible = visible | {s.id for s in self.model.steps}
        step_data = self.data.get(group, [])[index]
        for key in ("with", "foreach", "fallback", "cache", "compensate", "timeout"):
            if key not in step_data:
                continue
            value = step_data[key]
            if key == "with" and spec is not None and spec.uses == "script":
                value = {k: v for k, v in value.items() if k not in ("run", "file")}  # code is never rendered
            if key == "with" and spec is not None and spec.connector == "db" and isinstance(value, dict):
                sql = value.get("sql")
                if is_template(sql):
                    self.add(
                        "W304",
                        f"step '{step.id}' puts a template inside 'sql'; SQL text is never rendered. "
                        "Write :name placeholders and pass the values in with.params",
                        (*base, "with", "sql"),
                    )
                value = {k: v for k, v in value.items() if k != "sql"}
            # a compensation runs only after its own step succeeded, so it may read that step's output
            seen = visible | {step.id} if key == "compensate" and visible is not None else visible
            known = names | {"error"} if key == "fallback" else names  # the step's error message
            self._check_templates(value, (*base, key), known, seen, step.id)
        if step.if_ is not None:
            self._check_expression(step.if_, (*base, "if"), names, visible, step.id)

    def _check_action(self, uses: str, with_: dict[str, Any], connection: str | None, base: Path) -> ActionSpec | None:
        try:
            spec = resolve_action(uses, self.registry)
        except ConnectorNotFound as exc:
            self.add("W500", f"{exc!s}", (*base, "uses"))
            return None
        owner = (
            where(base, self.data) if base[-1] != "compensate" else f"the compensation of {where(base[:-1], self.data)}"
        )
        validate_inputs(
            self.doc,
            spec.input_model,
            with_,
            (*base, "with"),
            self.findings,
            label=f"'with' of {owner} ({spec.uses})",
        )
        self._check_connection(spec, connection, base)
        if spec.uses == "script":
            self._check_script(with_, base)
        if spec.uses == "workflow":
            self._check_subflow_call(with_, base)
        return spec

    def _fitting_connection(self, spec: ActionSpec) -> str | None:
        """The first connection in weir.toml of the connector ``spec`` belongs to."""
        return next((n for n, c in self.revision.config.connections.items() if c.type == spec.connector), None)

    def _check_connection(self, spec: ActionSpec, connection: str | None, base: Path) -> None:
        connections = self.revision.config.connections
        if connection is None:
            if spec.needs_connection:
                fitting = self._fitting_connection(spec)
                hint = (
                    f': set connection = "{fitting}"'
                    if fitting
                    else (f': add a [connections.NAME] table with type = "{spec.connector}" to weir.toml')
                )
                self.add("W212", f"action '{spec.uses}' needs a connection{hint}", (*base, "uses"))
            return
        if not spec.connector:
            self.add(
                "W214",
                f"built-in action '{spec.uses}' takes no connection; remove it",
                (*base, "connection"),
                Severity.WARNING,
            )
        elif connection not in connections:
            known = ", ".join(sorted(connections)) or "none are defined"
            self.add(
                "W210",
                f"unknown connection '{connection}'{did_you_mean(connection, connections)}; "
                f"connections are defined in weir.toml ({known})",
                (*base, "connection"),
            )
        elif connections[connection].type != spec.connector and connections[connection].type in self.registry.names():
            fitting = self._fitting_connection(spec)
            fix = f'set connection = "{fitting}"' if fitting else f"define a '{spec.connector}' connection in weir.toml"
            self.add(
                "W211",
                f"connection '{connection}' is of type '{connections[connection].type}', but "
                f"'{spec.uses}' needs a '{spec.connector}' connection: {fix}",
                (*base, "connection"),
            )

    def _check_script(self, with_: dict[str, Any], base: Path) -> None:
        file = with_.get("file")
        if not isinstance(file, str) or is_template(file):
            return
        if not is_inside(file):
            self.add(
                "W504",
                f"script file '{file}' is outside the automation directory; scripts must live "
                "inside it (paths are relative to it)",
                (*base, "with", "file"),
            )
        elif (problem := self._entry_problem(file.removeprefix("./"))) is not None:
            self.add(
                "W106",
                f"script file '{file}' {problem}; scripts must be regular files inside the automation directory",
                (*base, "with", "file"),
            )
        elif not self.revision.tree.contains(file.removeprefix("./")):
            candidates = [p for p in self.revision.tree.entries if not p.endswith((".toml", ".json"))]
            self.add(
                "W503",
                f"script file '{file}' does not exist in the automation directory{did_you_mean(file, candidates)}",
                (*base, "with", "file"),
            )

    def _entry_problem(self, relpath: str) -> str | None:
        entry = self.revision.tree.entries.get(relpath)
        return entry.problem if entry is not None else None

    def _check_subflow_call(self, with_: dict[str, Any], base: Path) -> None:
        target = with_.get("workflow")
        if not isinstance(target, str) or is_template(target):
            return
        workflows = self.revision.workflows
        if target not in workflows:
            self.add(
                "W208",
                f"subflow '{target}' is not a workflow in this repository{did_you_mean(target, workflows)}",
                (*base, "with", "workflow"),
            )
            return
        params = with_.get("params", {})
        if isinstance(params, dict):
            self.check_param_values(
                params, (*base, "with", "params"), f"the call of '{target}'", workflows[target].model
            )

    # --- templates ---------------------------------------------------------------------------

    def _check_templates(
        self, value: Any, path: Path, names: set[str], visible: Reach | None, step_id: str | None
    ) -> None:
        for sub_path, text in _strings(value, path):
            if not is_template(text):
                continue
            try:
                refs = self.templates.template_refs(text)
            except TemplateError as exc:
                self.add("W300", f"{exc}", sub_path)
                continue
            self._check_refs(refs, sub_path, names, visible, step_id)

    def _check_expression(
        self, expr: str, path: Path, names: set[str], visible: Reach | None, step_id: str | None
    ) -> None:
        try:
            refs = self.templates.expression_refs(expr)
        except TemplateError as exc:
            self.add("W306", f"{exc}", path)
            return
        self._check_refs(refs, path, names, visible, step_id)

    def _check_refs(
        self, refs: list[Ref], path: Path, names: set[str], visible: Reach | None, step_id: str | None
    ) -> None:
        all_steps = self._all_steps
        for ref in refs:
            if ref.root not in names:
                self.add(
                    "W305",
                    f"template refers to unknown name '{ref.root}'{did_you_mean(ref.root, names)}; "
                    f"available here: {', '.join(sorted(names - JINJA_NAMES))}",
                    path,
                )
            elif ref.root == "params" and ref.path:
                name = str(ref.path[0])
                if name not in self.model.params:
                    self.add(
                        "W301",
                        f"template refers to unknown param '{name}'"
                        + (did_you_mean(name, self.model.params) or f"; declare it under [params.{name}]"),
                        path,
                    )
            elif ref.root == "steps" and ref.path:
                self._check_step_ref(ref, path, visible, step_id, all_steps)
            elif ref.root == "run" and ref.path and ref.path[0] not in RUN_ATTRIBUTES:
                self.add(
                    "W305",
                    f"run has no attribute '{ref.path[0]}'{did_you_mean(str(ref.path[0]), RUN_ATTRIBUTES)}",
                    path,
                )
            elif ref.root == "workflow" and ref.path and ref.path[0] not in WORKFLOW_ATTRIBUTES:
                self.add(
                    "W305",
                    f"workflow has no attribute '{ref.path[0]}'{did_you_mean(str(ref.path[0]), WORKFLOW_ATTRIBUTES)}",
                    path,
                )

    def _check_step_ref(
        self, ref: Ref, path: Path, visible: Reach | None, step_id: str | None, all_steps: dict[str, None]
    ) -> None:
        target = str(ref.path[0])
        if isinstance(ref.path[0], int):  # `steps.0` is `steps[0]`: a number never equals a step id, which is text
            named = next((s for s in all_steps if s.isdigit() and int(s) == ref.path[0]), target)
            self.add(
                "W302",
                f"template reads steps.{target} with a number, which never finds a step (step ids are text); "
                f"write steps['{named}']",
                path,
            )
            return
        if target not in all_steps:
            self.add("W302", f"template refers to unknown step '{target}'{did_you_mean(target, all_steps)}", path)
            return
        if len(ref.path) > 1 and ref.path[1] not in STEP_ATTRIBUTES:
            self.add(
                "W302",
                f"steps.{target} has no attribute '{ref.path[1]}'; use steps.{target}.output "
                f"(or .status, .error){did_you_mean(str(ref.path[1]), STEP_ATTRIBUTES)}",
                path,
            )
        if visible is not None and step_id is not None and target not in visible:
            self.add(
                "W303",
                f"step '{step_id}' reads steps.{target} but does not need it, so it may run first; "
                f"add '{target}' to its needs",
                path,
                Severity.WARNING,
            )

    # --- triggers and outputs ----------------------------------------------------------------

    def _check_triggers(self) -> None:
        from weir.workflows.cron import CronError, parse_cron, parse_interval, validate_timezone

        for index, schedule in enumerate(self.model.on.schedule):
            base: Path = ("on", "schedule", index)
            try:
                validate_timezone(schedule.timezone)
            except CronError as exc:
                self.add("W401", str(exc), (*base, "timezone"))
                continue
            try:
                if schedule.cron is not None:
                    parsed = parse_cron(schedule.cron, schedule.timezone)
                    if parsed.both_days_restricted:
                        self.add(
                            "W404",
                            f"cron '{schedule.cron}' restricts both day of month and day of week; "
                            "weir fires only when both match (classic cron fires when either does); "
                            "if you meant either, use two schedules, one for each field",
                            (*base, "cron"),
                            Severity.WARNING,
                        )
                elif schedule.every is not None:
                    parse_interval(schedule.every)
            except CronError as exc:
                self.add("W400", str(exc), (*base, "cron" if schedule.cron is not None else "every"))
            self.check_param_values(schedule.params, (*base, "params"), f"schedule #{index + 1}")
            self._check_templates(
                self.data["on"]["schedule"][index].get("params", {}),
                (*base, "params"),
                {"now", "env", "secrets", "workflow", "range", "dict"},
                None,
                None,
            )
        for index, hook in enumerate(self.model.on.webhook):
            base = ("on", "webhook", index)
            raw = self.data["on"]["webhook"][index]
            self.check_param_values(hook.params, (*base, "params"), f"webhook '{hook.path}'")
            for key in ("params", "idempotency_key", "auth"):
                if key in raw:
                    self._check_templates(raw[key], (*base, key), WEBHOOK_NAMES, None, None)
            if hook.filter is not None:
                self._check_expression(hook.filter, (*base, "filter"), WEBHOOK_NAMES, None, None)
            for field in ("secret", "token"):
                secret = getattr(hook.auth, field, None)
                if isinstance(secret, str) and not is_template(secret):
                    self.add(
                        "W403",
                        f"webhook '{hook.path}' has its {field} written in the file; secrets never live "
                        f'in the repository: write "{{{{ secrets.NAME }}}}" and set WEIR_SECRET_NAME',
                        (*base, "auth", field),
                    )
            if hook.payload_schema is not None:
                self._check_json_schema(hook.payload_schema, (*base, "schema"))
            if hook.path.strip("/") == RESERVED_HOOK_PATH:
                self.add(
                    "W403",
                    f"webhook path '{hook.path}' is reserved: /hooks/{RESERVED_HOOK_PATH} receives the repository's "
                    "push notifications, so this webhook could never fire; choose another path",
                    (*base, "path"),
                )
        if self.model.concurrency and self.model.concurrency.key:
            self._check_templates(
                self.model.concurrency.key,
                ("concurrency", "key"),
                GLOBAL_NAMES | {"payload", "headers", "query"},
                None,
                None,
            )

    def _check_json_schema(self, schema: dict[str, Any], path: Path) -> None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top"
            self.add("W403", f"webhook schema is not a valid JSON Schema at {where}: {exc.message}", path)

    def _check_outputs(self) -> None:
        if "outputs" in self.data:
            self._check_templates(
                self.data["outputs"], ("outputs",), GLOBAL_NAMES | {"steps", "payload", "headers", "query"}, None, None
            )


_PARAM_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def param_problem(param: Param, value: Any) -> str | None:
    """Why ``value`` does not fit ``param``, or None when it does."""
    if not _PARAM_TYPES[param.type](value):
        return f"is not of type {param.type} ({value!r})"
    if param.enum is not None and value not in param.enum:
        return f"is not one of {param.enum}"
    return None


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _find_cycle(needs: dict[str, list[str]]) -> list[str] | None:
    """The first cycle found, as a path that starts and ends at the same node, or None.

    Depth-first with an explicit stack: a chain of thousands of steps (or subflow calls) must
    not exhaust Python's recursion limit.
    """
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in needs:
        if root in state:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(needs.get(root, []))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(needs.get(nxt, [])))
    return None


class Reach:
    """The steps a step may read: its transitive needs, as a bit mask over the steps, plus ``extra`` ids.

    One integer per step keeps ``weir check`` fast on long chains: 10,000 chained steps check in
    under a second, where a set of ancestors per step took a minute and gigabytes of memory.
    """

    __slots__ = ("bits", "extra", "mask")

    def __init__(self, bits: dict[str, int], mask: int, extra: frozenset[str] = frozenset()) -> None:
        self.bits, self.mask, self.extra = bits, mask, extra

    def __contains__(self, step_id: object) -> bool:
        return step_id in self.extra or bool(self.bits.get(step_id, 0) & self.mask)  # type: ignore[call-overload]

    def __or__(self, other: set[str]) -> Reach:
        return Reach(self.bits, self.mask, self.extra | other)


def _ancestor_masks(needs: dict[str, list[str]], bits: dict[str, int]) -> dict[str, int]:
    """Each step's transitive needs as a mask of ``bits``, for a graph without cycles.

    Depth-first with an explicit stack, needs before the steps that need them, so a chain of
    thousands of steps neither recurses deeply nor copies sets.
    """
    masks: dict[str, int] = {}
    for root in needs:
        if root in masks:
            continue
        on_path = {root}
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(needs[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                mask = 0
                for need in needs[node]:
                    mask |= bits.get(need, 0) | masks.get(need, 0)
                masks[node] = mask
            elif child in needs and child not in masks and child not in on_path:
                on_path.add(child)
                stack.append((child, iter(needs[child])))
    return masks


# --- rules across files ----------------------------------------------------------------------


def check_connections(doc: Document, config: RepoConfig, registry: ConnectorRegistry, findings: list[Finding]) -> None:
    """Each connection in weir.toml names an installed connector and fits its settings model."""
    for name, connection in config.connections.items():
        base: Path = ("connections", name)
        try:
            connector = registry.get(connection.type)
        except ConnectorNotFound as exc:
            findings.append(doc.finding("W601", f"connection '{name}': {exc}", (*base, "type")))
            continue
        validate_inputs(
            doc,
            connector.connection_model,
            connection.settings(),
            base,
            findings,
            label=f"connection '{name}' (type {connection.type})",
            missing_code="W600",
            other_code="W600",
        )


def check_subflows(revision: Revision, findings: list[Finding]) -> None:
    """Workflows that call each other through ``workflow`` steps must not recurse."""
    calls: dict[str, list[str]] = {}
    where_called: dict[tuple[str, str], Path] = {}
    for name, loaded in revision.workflows.items():
        targets = []
        for group, steps in (("steps", loaded.model.steps), ("on_failure", loaded.model.on_failure)):
            for index, step in enumerate(steps):
                target = step.with_.get("workflow") if step.uses == "workflow" else None
                if isinstance(target, str) and target in revision.workflows:
                    targets.append(target)
                    where_called.setdefault((name, target), (group, index, "with", "workflow"))
        calls[name] = targets
    cycle = _find_cycle(calls)
    if cycle:
        first = revision.workflows[cycle[0]]
        findings.append(
            first.document.finding(
                "W209",
                f"subflows call each other recursively: {' -> '.join(cycle)}; a workflow may not call itself, "
                "directly or through others",
                where_called[(cycle[0], cycle[1])],
            )
        )
