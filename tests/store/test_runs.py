"""The SQL RunStore, against a real SQLite file and a real PostgreSQL (the ``store`` fixture runs each test on both)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import DateTime, bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError

from weir.records import LogRecord, Phase, RunPage, RunRecord, StepRecord, new_run_id
from weir.store.database import open_database
from weir.store.runs import _LAST_RUN, SqlRunStore
from weir.store.tables import UtcDateTime, runs
from weir.types import RunStatus, StepStatus

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
LEASE = 30.0


_SEQUENCE = itertools.count()


def new_id() -> str:
    """A run id greater than every earlier one (two ``new_run_id()`` in one millisecond are not ordered)."""
    return f"{new_run_id()[:12]}{next(_SEQUENCE):014d}"


def ids(count: int) -> list[str]:
    return [new_id() for _ in range(count)]


def run_record(
    run_id: str, *, status: RunStatus = RunStatus.QUEUED, workflow: str = "deploy", **fields: Any
) -> RunRecord:
    return RunRecord(id=run_id, workflow=workflow, revision="abc123", status=status, created_at=NOW, **fields)


async def add_runs(store: SqlRunStore, count: int, **fields: Any) -> list[str]:
    run_ids = ids(count)
    for run_id in run_ids:
        await store.create_run(run_record(run_id, **fields))
    return run_ids


async def stored(store: SqlRunStore, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None
    return run


def log(run_id: str, message: str, *, at: datetime = NOW, step_id: str | None = None) -> LogRecord:
    return LogRecord(run_id=run_id, at=at, level="info", message=message, step_id=step_id)


# -- runs and steps ---------------------------------------------------------------------------


async def test_runs_create_and_get_round_trip(store: SqlRunStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    run = run_record(
        new_run_id(),
        params={"env": "prod", "replicas": 3, "ratio": 0.5, "dry": False, "tags": ["a", "ü"], "none": None},
        trigger={"type": "webhook", "delivery": {"id": "d-1", "headers": {"x-sig": "..."}}},
        parent_run_id="p" * 26,
        parent_step="notify:2",
        rerun_of="r" * 26,
        concurrency_key="prod",
        concurrency_limit=2,
        started_at=datetime(2026, 3, 4, 7, 6, 8, tzinfo=plus_two),
        outputs={"url": "https://example.test/1", "count": 2},
        error="boom",
    )

    await store.create_run(run)
    got = await stored(store, run.id)

    assert got == run
    assert got.created_at.tzinfo == UTC
    assert got.started_at == datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC)
    assert got.started_at is not None
    assert got.started_at.tzinfo == UTC
    assert got.status is RunStatus.QUEUED
    assert await store.get_run("no-such-run") is None


async def test_runs_create_with_steps_and_defaults(store: SqlRunStore) -> None:
    run = run_record(new_id())
    reused = StepRecord(run.id, "build", StepStatus.SUCCEEDED, output={"sha": "f00"}, note="reused from run x")

    await store.create_run(run, steps=[reused])

    got = await stored(store, run.id)
    assert (got.params, got.trigger, got.outputs, got.input_tokens, got.cancel_requested) == ({}, {}, None, 0, False)
    assert await store.get_steps(run.id) == [reused]


async def test_runs_refuse_naive_datetimes(store: SqlRunStore) -> None:
    with pytest.raises(StatementError, match="naive datetimes are not stored"):
        await store.create_run(run_record(new_id(), started_at=datetime(2026, 1, 1)))  # noqa: DTZ001


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 29, 1, 30, 5, 6, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_sqlite_datetimes_are_written_in_utc_as_sqlalchemy_writes_them(value: datetime) -> None:
    # Stored times are compared as text in queries (wake_at <= now), so the form must never drift.
    dialect = sqlite.dialect()
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    assert ours(value) == theirs(value.astimezone(UTC).replace(tzinfo=None))


async def test_runs_update_run_changes_fields_and_rejects_unknown_ones(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)

    await store.update_run(run_id, status=RunStatus.RUNNING, started_at=NOW, error="partial")

    got = await stored(store, run_id)
    assert (got.status, got.started_at, got.error) == (RunStatus.RUNNING, NOW, "partial")
    with pytest.raises(TypeError, match="runs have no field colour"):
        await store.update_run(run_id, colour="blue")


async def test_save_step_replaces_the_same_key_and_adds_other_attempts(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    first = StepRecord(run_id, "call", StepStatus.RUNNING, attempt=1, started_at=NOW, input={"q": 1})
    done = replace(first, status=StepStatus.FAILED, finished_at=NOW, error="503", error_kind="transient")
    retry = replace(first, attempt=2)
    item = StepRecord(run_id, "call", StepStatus.SUCCEEDED, item_index=0, output=[1, {"a": None}])
    compensation = StepRecord(run_id, "call", StepStatus.SUCCEEDED, phase=Phase.COMPENSATE)

    for record in (first, done, retry, item, compensation):
        assert await store.save_step(record) is True

    assert await store.get_steps(run_id) == [done, retry, item, compensation]


async def test_save_step_appends_logs_and_adds_usage_to_the_run(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    step = StepRecord(run_id, "ask", StepStatus.SUCCEEDED, input_tokens=10, output_tokens=5)

    await store.save_step(step, logs=[log(run_id, "asking", step_id="ask")], usage=(10, 5))
    await store.save_step(replace(step, attempt=2), logs=[log(run_id, "again", step_id="ask")], usage=(1, 2))

    run = await stored(store, run_id)
    assert (run.input_tokens, run.output_tokens) == (11, 7)
    lines = await store.get_logs(run_id)
    assert [(line.message, line.step_id, line.at) for line in lines] == [("asking", "ask", NOW), ("again", "ask", NOW)]
    assert all(line.id is not None for line in lines)


async def test_save_step_writes_step_logs_and_usage_in_one_transaction(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    bad_log = log(run_id, "naive", at=datetime(2026, 1, 1))  # noqa: DTZ001 - refused, so the whole save is undone

    with pytest.raises(StatementError):
        await store.save_step(StepRecord(run_id, "ask", StepStatus.SUCCEEDED), logs=[bad_log], usage=(3, 4))

    run = await stored(store, run_id)
    assert await store.get_steps(run_id) == []
    assert await store.get_logs(run_id) == []
    assert (run.input_tokens, run.output_tokens) == (0, 0)


async def test_save_step_only_if_writes_while_the_stored_status_matches(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    waiting = StepStatus.WAITING
    parked = StepRecord(run_id, "approve", waiting, note="wait")
    await store.save_step(parked)
    timed_out = replace(parked, status=StepStatus.FAILED, error="timed out")
    resumed = replace(parked, status=StepStatus.SUCCEEDED, output={"ok": True})

    assert await store.save_step(timed_out, logs=[log(run_id, "timeout")], usage=(1, 1), only_if=waiting) is True
    assert await store.save_step(resumed, logs=[log(run_id, "late")], usage=(5, 5), only_if=waiting) is False
    assert await store.save_step(StepRecord(run_id, "other", waiting), only_if=waiting) is False

    assert await store.get_steps(run_id) == [timed_out]
    assert [line.message for line in await store.get_logs(run_id)] == ["timeout"]
    run = await stored(store, run_id)
    assert (run.input_tokens, run.output_tokens) == (1, 1)


async def test_save_step_only_if_and_resume_step_racing_for_a_wait_step_have_one_winner(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1, status=RunStatus.WAITING)
    names = [f"approve{n}" for n in range(20)]
    for name in names:
        await store.save_step(StepRecord(run_id, name, StepStatus.WAITING, note="wait"))
    resumed: dict[str, StepRecord | None] = {}
    timed_out: dict[str, bool] = {}

    async def resume(name: str) -> None:
        resumed[name] = await store.resume_step(run_id, name, {"ok": True}, NOW)

    async def time_out(name: str) -> None:
        failed = StepRecord(run_id, name, StepStatus.FAILED, note="wait", error="timed out")
        timed_out[name] = await store.save_step(failed, only_if=StepStatus.WAITING)

    async with anyio.create_task_group() as group:
        for n, name in enumerate(names):  # the order alternates, so each side sometimes starts first
            first, second = (resume, time_out) if n % 2 else (time_out, resume)
            group.start_soon(first, name)
            group.start_soon(second, name)

    final = {step.step_id: step.status for step in await store.get_steps(run_id)}
    for name in names:
        assert (resumed[name] is not None) != timed_out[name], name
        assert final[name] == (StepStatus.FAILED if timed_out[name] else StepStatus.SUCCEEDED), name


async def test_logs_are_read_after_an_id_with_a_limit(store: SqlRunStore) -> None:
    run_id, other = await add_runs(store, 2)
    await store.append_logs([log(run_id, f"line {n}") for n in range(5)] + [log(other, "elsewhere")])
    await store.append_logs([])

    everything = await store.get_logs(run_id)
    after_second = await store.get_logs(run_id, after=everything[1].id or 0, limit=2)

    assert [line.message for line in everything] == [f"line {n}" for n in range(5)]
    assert [line.message for line in after_second] == ["line 2", "line 3"]


async def test_finish_run_stores_the_result_clears_the_lease_and_wakes_an_active_parent(store: SqlRunStore) -> None:
    later = NOW + timedelta(minutes=5)
    for parent_status, woken in [(RunStatus.WAITING, True), (RunStatus.RUNNING, True), (RunStatus.CANCELLED, False)]:
        parent_id, child_id = ids(2)
        await store.create_run(run_record(parent_id, status=parent_status))
        await store.create_run(run_record(child_id, parent_run_id=parent_id, parent_step="sub"))
        [child] = await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)
        assert child.id == child_id
        child.status, child.finished_at, child.outputs = RunStatus.SUCCEEDED, later, {"answer": 42}

        await store.finish_run(child, logs=[log(child_id, "done")])

        stored_child = await stored(store, child_id)
        assert (stored_child.status, stored_child.finished_at, stored_child.outputs) == (
            RunStatus.SUCCEEDED,
            later,
            {"answer": 42},
        )
        assert (stored_child.lease_owner, stored_child.lease_expires_at, stored_child.wake_at) == (None, None, None)
        assert [line.message for line in await store.get_logs(child_id)] == ["done"]
        parent = await stored(store, parent_id)
        assert (parent.status, parent.wake_at) == (parent_status, later if woken else None)


# -- claims and leases -----------------------------------------------------------------------


async def test_claim_runs_takes_queued_runs_oldest_first_up_to_the_limit(store: SqlRunStore) -> None:
    first, second, third = await add_runs(store, 3)

    claimed = await store.claim_runs("worker-a", limit=2, lease_seconds=LEASE, now=NOW)

    expires = NOW + timedelta(seconds=LEASE)
    assert [run.id for run in claimed] == [first, second]
    assert all((run.lease_owner, run.lease_expires_at) == ("worker-a", expires) for run in claimed)
    for run in claimed:
        assert await stored(store, run.id) == run
    assert (await stored(store, third)).lease_owner is None


async def test_claim_runs_leaves_a_leased_run_to_its_owner_until_the_lease_expires(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    [claimed] = await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=NOW)
    assert claimed.id == run_id

    just_before = NOW + timedelta(seconds=LEASE - 1)
    assert await store.claim_runs("worker-b", limit=5, lease_seconds=LEASE, now=just_before) == []
    assert await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=just_before) == []

    after = NOW + timedelta(seconds=LEASE + 1)
    [taken] = await store.claim_runs("worker-b", limit=5, lease_seconds=LEASE, now=after)
    assert (taken.id, taken.lease_owner) == (run_id, "worker-b")
    lost, _ = await store.renew_leases("worker-a", [run_id], lease_seconds=LEASE, now=after)
    assert lost == {run_id}


async def test_claim_runs_marks_a_claimed_run_running_so_a_cancel_reaches_its_owner(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)

    cancelled = await store.request_cancel(run_id, NOW)

    assert cancelled is not None
    assert (cancelled.status, cancelled.cancel_requested) == (RunStatus.RUNNING, True)
    _, cancels = await store.renew_leases("worker-a", [run_id], lease_seconds=LEASE, now=NOW)
    assert cancels == {run_id}


async def test_claim_runs_takes_waiting_runs_only_when_their_wake_at_is_due(store: SqlRunStore) -> None:
    due, later, parked = ids(3)
    await store.create_run(run_record(due, status=RunStatus.WAITING, wake_at=NOW))
    await store.create_run(run_record(later, status=RunStatus.WAITING, wake_at=NOW + timedelta(seconds=1)))
    await store.create_run(run_record(parked, status=RunStatus.WAITING))  # waits for a resume or a child

    [claimed] = await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=NOW)

    assert claimed.id == due
    assert claimed.wake_at is None
    assert (await stored(store, due)).wake_at is None
    assert await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=NOW) == []
    [next_one] = await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=NOW + timedelta(seconds=1))
    assert next_one.id == later


async def test_claim_runs_never_takes_finished_runs(store: SqlRunStore) -> None:
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
        await store.create_run(run_record(new_id(), status=status, wake_at=NOW, lease_expires_at=NOW))

    assert await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=NOW + timedelta(hours=1)) == []


async def test_claim_runs_respects_the_concurrency_limit_per_key(store: SqlRunStore) -> None:
    same = await add_runs(store, 2, concurrency_key="prod", concurrency_limit=1)
    other_keys = [
        *await add_runs(store, 1, concurrency_key="eu", concurrency_limit=1),
        *await add_runs(store, 1, concurrency_key="us", concurrency_limit=1),
    ]

    claimed = await store.claim_runs("worker-a", limit=10, lease_seconds=LEASE, now=NOW)
    again = await store.claim_runs("worker-b", limit=10, lease_seconds=LEASE, now=NOW)

    assert [run.id for run in claimed] == [same[0], *other_keys]
    assert again == []  # the claimed run counts against the limit before its executor marks it running
    finished = await stored(store, same[0])
    finished.status, finished.finished_at = RunStatus.SUCCEEDED, NOW
    await store.finish_run(finished)
    assert [run.id for run in await store.claim_runs("worker-b", limit=10, lease_seconds=LEASE, now=NOW)] == [same[1]]


async def test_claim_runs_counts_running_and_waiting_runs_against_the_limit(store: SqlRunStore) -> None:
    await store.create_run(run_record(new_id(), status=RunStatus.WAITING, concurrency_key="k"))
    await store.create_run(run_record(new_id(), status=RunStatus.RUNNING, concurrency_key="k", lease_owner="x"))
    await store.create_run(run_record(new_id(), status=RunStatus.RUNNING, concurrency_key="j"))
    queued = await add_runs(store, 2, concurrency_key="k", concurrency_limit=3)
    no_key = await add_runs(store, 2, concurrency_limit=1)

    claimed = await store.claim_runs("worker-a", limit=10, lease_seconds=LEASE, now=NOW)

    assert [run.id for run in claimed] == [queued[0], no_key[0]]


async def test_claim_runs_is_not_blocked_by_a_backlog_of_runs_held_back_by_their_limit(store: SqlRunStore) -> None:
    await store.create_run(run_record(new_id(), status=RunStatus.RUNNING, concurrency_key="k", lease_owner="x"))
    await add_runs(store, 40, concurrency_key="k", concurrency_limit=1)
    [other] = await add_runs(store, 1, workflow="report")

    claimed = await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)

    assert [run.id for run in claimed] == [other]


async def test_renew_leases_extends_held_leases_and_reports_lost_and_cancelled_runs(store: SqlRunStore) -> None:
    kept, cancelled, finished = await add_runs(store, 3)
    await store.claim_runs("worker-a", limit=3, lease_seconds=LEASE, now=NOW)
    await store.request_cancel(cancelled, NOW)
    done = await stored(store, finished)
    done.status, done.finished_at = RunStatus.SUCCEEDED, NOW
    await store.finish_run(done)
    later = NOW + timedelta(seconds=20)

    lost, cancels = await store.renew_leases("worker-a", [kept, cancelled, finished], lease_seconds=LEASE, now=later)

    assert (lost, cancels) == ({finished}, {cancelled})
    assert (await stored(store, kept)).lease_expires_at == later + timedelta(seconds=LEASE)
    assert await store.renew_leases("worker-b", [kept], lease_seconds=LEASE, now=later) == ({kept}, set())
    assert await store.renew_leases("worker-a", [], lease_seconds=LEASE, now=later) == (set(), set())


async def test_expire_leases_frees_every_running_run_at_once(store: SqlRunStore) -> None:
    run_ids = await add_runs(store, 2)
    await store.claim_runs("worker-a", limit=2, lease_seconds=LEASE, now=NOW)
    await store.create_run(run_record(new_id(), status=RunStatus.WAITING))

    assert await store.expire_leases() == 2

    assert [(await stored(store, run_id)).lease_owner for run_id in run_ids] == [None, None]
    again = await store.claim_runs("worker-b", limit=5, lease_seconds=LEASE, now=NOW)
    assert [run.id for run in again] == run_ids


async def test_release_run_keeps_a_wake_up_that_arrived_while_the_run_was_held(store: SqlRunStore) -> None:
    parent_id, child_id = ids(2)
    await store.create_run(run_record(parent_id, status=RunStatus.WAITING, wake_at=NOW))
    await store.create_run(run_record(child_id, status=RunStatus.RUNNING, parent_run_id=parent_id))
    [parent] = await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)
    assert parent.id == parent_id
    child = await stored(store, child_id)
    child.status, child.finished_at = RunStatus.SUCCEEDED, NOW + timedelta(seconds=1)
    await store.finish_run(child)  # the child finishes while the parent is still held

    await store.release_run(parent_id, "worker-a", status=RunStatus.WAITING, wake_at=NOW + timedelta(hours=1))

    released = await stored(store, parent_id)
    assert (released.status, released.wake_at) == (RunStatus.WAITING, NOW + timedelta(seconds=1))
    assert (released.lease_owner, released.lease_expires_at) == (None, None)
    [again] = await store.claim_runs("worker-b", limit=1, lease_seconds=LEASE, now=NOW + timedelta(seconds=1))
    assert again.id == parent_id


async def test_release_run_parks_a_run_until_its_own_wake_at(store: SqlRunStore) -> None:
    sleeper, parked = await add_runs(store, 2)
    await store.claim_runs("worker-a", limit=2, lease_seconds=LEASE, now=NOW)
    wake = NOW + timedelta(minutes=10)

    await store.release_run(sleeper, "worker-a", status=RunStatus.WAITING, wake_at=wake)
    await store.release_run(parked, "worker-a", status=RunStatus.WAITING, wake_at=None)

    assert (await stored(store, sleeper)).wake_at == wake
    assert (await stored(store, parked)).wake_at is None
    assert await store.claim_runs("worker-b", limit=5, lease_seconds=LEASE, now=wake - timedelta(seconds=1)) == []
    assert [run.id for run in await store.claim_runs("worker-b", limit=5, lease_seconds=LEASE, now=wake)] == [sleeper]


async def test_release_run_as_running_hands_the_run_back_at_once(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)

    await store.release_run(run_id, "worker-a", status=RunStatus.RUNNING, wake_at=None)

    [again] = await store.claim_runs("worker-b", limit=1, lease_seconds=LEASE, now=NOW)
    assert (again.id, again.status, again.lease_owner) == (run_id, RunStatus.RUNNING, "worker-b")


async def test_release_run_by_a_process_that_lost_the_lease_changes_nothing(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1)
    [claimed] = await store.claim_runs("worker-a", limit=1, lease_seconds=LEASE, now=NOW)

    await store.release_run(run_id, "worker-b", status=RunStatus.WAITING, wake_at=None)

    assert await stored(store, run_id) == claimed


# -- cancel and resume -----------------------------------------------------------------------


async def test_request_cancel_acts_on_the_state_of_the_run(store: SqlRunStore) -> None:
    queued, running, waiting, finished = ids(4)
    await store.create_run(run_record(queued))
    await store.create_run(run_record(running, status=RunStatus.RUNNING, lease_owner="worker-a"))
    await store.create_run(run_record(waiting, status=RunStatus.WAITING, wake_at=NOW + timedelta(days=1)))
    await store.create_run(run_record(finished, status=RunStatus.SUCCEEDED, finished_at=NOW))
    at = NOW + timedelta(seconds=3)

    results = {run_id: await store.request_cancel(run_id, at) for run_id in (queued, running, waiting, finished)}

    for run_id, result in results.items():
        assert result == await stored(store, run_id)
    expected = {
        queued: (RunStatus.CANCELLED, True, at, None),
        running: (RunStatus.RUNNING, True, None, None),
        waiting: (RunStatus.WAITING, True, None, at),
        finished: (RunStatus.SUCCEEDED, False, NOW, None),
    }
    for run_id, (status, requested, finished_at, wake_at) in expected.items():
        run = await stored(store, run_id)
        assert (run.status, run.cancel_requested, run.finished_at, run.wake_at) == (
            status,
            requested,
            finished_at,
            wake_at,
        )
    assert (await stored(store, queued)).error == "cancelled before it started"
    assert await store.request_cancel("no-such-run", at) is None


async def test_request_cancel_of_a_queued_child_run_wakes_its_parent(store: SqlRunStore) -> None:
    parent_id, child_id = ids(2)
    await store.create_run(run_record(parent_id, status=RunStatus.WAITING))
    await store.create_run(run_record(child_id, parent_run_id=parent_id, parent_step="sub"))
    at = NOW + timedelta(seconds=3)

    await store.request_cancel(child_id, at)

    assert (await stored(store, parent_id)).wake_at == at
    [woken] = await store.claim_runs("worker-a", limit=5, lease_seconds=LEASE, now=at)
    assert woken.id == parent_id


async def test_resume_step_completes_a_waiting_wait_step_and_wakes_its_run(store: SqlRunStore) -> None:
    [run_id] = await add_runs(store, 1, status=RunStatus.WAITING, wake_at=NOW + timedelta(days=1))
    approve = StepRecord(run_id, "approve", StepStatus.WAITING, started_at=NOW, wake_at=NOW + timedelta(days=1))
    await store.save_step(replace(approve, note="wait"))
    await store.save_step(StepRecord(run_id, "nap", StepStatus.WAITING, note="sleep"))
    await store.save_step(StepRecord(run_id, "undo", StepStatus.WAITING, phase=Phase.COMPENSATE, note="wait"))
    at = NOW + timedelta(minutes=1)

    resumed = await store.resume_step(run_id, "approve", {"approved": True, "by": "ana"}, at)

    assert resumed is not None
    assert (resumed.status, resumed.output, resumed.finished_at, resumed.wake_at) == (
        StepStatus.SUCCEEDED,
        {"approved": True, "by": "ana"},
        at,
        None,
    )
    assert (await store.get_steps(run_id))[0] == resumed
    assert (await stored(store, run_id)).wake_at == at
    assert await store.resume_step(run_id, "approve", {"approved": False}, at) is None
    assert await store.resume_step(run_id, "nap", {}, at) is None
    assert await store.resume_step(run_id, "undo", {}, at) is None
    assert await store.resume_step(run_id, "missing", {}, at) is None


# -- cache, active runs, listing -------------------------------------------------------------


async def test_cache_returns_an_entry_until_it_expires(store: SqlRunStore) -> None:
    expires = NOW + timedelta(minutes=5)
    await store.cache_put("deploy/ask/abc", {"text": "hi", "n": [1, 2]}, expires_at=expires)
    await store.cache_put("deploy/none", None, expires_at=expires)

    assert await store.cache_get("deploy/ask/abc", NOW) == (True, {"text": "hi", "n": [1, 2]})
    assert await store.cache_get("deploy/none", NOW) == (True, None)
    assert await store.cache_get("deploy/ask/abc", expires) == (False, None)
    assert await store.cache_get("unknown", NOW) == (False, None)

    await store.cache_put("deploy/ask/abc", "fresh", expires_at=expires + timedelta(minutes=5))
    assert await store.cache_get("deploy/ask/abc", expires) == (True, "fresh")


async def test_active_runs_lists_running_and_waiting_runs_of_a_workflow_and_key(store: SqlRunStore) -> None:
    waiting, running, no_key = ids(3)
    await store.create_run(run_record(waiting, status=RunStatus.WAITING, concurrency_key="prod"))
    await store.create_run(run_record(running, status=RunStatus.RUNNING, concurrency_key="prod"))
    await store.create_run(run_record(no_key, status=RunStatus.RUNNING))
    queued = new_id()
    await store.create_run(run_record(queued, concurrency_key="prod"))
    await store.create_run(run_record(new_id(), status=RunStatus.SUCCEEDED, concurrency_key="prod"))
    await store.create_run(run_record(new_id(), status=RunStatus.RUNNING, concurrency_key="staging"))
    await store.create_run(run_record(new_id(), status=RunStatus.RUNNING, workflow="other", concurrency_key="prod"))

    assert [run.id for run in await store.active_runs("deploy", "prod")] == [waiting, running]
    assert [run.id for run in await store.active_runs("deploy", "prod", queued=True)] == [waiting, running, queued]
    assert [run.id for run in await store.active_runs("deploy", None)] == [no_key]
    assert await store.active_runs("missing", None) == []


async def test_list_runs_pages_newest_first_with_filters(store: SqlRunStore) -> None:
    run_ids = ids(5)
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.SUCCEEDED]
    for n, (run_id, status) in enumerate(zip(run_ids, statuses, strict=True)):
        await store.create_run(run_record(run_id, status=status, workflow="deploy" if n % 2 == 0 else "report"))
    newest_first = run_ids[::-1]

    first = await store.list_runs(limit=2)
    second = await store.list_runs(limit=2, cursor=first.next_cursor)
    last = await store.list_runs(limit=2, cursor=second.next_cursor)

    assert [[run.id for run in page.runs] for page in (first, second, last)] == [
        newest_first[:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert (first.next_cursor, second.next_cursor, last.next_cursor) == (newest_first[1], newest_first[3], None)
    assert (await store.list_runs(limit=5)).next_cursor is None
    deploys = await store.list_runs(workflow="deploy")
    assert [run.id for run in deploys.runs] == [run_ids[4], run_ids[2], run_ids[0]]
    assert deploys.next_cursor is None
    succeeded_deploys = await store.list_runs(workflow="deploy", status="succeeded", limit=2)
    assert [run.id for run in succeeded_deploys.runs] == [run_ids[4], run_ids[2]]
    assert succeeded_deploys.next_cursor == run_ids[2]
    assert [run.id for run in (await store.list_runs(status="failed")).runs] == [run_ids[1]]
    assert (await store.list_runs(workflow="missing")) == RunPage([], None)


# -- several processes on PostgreSQL ---------------------------------------------------------


async def _claim_concurrently(url: str, state_dir: Path, owners: int) -> list[list[str]]:
    """Let ``owners`` stores, each with its own engine and connection, claim until nothing is left."""
    results: list[list[str]] = [[] for _ in range(owners)]
    ready: list[int] = []
    start = anyio.Event()

    async def claim(n: int) -> None:
        store = SqlRunStore(await open_database(url, state_dir, migrate=False))
        try:
            await store.get_run("warm-up")  # connect before the race starts
            ready.append(n)
            if len(ready) == owners:
                start.set()
            await start.wait()
            while batch := await store.claim_runs(f"worker-{n}", limit=3, lease_seconds=LEASE, now=NOW):
                results[n] += [run.id for run in batch]
        finally:
            await store.close()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for n in range(owners):
                group.start_soon(claim, n)
    return results


async def test_claim_runs_by_concurrent_owners_on_postgresql_never_take_the_same_run(
    pg_schema_url: str, tmp_path: Path
) -> None:
    store = SqlRunStore(await open_database(pg_schema_url, tmp_path))
    try:
        run_ids = await add_runs(store, 50)
    finally:
        await store.close()

    results = await _claim_concurrently(pg_schema_url, tmp_path, owners=4)

    claimed = [run_id for result in results for run_id in result]
    assert sorted(claimed) == run_ids  # complete, and no run twice
    assert sum(1 for result in results if result) > 1  # the owners really shared the work


async def test_claim_runs_by_concurrent_owners_on_postgresql_respect_the_concurrency_limit(
    pg_schema_url: str, tmp_path: Path
) -> None:
    store = SqlRunStore(await open_database(pg_schema_url, tmp_path))
    try:
        limited = await add_runs(store, 64, concurrency_key="prod", concurrency_limit=2)
        free = await add_runs(store, 8)
    finally:
        await store.close()

    results = await _claim_concurrently(pg_schema_url, tmp_path, owners=4)

    claimed = {run_id for result in results for run_id in result}
    assert len(claimed & set(limited)) == 2
    assert set(free) <= claimed


async def test_oldest_queued_is_the_creation_time_of_the_run_waiting_longest(store: SqlRunStore) -> None:
    assert await store.oldest_queued() is None
    first, second = ids(2)
    await store.create_run(run_record(first))
    await store.create_run(replace(run_record(second), created_at=NOW + timedelta(minutes=5)))
    [running] = ids(1)
    await store.create_run(replace(run_record(running, status=RunStatus.RUNNING), created_at=NOW - timedelta(hours=1)))

    assert await store.oldest_queued() == NOW  # the running run is older, but it is not waiting
    await store.update_run(first, status=RunStatus.RUNNING)
    assert await store.oldest_queued() == NOW + timedelta(minutes=5)


async def test_last_runs_gives_the_newest_run_of_each_workflow_that_has_one(store: SqlRunStore) -> None:
    older, newer, other = ids(3)
    await store.create_run(run_record(older, workflow="deploy"))
    await store.create_run(run_record(newer, workflow="deploy", status=RunStatus.SUCCEEDED))
    await store.create_run(run_record(other, workflow="backup"))

    last = await store.last_runs(["deploy", "backup", "never-ran"])

    assert {name: run.id for name, run in last.items()} == {"deploy": newer, "backup": other}


async def test_a_workflows_runs_are_read_newest_first_down_an_index_not_sorted(tmp_path: Path) -> None:
    # A busy workflow has many runs: listing its newest ones must not sort all of them for every page.
    database = await open_database(None, tmp_path)
    try:
        store = SqlRunStore(database)
        queries = {
            "list": select(runs).where(runs.c.workflow == bindparam("workflow")).order_by(runs.c.id.desc()).limit(51),
            "last": _LAST_RUN,
        }
        for name, query in queries.items():
            compiled = query.compile(dialect=sqlite.dialect())
            values = {**compiled.params, "workflow": "deploy"}
            args = tuple(values[key] for key in compiled.positiontup or ())
            plan = await database.run(
                lambda conn, sql=str(compiled), args=args: conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args).all()
            )
            details = " ".join(str(row[-1]) for row in plan)
            assert "ix_weir_runs_workflow_id" in details, (name, details)
            assert "TEMP B-TREE" not in details, (name, details)
        assert [run.id for run in (await store.list_runs(workflow="deploy")).runs] == []
    finally:
        await database.dispose()
