"""``weir plan``: what deploying a revision would change, written for a pull request comment.

``diff_revisions`` compares two validated revisions (workflows, schedules with their next fire
times, webhook routes, ``weir.toml``) and touches no files, so the server reuses it when it
applies a revision. ``render_plan`` turns a diff into Markdown. ``plan_refs`` reads two commits
of the repository around a directory and ties both together for the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from weir.schemas.common import format_duration
from weir.schemas.workflow import Schedule, Webhook, Workflow
from weir.workflows.findings import Finding, Severity, has_errors
from weir.workflows.validation import Revision

if TYPE_CHECKING:
    pass

ChangeKind = Literal["added", "removed", "changed"]
DEFAULT_BASES = ("origin/HEAD", "origin/main", "main", "origin/master", "master")
"""Refs tried in order when ``--base`` is not given."""
FIRE_TIMES = 3
"""How many upcoming fire times each added or changed schedule shows."""

_KIND_ORDER = {"added": 0, "removed": 1, "changed": 2}
_IGNORED_KEYS = ("$schema", "name")  # an editor hint, and the identity the workflows are matched by


@dataclass(frozen=True)
class WorkflowChange:
    """A workflow added, removed or changed, with what changed in it."""

    kind: ChangeKind
    name: str
    file: str
    """The file in head (in base for a removed workflow), as shown to the user: ``workflows/sync.toml``."""
    parts: tuple[str, ...] = ()
    """For a changed workflow, e.g. ``"steps added: `notify`"``, ``"params"``, ``"schedules"``."""


@dataclass(frozen=True)
class ScheduleChange:
    """A schedule trigger added, removed or changed."""

    kind: ChangeKind
    workflow: str
    index: int
    """Position in the workflow's ``on.schedule`` in head (in base for a removed schedule)."""
    description: str
    """``cron '0 2 * * *' in Europe/Berlin`` or ``every 15m``."""
    enabled: bool
    """False when the workflow is disabled, so the schedule will not fire."""
    next_fires: tuple[datetime, ...] = ()
    """The next fire times after ``now`` in the schedule's time zone; empty when removed or disabled."""
    previous: str | None = None
    """For a changed schedule whose timing changed: the description in base."""
    parts: tuple[str, ...] = ()
    """For a changed schedule: the other keys that changed, e.g. ``params``."""


@dataclass(frozen=True)
class RouteChange:
    """A webhook route ``/hooks/<path>`` added, removed or changed."""

    kind: ChangeKind
    path: str
    """Without slashes around it, as the route is served: ``/hooks/<path>``."""
    workflow: str
    methods: tuple[str, ...]
    auth: str
    """The auth type: none, token, hmac-sha256, github or slack."""
    enabled: bool
    parts: tuple[str, ...] = ()
    """For a changed route: what changed. Only key names: auth settings may hold secrets."""


@dataclass(frozen=True)
class PlanDiff:
    """Everything deploying head over base would change."""

    workflows: tuple[WorkflowChange, ...] = ()
    schedules: tuple[ScheduleChange, ...] = ()
    routes: tuple[RouteChange, ...] = ()
    config: tuple[str, ...] = ()
    """Changes of ``weir.toml``, e.g. ``"connections added: `crm`"``."""

    @property
    def empty(self) -> bool:
        return not (self.workflows or self.schedules or self.routes or self.config)


# --- diff -------------------------------------------------------------------------------------


def diff_revisions(base: Revision | None, head: Revision, *, now: datetime) -> PlanDiff:
    """What changes when ``head`` replaces ``base`` (None: nothing deployed yet)."""
    old = base.workflows if base else {}
    new = head.workflows
    workflows: list[WorkflowChange] = []
    schedules: list[ScheduleChange] = []
    routes = _diff_routes(_routes(base), _routes(head))
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is None and after is not None:
            workflows.append(WorkflowChange("added", name, after.document.path))
        elif after is None and before is not None:
            workflows.append(WorkflowChange("removed", name, before.document.path))
        elif before is not None and after is not None:
            parts = _workflow_parts(_dump(before.model), _dump(after.model))
            if parts:
                workflows.append(WorkflowChange("changed", name, after.document.path, tuple(parts)))
        schedules.extend(
            _diff_schedules(
                name,
                before.model.on.schedule if before else [],
                before.model.enabled if before else True,
                after.model.on.schedule if after else [],
                after.model.enabled if after else True,
                now,
            )
        )
    return PlanDiff(
        workflows=tuple(sorted(workflows, key=lambda c: (_KIND_ORDER[c.kind], c.name))),
        schedules=tuple(sorted(schedules, key=lambda c: (_KIND_ORDER[c.kind], c.workflow, c.index))),
        routes=tuple(sorted(routes, key=lambda c: (_KIND_ORDER[c.kind], c.path))),
        config=tuple(_config_parts(base, head)),
    )


def _dump(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _workflow_parts(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for key in _keys(Workflow, before, after):
        old, new = before.get(key), after.get(key)
        if key in _IGNORED_KEYS or old == new:
            continue
        if key in ("steps", "on_failure"):
            parts.extend(_step_parts("steps" if key == "steps" else "on_failure steps", old or [], new or []))
        elif key in ("params", "outputs"):
            parts.extend(_mapping_parts(key, old or {}, new or {}))
        elif key == "on":
            old, new = old or {}, new or {}
            parts.extend(
                label
                for sub, label in (("schedule", "schedules"), ("webhook", "webhooks"))
                if old.get(sub) != new.get(sub)
            )
        elif key == "enabled":
            parts.append("enabled" if new is not False else "disabled")
        else:
            parts.append(key)
    return parts


def _keys(model: type[BaseModel], *dicts: dict[str, Any]) -> list[str]:
    """Keys of the dumps of ``model``, in the order its fields are declared."""
    order = {info.alias or name: index for index, (name, info) in enumerate(model.model_fields.items())}
    return sorted(dict.fromkeys(key for d in dicts for key in d), key=lambda key: order.get(key, len(order)))


def _step_parts(label: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    old = {step["id"]: step for step in before}
    new = {step["id"]: step for step in after}
    added = [sid for sid in new if sid not in old]
    removed = [sid for sid in old if sid not in new]
    changed = [sid for sid in new if sid in old and old[sid] != new[sid]]
    parts = [f"{label} {verb}: {_names(ids)}" for verb, ids in (("added", added), ("removed", removed)) if ids]
    if changed:
        parts.append(f"{label} changed: {_names(changed)}")
    if not parts:
        parts.append(f"{label} reordered")
    return parts


def _mapping_parts(label: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    added = [key for key in after if key not in before]
    removed = [key for key in before if key not in after]
    changed = [key for key in after if key in before and before[key] != after[key]]
    return [
        f"{label} {verb}: {_names(keys)}"
        for verb, keys in (("added", added), ("removed", removed), ("changed", changed))
        if keys
    ]


def _names(items: Iterable[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


@dataclass
class _Timed:
    index: int
    schedule: Schedule
    description: str
    dump: dict[str, Any]
    enabled: bool

    def same(self, other: _Timed) -> bool:
        return self.dump == other.dump and self.enabled == other.enabled


def _diff_schedules(
    workflow: str,
    before: list[Schedule],
    before_enabled: bool,
    after: list[Schedule],
    after_enabled: bool,
    now: datetime,
) -> list[ScheduleChange]:
    old = [_Timed(i, s, _describe(s), _dump(s), before_enabled) for i, s in enumerate(before)]
    new = [_Timed(i, s, _describe(s), _dump(s), after_enabled) for i, s in enumerate(after)]
    # Pair what is identical, then what has the same timing, then the rest in order: a
    # workflow whose only schedule moves from 02:00 to 03:00 reads as one changed schedule.
    pairs: list[tuple[_Timed, _Timed]] = []
    for match in (_Timed.same, lambda a, b: a.description == b.description, lambda a, b: True):
        for item in list(new):
            partner = next((candidate for candidate in old if match(candidate, item)), None)
            if partner is not None:
                old.remove(partner)
                new.remove(item)
                pairs.append((partner, item))
    changes = [_schedule_change("added", workflow, item, now) for item in new]
    changes += [_schedule_change("removed", workflow, item, now) for item in old]
    for previous, item in pairs:
        if previous.same(item):
            continue
        timing_changed = previous.description != item.description
        parts = [
            key
            for key in _keys(Schedule, previous.dump, item.dump)
            if previous.dump.get(key) != item.dump.get(key)
            and not (timing_changed and key in ("cron", "every", "timezone"))
        ]
        if previous.enabled != item.enabled:
            parts.append("workflow enabled" if item.enabled else "workflow disabled")
        changes.append(
            _schedule_change(
                "changed",
                workflow,
                item,
                now,
                previous=previous.description if timing_changed else None,
                parts=tuple(parts),
            )
        )
    return changes


def _schedule_change(
    kind: ChangeKind,
    workflow: str,
    item: _Timed,
    now: datetime,
    *,
    previous: str | None = None,
    parts: tuple[str, ...] = (),
) -> ScheduleChange:
    fires = _next_fires(item.schedule, now) if kind != "removed" and item.enabled else ()
    return ScheduleChange(kind, workflow, item.index, item.description, item.enabled, fires, previous, parts)


def _describe(schedule: Schedule) -> str:
    from weir.workflows.cron import CronError, parse_schedule

    try:
        return parse_schedule(schedule.cron, schedule.every, schedule.timezone).describe()
    except CronError:  # only a base revision can hold a schedule that does not parse
        pass
    if schedule.cron is not None:
        return f"cron '{schedule.cron}' in {schedule.timezone}"
    return f"every {format_duration(schedule.every)}" if schedule.every is not None else "no timing"


def _next_fires(schedule: Schedule, now: datetime) -> tuple[datetime, ...]:
    from weir.workflows.cron import CronError, parse_schedule, validate_timezone

    try:
        zone = validate_timezone(schedule.timezone)
        times = parse_schedule(schedule.cron, schedule.every, schedule.timezone).next_fire_times(now, FIRE_TIMES)
    except CronError:
        return ()
    return tuple(moment.astimezone(zone) for moment in times)


def _routes(revision: Revision | None) -> dict[str, tuple[str, bool, Webhook]]:
    """Webhook routes by path (without slashes around it): workflow name, enabled, trigger."""
    routes: dict[str, tuple[str, bool, Webhook]] = {}
    for name, loaded in sorted((revision.workflows if revision else {}).items()):
        for hook in loaded.model.on.webhook:
            routes.setdefault(hook.path.strip("/"), (name, loaded.model.enabled, hook))
    return routes


def _diff_routes(
    old: dict[str, tuple[str, bool, Webhook]], new: dict[str, tuple[str, bool, Webhook]]
) -> list[RouteChange]:
    changes = [_route_change("added", path, new[path]) for path in new if path not in old]
    changes += [_route_change("removed", path, old[path]) for path in old if path not in new]
    for path in new.keys() & old.keys():
        parts = _route_parts(old[path], new[path])
        if parts:
            changes.append(_route_change("changed", path, new[path], tuple(parts)))
    return changes


def _route_change(
    kind: ChangeKind, path: str, route: tuple[str, bool, Webhook], parts: tuple[str, ...] = ()
) -> RouteChange:
    workflow, enabled, hook = route
    return RouteChange(kind, path, workflow, tuple(hook.methods), hook.auth.type, enabled, parts)


def _route_parts(old: tuple[str, bool, Webhook], new: tuple[str, bool, Webhook]) -> list[str]:
    """What changed on a route, by key name only: auth settings may hold secrets."""
    (old_name, old_enabled, old_hook), (new_name, new_enabled, new_hook) = old, new
    parts = [f"workflow (was `{old_name}`)"] if old_name != new_name else []
    before, after = _dump(old_hook), _dump(new_hook)
    for key in _keys(Webhook, before, after):
        if key == "path" or before.get(key) == after.get(key):
            continue
        if key == "methods":
            parts.append(f"methods (was {','.join(old_hook.methods)})")
        elif key == "auth" and old_hook.auth.type != new_hook.auth.type:
            parts.append(f"auth (was {old_hook.auth.type})")
        elif key == "auth":
            parts.append("auth settings")
        else:
            parts.append(key)
    if old_enabled != new_enabled:
        parts.append("workflow enabled" if new_enabled else "workflow disabled")
    return parts


def _config_parts(base: Revision | None, head: Revision) -> list[str]:
    before = _dump(base.config) if base else {}
    after = _dump(head.config)
    parts = _mapping_parts("connections", before.get("connections", {}), after.get("connections", {}))
    parts += [f"{key} changed" for key in ("defaults", "exclude") if before.get(key) != after.get(key)]
    return parts


# --- Markdown ---------------------------------------------------------------------------------


def render_plan(
    diff: PlanDiff | None,
    *,
    base: str,
    head: str,
    findings: Sequence[Finding] = (),
    notes: Sequence[str] = (),
) -> str:
    """The plan as Markdown for a pull request comment; ``diff`` is None when head would be refused."""
    lines = [f"## weir plan `{base}..{head}`", ""]
    for note in notes:
        lines += [note, ""]
    if diff is None or has_errors(findings):
        errors = sum(f.severity is Severity.ERROR for f in findings)
        lines += [
            f"**Deploying head would be refused:** {errors} error{'s' * (errors != 1)}. "
            "The server would keep running the last good revision.",
            "",
            *_code_block(findings),
        ]
        return "\n".join(lines) + "\n"
    if diff.empty:
        lines += ["No changes to deploy.", ""]
    lines += _section("Workflows", [_workflow_line(c) for c in diff.workflows])
    lines += _section("Schedules", [_schedule_line(c) for c in diff.schedules])
    lines += _section("Webhook routes", [_route_line(c) for c in diff.routes])
    lines += _section("Repo config (`weir.toml`)", [f"- {part}" for part in diff.config])
    if findings:
        lines += ["### Warnings", "", *_code_block(findings), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _section(title: str, items: list[str]) -> list[str]:
    return [f"### {title}", "", *items, ""] if items else []


def _code_block(findings: Iterable[Finding]) -> list[str]:
    return ["```text", *(str(f) for f in findings), "```"]


def _workflow_line(change: WorkflowChange) -> str:
    parts = f": {'; '.join(change.parts)}" if change.parts else ""
    return f"- {change.kind} `{change.name}` (`{change.file}`){parts}"


def _schedule_line(change: ScheduleChange) -> str:
    text = f"- {change.kind} `{change.workflow}`: {change.description}"
    if change.previous is not None:
        text += f" (was {change.previous})"
    if change.parts:
        text += f"; changed: {', '.join(change.parts)}"
    if change.kind != "removed":
        if not change.enabled:
            text += " (disabled: will not fire)"
        elif change.next_fires:
            text += f"; next: {', '.join(_iso(moment) for moment in change.next_fires)}"
    return text


def _route_line(change: RouteChange) -> str:
    text = (
        f"- {change.kind} `{','.join(change.methods)} /hooks/{change.path}` → `{change.workflow}`, auth {change.auth}"
    )
    if change.parts:
        text += f"; changed: {', '.join(change.parts)}"
    if change.kind != "removed" and not change.enabled:
        text += " (disabled: starts no runs)"
    return text


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()
