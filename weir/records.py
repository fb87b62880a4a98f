"""What the run engine stores, and the protocol of the store that keeps it.

The engine (``weir.workflows``) and the SQL store (``weir.store``) are siblings that never
import each other; both speak these records. A run is one row; each step leaves one record
per attempt and per ``foreach`` item::

    RunRecord    one run of a workflow: status, params, trigger, revision, outputs, usage
    StepRecord   one attempt of one step (or of one foreach item), keyed by
                 (run_id, phase, step_id, item_index, attempt)
    LogRecord    one line of a run's log

``item_index`` is ``WHOLE_STEP`` (-1) for a step that has no ``foreach``; ``attempt`` 0 holds
records that are about the step rather than one try of it: a skip, a cache hit, the summary
of a foreach step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from weir.types import RunStatus, StepStatus

WHOLE_STEP = -1
"""``item_index`` of the records of a step without ``foreach``, and of a foreach step's summary."""

FINISHED_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
FINISHED_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


class Phase(StrEnum):
    """Which part of the workflow a step record belongs to."""

    MAIN = "main"
    COMPENSATE = "compensate"
    ON_FAILURE = "on_failure"


def new_run_id() -> str:
    """A 26-character id that sorts by creation time (milliseconds, then 56 random bits)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(7).hex()}"


@dataclass
class RunRecord:
    """One run of a workflow, as stored."""

    id: str
    workflow: str
    revision: str
    status: RunStatus
    created_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    parent_step: str | None = None
    """``step_id`` or ``step_id:index`` of the parent's step that waits for this child run."""
    rerun_of: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    """At most this many runs of the workflow with the same key run or wait at once (queue policy)."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    """When a waiting run should be looked at again (a sleep ends, a wait times out)."""
    outputs: Any = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    dedup_key: str | None = None
    """Unique among all runs when set: a webhook's idempotency key or a schedule's fire time."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RUN


@dataclass
class StepRecord:
    """One attempt of one step or foreach item, as stored."""

    run_id: str
    step_id: str
    status: StepStatus
    phase: Phase = Phase.MAIN
    item_index: int = WHOLE_STEP
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    error_kind: str | None = None
    wake_at: datetime | None = None
    child_run_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    note: str | None = None
    """Why a record looks the way it does: 'cached', 'reused from run …', 'fallback'."""

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.phase, self.step_id, self.item_index, self.attempt)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STEP


@dataclass(frozen=True)
class LogRecord:
    """One line of a run's log."""

    run_id: str
    at: datetime
    level: str
    message: str
    step_id: str | None = None
    item_index: int | None = None
    id: int | None = None


@dataclass(frozen=True)
class StoredRevision:
    """The files of an applied revision, as kept in the run database."""

    sha: str
    files: dict[str, bytes]
    message: str = ""
    author: str = ""
    committed_at: datetime | None = None


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first, and the cursor of the next page."""

    runs: list[RunRecord]
    next_cursor: str | None


class RunStore(Protocol):
    """Durable state of runs. Every method commits before it returns."""

    async def create_run(self, run: RunRecord, *, steps: Sequence[StepRecord] = ()) -> RunRecord:
        """Store a new run (and records it starts with, e.g. reused steps of a rerun) and return it.

        When another run already holds ``run.dedup_key``, nothing is stored and that run is returned.
        """
        ...

    async def find_run(self, dedup_key: str) -> RunRecord | None:
        """The run that holds ``dedup_key``, if any."""
        ...

    async def save_revision(self, revision: StoredRevision) -> None:
        """Keep the files of an applied revision (once per sha)."""
        ...

    async def load_revision(self, sha: str) -> StoredRevision | None: ...

    async def last_fires(self) -> dict[str, datetime]:
        """The last fire time of every schedule, by key."""
        ...

    async def record_fire(self, key: str, at: datetime) -> None:
        """Remember that schedule ``key`` fired at ``at`` (a later time is never replaced by an earlier one)."""
        ...

    async def shared_value(self, key: str, default: str) -> str:
        """The value stored under ``key``; ``default`` is stored first when there is none (first writer wins)."""
        ...

    async def listen_for_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when another process made a run ready; runs until cancelled (may return at once)."""
        ...

    async def count_runs(self, status: RunStatus | None = None) -> dict[str, int]:
        """How many runs there are in each status (only ``status``, when given)."""
        ...

    async def last_runs(self, workflows: Sequence[str]) -> dict[str, RunRecord]:
        """The newest run of each of ``workflows`` that has one."""
        ...

    async def oldest_queued(self) -> datetime | None:
        """When the oldest queued run was created, or None when no run is queued."""
        ...

    async def prune_runs(self, finished_before: datetime) -> int:
        """Delete runs that finished before ``finished_before`` with their steps and logs; return how many."""
        ...

    @property
    def single_node(self) -> bool:
        """True when no other process can share the database (SQLite)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def get_steps(self, run_id: str) -> list[StepRecord]: ...

    async def save_step(
        self,
        step: StepRecord,
        *,
        logs: Sequence[LogRecord] = (),
        usage: tuple[int, int] = (0, 0),
        only_if: StepStatus | None = None,
    ) -> bool:
        """Insert or replace one step record, append logs and add token usage to the run, in one transaction.

        With ``only_if``, the record is written only while the stored one has that status (False otherwise).
        """
        ...

    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Change fields of a run (status, started_at, outputs, error, wake_at, ...)."""
        ...

    async def finish_run(self, run: RunRecord, *, logs: Sequence[LogRecord] = ()) -> None:
        """Store the final state of a run, release its lease and wake a parent waiting for it."""
        ...

    async def append_logs(self, logs: Sequence[LogRecord]) -> None: ...

    async def get_logs(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[LogRecord]: ...

    async def claim_runs(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[RunRecord]:
        """Take up to ``limit`` runs that are ready (queued within their concurrency limit, waiting with a due
        ``wake_at``, or running under an expired lease) and lease them to ``owner``."""
        ...

    async def renew_leases(
        self, owner: str, run_ids: Sequence[str], *, lease_seconds: float, now: datetime
    ) -> tuple[set[str], set[str]]:
        """Extend the leases of ``run_ids``; return (ids ``owner`` no longer holds, ids asked to cancel)."""
        ...

    async def expire_leases(self) -> int:
        """Free the leases of every running run (only safe when no other process can hold one)."""
        ...

    async def release_run(self, run_id: str, owner: str, *, status: RunStatus, wake_at: datetime | None) -> None:
        """Give up the lease of a run that is parked (waiting) or handed back (queued).

        A wake-up that arrived while the run was held (a child finished, a resume call) is kept.
        """
        ...

    async def request_cancel(self, run_id: str, now: datetime) -> RunRecord | None:
        """Mark a run for cancellation (a queued or waiting one is cancelled at once); None if unknown."""
        ...

    async def resume_step(self, run_id: str, step_id: str, payload: Any, now: datetime) -> StepRecord | None:
        """Deliver the body of a resume call to a waiting ``wait`` step and wake its run; None if nothing waits."""
        ...

    async def cache_get(self, key: str, now: datetime) -> tuple[bool, Any]: ...

    async def cache_put(self, key: str, output: Any, *, expires_at: datetime) -> None: ...

    async def active_runs(self, workflow: str, concurrency_key: str | None, *, queued: bool = False) -> list[RunRecord]:
        """Runs of ``workflow`` (with that key) that are running or waiting, oldest first.

        With ``queued``, queued runs too: what a skip or cancel-oldest limit counts.
        """
        ...

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage: ...
