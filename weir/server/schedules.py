"""Schedule triggers: APScheduler jobs reconciled with each applied revision, fires stored once.

Each ``[[on.schedule]]`` of an enabled workflow is one APScheduler job with the trigger
``weir.workflows.cron`` built for it (the same one ``weir check`` and ``weir plan`` use).
A fire starts a run whose dedup key is the schedule and its fire time, so a fire time makes at
most one run whatever the number of replicas: the database's uniqueness rule decides, not a
leader. Cron fire times are keyed by their wall time in the schedule's zone, so the hour that
repeats when clocks go back fires once, as crontab does.

After downtime, the fires missed since the last one recorded in the database are caught up
according to ``catchup`` (``none``, ``latest``, ``all``) when they are within ``max_catchup``;
the others are counted in ``weir_schedule_missed_fires``. A schedule seen for the first time
records now as its last fire, so only fires after that count as missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from weir.errors import StoreUnavailable, WeirError
from weir.schemas.workflow import Schedule
from weir.server.metrics import Metrics
from weir.workflows.cron import CronSchedule, IntervalSchedule, parse_schedule
from weir.workflows.engine import Engine, Submitted
from weir.workflows.validation import Revision

log = logging.getLogger("weir.schedules")

MAX_CATCHUP_RUNS = 1000
"""``catchup = "all"`` starts at most this many runs per schedule; the rest count as missed."""
FIRE_RETRY_SECONDS = 300.0
"""How long a fire keeps trying while the database does not answer (a restart or failover takes less)."""
_MAX_SCAN = 100_000


@dataclass(frozen=True)
class Entry:
    """One schedule of the applied revision."""

    key: str
    """Stable while the workflow, position and timing stay the same: names the job and the stored last fire."""
    workflow: str
    schedule: Schedule
    parsed: CronSchedule | IntervalSchedule

    def describe(self) -> str:
        return self.parsed.describe()

    def fire_id(self, at: datetime) -> str:
        """The dedup key of the fire at ``at``: the wall time for cron (the repeated autumn hour fires once)."""
        if isinstance(self.parsed, CronSchedule):
            wall = at.astimezone(self.parsed.timezone).replace(tzinfo=None)
            return f"schedule:{self.key}:{wall.isoformat()}"
        return f"schedule:{self.key}:{at.astimezone(UTC).isoformat()}"


def entries(revision: Revision, known: Mapping[str, Entry] | None = None) -> dict[str, Entry]:
    """The schedules of ``revision`` by key.

    A key already in ``known`` (the entries applied before) keeps its parsed trigger: the key holds
    the cron expression or interval and the timezone, all a trigger is built from, so parsing it
    again would give the same. Only new or changed schedules are parsed.
    """
    found: dict[str, Entry] = {}
    for name, loaded in sorted(revision.workflows.items()):
        if not loaded.model.enabled:
            continue
        for index, schedule in enumerate(loaded.model.on.schedule):
            timing = schedule.cron if schedule.cron is not None else f"every {schedule.every}"
            key = f"{name}#{index}|{timing}|{schedule.timezone}"
            before = known.get(key) if known else None
            if before is not None and before.schedule is schedule:
                found[key] = before
                continue
            parsed = (
                before.parsed
                if before is not None
                else parse_schedule(schedule.cron, schedule.every, schedule.timezone)
            )
            found[key] = Entry(key, name, schedule, parsed)
    return found


class Scheduler:
    """Keeps APScheduler's jobs equal to the schedules of the applied revision and starts their runs."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        from apscheduler.events import EVENT_JOB_SUBMITTED
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.engine = engine
        self.metrics = metrics
        self.entries: dict[str, Entry] = {}
        self._aps = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1000}
        )
        self._aps.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._aps.start()

    async def stop(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def next_fire_time(self, key: str) -> datetime | None:
        job = self._aps.get_job(key)
        return getattr(job, "next_run_time", None)  # a job added before the scheduler started has none yet

    async def apply(self, revision: Revision) -> None:
        """Add and remove jobs so they match ``revision``; catch up fires missed by new jobs.

        Jobs are reconciled by schedule key: a job whose key stays is left untouched (its next fire
        time, its trigger), so a commit that changes one workflow touches only that one's jobs.
        """
        desired = entries(revision, self.entries)
        for key in set(self.entries) - set(desired):
            self._aps.remove_job(key)
            log.info("schedule removed: %s", key)
        added = [entry for key, entry in desired.items() if key not in self.entries]
        self.entries = desired  # changed params etc. apply from the next fire; the job keeps its timing
        if not added:
            return
        now = self.engine.clock()
        last = await self.engine.store.last_fires()
        for entry in added:
            previous = last.get(entry.key)
            await self._catch_up(entry, previous, now)
            trigger = entry.parsed.trigger if isinstance(entry.parsed, CronSchedule) else None
            if trigger is None:
                assert isinstance(entry.parsed, IntervalSchedule)  # noqa: S101 - parse_schedule returns one of two
                # On the interval's grid (see IntervalSchedule): every replica computes the same fire times, so the
                # database's uniqueness rule leaves one run per fire time.
                trigger = entry.parsed.make_trigger(entry.parsed.next_fire_times(now, 1)[0])
            self._aps.add_job(_noop, trigger, id=entry.key, name=entry.key, replace_existing=True)
            await self._fire_while_applying(entry, now)
            log.info(
                "schedule added: %s (%s), next fire %s",
                entry.workflow,
                entry.describe(),
                self.next_fire_time(entry.key),
            )

    async def _catch_up(self, entry: Entry, previous: datetime | None, now: datetime) -> None:
        if previous is None:
            await self.engine.store.record_fire(entry.key, now)
            return
        missed: list[datetime] = []
        cursor = previous
        while len(missed) < _MAX_SCAN:
            upcoming = entry.parsed.next_fire_times(cursor, 1)
            if not upcoming or upcoming[0] > now:
                break
            cursor = upcoming[0]
            missed.append(cursor)
        if not missed:
            return
        window = now - entry.schedule.max_catchup
        recent = [t for t in missed if t >= window]
        chosen = {"none": [], "latest": recent[-1:], "all": recent[-MAX_CATCHUP_RUNS:]}[entry.schedule.catchup]
        if len(missed) > len(chosen):
            self.metrics.missed_fires.labels(entry.workflow).inc(len(missed) - len(chosen))
            log.warning(
                "schedule %s of %s missed %d fire(s) while the server was down; "
                "catching up %d (catchup=%s, max_catchup=%s)",
                entry.describe(),
                entry.workflow,
                len(missed),
                len(chosen),
                entry.schedule.catchup,
                entry.schedule.max_catchup,
            )
        for at in chosen:
            await self._fire(entry, at, catchup=True)
        await self.engine.store.record_fire(entry.key, missed[-1])

    async def _fire_while_applying(self, entry: Entry, since: datetime) -> None:
        """Start the fire times that passed while the job was being added: after ``since`` (the catch-up
        covered up to it) and before the job's first fire. APScheduler counts a new job from the moment it is
        added, and applying (catching up, other jobs) can take longer than an interval; these times are not
        downtime, so they fire whatever ``catchup`` says."""
        first = self.next_fire_time(entry.key)  # None until the scheduler started: it then counts from its start
        if first is None:
            return
        at = since
        for _ in range(MAX_CATCHUP_RUNS):
            upcoming = entry.parsed.next_fire_times(at, 1)  # usually the job's first fire: one step
            if not upcoming or upcoming[0] >= first:
                return
            at = upcoming[0]
            await self._fire(entry, at)

    def _submitted(self, event: Any) -> None:
        entry = self.entries.get(event.job_id)
        if entry is None:
            return
        for at in event.scheduled_run_times:
            task = asyncio.get_running_loop().create_task(self._fire(entry, at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _submit_fire(self, entry: Entry, at: datetime, params: Any, trigger: dict[str, Any]) -> Submitted:
        """Start the fire's run, trying again while the database does not answer (the fire time is not lost).

        The dedup key makes a retry safe: a fire another replica stored meanwhile is found, not doubled.
        """
        delay = 0.5
        deadline = time.monotonic() + FIRE_RETRY_SECONDS
        while True:
            try:
                submitted = await self.engine.submit(
                    entry.workflow, params, trigger=trigger, dedup_key=entry.fire_id(at)
                )
                await self.engine.store.record_fire(entry.key, at)
                return submitted
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("schedule %s of %s: %s; trying the fire again", entry.describe(), entry.workflow, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _fire(self, entry: Entry, at: datetime, *, catchup: bool = False) -> None:
        trigger: dict[str, Any] = {
            "type": "schedule",
            "schedule": entry.describe(),
            "fire_time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
        if catchup:
            trigger["catchup"] = True
        try:
            params = json.loads(json.dumps(entry.schedule.params))
            submitted = await self._submit_fire(entry, at, params, trigger)
        except WeirError as exc:
            log.error("schedule %s of %s could not start a run for %s: %s", entry.describe(), entry.workflow, at, exc)
            self.metrics.schedule_fires.labels(entry.workflow, "failed").inc()
            return
        except Exception:
            log.exception("schedule %s of %s failed to fire for %s", entry.describe(), entry.workflow, at)
            self.metrics.schedule_fires.labels(entry.workflow, "failed").inc()
            return
        outcome = "duplicate" if submitted.duplicate else "skipped" if submitted.run is None else "started"
        self.metrics.schedule_fires.labels(entry.workflow, outcome).inc()
        if submitted.run is not None and not submitted.duplicate:
            log.info(
                "schedule %s started run %s of %s (fire time %s)",
                entry.describe(),
                submitted.run.id,
                entry.workflow,
                at,
            )


async def _noop() -> None:
    """The job body: the run is started from the submission event, which knows the fire time."""
