"""What the server keeps in the run database beside runs: dedup keys, revisions, fire times, shared values, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.store.test_runs import new_id, run_record
from weir.records import LogRecord, RunRecord, StepRecord, StoredRevision
from weir.store.runs import SqlRunStore
from weir.types import RunStatus, StepStatus

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


async def test_a_dedup_key_creates_one_run_and_returns_the_first_to_later_callers(store: SqlRunStore) -> None:
    first = run_record(new_id(), dedup_key="hook:alerts:delivery-1")
    again = run_record(new_id(), dedup_key="hook:alerts:delivery-1")
    other = run_record(new_id(), dedup_key="hook:alerts:delivery-2")

    assert (await store.create_run(first)).id == first.id
    assert (await store.create_run(again)).id == first.id
    assert (await store.create_run(other)).id == other.id
    assert await store.get_run(again.id) is None
    found = await store.find_run("hook:alerts:delivery-1")
    assert found is not None
    assert found.id == first.id
    assert await store.find_run("hook:alerts:delivery-3") is None


async def test_runs_without_a_dedup_key_never_collide(store: SqlRunStore) -> None:
    made = [await store.create_run(run_record(new_id())) for _ in range(3)]
    assert len({run.id for run in made}) == 3


async def test_concurrent_creates_with_one_key_store_exactly_one_run(store: SqlRunStore) -> None:
    winners: list[str] = []

    async def create() -> None:
        winners.append((await store.create_run(run_record(new_id(), dedup_key="schedule:nightly#0:02:00"))).id)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(create)
    assert len(set(winners)) == 1
    page = await store.list_runs(limit=20)
    assert [run.id for run in page.runs] == [winners[0]]


async def test_runs_created_together_are_all_stored_and_a_bad_one_fails_alone(store: SqlRunStore) -> None:
    taken = await store.create_run(run_record(new_id()))
    good = [run_record(new_id()) for _ in range(20)]
    clash = run_record(taken.id)  # the same id as a stored run: its insert fails
    keyed = [run_record(new_id(), dedup_key="hook:alerts:d-9") for _ in range(3)]
    results: list[RunRecord | Exception] = []

    async def create(run: RunRecord) -> None:
        try:
            results.append(await store.create_run(run))
        except Exception as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:  # one turn of the loop: one group commit
        for run in [*good, clash, *keyed]:
            tg.start_soon(create, run)

    failed = [value for value in results if isinstance(value, Exception)]
    assert len(failed) == 1, failed
    for run in good:
        stored = await store.get_run(run.id)
        assert stored is not None
        assert stored.status == RunStatus.QUEUED
    holders = {value.id for value in results if isinstance(value, RunRecord) and value.dedup_key}
    assert len(holders) == 1
    assert await store.count_runs() == {"queued": 1 + len(good) + 1}


async def test_a_revision_is_stored_once_and_loads_byte_for_byte(store: SqlRunStore) -> None:
    files = {"alerts.toml": b'[[steps]]\nid = "a"\n', "scripts/x.py": bytes(range(256))}
    committed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.save_revision(StoredRevision("a" * 40, files, "add alerts", "Ann", committed))
    await store.save_revision(StoredRevision("a" * 40, {"other.toml": b""}, "ignored"))

    loaded = await store.load_revision("a" * 40)
    assert loaded == StoredRevision("a" * 40, files, "add alerts", "Ann", committed)
    assert await store.load_revision("b" * 40) is None


async def test_fire_times_only_move_forward(store: SqlRunStore) -> None:
    await store.record_fire("nightly#0", NOW)
    await store.record_fire("nightly#0", NOW - timedelta(hours=1))
    await store.record_fire("hourly#0", NOW - timedelta(minutes=5))
    assert await store.last_fires() == {"nightly#0": NOW, "hourly#0": NOW - timedelta(minutes=5)}
    await store.record_fire("nightly#0", NOW + timedelta(days=1))
    assert (await store.last_fires())["nightly#0"] == NOW + timedelta(days=1)


async def test_the_first_shared_value_wins(store: SqlRunStore) -> None:
    assert await store.shared_value("signing_key", "first") == "first"
    assert await store.shared_value("signing_key", "second") == "first"


async def test_count_runs_by_status(store: SqlRunStore) -> None:
    for status in (RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED):
        await store.create_run(run_record(new_id(), status=status))
    assert await store.count_runs() == {"queued": 2, "running": 1, "succeeded": 1}


async def test_prune_deletes_old_finished_runs_with_their_steps_and_logs(store: SqlRunStore) -> None:
    def finished(age: timedelta, status: RunStatus = RunStatus.SUCCEEDED) -> RunRecord:
        return run_record(new_id(), status=status, finished_at=NOW - age)

    old, old_failed, recent = (
        finished(timedelta(days=40)),
        finished(timedelta(days=31), RunStatus.FAILED),
        finished(timedelta(days=2)),
    )
    waiting = run_record(new_id(), status=RunStatus.WAITING)
    for run in (old, old_failed, recent, waiting):
        await store.create_run(run)
        await store.save_step(
            StepRecord(run_id=run.id, step_id="a", status=StepStatus.SUCCEEDED, attempt=1),
            logs=[LogRecord(run.id, NOW, "info", "hello")],
        )

    assert await store.prune_runs(NOW - timedelta(days=30)) == 2
    assert await store.get_run(old.id) is None
    assert await store.get_run(old_failed.id) is None
    assert await store.get_steps(old.id) == []
    assert await store.get_logs(old.id) == []
    for kept in (recent, waiting):
        assert await store.get_run(kept.id) is not None
        assert len(await store.get_steps(kept.id)) == 1
