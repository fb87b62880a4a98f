"""``weir run``: run one workflow once, in this process, with live progress on stderr.

The automation directory is read from disk (the working tree: this is for authoring), validated
like ``weir check``, and run by the same engine and executor as the server. Runs go to an
in-memory SQLite database unless ``--db`` names one, so ``weir run`` leaves nothing behind and
never competes with a server for the state directory's database.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConfigError
from weir.records import RunRecord, StepRecord
from weir.secrets import SecretResolver
from weir.store.database import open_database
from weir.store.runs import SqlRunStore
from weir.types import StepStatus
from weir.workflows.engine import Engine, RunListener
from weir.workflows.executor import Executor
from weir.workflows.findings import Finding, has_errors
from weir.workflows.source import read_directory
from weir.workflows.validation import validate_tree

_MARKS = {
    StepStatus.SUCCEEDED: "[green]✓[/]",
    StepStatus.FAILED: "[red]✗[/]",
    StepStatus.SKIPPED: "[dim]↷[/]",
    StepStatus.CANCELLED: "[yellow]■[/]",
    StepStatus.WAITING: "[cyan]⏸[/]",
}


def parse_params(pairs: Sequence[str], params_file: str | None) -> dict[str, Any]:
    """``--params-file`` (JSON or TOML) overlaid with ``-p key=value`` (value parsed as JSON when it parses)."""
    params: dict[str, Any] = {}
    if params_file:
        path = Path(params_file)
        try:
            text = path.read_text(encoding="utf-8")
            loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--params-file {path}: {exc}; write a JSON object or a TOML table") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--params-file {path} must hold a JSON object, not {type(loaded).__name__}")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p '{pair}' is not key=value; write e.g. -p region=eu or -p count=3")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


class Progress(RunListener):
    """Prints each step as it finishes, and the run's log lines, to a rich console (stderr)."""

    def __init__(self, console: Console, root: str) -> None:
        self.console = console
        self.root = root

    def _prefix(self, run: RunRecord) -> str:
        return "" if run.id == self.root else f"[dim]{escape(run.workflow)}/[/]"

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        if step.item_index >= 0 and step.status == StepStatus.SUCCEEDED:
            return  # a foreach step reports once, for all its items
        name = step.step_id if step.item_index < 0 else f"{step.step_id}[{step.item_index}]"
        if step.phase != "main":
            name = f"{name} ({step.phase.replace('_', ' ')})"
        took = ""
        if step.started_at and step.finished_at and step.status != StepStatus.SKIPPED:
            took = f" [dim]{(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms[/]"
        detail = ""
        if step.status == StepStatus.FAILED:
            detail = f" [red]{escape(step.error or '')}[/]"
        elif step.status == StepStatus.WAITING:
            detail = f" [cyan]waiting{' until ' + step.wake_at.isoformat() if step.wake_at else ''}[/]"
        elif step.note:
            detail = f" [dim]({escape(step.note)})[/]"
        mark = _MARKS.get(step.status, "·")
        self.console.print(f"{mark} {self._prefix(run)}{escape(name)}{took}{detail}", highlight=False)

    def log(self, run: RunRecord, level: str, message: str, step_id: str | None) -> None:
        where = f"{step_id}: " if step_id else ""
        self.console.print(f"  [dim]{level}[/] {self._prefix(run)}{escape(where + message)}", highlight=False)


@dataclass
class OneShotResult:
    run: RunRecord | None
    findings: list[Finding]


async def run_once(
    directory: Path,
    workflow: str,
    params: Mapping[str, Any],
    *,
    db: str | None = None,
    secrets_file: Path | None = None,
    console: Console | None = None,
) -> OneShotResult:
    """Validate ``directory`` and run ``workflow`` until it finishes; invalid files return their findings."""
    registry = ConnectorRegistry()
    result = validate_tree(read_directory(directory), registry)
    if has_errors(result.findings):
        return OneShotResult(None, result.findings)
    resolver = SecretResolver(os.environ, secrets_file)
    console = console or Console(stderr=True)
    for warning in resolver.file_warnings():
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    database = await open_database(db or "sqlite://", directory / ".weir", migrate=True)
    store = SqlRunStore(database)
    engine = Engine(store, registry, secrets=resolver, environ=os.environ)
    executor = Executor(engine)
    try:
        engine.deploy("working-tree", result.revision)
        submitted = await engine.submit(workflow, params, trigger={"type": "manual", "by": "weir run"})
        if submitted.run is None:
            raise ConfigError(f"workflow '{workflow}' is at its concurrency limit (policy skip); no run started")
        engine.listeners.append(Progress(console, submitted.run.id))
        run = await executor.run_until_finished(submitted.run.id)
        return OneShotResult(run, result.findings)
    finally:
        await executor.stop(grace=0)
        await engine.aclose()
        await store.close()
