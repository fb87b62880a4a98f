"""Execute one run: walk the step graph, commit each step, park while waiting, fail or finish.

A ``RunExecution`` starts from what the store holds for the run, so a first start, a wake-up
after ``sleep``/``wait``/a child run, and a restart after a crash are the same code path:

1. Restore each step's state from its latest record. A step record still ``running`` was
   interrupted: an idempotent step runs again with the same idempotency key; any other step
   fails with error kind ``interrupted`` instead of running twice.
2. Walk the graph: a step starts when its needs finished (succeeded, or failed with
   ``on_error = "continue"``/``fallback``) and its ``if`` holds; a step whose needs were skipped
   or failed is skipped unless its ``if`` calls ``always()`` or ``failure()``. Independent
   steps run concurrently. Each finished step is committed before any step that needs it starts.
3. When nothing can run and a step is waiting, the run parks: it holds no worker until its
   ``wake_at`` passes or a resume call / child run wakes it.
4. At the end: outputs for a success; for a failure, compensations of the succeeded steps in
   reverse order (saga), then the ``[[on_failure]]`` steps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from weir.errors import StoreUnavailable
from weir.records import FINISHED_STEP, WHOLE_STEP, LogRecord, Phase, RunRecord, StepRecord
from weir.schemas.common import RetryPolicy, format_duration
from weir.schemas.workflow import Step, StepBody, Workflow
from weir.types import RunStatus, StepStatus
from weir.workflows.jsonvalues import jsonable
from weir.workflows.retry import NO_RETRY, should_retry
from weir.workflows.templating import base_scope
from weir.workflows.units import Outcome, UnitRunner

if TYPE_CHECKING:
    from weir.workflows.engine import Deployment, Engine

log = logging.getLogger("weir.engine")

_STATUS_FUNCTION = re.compile(r"\b(always|failure)\s*\(")


@dataclass
class StepState:
    """What the engine knows about one step of a phase."""

    step: Step
    status: StepStatus = StepStatus.PENDING
    output: Any = None
    error: str | None = None
    kind: str | None = None
    attempts: int = 0
    order: int = 0
    """When the step finished, for compensations in reverse order."""
    records: list[StepRecord] = field(default_factory=list)
    resumed: bool = False
    """The step had started before this pass (it waits or was interrupted): do not evaluate `if` again."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STEP

    @property
    def continues(self) -> bool:
        """A failure of this step does not fail the run."""
        return self.step.on_error == "continue" or self.step.fallback is not None

    def view(self) -> dict[str, Any]:
        return {"output": self.output, "status": str(self.status), "error": self.error, "attempts": self.attempts}


class RunExecution:
    """One pass over a claimed run, until it finishes or parks."""

    def __init__(self, engine: Engine, run: RunRecord, deployment: Deployment) -> None:
        self.engine = engine
        self.store = engine.store
        self.run_record = run
        self.deployment = deployment
        loaded = deployment.workflow(run.workflow)
        self.workflow: Workflow = loaded.model
        self.relpath = loaded.relpath
        self.states: dict[Phase, dict[str, StepState]] = {
            Phase.MAIN: {s.id: StepState(s) for s in self.workflow.steps},
            Phase.ON_FAILURE: {s.id: StepState(s) for s in self.workflow.on_failure},
        }
        self.compensated: dict[str, StepRecord] = {}
        self.steps_view: dict[str, dict[str, Any]] = {}
        self.failed_any = False
        self.fatal: str | None = run.error
        self.stop_reason: str | None = None
        """Why running steps were cancelled: 'cancel', 'timeout', 'shutdown' or 'lost'."""
        self.pending_logs: list[LogRecord] = []
        self.order = itertools.count(1)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.units = UnitRunner(self)
        repo_defaults = deployment.revision.config.defaults
        wf_defaults = self.workflow.defaults
        self.default_retry: RetryPolicy = (
            (wf_defaults and wf_defaults.retry) or (repo_defaults and repo_defaults.retry) or NO_RETRY
        )
        self.default_timeout: timedelta | None = (wf_defaults.timeout if wf_defaults else None) or (
            repo_defaults.timeout if repo_defaults else None
        )
        self.deadline: datetime | None = None

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        run = self.run_record
        now = self.engine.clock()
        self._restore(await self.store.get_steps(run.id))
        if run.started_at is None:
            run.started_at = now
        run.status = RunStatus.RUNNING
        await self.store.update_run(run.id, status=RunStatus.RUNNING, started_at=run.started_at)
        if self.workflow.timeout:
            self.deadline = run.started_at + self.workflow.timeout
        self.engine.emit("run_started", run)
        if run.cancel_requested:
            self.stop_reason = "cancel"
        try:
            await self._run_phases()
        except asyncio.CancelledError:  # shutdown or a lost lease: leave the records for whoever resumes
            self.stop(self.stop_reason or "shutdown")
            if self.tasks:
                await asyncio.wait(self.tasks)
            raise

    async def _run_phases(self) -> None:
        await self._walk(Phase.MAIN, self.workflow.steps)
        if self._parked(Phase.MAIN):
            return await self._park()
        if self.stop_reason == "cancel":
            return await self._finish(RunStatus.CANCELLED, error="cancelled")
        if self.fatal is None:
            outputs = self.units.render_outputs()
            if isinstance(outputs, Outcome):
                await self._set_fatal(outputs.error or "outputs failed")
            else:
                return await self._finish(RunStatus.SUCCEEDED, outputs=outputs)
        self.stop_reason = None
        self.deadline = None
        await self._compensate()
        await self._walk(Phase.ON_FAILURE, self.workflow.on_failure)
        if self._parked(Phase.ON_FAILURE):
            return await self._park()
        await self._finish(RunStatus.FAILED, error=self.fatal)

    def stop(self, reason: str) -> None:
        """Cancel the steps in flight: 'cancel' and 'timeout' record why; 'shutdown' and 'lost' write nothing."""
        if self.stop_reason is None or reason == "cancel":
            self.stop_reason = reason
        for task in list(self.tasks):
            task.cancel()

    async def _set_fatal(self, error: str) -> None:
        if self.fatal is None:
            error = self.engine.masker.mask_text(error)  # stored now, while compensations and on_failure run
            self.fatal = error
            self.run_record.error = error
            await self.store.update_run(self.run_record.id, error=error)

    async def _finish(self, status: RunStatus, *, outputs: Any = None, error: str | None = None) -> None:
        run = self.run_record
        run.status = status
        run.finished_at = self.engine.clock()
        run.outputs = self.engine.masker.mask(jsonable(outputs))
        run.error = self.engine.masker.mask_text(error) if error else None
        logs, self.pending_logs = self.pending_logs, []
        await self.store.finish_run(run, logs=logs)
        self.engine.emit("run_finished", run)

    def _parked(self, phase: Phase) -> bool:
        return self.stop_reason is None and any(s.status == StepStatus.WAITING for s in self.states[phase].values())

    async def _park(self) -> None:
        run = self.run_record
        wakes = [r.wake_at for r in self.units.waiting_records() if r.wake_at is not None]
        if self.deadline is not None:
            wakes.append(self.deadline)
        run.status = RunStatus.WAITING
        run.wake_at = min(wakes) if wakes else None
        if self.pending_logs:
            logs, self.pending_logs = self.pending_logs, []
            await self.store.append_logs(logs)
        self.engine.emit("run_parked", run)

    # -- restoring from records --------------------------------------------------------------

    def _restore(self, records: Iterable[StepRecord]) -> None:
        for record in records:
            if record.phase == Phase.COMPENSATE:
                prior = self.compensated.get(record.step_id)
                if prior is None or record.attempt >= prior.attempt:
                    self.compensated[record.step_id] = record
                continue
            state = self.states[record.phase].get(record.step_id)
            if state is not None:
                state.records.append(record)
        for phase, states in self.states.items():
            for state in states.values():
                if state.records:
                    self._restore_state(phase, state)

    def _restore_state(self, phase: Phase, state: StepState) -> None:
        # A finished attempt-0 record is the last word on a step: a skip, a cache hit, a reused output,
        # a fallback, or the summary of a foreach step. Otherwise the latest attempt tells.
        whole = [r for r in state.records if r.item_index == WHOLE_STEP]
        state.attempts = max(r.attempt for r in state.records)
        final = next((r for r in whole if r.attempt == 0 and r.finished), None)
        record = final or max(whole, key=lambda r: r.attempt, default=None)
        state.resumed = True  # its `if` was evaluated before; the step continues where it stopped
        if record is None or not record.finished:
            return
        is_foreach = state.step.foreach is not None or state.step.matrix is not None
        if (
            record.status == StepStatus.FAILED
            and final is None
            and not is_foreach
            and should_retry(self.units.retry_policy(state.step), record.error_kind or "permanent", record.attempt)
        ):
            return  # the next attempt had not started yet
        self._settle(state, record.status, record.output, record.error, record.error_kind)
        if phase == Phase.MAIN and record.status == StepStatus.FAILED and not state.continues and self.fatal is None:
            self.fatal = self._step_error(state)

    def _settle(self, state: StepState, status: StepStatus, output: Any, error: str | None, kind: str | None) -> None:
        state.status, state.output, state.error, state.kind = status, output, error, kind
        state.order = next(self.order)
        if status == StepStatus.FAILED:
            self.failed_any = True
        self.steps_view[state.step.id] = state.view()

    def _step_error(self, state: StepState) -> str:
        if state.kind == "fail":
            return state.error or "failed"
        return f"step '{state.step.id}' failed: {state.error}"

    # -- the graph -----------------------------------------------------------------------------

    async def _walk(self, phase: Phase, steps: list[Step]) -> None:
        states = self.states[phase]
        running: dict[asyncio.Task[None], str] = {}
        while True:
            await self._launch_ready(phase, steps, states, running)
            if not running:
                return
            timeout = None
            if self.deadline is not None:
                timeout = max(0.0, (self.deadline - self.engine.clock()).total_seconds())
            done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                await self._time_out()
                await asyncio.wait(running)
                done = set(running)
            for task in done:
                step_id = running.pop(task)
                self.tasks.discard(task)
                if task.cancelled():
                    if self.stop_reason not in ("cancel", "timeout"):
                        raise asyncio.CancelledError  # shutdown or a lost lease: this execution stops here
                    await self._cut_short(phase, states[step_id])
                    continue
                exc = task.exception()
                if isinstance(exc, StoreUnavailable):
                    # Not the step's fault, nor a bug: the step's result could not be saved. This execution
                    # stops; once its lease expires the run resumes from its last committed step.
                    for other in running:
                        other.cancel()
                    await asyncio.gather(*running, return_exceptions=True)
                    raise exc
                if exc is not None:  # a bug, not a step failure: record it rather than lose the run
                    trace = self.engine.masker.mask_text("".join(traceback.format_exception(exc)).rstrip())
                    log.error("step %s of run %s crashed:\n%s", step_id, self.run_record.id, trace)
                    await self._fail_step(phase, states[step_id], f"internal error: {exc!r}", "permanent")

    async def _launch_ready(
        self, phase: Phase, steps: list[Step], states: dict[str, StepState], running: dict[asyncio.Task[None], str]
    ) -> None:
        if self.deadline is not None and self.stop_reason is None and self.engine.clock() >= self.deadline:
            await self._time_out()
        changed = True
        while changed:
            changed = False
            for step in steps:
                state = states[step.id]
                if self.stop_reason is not None and state.status == StepStatus.WAITING:
                    await self._cut_short(phase, state)  # it suspended earlier in this pass
                    continue
                if state.status != StepStatus.PENDING:
                    continue
                needs = [states[n] for n in step.needs if n in states]
                if not all(n.finished for n in needs):
                    continue
                changed = True
                if self.stop_reason is not None:
                    await self._cut_short(phase, state)
                    continue
                if state.resumed:
                    self._launch(phase, state, running)
                    continue
                blocked = any(
                    n.status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
                    or (n.status == StepStatus.FAILED and not n.continues)
                    for n in needs
                )
                if blocked and not (step.if_ and _STATUS_FUNCTION.search(step.if_)):
                    await self._record_final(phase, state, StepStatus.SKIPPED, error="a step it needs did not succeed")
                    continue
                if step.if_:
                    verdict = self.units.evaluate_if(step)
                    if isinstance(verdict, Outcome):
                        await self._fail_step(phase, state, verdict.error or "", verdict.kind or "template")
                        continue
                    if not verdict:
                        await self._record_final(phase, state, StepStatus.SKIPPED, note="if was false")
                        continue
                self._launch(phase, state, running)

    def _launch(self, phase: Phase, state: StepState, running: dict[asyncio.Task[None], str]) -> None:
        state.status = StepStatus.RUNNING
        task = asyncio.create_task(self._run_step(phase, state), name=f"{self.run_record.id}:{state.step.id}")
        running[task] = state.step.id
        self.tasks.add(task)

    async def _run_step(self, phase: Phase, state: StepState) -> None:
        outcome = await self.units.run_step(phase, state)
        if outcome.status == StepStatus.WAITING:
            state.status = StepStatus.WAITING
            return
        if outcome.status == StepStatus.SUCCEEDED:
            self._settle(state, StepStatus.SUCCEEDED, outcome.output, None, None)
            return
        status = StepStatus.CANCELLED if outcome.kind == "cancelled" else StepStatus.FAILED
        self._settle(state, status, outcome.output, outcome.error, outcome.kind)
        if status == StepStatus.FAILED and not state.continues and phase == Phase.MAIN:
            await self._set_fatal(self._step_error(state))

    async def _time_out(self) -> None:
        self.stop("timeout")
        await self._set_fatal(f"the run timed out after {format_duration(self.workflow.timeout or timedelta())}")

    async def _cut_short(self, phase: Phase, state: StepState) -> None:
        """End a step that had not finished when the run was cancelled or timed out, with a final record.

        A step that had started (running, waiting, or interrupted before a restart) is cancelled, or failed
        with kind ``timeout``; one that had not started is cancelled, or skipped.
        """
        started = state.status in (StepStatus.RUNNING, StepStatus.WAITING) or state.resumed
        if self.stop_reason == "cancel":
            await self.units.cancel_waiting(phase, state)
            await self._record_final(phase, state, StepStatus.CANCELLED, error="the run was cancelled")
        elif started:
            error = "the run timed out while this step ran"
            await self.units.cancel_waiting(phase, state, timed_out=error)
            await self._record_final(phase, state, StepStatus.FAILED, error=error, kind="timeout")
        else:
            await self._record_final(phase, state, StepStatus.SKIPPED, error="the run timed out")

    async def _fail_step(self, phase: Phase, state: StepState, error: str, kind: str) -> None:
        await self._record_final(phase, state, StepStatus.FAILED, error=error, kind=kind)
        if not state.continues and phase == Phase.MAIN:
            await self._set_fatal(self._step_error(state))

    async def _record_final(
        self,
        phase: Phase,
        state: StepState,
        status: StepStatus,
        *,
        error: str | None = None,
        kind: str | None = None,
        note: str | None = None,
    ) -> None:
        failed = status == StepStatus.FAILED
        output = None
        if failed and state.step.fallback is not None:
            output = self.units.fallback(state, Outcome.failed(error or "", kind or "permanent"))
        outcome = Outcome(status, output, error if failed else None, kind)
        await self.units.record_final(phase, state.step.id, outcome, note=note or (None if failed else error))
        self._settle(state, status, output, outcome.error, kind)

    # -- compensation (saga) ---------------------------------------------------------------------

    async def _compensate(self) -> None:
        done = [s for s in self.states[Phase.MAIN].values() if s.status == StepStatus.SUCCEEDED and s.step.compensate]
        for state in sorted(done, key=lambda s: s.order, reverse=True):
            prior = self.compensated.get(state.step.id)
            if prior is not None and prior.finished:
                continue
            body: StepBody = state.step.compensate  # type: ignore[assignment]
            self.log("info", f"compensating step '{state.step.id}'", state.step.id)
            outcome = await self.units.run_body(Phase.COMPENSATE, state.step.id, body, prior)
            if outcome.status != StepStatus.SUCCEEDED:
                self.log("error", f"compensation of step '{state.step.id}' failed: {outcome.error}", state.step.id)

    # -- logs -----------------------------------------------------------------------------------

    def log(self, level: str, message: str, step_id: str | None = None, item_index: int | None = None) -> None:
        message = self.engine.masker.mask_text(message)
        record = LogRecord(self.run_record.id, self.engine.clock(), level, message, step_id, item_index)
        self.pending_logs.append(record)
        self.engine.emit("log", self.run_record, level, message, step_id)

    def failure_scope(self) -> dict[str, Any]:
        return base_scope(failed=self.failed_any, clock=self.engine.clock)
