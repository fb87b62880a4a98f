"""Stopping and restarting runs: cancel, rerun, and resuming after the process stopped mid-step."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.engine_probe import Probe, probe_harness
from weir.errors import StoreUnavailable
from weir.records import StepRecord
from weir.testing import Harness
from weir.types import StepStatus

pytestmark = pytest.mark.anyio


# -- cancel --------------------------------------------------------------------------------------------

SLOW = """
[[steps]]
id = "work"
uses = "probe.work"
with = { block = true }

[[steps]]
id = "after"
uses = "probe.work"
needs = ["work"]
"""


async def test_cancel_stops_a_running_run_quickly(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"slow.toml": SLOW}) as h:
        run = await h.submit("slow")
        finished = asyncio.create_task(h.executor.run_until_finished(run.id))
        await probe.started.wait()
        asked = time.monotonic()
        await h.engine.cancel(run.id)
        final = await asyncio.wait_for(finished, 2)
        took = time.monotonic() - asked
        records = await h.store.get_steps(run.id)
    assert took < 0.5
    assert (final.status, final.error) == ("cancelled", "cancelled")
    assert [(r.step_id, r.attempt, r.status, r.error, r.note) for r in records] == [
        ("work", 1, "cancelled", "cancelled", None),  # the attempt in flight
        ("work", 0, "cancelled", None, "the run was cancelled"),  # the step's last word
        ("after", 0, "cancelled", None, "the run was cancelled"),
    ]
    assert probe.of("after") == []


RETRYING = """
[[steps]]
id = "call"
uses = "probe.work"
retry = { attempts = 5, delay = "1s", jitter = false }
with = { fail = "transient", message = "503 Service Unavailable" }
"""


async def test_cancel_during_a_retry_delay_ends_the_step_cancelled(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"retrying.toml": RETRYING}) as h:
        run = await h.submit("retrying")
        await h.executor.start()
        await asyncio.wait_for(probe.ended.wait(), 2)
        await asyncio.sleep(0.05)  # the failed attempt is stored; the step waits 1s before the next one
        await h.engine.cancel(run.id)
        final = await h.until(run.id, "cancelled", within=0.5)
        records = await h.store.get_steps(run.id)
    assert final.error == "cancelled"
    assert [(r.attempt, r.status, r.error, r.note) for r in records] == [
        (1, "failed", "503 Service Unavailable", None),
        (0, "cancelled", None, "the run was cancelled"),
    ]
    assert len(probe.of("call")) == 1


FAN_OUT = """
[[steps]]
id = "fan"
uses = "probe.work"
foreach = [1, 2, 3]
with = { block = true }
"""


async def test_cancel_during_foreach_ends_the_step_cancelled(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"fan.toml": FAN_OUT}) as h:
        run = await h.submit("fan")
        await h.executor.start()
        await probe.started.wait()
        await h.engine.cancel(run.id)
        await h.until(run.id, "cancelled", within=2)
        steps = await h.steps(run.id)
    assert set(steps) == {"fan", "fan[0]"}  # items 1 and 2 never started
    assert (steps["fan"].status, steps["fan"].note) == ("cancelled", "the run was cancelled")
    assert (steps["fan[0]"].status, steps["fan[0]"].error) == ("cancelled", "cancelled")


NAP = """
[[steps]]
id = "nap"
uses = "sleep"
with.duration = "1h"
"""


async def test_cancel_ends_a_waiting_run(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"nap.toml": NAP}) as h:
        run = await h.submit("nap")
        await h.executor.start()
        await h.until(run.id, "waiting")
        await h.engine.cancel(run.id)
        final = await h.until(run.id, "cancelled", within=2)
        records = await h.store.get_steps(run.id)
    assert final.error == "cancelled"
    assert [(r.attempt, r.status, r.error, r.note) for r in records] == [
        (1, "cancelled", "cancelled", "sleep"),
        (0, "cancelled", None, "the run was cancelled"),
    ]


SLEEP_AND_WORK = """
[[steps]]
id = "nap"
uses = "sleep"
with.duration = "1h"

[[steps]]
id = "busy"
uses = "probe.work"
with = { block = true }
"""


async def test_cancel_ends_a_sleeping_step_and_a_running_step_alike(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"both.toml": SLEEP_AND_WORK}) as h:
        run = await h.submit("both")
        await h.executor.start()
        await probe.started.wait()
        await h.engine.cancel(run.id)
        await h.until(run.id, "cancelled", within=2)
        steps = await h.steps(run.id)
        records = await h.store.get_steps(run.id)
    assert {k: (s.status, s.note) for k, s in steps.items()} == {
        "nap": ("cancelled", "the run was cancelled"),
        "busy": ("cancelled", "the run was cancelled"),
    }
    assert "waiting" not in {r.status for r in records}


PARENT = """
[[steps]]
id = "sub"
uses = "workflow"
with = { workflow = "child" }
"""


async def test_cancel_of_a_parent_cancels_its_child_run(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"parent.toml": PARENT, "child.toml": NAP}) as h:
        run = await h.submit("parent")
        await h.executor.start()
        await h.until(run.id, "waiting")
        child_id = (await h.steps(run.id))["sub"].child_run_id
        assert child_id is not None
        await h.until(child_id, "waiting")
        await h.engine.cancel(run.id)
        await h.until(run.id, "cancelled", within=2)
        child = await h.until(child_id, "cancelled", within=2)
    assert (child.error, child.parent_run_id) == ("cancelled", run.id)


async def test_cancel_ends_a_queued_run_at_once(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"nap.toml": NAP}) as h:
        run = await h.submit("nap")
        cancelled = await h.engine.cancel(run.id)
        stored = await h.store.get_run(run.id)
    assert cancelled is not None
    assert stored is not None
    assert (stored.status, stored.error) == ("cancelled", "cancelled before it started")


# -- crash recovery ------------------------------------------------------------------------------------

CHARGE = """
[[steps]]
id = "charge"
uses = "probe.work"
{idempotent}
with = {{ value = "charged", block = true }}

[[steps]]
id = "receipt"
uses = "probe.work"
needs = ["charge"]
with = {{ value = "receipt" }}
"""


async def interrupt(tmp_path: Path, probe: Probe, files: dict[str, str]) -> str:
    """Start a run, stop the process while its first step runs, and return the run id."""
    async with probe_harness(tmp_path, files) as h:
        run = await h.submit("charge")
        await h.executor.start()
        await probe.started.wait()
    # closing stopped the executor with no grace: the run was handed back, its step record left 'running'
    probe.released = True
    return run.id


async def test_crash_recovery_runs_an_idempotent_step_again_with_the_same_key(tmp_path: Path, probe: Probe) -> None:
    files = {"charge.toml": CHARGE.format(idempotent="")}
    run_id = await interrupt(tmp_path, probe, files)
    async with probe_harness(tmp_path, files) as h:
        left = await h.store.get_run(run_id)
        left_steps = await h.steps(run_id)
        final = await h.executor.run_until_finished(run_id)
        steps = await h.steps(run_id)
    assert left is not None
    assert (left.status, left_steps["charge"].status) == ("running", "running")
    assert final.status == "succeeded"
    calls = probe.of("charge")
    assert [(c.attempt, c.idempotency_key) for c in calls] == [(1, f"{run_id}:charge"), (1, f"{run_id}:charge")]
    assert (steps["charge"].status, steps["charge"].output) == ("succeeded", {"value": "charged"})
    assert steps["receipt"].status == "succeeded"


async def test_crash_recovery_fails_a_non_idempotent_step_instead_of_running_it_twice(
    tmp_path: Path, probe: Probe
) -> None:
    files = {"charge.toml": CHARGE.format(idempotent="idempotent = false")}
    run_id = await interrupt(tmp_path, probe, files)
    async with probe_harness(tmp_path, files) as h:
        final = await h.executor.run_until_finished(run_id)
        steps = await h.steps(run_id)
    message = (
        "step 'charge' was interrupted (the server stopped while it ran) and is not idempotent, so it was not run"
        " again; set idempotent = true on the step if running it twice is safe"
    )
    assert (steps["charge"].status, steps["charge"].error_kind, steps["charge"].error) == (
        "failed",
        "interrupted",
        message,
    )
    assert steps["receipt"].status == "skipped"
    assert (final.status, final.error) == ("failed", f"step 'charge' failed: {message}")
    assert len(probe.of("charge")) == 1


TWO_STEPS = """
[[steps]]
id = "one"
uses = "transform"
with.output = "first"

[[steps]]
id = "two"
uses = "transform"
needs = ["one"]
with.output = "{{ steps.one.output }} then second"
"""


async def test_a_step_result_the_database_could_not_take_leaves_the_run_to_resume_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database went away (a PostgreSQL restart) just as a step's result was saved. That is neither the
    # step's failure nor a bug: the run must not fail; once its lease expires it is claimed again and finishes.
    async with Harness(tmp_path, {"two.toml": TWO_STEPS}, lease_seconds=1.0) as h:
        save_step = h.store.save_step
        refused: list[str] = []

        async def away_once(step: StepRecord, **kwargs: Any) -> bool:
            if step.step_id == "one" and step.status == StepStatus.SUCCEEDED and not refused:
                refused.append(step.step_id)
                raise StoreUnavailable("the run database does not answer: the database system is starting up")
            return await save_step(step, **kwargs)

        monkeypatch.setattr(h.store, "save_step", away_once)
        run = await h.submit("two")
        await h.executor.start()
        final = await h.until(run.id, "succeeded", within=10)
        steps = await h.steps(run.id)

    assert refused == ["one"]
    assert final.error is None
    assert steps["two"].output == "first then second"
