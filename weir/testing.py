"""Helpers for tests of weir and of third-party connectors: run workflows in-process.

    async with Harness(tmp_path, {"hello.toml": HELLO}) as h:
        run = await h.run("hello", {"name": "ada"})
        assert run.outputs == {"greeting": "hello ada"}

The harness validates the files like ``weir check`` (a finding with severity error fails the
test with the finding's text), stores runs in a real SQLite file (or ``db=`` a PostgreSQL URL),
and executes them with a real ``Executor``.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from weir.connectors.registry import ConnectorRegistry
from weir.records import RunRecord, StepRecord
from weir.secrets import SecretResolver
from weir.store.database import open_database
from weir.store.runs import SqlRunStore
from weir.workflows.engine import Engine, RunListener, utcnow
from weir.workflows.executor import Executor
from weir.workflows.findings import Severity
from weir.workflows.source import read_directory
from weir.workflows.validation import validate_tree


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (relative path → text, dedented) under ``root``."""
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


class Harness:
    """An automation directory, a run store and an engine with its executor, for one test."""

    def __init__(
        self,
        root: Path,
        files: Mapping[str, str] | None = None,
        *,
        db: str | None = None,
        registry: ConnectorRegistry | None = None,
        secrets: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        listeners: list[RunListener] | None = None,
        poll_seconds: float = 0.05,
        lease_seconds: float = 30.0,
    ) -> None:
        self.root = root
        self.directory = root / "workflows"
        self.state_dir = root / "state"
        self.db = db
        self.registry = registry or ConnectorRegistry()
        env = {f"WEIR_SECRET_{k}": v for k, v in (secrets or {}).items()}
        self.resolver = SecretResolver(env)
        self.environ = dict(environ or {})
        self.clock = clock
        self.listeners = listeners or []
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.revisions = 0
        if files:
            write_files(self.directory, files)
        self.store: SqlRunStore
        self.engine: Engine
        self.executor: Executor

    async def __aenter__(self) -> Harness:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the store and the engine, and deploy the files."""
        self.store = SqlRunStore(await open_database(self.db, self.state_dir))
        self.engine = Engine(
            self.store,
            self.registry,
            secrets=self.resolver,
            environ=self.environ,
            clock=self.clock,
            listeners=list(self.listeners),
        )
        self.executor = Executor(self.engine, poll_seconds=self.poll_seconds, lease_seconds=self.lease_seconds)
        if self.directory.exists():
            self.deploy()

    async def close(self) -> None:
        await self.executor.stop(grace=0)
        await self.engine.aclose()
        await self.store.close()

    def deploy(self, files: Mapping[str, str] | None = None) -> str:
        """Validate the directory (after writing ``files``) and make it the current revision; return its sha."""
        if files:
            write_files(self.directory, files)
        result = validate_tree(read_directory(self.directory), self.registry)
        errors = [f for f in result.findings if f.severity == Severity.ERROR]
        if errors:
            raise AssertionError("workflow files are invalid:\n" + "\n".join(str(f) for f in errors))
        self.revisions += 1
        sha = f"rev{self.revisions:037d}"
        self.engine.deploy(sha, result.revision)
        return sha

    async def submit(self, workflow: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> RunRecord:
        submitted = await self.engine.submit(workflow, params, **kwargs)
        if submitted.run is None:
            raise AssertionError(f"run of {workflow} was skipped by its concurrency policy")
        return submitted.run

    async def run(self, workflow: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> RunRecord:
        """Submit a run and execute until it has finished; return the stored run."""
        run = await self.submit(workflow, params, **kwargs)
        return await self.executor.run_until_finished(run.id)

    async def until(self, run_id: str, status: str, within: float = 5.0) -> RunRecord:
        """Poll the store until the run has ``status``; fail the test after ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                run = await self.store.get_run(run_id)
                if run is None:
                    raise AssertionError(f"no run with id '{run_id}'")
                if run.status == status:
                    return run
                await asyncio.sleep(0.01)

    async def steps(self, run_id: str) -> dict[str, StepRecord]:
        """The latest record of each step (and foreach item, as ``step[index]``) of the main phase."""
        latest: dict[str, StepRecord] = {}
        for record in await self.store.get_steps(run_id):
            if record.phase != "main":
                continue
            key = record.step_id if record.item_index < 0 else f"{record.step_id}[{record.item_index}]"
            if key not in latest or _rank(record) >= _rank(latest[key]):
                latest[key] = record
        return latest


def _rank(record: StepRecord) -> tuple[bool, int]:
    # A finished attempt-0 record (skip, cache hit, fallback, foreach summary) is the step's last word.
    return (record.attempt == 0 and record.finished, record.attempt)
