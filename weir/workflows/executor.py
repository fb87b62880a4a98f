"""The executor: claim ready runs from the store and execute them, a bounded number at once.

Several executors (processes) may share one PostgreSQL database: a claim leases a run to one
owner; the owner renews its leases every third of the lease time; a run whose lease expired
(its owner died) is claimed again by anyone and resumes from its committed steps. With SQLite
there is one process, so at start every lease left by a previous process is freed at once.

The executor sleeps until there is work: ``Engine.submit`` and resume calls wake it at once,
parked runs wake it at their ``wake_at``; on PostgreSQL a notification from the process that
made a run ready (a webhook another replica accepted, a resume, a run handed back) wakes it,
and it polls the store every ``poll_seconds`` as well, for what a lost notification missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import datetime

from weir.errors import StoreUnavailable
from weir.records import RunRecord
from weir.types import RunStatus
from weir.workflows.engine import Engine, RunListener
from weir.workflows.execution import RunExecution

log = logging.getLogger("weir.executor")

DEFAULT_MAX_RUNS = 32
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_POLL_SECONDS = 1.0


class FinishedRuns(RunListener):
    """Events set when runs finish in this process: put one in ``events`` under the run's id, await it."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def run_finished(self, run: RunRecord) -> None:
        event = self.events.get(run.id)
        if event is not None:
            event.set()


class Executor:
    """Claims runs that are ready and executes them; call ``start`` and ``stop``."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str | None = None,
        max_runs: int = DEFAULT_MAX_RUNS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.max_runs = max_runs
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.executions: dict[str, RunExecution] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._finished = FinishedRuns()
        engine.listeners.append(self._finished)
        engine.on_work = self.notify
        engine.on_cancel = self._cancel

    def notify(self) -> None:
        """There may be new work: look now."""
        self._wake.set()

    async def start(self) -> None:
        if self.store.single_node:
            freed = await self.store.expire_leases()
            if freed:
                log.info("resuming %d run(s) interrupted by the last stop", freed)
        self._stopping = False
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="weir-executor-claims"),
            asyncio.create_task(self._heartbeat_loop(), name="weir-executor-leases"),
        ]
        # PostgreSQL: other processes' new work wakes this one at once (SQLite returns at once: one process).
        self._loops.append(asyncio.create_task(self.store.listen_for_work(self.notify), name="weir-executor-listen"))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let runs in flight finish for ``grace`` seconds, then hand them back."""
        self._stopping = True
        self._wake.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        for run_id, task in list(self._tasks.items()):
            execution = self.executions.get(run_id)
            if execution is not None:
                execution.stop("shutdown")
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def run_until_finished(self, run_id: str) -> RunRecord:
        """Execute runs (the one given, its children, anything else ready) until ``run_id`` has finished."""
        event = self._finished.events.setdefault(run_id, asyncio.Event())
        run = await self.store.get_run(run_id)
        if run is None:
            raise LookupError(f"no run with id '{run_id}'")
        if not run.finished:
            await self.start()
            try:
                await event.wait()
            finally:
                await self.stop()
        self._finished.events.pop(run_id, None)
        final = await self.store.get_run(run_id)
        assert final is not None  # noqa: S101 - it was there a moment ago and runs are never deleted mid-run
        return final

    # -- loops -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.max_runs - len(self._tasks)
            claimed: list[RunRecord] = []
            if free > 0:
                try:
                    claimed = await self.store.claim_runs(
                        self.owner, limit=free, lease_seconds=self.lease_seconds, now=self.engine.clock()
                    )
                except Exception:
                    log.exception("claiming runs failed; trying again in %ss", self.poll_seconds)
            for run in claimed:
                if run.id in self._tasks:  # still executing here (its lease was renewed by the claim): run it once
                    continue
                self._tasks[run.id] = asyncio.create_task(self._execute(run), name=f"weir-run-{run.id}")
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease_seconds / 3)
            run_ids = list(self._tasks)
            try:
                lost, cancels = await self.store.renew_leases(
                    self.owner, run_ids, lease_seconds=self.lease_seconds, now=self.engine.clock()
                )
            except Exception:
                log.exception("renewing leases failed; runs continue and the next renewal tries again")
                continue
            for run_id in lost:
                log.warning("lost the lease of run %s to another process; stopping it here", run_id)
                self._abandon(run_id, "lost")
            for run_id in cancels:
                self._cancel(run_id)

    # -- one run -----------------------------------------------------------------------------

    async def _execute(self, run: RunRecord) -> None:
        try:
            await self.engine.load(run.revision)
            execution = self.engine.execution(run)
            self.executions[run.id] = execution
            await execution.run()
            if run.status == RunStatus.WAITING:
                await self.store.release_run(run.id, self.owner, status=RunStatus.WAITING, wake_at=run.wake_at)
                self._wake_at(run.wake_at)
        except asyncio.CancelledError:
            stopping = self.executions.get(run.id)
            if stopping is not None and stopping.stop_reason == "shutdown":  # hand it back; a lost lease is not ours
                await asyncio.shield(self.store.release_run(run.id, self.owner, status=RunStatus.RUNNING, wake_at=None))
            raise
        except StoreUnavailable as exc:
            # Not the run's fault: its lease is no longer renewed from here, so once it expires this process or
            # another one claims it again and resumes it from its last committed step.
            log.warning("run %s of %s stopped: %s; it resumes once its lease expires", run.id, run.workflow, exc)
        except Exception as exc:  # never lose a run to a bug: fail it with the reason
            log.exception("run %s of %s crashed in the engine", run.id, run.workflow)
            run.status, run.finished_at = RunStatus.FAILED, self.engine.clock()
            run.error = self.engine.masker.mask_text(f"internal error: {type(exc).__name__}: {exc}")
            try:
                await self.store.finish_run(run)
            except Exception:
                log.exception("could not record the failure of run %s", run.id)
            self.engine.emit("run_finished", run)
        finally:
            self.executions.pop(run.id, None)
            self._tasks.pop(run.id, None)
            self._wake.set()

    def _wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        delay = max(0.0, (when - self.engine.clock()).total_seconds())
        asyncio.get_running_loop().call_later(delay, self.notify)

    def _cancel(self, run_id: str) -> None:
        execution = self.executions.get(run_id)
        if execution is not None:
            execution.stop("cancel")

    def _abandon(self, run_id: str, reason: str) -> None:
        execution = self.executions.get(run_id)
        if execution is not None:
            execution.stop(reason)
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()
