"""The run engine: start runs, execute them durably, cancel, rerun and resume them.

``Engine`` is what the server, ``weir worker`` and ``weir run`` drive::

    engine = Engine(store, registry, secrets=resolver)
    engine.deploy(sha, revision)                       # a validated revision; the newest is current
    run = await engine.submit("nightly", {"day": "mon"}, trigger={"type": "manual"})
    await Executor(engine).run_until_finished(run.id)  # claims and executes queued runs

Executing a run (``weir.workflows.execution``) walks its step graph and commits every finished
step before a step that needs it starts, so a run interrupted at any point resumes from what
was committed. The engine never imports SQL: it speaks ``weir.records.RunStore``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from weir.connectors.registry import ConnectorRegistry
from weir.errors import WeirError, WorkflowNotFound
from weir.records import FINISHED_STEP, Phase, RunRecord, RunStore, StepRecord, StoredRevision, new_run_id
from weir.secrets import Masker, SecretResolver
from weir.text import did_you_mean
from weir.types import RunStatus, StepStatus
from weir.workflows.connections import ConnectionPool
from weir.workflows.findings import Severity
from weir.workflows.params import resolve_params
from weir.workflows.source import tree_from_files
from weir.workflows.templating import Templates, base_scope, default_templates
from weir.workflows.validation import LoadedWorkflow, Revision, validate_tree

if TYPE_CHECKING:
    from weir.workflows.execution import RunExecution

log = logging.getLogger("weir.engine")

ENV_PREFIX = "WEIR_VAR_"


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunListener:
    """Hooks called as runs progress (metrics, logs, live views). Every hook is optional; errors are logged."""

    def run_started(self, run: RunRecord) -> None:
        """A run began executing (also when it resumes after waiting or a restart)."""

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        """An attempt of a step (or foreach item) began."""

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        """A step record reached a final or waiting status."""

    def log(self, run: RunRecord, level: str, message: str, step_id: str | None) -> None:
        """A line was added to the run's log."""

    def run_finished(self, run: RunRecord) -> None:
        """A run ended (succeeded, failed or cancelled)."""

    def run_parked(self, run: RunRecord) -> None:
        """A run is waiting (sleep, wait, child run) and holds no worker."""


@dataclass
class Deployment:
    """A validated revision the engine can run, with its connections."""

    sha: str
    revision: Revision
    connections: ConnectionPool

    def workflow(self, name: str) -> LoadedWorkflow:
        loaded = self.revision.workflows.get(name)
        if loaded is None:
            raise WorkflowNotFound(
                f"no workflow named '{name}' in revision {self.sha[:12]}{did_you_mean(name, self.revision.workflows)}"
            )
        return loaded


@dataclass(frozen=True)
class Submitted:
    """What ``Engine.submit`` did: the run it stored, or that the concurrency policy skipped it."""

    run: RunRecord | None
    skipped: bool = False
    cancelled: list[str] = field(default_factory=list)
    duplicate: bool = False
    """``run`` is an earlier run that holds the same dedup key; nothing new was stored."""


class Engine:
    """Starts and executes runs of deployed revisions against a ``RunStore``."""

    def __init__(
        self,
        store: RunStore,
        registry: ConnectorRegistry,
        *,
        secrets: SecretResolver | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        public_url: str = "http://127.0.0.1:8080",
        signing_key: bytes | None = None,
        listeners: Sequence[RunListener] = (),
        templates: Templates | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.secrets = secrets or SecretResolver({})
        self.masker = Masker(self.secrets.values())
        self.env = {k: v for k, v in (environ or {}).items() if k.startswith(ENV_PREFIX)}
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.signing_key = signing_key or os.urandom(32)
        self.listeners = list(listeners)
        self.templates = templates or default_templates()
        self.deployments: dict[str, Deployment] = {}
        self.current: str | None = None
        self.on_work: Callable[[], None] = lambda: None
        """Set by the executor: called when there is new work (a run was queued or woken)."""
        self.on_cancel: Callable[[str], None] = lambda _run_id: None
        """Set by the executor: called when a run it may be executing was asked to stop."""

    # -- revisions -------------------------------------------------------------------------

    def deploy(self, sha: str, revision: Revision, *, current: bool = True) -> Deployment:
        """Make a validated revision runnable; with ``current`` new runs use it."""
        deployment = self.deployments.get(sha)
        if deployment is None:
            pool = ConnectionPool(
                self.registry,
                revision.config,
                templates=self.templates,
                scope={"secrets": self.secrets.scope(), "env": self.env},
            )
            deployment = self.deployments[sha] = Deployment(sha, revision, pool)
        if current:
            self.current = sha
        return deployment

    async def publish(self, revision: StoredRevision, validated: Revision) -> Deployment:
        """Store a revision's files (so any process can run its runs later) and make it current."""
        await self.store.save_revision(revision)
        return self.deploy(revision.sha, validated)

    async def load(self, sha: str) -> Deployment:
        """The deployment of ``sha``, rebuilt from the stored files when this process has not deployed it."""
        if sha in self.deployments:
            return self.deployments[sha]
        stored = await self.store.load_revision(sha)
        if stored is None:
            raise WorkflowNotFound(f"revision {sha[:12]} is neither loaded nor stored; its runs cannot continue")
        result = validate_tree(tree_from_files(stored.files), self.registry)
        if not result.ok():
            problems = "; ".join(str(f) for f in result.findings if f.severity is Severity.ERROR)
            raise WorkflowNotFound(f"stored revision {sha[:12]} no longer validates: {problems}")
        log.info("loaded stored revision %s for its runs", sha[:12])
        return self.deploy(sha, result.revision, current=False)

    def deployment(self, sha: str | None = None) -> Deployment:
        key = sha or self.current
        if key is None or key not in self.deployments:
            raise WorkflowNotFound(f"revision {key or '(none)'} is not loaded; no workflows can run yet")
        return self.deployments[key]

    # -- starting runs ---------------------------------------------------------------------

    async def submit(
        self,
        workflow: str,
        params: Mapping[str, Any] | None = None,
        *,
        trigger: Mapping[str, Any] | None = None,
        revision: str | None = None,
        run_id: str | None = None,
        parent: tuple[str, str] | None = None,
        rerun_of: str | None = None,
        steps: Sequence[StepRecord] = (),
        dedup_key: str | None = None,
    ) -> Submitted:
        """Validate params, apply the concurrency policy, and store a queued run (committed on return).

        With ``dedup_key`` (a webhook delivery, a schedule's fire time) at most one run holds the key:
        a later submit returns the first run with ``duplicate`` set and stores nothing.
        Raises ``WorkflowNotFound`` or ``ParamsInvalid`` (every bad param named).
        """
        if dedup_key is not None:
            earlier = await self.store.find_run(dedup_key)
            if earlier is not None:
                return Submitted(earlier, duplicate=True)
        deployment = self.deployment(revision)
        loaded = deployment.workflow(workflow)
        model = loaded.model
        resolved = resolve_params(workflow, model, params or {})
        trigger = dict(trigger or {"type": "manual"})
        run = RunRecord(
            id=run_id or new_run_id(),
            workflow=workflow,
            revision=deployment.sha,
            status=RunStatus.QUEUED,
            created_at=self.clock(),
            # A secret value that arrived in params or a trigger (a child called with one, a token in a webhook's
            # header) is stored masked, like every other run data; workflows read secrets by name instead.
            params=self.masker.mask(resolved),
            trigger=self.masker.mask(trigger),
            parent_run_id=parent[0] if parent else None,
            parent_step=parent[1] if parent else None,
            rerun_of=rerun_of,
            dedup_key=dedup_key,
        )
        cancelled: list[str] = []
        if model.concurrency:
            policy = model.concurrency
            if policy.key:
                scope = self.trigger_scope(run, deployment)
                run.concurrency_key = str(self.templates.render_string(policy.key, scope))
            run.concurrency_limit = policy.limit
            if policy.policy != "queue":
                # Queued runs count: one accepted a moment ago and not claimed yet is as active as a running
                # one, so a burst of triggers cannot slip past a skip or cancel-oldest limit.
                active = await self.store.active_runs(workflow, run.concurrency_key, queued=True)
                if len(active) >= policy.limit:
                    if policy.policy == "skip":
                        return Submitted(None, skipped=True)
                    for old in active[: len(active) - policy.limit + 1]:
                        log.info("cancelling run %s of %s for newer run %s (cancel-oldest)", old.id, workflow, run.id)
                        await self.cancel(old.id)
                        cancelled.append(old.id)
        stored = await self.store.create_run(run, steps=steps)
        if stored.id != run.id:  # another process stored the key between the look above and this insert
            return Submitted(stored, duplicate=True)
        self.on_work()
        return Submitted(run, cancelled=cancelled)

    def trigger_scope(self, run: RunRecord, deployment: Deployment) -> dict[str, Any]:
        """The scope of templates evaluated when a run starts (concurrency key)."""
        trigger = run.trigger
        return {
            **base_scope(failed=False, clock=self.clock),
            "params": run.params,
            "payload": trigger.get("payload"),
            "headers": trigger.get("headers", {}),
            "query": trigger.get("query", {}),
            "workflow": {"name": run.workflow, "revision": deployment.sha},
            "secrets": self.secrets.scope(),
            "env": self.env,
        }

    async def rerun(self, run_id: str, *, from_failed: bool = False) -> RunRecord:
        """Start a new run with the params and revision of ``run_id``.

        With ``from_failed`` the steps that succeeded are not run again: their outputs are reused.
        """
        old = await self.store.get_run(run_id)
        if old is None:
            raise LookupError(f"no run with id '{run_id}'")
        new_id = new_run_id()
        reused: list[StepRecord] = []
        if from_failed:
            for record in await self.store.get_steps(run_id):
                if record.phase == Phase.MAIN and record.status == StepStatus.SUCCEEDED:
                    note = f"reused from run {run_id}"
                    reused.append(
                        StepRecord(
                            run_id=new_id,
                            step_id=record.step_id,
                            status=record.status,
                            item_index=record.item_index,
                            attempt=0 if record.item_index < 0 else record.attempt,
                            started_at=record.started_at,
                            finished_at=record.finished_at,
                            input=record.input,
                            output=record.output,
                            note=note,
                        )
                    )
        trigger = {"type": "rerun", "run_id": run_id, "from": "failed" if from_failed else "start"}
        for key in ("payload", "headers", "query"):
            if key in old.trigger:
                trigger[key] = old.trigger[key]
        submitted = await self.submit(
            old.workflow,
            old.params,
            trigger=trigger,
            revision=old.revision,
            run_id=new_id,
            rerun_of=run_id,
            steps=_latest_only(reused),
        )
        if submitted.run is None:
            raise WeirError(f"rerun of {run_id} was skipped: workflow '{old.workflow}' is at its concurrency limit")
        return submitted.run

    async def cancel(self, run_id: str) -> RunRecord | None:
        """Ask a run to stop. Queued runs end at once; running and waiting ones at their executor's next look."""
        run = await self.store.request_cancel(run_id, self.clock())
        if run is not None and not run.finished:
            self.on_cancel(run_id)
            self.on_work()
        return run

    async def resume(self, run_id: str, step_id: str, payload: Any) -> StepRecord | None:
        """Deliver the body of a resume call to the ``wait`` step ``step_id``; None when it is not waiting."""
        record = await self.store.resume_step(run_id, step_id, self.masker.mask(payload), self.clock())
        if record is not None:
            self.on_work()
        return record

    # -- resume URLs ------------------------------------------------------------------------

    def resume_signature(self, run_id: str, step_id: str) -> str:
        message = f"{run_id}:{step_id}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()[:32]

    def resume_url(self, run_id: str, step_id: str) -> str:
        """An absolute URL that resumes ``step_id`` of ``run_id`` without an API token."""
        sig = self.resume_signature(run_id, step_id)
        return f"{self.public_url}/api/runs/{run_id}/steps/{step_id}/resume?sig={sig}"

    def verify_resume(self, run_id: str, step_id: str, signature: str) -> bool:
        # Compared as bytes: compare_digest refuses str with non-ASCII characters, which a caller may send.
        expected = self.resume_signature(run_id, step_id).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))

    # -- executing ---------------------------------------------------------------------------

    def execution(self, run: RunRecord) -> RunExecution:
        """The execution of a claimed run; ``await execution.run()`` runs it until it finishes or parks."""
        from weir.workflows.execution import RunExecution

        return RunExecution(self, run, self.deployment(run.revision))

    def emit(self, hook: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, hook)(*args)
            except Exception:
                log.exception("run listener %s.%s failed", type(listener).__name__, hook)

    async def aclose(self) -> None:
        for deployment in self.deployments.values():
            await deployment.connections.aclose()


def _latest_only(records: list[StepRecord]) -> list[StepRecord]:
    """One record per step (and item): the last attempt, which holds the output."""
    latest: dict[tuple[str, int], StepRecord] = {}
    for record in records:
        if record.status in FINISHED_STEP:
            latest[(record.step_id, record.item_index)] = record
    return list(latest.values())
