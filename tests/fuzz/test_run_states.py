"""The run state machine under random sequences of events, on a real SQLite store.

A hypothesis state machine drives a real ``Engine`` and ``Executor`` (through ``weir.testing.Harness``):
it submits runs of a few workflows (a chain, an approval, a sleep, a foreach, a concurrency limit,
a parent waiting for a child run), lets the executor claim them, finishes the steps that are in
flight (success or failure), resumes ``wait`` steps, cancels runs, lets time pass, reruns finished
runs, and crashes the process (the executor is dropped without handing anything back, and the next
process takes the expired leases over). After every event it checks what users rely on:

- every run is in exactly one of queued, running, waiting, succeeded, failed, cancelled, with
  ``finished_at`` set exactly when it has finished, and a finished run never changes status;
- the executor leaves no run behind: once it is idle, every queued run that its concurrency limit
  admits and every run whose ``wake_at`` has passed has been taken, and every running run has a
  step in flight; a workflow never has more runs active than its concurrency limit;
- a step that the store holds as succeeded is never executed again, not after a crash nor in a
  rerun that reuses it; and a run whose cancellation was asked for starts no new step;
- a succeeded run has every step finished, none failed without ``on_error = "continue"``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.registry import ConnectorRegistry
from weir.errors import PermanentError
from weir.records import FINISHED_RUN, Phase
from weir.store.runs import SqlRunStore
from weir.testing import Harness
from weir.types import RunStatus, StepStatus

T = TypeVar("T")

WORKFLOWS = {
    "chain.toml": """
        [[steps]]
        id = "a"
        uses = "gate.hold"

        [[steps]]
        id = "b"
        uses = "gate.hold"
        needs = ["a"]

        [[steps]]
        id = "c"
        uses = "gate.hold"
        needs = ["b"]
        on_error = "continue"
        """,
    "approval.toml": """
        [[steps]]
        id = "prepare"
        uses = "gate.hold"

        [[steps]]
        id = "ask"
        uses = "wait"
        needs = ["prepare"]
        with = { timeout = "1h" }

        [[steps]]
        id = "act"
        uses = "gate.hold"
        needs = ["ask"]
        """,
    "nap.toml": """
        [[steps]]
        id = "nap"
        uses = "sleep"
        with = { duration = "1h" }

        [[steps]]
        id = "after"
        uses = "gate.hold"
        needs = ["nap"]
        """,
    "fan.toml": """
        [[steps]]
        id = "fan"
        uses = "gate.hold"
        foreach = [1, 2]
        parallel = 2

        [[steps]]
        id = "once"
        uses = "gate.hold"
        idempotent = false
        needs = ["fan"]
        """,
    "limited.toml": """
        [concurrency]
        limit = 1

        [[steps]]
        id = "only"
        uses = "gate.hold"
        """,
    "parent.toml": """
        [[steps]]
        id = "call"
        uses = "workflow"
        with = { workflow = "chain" }

        [[steps]]
        id = "done"
        uses = "gate.hold"
        needs = ["call"]
        """,
}
LIMITS = {"limited": 1}
"""Workflows with a concurrency limit (policy queue): at most this many runs active at once."""
CONTINUES = {("chain", "c")}
"""Steps whose failure does not fail the run."""

Key = tuple[str, str, int | None]
"""A call of a step: run id, step id, foreach item index (None for a whole step)."""


@dataclass
class Gate:
    """Every ``gate.hold`` call waits here until the state machine tells it how to end."""

    store: SqlRunStore | None = None
    pending: dict[Key, asyncio.Future[str]] = field(default_factory=dict)
    calls: list[Key] = field(default_factory=list)
    cancel_asked: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.store = None
        self.pending, self.calls, self.cancel_asked, self.violations = {}, [], set(), []

    async def started(self, key: Key) -> None:
        run_id, step_id, index = key
        assert self.store is not None
        if run_id in self.cancel_asked:
            self.violations.append(f"run {run_id} started step {step_id}[{index}] after its cancellation was asked")
        run = await self.store.get_run(run_id)
        if run is None or run.finished:
            self.violations.append(f"step {step_id}[{index}] started in run {run_id}, which is {run and run.status}")
        item = -1 if index is None else index
        for record in await self.store.get_steps(run_id):
            same = (record.phase, record.step_id, record.item_index) == (Phase.MAIN, step_id, item)
            if same and record.status == StepStatus.SUCCEEDED:
                self.violations.append(f"step {step_id}[{index}] of run {run_id} ran again after it succeeded")
        self.calls.append(key)


GATE = Gate()


class HoldInput(ActionInput):
    pass


class GateConnector(Connector[ConnectionSettings]):
    """``gate.hold``: returns or fails when the test says so."""

    name = "gate"
    connection_model = ConnectionSettings
    connection_required = False

    @action("hold", input=HoldInput, idempotent=True)
    async def hold(self, ctx: ActionContext, inp: HoldInput) -> dict[str, Any]:
        key = (ctx.run_id, ctx.step_id, ctx.item_index)
        await GATE.started(key)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        GATE.pending[key] = future
        try:
            outcome = await future
        finally:
            if GATE.pending.get(key) is future:
                del GATE.pending[key]
        if outcome == "fail":
            raise PermanentError(f"{ctx.step_id} was told to fail")
        return {"step": ctx.step_id, "item": ctx.item_index}


class Clock:
    """The engine's time: it moves only when the state machine says so."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class RunStates(RuleBasedStateMachine):
    """Random events against one automation directory and one SQLite file, across simulated crashes."""

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        GATE.reset()
        self.root = Path(tempfile.mkdtemp(prefix="weir-states-"))
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.registry = ConnectorRegistry(discover=False, extra={"gate": GateConnector})
        self.terminal: dict[str, RunStatus] = {}
        self.processes = 0
        self.harness = self._wait(self._start(WORKFLOWS))

    # -- plumbing ----------------------------------------------------------------------------

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _start(self, files: dict[str, str] | None = None) -> Harness:
        """A new process on the same directory and database: open, deploy, start the executor."""
        self.processes += 1
        harness = Harness(
            self.root, files, registry=self.registry, clock=self.clock, poll_seconds=3600, lease_seconds=30
        )
        await harness.open()
        harness.executor.owner = f"process-{self.processes}"
        harness.executor.max_runs = 1000
        GATE.store = harness.store
        await harness.executor.start()  # on SQLite this first frees every lease a dead process left
        await self._settle(harness)
        return harness

    async def _settle(self, harness: Harness | None = None) -> None:
        """Let the executor work until nothing changes: every run is blocked on a gate, parked or finished."""
        harness = harness or self.harness
        last, stable = None, 0
        for _ in range(1000):
            await asyncio.sleep(0.002)
            page = await harness.store.list_runs(limit=500)
            counts = [len(await harness.store.get_steps(r.id)) for r in page.runs]
            state = ([(r.id, r.status, r.wake_at) for r in page.runs], counts, sorted(GATE.pending, key=str))
            stable = stable + 1 if state == last else 0
            last = state
            if stable >= 4 and not any(t.done() for t in harness.executor._tasks.values()):
                return
        raise AssertionError(f"the executor did not settle: {last}")

    async def _crash(self) -> None:
        executor = self.harness.executor
        for run_id in list(executor._tasks):
            executor._abandon(run_id, "lost")  # nothing is written: as if the process had died
        for loop in executor._loops:
            loop.cancel()
        await asyncio.gather(*executor._loops, *executor._tasks.values(), return_exceptions=True)
        executor._loops = []
        await self.harness.close()
        self.harness = await self._start()

    def teardown(self) -> None:
        try:
            self._wait(self.harness.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- events ------------------------------------------------------------------------------

    @rule(target=runs, workflow=st.sampled_from(sorted(name.removesuffix(".toml") for name in WORKFLOWS)))
    def submit(self, workflow: str) -> str:
        run = self._wait(self.harness.submit(workflow))
        self._wait(self._settle())
        return run.id

    @precondition(lambda self: bool(GATE.pending))
    @rule(data=st.data(), outcome=st.sampled_from(["succeed", "succeed", "fail"]))
    def finish_a_step(self, data: st.DataObject, outcome: str) -> None:
        key = data.draw(st.sampled_from(sorted(GATE.pending, key=str)))
        GATE.pending[key].set_result(outcome)
        self._wait(self._settle())

    @rule(run_id=runs)
    def resume(self, run_id: str) -> None:
        steps = self._wait(self.harness.steps(run_id))
        waiting = "ask" in steps and steps["ask"].status == StepStatus.WAITING
        record = self._wait(self.harness.engine.resume(run_id, "ask", {"approved": True}))
        assert (record is not None) == waiting, (run_id, steps.get("ask"))
        self._wait(self._settle())

    @rule(run_id=runs)
    def cancel(self, run_id: str) -> None:
        before = self._wait(self.harness.store.get_run(run_id))
        assert before is not None
        if not before.finished:
            GATE.cancel_asked.add(run_id)
        after = self._wait(self.harness.engine.cancel(run_id))
        assert after is not None
        if before.status == RunStatus.QUEUED:
            assert after.status == RunStatus.CANCELLED
        self._wait(self._settle())
        final = self._wait(self.harness.store.get_run(run_id))
        assert final is not None
        if not before.finished:  # nothing in flight can hold a cancelled run: it ends at once
            assert final.status == RunStatus.CANCELLED, final

    @rule(hours=st.integers(1, 3))
    def time_passes(self, hours: int) -> None:
        self.clock.now += timedelta(hours=hours)
        self.harness.executor.notify()
        self._wait(self._settle())

    @rule()
    def crash(self) -> None:
        self._wait(self._crash())

    @rule(target=runs, run_id=consumes(runs), from_failed=st.booleans())
    def rerun(self, run_id: str, from_failed: bool) -> str:
        old = self._wait(self.harness.store.get_run(run_id))
        assert old is not None
        if not old.finished:
            return run_id  # the API refuses to rerun a run that has not finished (409)
        new = self._wait(self.harness.engine.rerun(run_id, from_failed=from_failed))
        self._wait(self._settle())
        return new.id

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def no_step_ran_when_it_must_not(self) -> None:
        assert GATE.violations == []

    @invariant()
    def runs_have_one_status_and_finished_runs_keep_it(self) -> None:
        page = self._wait(self.harness.store.list_runs(limit=500))
        for run in page.runs:
            assert run.status in set(RunStatus), run
            assert (run.finished_at is not None) == (run.status in FINISHED_RUN), run
            first = self.terminal.setdefault(run.id, run.status) if run.finished else self.terminal.get(run.id)
            assert first is None or run.status == first, f"run {run.id} went from {first} to {run.status}"

    @invariant()
    def the_idle_executor_leaves_no_run_behind(self) -> None:
        page = self._wait(self.harness.store.list_runs(limit=500))
        busy = {run_id for run_id, _, _ in GATE.pending}
        active = dict.fromkeys(LIMITS, 0)
        for run in page.runs:
            if run.workflow in LIMITS and run.status in (RunStatus.RUNNING, RunStatus.WAITING):
                active[run.workflow] += 1
        for name, limit in LIMITS.items():
            assert active[name] <= limit, f"{active[name]} runs of {name} are active; its limit is {limit}"
        for run in page.runs:
            if run.status == RunStatus.QUEUED:
                assert active.get(run.workflow, 0) >= LIMITS.get(run.workflow, 1000), f"run {run.id} is still queued"
            if run.status == RunStatus.WAITING:
                assert run.wake_at is None or run.wake_at > self.clock.now, f"run {run.id} was not woken: {run}"
            if run.status == RunStatus.RUNNING:
                assert run.id in busy, f"run {run.id} is running with no step in flight"

    @invariant()
    def succeeded_runs_have_every_step_finished(self) -> None:
        page = self._wait(self.harness.store.list_runs(status=RunStatus.SUCCEEDED, limit=500))
        for run in page.runs:
            steps = self._wait(self.harness.steps(run.id))
            for key, record in steps.items():
                step_id = key.split("[")[0]
                assert record.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FAILED), record
                if record.status == StepStatus.FAILED:
                    assert (run.workflow, step_id) in CONTINUES, record


# Each sequence opens a database and runs real executors: 10 sequences in CI, 100 with WEIR_FUZZ=long.
RunStates.TestCase.settings = settings(settings.default, max_examples=max(10, settings.default.max_examples // 20))
test_run_states = RunStates.TestCase
