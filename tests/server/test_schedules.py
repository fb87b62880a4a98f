"""Schedule triggers: jobs follow the applied revision, fires start one run each, downtime is caught up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from weir.server.metrics import Metrics
from weir.server.schedules import Scheduler, entries
from weir.testing import Harness

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 4, 12, 5, tzinfo=UTC)


def nightly(cron: str = "*/10 * * * *", *, catchup: str = "latest", max_catchup: str = "1h", tz: str = "UTC") -> str:
    return f"""
[params.source]
type = "string"
default = "manual"

[[on.schedule]]
cron = "{cron}"
timezone = "{tz}"
catchup = "{catchup}"
max_catchup = "{max_catchup}"
params = {{ source = "schedule" }}

[[steps]]
id = "tick"
uses = "log"
with = {{ message = "tick from {{{{ params.source }}}}" }}
"""


EVERY_SECOND = """
[[on.schedule]]
every = "1s"

[[steps]]
id = "tick"
uses = "log"
with = { message = "tick" }
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def harness(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with Harness(tmp_path, clock=clock) as h:
        yield h


async def schedule_runs(harness: Harness) -> list[tuple[str, str, bool]]:
    page = await harness.store.list_runs(limit=100)
    return sorted(
        (run.workflow, run.trigger["fire_time"], bool(run.trigger.get("catchup")))
        for run in page.runs
        if run.trigger.get("type") == "schedule"
    )


async def apply(harness: Harness, files: dict[str, str], metrics: Metrics | None = None) -> Scheduler:
    harness.deploy(files)
    scheduler = Scheduler(harness.engine, metrics or Metrics())
    await scheduler.apply(harness.engine.deployment().revision)
    return scheduler


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "expected", "missed"),
    [
        ("all", "1h", ["11:30", "11:40", "11:50", "12:00"], 0),
        ("all", "15m", ["11:50", "12:00"], 2),
        ("latest", "1h", ["12:00"], 3),
        ("none", "1h", [], 4),
    ],
)
async def test_fires_missed_during_downtime_are_caught_up_by_policy(
    harness: Harness, catchup: str, max_catchup: str, expected: list[str], missed: int
) -> None:
    key = "nightly#0|*/10 * * * *|UTC"
    await harness.store.record_fire(key, NOW.replace(hour=11, minute=28))
    metrics = Metrics()

    scheduler = await apply(harness, {"nightly.toml": nightly(catchup=catchup, max_catchup=max_catchup)}, metrics)
    try:
        fired = [fire for _, fire, _ in await schedule_runs(harness)]
        assert fired == [f"2026-03-04T{hhmm}:00Z" for hhmm in expected]
        assert all(caught for _, _, caught in await schedule_runs(harness))
        assert (await harness.store.last_fires())[key] == NOW.replace(minute=0)
        counted = metrics.missed_fires.labels("nightly")._value.get()
        assert counted == missed
        page = await harness.store.list_runs(limit=10)
        assert all(run.params == {"source": "schedule"} for run in page.runs)
    finally:
        await scheduler.stop()


async def test_a_new_schedule_starts_counting_from_now(harness: Harness) -> None:
    scheduler = await apply(harness, {"nightly.toml": nightly(catchup="all")})
    try:
        assert await schedule_runs(harness) == []
        assert await harness.store.last_fires() == {"nightly#0|*/10 * * * *|UTC": NOW}
    finally:
        await scheduler.stop()


async def test_one_fire_time_makes_one_run_whatever_the_number_of_schedulers(harness: Harness) -> None:
    harness.deploy({"nightly.toml": nightly()})
    revision = harness.engine.deployment().revision
    first, second = Scheduler(harness.engine, Metrics()), Scheduler(harness.engine, Metrics())
    for scheduler in (first, second):
        await scheduler.apply(revision)
    entry = first.entries["nightly#0|*/10 * * * *|UTC"]
    at = NOW.replace(minute=10)

    await first._fire(entry, at)
    await second._fire(entry, at)
    await first._fire(entry, at + timedelta(minutes=10))

    assert [fire for _, fire, _ in await schedule_runs(harness)] == ["2026-03-04T12:10:00Z", "2026-03-04T12:20:00Z"]
    assert second.metrics.schedule_fires.labels("nightly", "duplicate")._value.get() == 1


async def test_the_hour_repeated_when_clocks_go_back_fires_once(harness: Harness) -> None:
    harness.deploy({"nightly.toml": nightly("30 2 * * *", tz="Europe/Berlin")})
    scheduler = Scheduler(harness.engine, Metrics())
    await scheduler.apply(harness.engine.deployment().revision)
    (entry,) = scheduler.entries.values()
    # 2026-10-25: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET); APScheduler fires both.
    fires = entry.parsed.next_fire_times(datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    utc = [f.astimezone(UTC).strftime("%m-%d %H:%M") for f in fires]
    assert utc == ["10-25 00:30", "10-25 01:30", "10-26 01:30"]

    for at in fires:
        await scheduler._fire(entry, at)

    assert [fire for _, fire, _ in await schedule_runs(harness)] == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    await scheduler.stop()


async def test_jobs_follow_the_applied_revision(harness: Harness) -> None:
    harness.deploy({"nightly.toml": nightly(), "other.toml": nightly("0 * * * *")})
    scheduler = Scheduler(harness.engine, Metrics())
    scheduler.start()
    try:
        await scheduler.apply(harness.engine.deployment().revision)
        assert set(scheduler.entries) == {"nightly#0|*/10 * * * *|UTC", "other#0|0 * * * *|UTC"}
        assert scheduler.next_fire_time("other#0|0 * * * *|UTC") is not None

        harness.deploy({"other.toml": nightly("15 * * * *"), "nightly.toml": nightly().replace("*/10", "*/5")})
        await scheduler.apply(harness.engine.deployment().revision)
        assert set(scheduler.entries) == {"nightly#0|*/5 * * * *|UTC", "other#0|15 * * * *|UTC"}
        assert scheduler.next_fire_time("other#0|0 * * * *|UTC") is None

        disabled = nightly("15 * * * *").replace("[params.source]", "enabled = false\n\n[params.source]")
        harness.deploy({"other.toml": disabled})
        await scheduler.apply(harness.engine.deployment().revision)
        assert set(scheduler.entries) == {"nightly#0|*/5 * * * *|UTC"}
    finally:
        await scheduler.stop()


async def test_a_running_scheduler_starts_runs_at_their_fire_times(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"tick.toml": EVERY_SECOND}) as harness:
        scheduler = Scheduler(harness.engine, Metrics())
        scheduler.start()
        try:
            await scheduler.apply(harness.engine.deployment().revision)
            await harness.executor.start()
            for _ in range(60):
                page = await harness.store.list_runs(limit=10)
                if len([r for r in page.runs if r.status == "succeeded"]) >= 2:
                    break
                import anyio

                await anyio.sleep(0.05)
            runs = (await harness.store.list_runs(limit=10)).runs
            done = [r for r in runs if r.status == "succeeded"]
            assert len(done) >= 2
            times = sorted(datetime.fromisoformat(r.trigger["fire_time"]) for r in done)
            assert times[1] - times[0] == timedelta(seconds=1)
            assert all(r.dedup_key and r.dedup_key.startswith("schedule:tick#0|") for r in done)
        finally:
            await scheduler.stop()


def test_entries_skip_disabled_workflows_and_key_by_position_and_timing(tmp_path: Path) -> None:
    from weir.connectors.registry import ConnectorRegistry
    from weir.testing import write_files
    from weir.workflows.source import read_directory
    from weir.workflows.validation import validate_tree

    write_files(
        tmp_path,
        {"a.toml": nightly(), "b.toml": nightly().replace("[params.source]", "enabled = false\n[params.source]")},
    )
    revision = validate_tree(read_directory(tmp_path), ConnectorRegistry()).revision
    assert list(entries(revision)) == ["a#0|*/10 * * * *|UTC"]


EVERY_MINUTE = EVERY_SECOND.replace('every = "1s"', 'every = "1m"')


async def test_replicas_with_clocks_seconds_apart_compute_the_same_interval_fire_times(
    harness: Harness, clock: Clock
) -> None:
    harness.deploy({"tick.toml": EVERY_MINUTE})
    revision = harness.engine.deployment().revision
    on_time, late = Scheduler(harness.engine, Metrics()), Scheduler(harness.engine, Metrics())
    clock.now = NOW + timedelta(seconds=7)
    await on_time.apply(revision)
    clock.now = NOW + timedelta(seconds=10)  # a replica whose clock runs 3 s behind starts a little later
    await late.apply(revision)
    try:
        (key,) = on_time.entries
        first = [s._aps.get_job(key).trigger.start_date for s in (on_time, late)]  # not started: no next_run_time
        assert first == [NOW + timedelta(minutes=1)] * 2
    finally:
        await on_time.stop()
        await late.stop()


async def test_fire_times_that_pass_while_a_schedule_is_being_added_still_fire(tmp_path: Path) -> None:
    # Applying took 2.5 s (a catch-up, a large revision): the time the catch-up counted up to lags the
    # moment the job is added, and APScheduler counts a new job from then. The seconds in between were lost.
    def lagging() -> datetime:
        return datetime.now(UTC) - timedelta(seconds=2.5)

    async with Harness(tmp_path, {"tick.toml": EVERY_SECOND}, clock=lagging) as harness:
        scheduler = Scheduler(harness.engine, Metrics())
        scheduler.start()
        try:
            since = lagging().replace(microsecond=0)
            (key,) = entries(harness.engine.deployment().revision)
            await harness.store.record_fire(key, since - timedelta(seconds=1))
            await scheduler.apply(harness.engine.deployment().revision)
            first = scheduler.next_fire_time(key)
            assert first is not None

            fired = sorted(datetime.fromisoformat(fire) for _, fire, _ in await schedule_runs(harness))
        finally:
            await scheduler.stop()

    expected = [since + timedelta(seconds=n) for n in range(int((first - since).total_seconds()))]
    assert len(expected) >= 3  # the catch-up's second and at least two that passed while applying
    assert fired == expected
