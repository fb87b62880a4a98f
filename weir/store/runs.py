"""The SQL implementation of ``weir.records.RunStore`` (SQLite and PostgreSQL).

Every method is one short transaction; new runs are group-committed: the runs created in one
turn of the event loop (a burst of webhooks) are inserted by one transaction, and each creator
gets its answer once that transaction committed. Claims lock candidate rows with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so several processes can share one database without taking the same
run; SQLite is single-node (see ``weir.store.database``), where the lock clause is not needed.
A claimed run is ``running`` under its owner's lease until it finishes, parks or is handed
back, so it also counts against its concurrency limit at once; on PostgreSQL, claims that
admit runs of the same concurrency group take turns on an advisory lock.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError

from weir.records import FINISHED_RUN, LogRecord, Phase, RunPage, RunRecord, StepRecord, StoredRevision
from weir.store.database import Database
from weir.store.tables import cache, logs, meta, revisions, runs, schedules, steps
from weir.types import RunStatus, StepStatus

_ACTIVE = (RunStatus.RUNNING, RunStatus.WAITING)
_RUN_FIELDS = frozenset(f.name for f in fields(RunRecord))
_STEP_COLUMNS = [c.name for c in steps.columns if c.name != "id"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STEP_KEY = ["run_id", "phase", "step_id", "item_index", "attempt"]
_LOCK_SPACE = 0x7765_6972  # "weir"
_PRUNE_BATCH = 500
WORK_CHANNEL = "weir_work"
"""The PostgreSQL notification channel told when a run becomes ready, so idle executors look at once."""


def _run(row: Row[Any]) -> RunRecord:
    data = row._asdict()
    data["status"] = RunStatus(data["status"])
    data["params"] = data["params"] or {}
    data["trigger"] = data["trigger"] or {}
    return RunRecord(**data)


def _step(row: Row[Any]) -> StepRecord:
    data = row._asdict()
    del data["id"]
    data["status"] = StepStatus(data["status"])
    data["phase"] = Phase(data["phase"])
    return StepRecord(**data)


def _log(row: Row[Any]) -> LogRecord:
    return LogRecord(**row._asdict())


def _limited(run: RunRecord | _Candidate) -> bool:
    """A queued run whose start is bounded by a concurrency limit (running and waiting runs are counted already)."""
    return run.status == RunStatus.QUEUED and bool(run.concurrency_limit)


_others = runs.alias("others")

# The statements of an executor's every run, built once: building one per call (where clause, values, cache key)
# cost more CPU than executing it.
_RUN_BY_ID = select(runs).where(runs.c.id == bindparam("run_id"))
_STEPS_OF_RUN = select(steps).where(steps.c.run_id == bindparam("run_id")).order_by(steps.c.id)
_FINISH_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("run_id"))
    .values(
        {
            name: bindparam(f"v_{name}", type_=runs.c[name].type)
            for name in ("status", "finished_at", "outputs", "error", "wake_at", "lease_owner", "lease_expires_at")
        }
    )
)


_LAST_RUN = select(runs).where(runs.c.workflow == bindparam("workflow")).order_by(runs.c.id.desc()).limit(1)
# Run ids start with their creation time, so the smallest queued id is the oldest queued run: (status, id) index.
_OLDEST_QUEUED = select(runs.c.created_at).where(runs.c.status == RunStatus.QUEUED).order_by(runs.c.id).limit(1)


@functools.cache
def _update_run(names: frozenset[str]) -> Any:
    """``UPDATE weir_runs SET <names> WHERE id = :run_id``; the new values are bound as ``v_<name>``."""
    values = {name: bindparam(f"v_{name}", type_=runs.c[name].type) for name in sorted(names)}
    return update(runs).where(runs.c.id == bindparam("run_id")).values(values)


def _below_limit() -> ColumnElement[bool]:
    """A queued run's group has room: fewer active runs than its limit (so a full group never fills a claim)."""
    active = (
        select(func.count())
        .select_from(_others)
        .where(
            _others.c.workflow == runs.c.workflow,
            _others.c.concurrency_key.is_not_distinct_from(runs.c.concurrency_key),
            or_(*(_others.c.status == status for status in _ACTIVE)),  # IN (...) is re-rendered on every execution
        )
        .scalar_subquery()
    )
    return active < runs.c.concurrency_limit


def _claim_queries(wanted: int) -> tuple[Select[Any], ...]:
    """The candidates of a claim: one query per way of being ready, each walking its own index in id order.

    (One query with OR sorted every ready row first: milliseconds with ten thousand runs queued.)
    """
    now = bindparam("now", type_=runs.c.wake_at.type)
    ready = (
        and_(runs.c.status == RunStatus.QUEUED, or_(runs.c.concurrency_limit.is_(None), _below_limit())),
        and_(runs.c.status == RunStatus.WAITING, runs.c.wake_at <= now),
        and_(runs.c.status == RunStatus.RUNNING, runs.c.lease_expires_at < now),
    )
    # Only what admission needs: a claim looks at up to four times as many candidates as it takes, and decoding
    # their params and triggers cost more than the queries. The runs taken are read whole afterwards.
    return tuple(
        select(*_CANDIDATE_COLUMNS).where(condition).order_by(runs.c.id).limit(wanted).with_for_update(skip_locked=True)
        for condition in ready
    )


_CANDIDATE_COLUMNS = (runs.c.id, runs.c.workflow, runs.c.status, runs.c.concurrency_key, runs.c.concurrency_limit)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A run a claim may take, as far as admission needs to know it."""

    id: str
    workflow: str
    status: RunStatus
    concurrency_key: str | None
    concurrency_limit: int | None


def _group_lock(workflow: str, key: str | None) -> int:
    """The PostgreSQL advisory lock of a concurrency group: 'weir' in the high half, a CRC of the group below.

    Two groups that share a CRC only wait for each other; they never admit too many runs.
    """
    return (_LOCK_SPACE << 32) | zlib.crc32(f"{workflow}\0{key or ''}".encode())


def _shallow(record: Any) -> dict[str, Any]:
    """A record's fields as a row, sharing its values: ``asdict`` would deep-copy every payload and output,
    which was the largest part of storing a webhook's run or a step's result."""
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(f.name for f in fields(record))
    return {name: getattr(record, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _log_row(record: LogRecord) -> dict[str, Any]:
    row = _shallow(record)
    del row["id"]
    return row


class _Bound:
    """An INSERT (or upsert) of whole rows whose parameters are bound here, in one pass per row.

    SQLAlchemy's own execute prepares each row through several layers of per-column bookkeeping;
    for the run rows of a webhook burst and the step records of every run that was about a third
    of the statement. The SQL, the parameter order and each column's bind processor (the JSON and
    datetime conversions) are SQLAlchemy's own, taken once per dialect, and the rows still go
    through ``exec_driver_sql``, so errors are SQLAlchemy's as everywhere else.
    """

    def __init__(self, statement: Any, table: Any, columns: Sequence[str], dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names = list(compiled.positiontup or ()) if self.positional else list(columns)
        processors = {c.key: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns}
        self.columns = [(name, processors[name]) for name in names]

    def params(self, row: Any) -> Any:
        """The parameters of a row given as a dict, or as a record whose attributes are the columns."""
        get = row.__getitem__ if isinstance(row, dict) else row.__getattribute__
        values = [
            value if process is None or value is None else process(value)
            for value, process in ((get(name), process) for name, process in self.columns)
        ]
        return tuple(values) if self.positional else dict(zip((name for name, _ in self.columns), values, strict=True))

    def execute(self, conn: Connection, rows: Sequence[Any]) -> None:
        if not rows:
            return
        try:
            params = [self.params(row) for row in rows]
        except Exception as exc:  # a value a column cannot take: reported as SQLAlchemy reports it
            raise StatementError(f"({type(exc).__name__}) {exc}", self.sql, None, exc) from exc
        conn.exec_driver_sql(self.sql, params[0] if len(params) == 1 else params)


@dataclass(slots=True)
class _NewRun:
    """A run waiting for the next group commit, and the future its creator awaits."""

    run: RunRecord
    steps: Sequence[StepRecord]
    done: asyncio.Future[RunRecord]


def _settle(done: asyncio.Future[RunRecord], outcome: RunRecord | BaseException) -> None:
    if done.done():  # the creator was cancelled meanwhile; the run is stored all the same
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


class SqlRunStore:
    """Runs, steps, logs and the step cache in an SQLite or PostgreSQL database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._intake: list[_NewRun] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._claim_queries: dict[int, tuple[Select[Any], ...]] = {}
        self._notify_work = (
            select(func.pg_notify(WORK_CHANNEL, "")) if database.dialect == "postgresql" else None
        )  # sent on commit, once per transaction however often it is executed
        dialect = postgresql if database.dialect == "postgresql" else sqlite
        upsert = dialect.insert(steps)
        self._upsert_step = upsert.on_conflict_do_update(
            index_elements=_STEP_KEY, set_={c: upsert.excluded[c] for c in _STEP_COLUMNS if c not in _STEP_KEY}
        )
        self._insert_run = insert(runs)
        self._bound: dict[str, _Bound] = {}
        self._insert_run_once = (
            dialect.insert(runs).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(runs.c.id)
        )
        self._insert_revision = dialect.insert(revisions).on_conflict_do_nothing(index_elements=["sha"])
        self._insert_meta = dialect.insert(meta).on_conflict_do_nothing(index_elements=["key"])
        fire = dialect.insert(schedules)
        self._upsert_fire = fire.on_conflict_do_update(
            index_elements=["key"],
            set_={"last_fire_at": fire.excluded.last_fire_at},
            where=schedules.c.last_fire_at < fire.excluded.last_fire_at,
        )
        cache_upsert = dialect.insert(cache)
        self._upsert_cache = cache_upsert.on_conflict_do_update(
            index_elements=["key"],
            set_={"output": cache_upsert.excluded.output, "expires_at": cache_upsert.excluded.expires_at},
        )

    @property
    def single_node(self) -> bool:
        """True for SQLite: no other process can hold a lease, so leases of a dead process may be taken at once."""
        return self.database.dialect == "sqlite"

    async def close(self) -> None:
        while self._intake or self._flushes:  # runs being created are committed before the database closes
            if self._intake:
                self._start_flush()
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.database.dispose()

    async def ping(self) -> None:
        """Raise when the database does not answer."""

        def _tx(conn: Connection) -> Any:
            conn.execute(select(1))

        await self.database.run(_tx)

    async def create_run(self, run: RunRecord, *, steps: Sequence[StepRecord] = ()) -> RunRecord:
        """Store a new run (group-committed: the runs created in one turn of the event loop share a transaction).

        Returns the run, or the run that already holds ``run.dedup_key``. Returns once committed.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RunRecord] = loop.create_future()
        if not self._intake:
            loop.call_soon(self._start_flush)
        self._intake.append(_NewRun(run, steps, done))
        return await done

    def _start_flush(self) -> None:
        # Runs after every callback that was ready in this turn, so the requests parsed in it share one commit.
        batch, self._intake = self._intake, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_NewRun]) -> None:
        try:
            stored = await self.database.run(lambda conn: self._insert_runs(conn, batch))
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].done, exc)
                return
            # One bad row must not fail the others: store each on its own.
            for item in batch:
                try:
                    alone = await self.database.run(functools.partial(self._insert_runs, batch=[item]))
                except Exception as exc:
                    _settle(item.done, exc)
                else:
                    _settle(item.done, alone[0])
            return
        for item, run in zip(batch, stored, strict=True):
            _settle(item.done, run)

    def _insert_runs(self, conn: Connection, batch: Sequence[_NewRun]) -> list[RunRecord]:
        plain = [item.run for item in batch if item.run.dedup_key is None]
        if plain:
            self._bound_statement(conn, "run").execute(conn, plain)
        stored: list[RunRecord] = []
        for item in batch:
            run = item.run
            if run.dedup_key is not None and conn.execute(self._insert_run_once, _shallow(run)).first() is None:
                # Another run holds the key (a redelivered webhook, a fire time another replica took).
                holder = conn.execute(select(runs).where(runs.c.dedup_key == run.dedup_key)).first()
                if holder is not None:
                    stored.append(_run(holder))
                    continue
                conn.execute(self._insert_run, _shallow(run))  # it was pruned in between: the key is free again
            if item.steps:
                self._bound_statement(conn, "step").execute(conn, item.steps)
            stored.append(run)
        self._tell_executors(conn)
        return stored

    def _bound_statement(self, conn: Connection, kind: str) -> _Bound:
        """The run INSERT or the step upsert, bound by hand (built on first use, for the connection's dialect)."""
        bound = self._bound.get(kind)
        if bound is None:
            if kind == "run":
                bound = _Bound(self._insert_run, runs, [c.key for c in runs.columns], conn.dialect)
            else:
                bound = _Bound(self._upsert_step, steps, _STEP_COLUMNS, conn.dialect)
            self._bound[kind] = bound
        return bound

    def _tell_executors(self, conn: Connection) -> None:
        if self._notify_work is not None:
            conn.execute(self._notify_work)

    async def listen_for_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when another process made a run ready (PostgreSQL); runs until cancelled."""
        await self.database.listen(WORK_CHANNEL, callback)

    async def find_run(self, dedup_key: str) -> RunRecord | None:
        def _tx(conn: Connection) -> Any:
            row = conn.execute(select(runs).where(runs.c.dedup_key == dedup_key)).first()
            return _run(row) if row else None

        return await self.database.run(_tx)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def _tx(conn: Connection) -> Any:
            row = conn.execute(_RUN_BY_ID, {"run_id": run_id}).first()
            return _run(row) if row else None

        return await self.database.run(_tx)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        def _tx(conn: Connection) -> Any:
            return [_step(row) for row in conn.execute(_STEPS_OF_RUN, {"run_id": run_id})]

        return await self.database.run(_tx)

    async def save_step(
        self,
        step: StepRecord,
        *,
        logs: Sequence[LogRecord] = (),
        usage: tuple[int, int] = (0, 0),
        only_if: StepStatus | None = None,
    ) -> bool:
        row = _shallow(step)

        def _tx(conn: Connection) -> Any:
            if only_if is None:
                self._bound_statement(conn, "step").execute(conn, [row])
            else:
                # One conditional UPDATE: of two writers racing for a record (a timeout and a resume call),
                # exactly one wins. Reading the status first would let both win, the later one silently.
                changed = conn.execute(
                    update(steps)
                    .where(*(steps.c[k] == row[k] for k in _STEP_KEY), steps.c.status == only_if)
                    .values({k: v for k, v in row.items() if k not in _STEP_KEY})
                )
                if changed.rowcount != 1:
                    return False
            self._write_logs(conn, logs)
            if usage != (0, 0):
                conn.execute(
                    update(runs)
                    .where(runs.c.id == step.run_id)
                    .values(input_tokens=runs.c.input_tokens + usage[0], output_tokens=runs.c.output_tokens + usage[1])
                )
            return True

        return bool(await self.database.run(_tx))

    async def update_run(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - _RUN_FIELDS
        if unknown:
            raise TypeError(f"runs have no field {', '.join(sorted(unknown))}")

        statement = _update_run(frozenset(values))
        params = {"run_id": run_id, **{f"v_{name}": value for name, value in values.items()}}

        def _tx(conn: Connection) -> Any:
            conn.execute(statement, params)

        await self.database.run(_tx)

    async def finish_run(self, run: RunRecord, *, logs: Sequence[LogRecord] = ()) -> None:
        params = {
            "run_id": run.id,
            "v_status": run.status,
            "v_finished_at": run.finished_at,
            "v_outputs": run.outputs,
            "v_error": run.error,
            "v_wake_at": None,
            "v_lease_owner": None,
            "v_lease_expires_at": None,
        }

        def _tx(conn: Connection) -> Any:
            conn.execute(_FINISH_RUN, params)
            self._write_logs(conn, logs)
            self._wake_parent(conn, run, run.finished_at)

        await self.database.run(_tx)

    def _wake_parent(self, conn: Connection, run: RunRecord, at: datetime | None) -> None:
        if run.parent_run_id:  # the parent's workflow step is waiting for this run
            conn.execute(
                update(runs).where(runs.c.id == run.parent_run_id, runs.c.status.in_(_ACTIVE)).values(wake_at=at)
            )
            self._tell_executors(conn)

    async def append_logs(self, logs: Sequence[LogRecord]) -> None:
        if logs:

            def _tx(conn: Connection) -> Any:
                self._write_logs(conn, logs)

            await self.database.run(_tx)

    @staticmethod
    def _write_logs(conn: Connection, records: Sequence[LogRecord]) -> None:
        if records:
            conn.execute(insert(logs), [_log_row(r) for r in records])

    async def get_logs(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[LogRecord]:
        query = select(logs).where(logs.c.run_id == run_id, logs.c.id > after).order_by(logs.c.id).limit(limit)

        def _tx(conn: Connection) -> Any:
            return [_log(row) for row in conn.execute(query)]

        return await self.database.run(_tx)

    async def claim_runs(self, owner: str, *, limit: int, lease_seconds: float, now: datetime) -> list[RunRecord]:
        wanted = max(limit * 4, 16)
        queries = self._claim_queries.get(wanted)
        if queries is None:
            queries = self._claim_queries[wanted] = _claim_queries(wanted)

        def _tx(conn: Connection) -> Any:
            claimed: list[_Candidate] = []
            rows = [row for query in queries for row in conn.execute(query, {"now": now})]
            candidates = sorted((_Candidate(*row) for row in rows), key=lambda run: run.id)[:wanted]
            if self.database.dialect == "postgresql":
                # Another process may be admitting runs of the same group right now; wait for it to commit
                # so the count below sees its runs. Locks are taken in one order everywhere: no deadlock.
                groups = {(run.workflow, run.concurrency_key) for run in candidates if _limited(run)}
                for lock in sorted({_group_lock(*group) for group in groups}):
                    conn.execute(select(func.pg_advisory_xact_lock(lock)))
            admitted: dict[tuple[str, str | None], int] = {}
            for run in candidates:
                if len(claimed) >= limit:
                    break
                if _limited(run):
                    group = (run.workflow, run.concurrency_key)
                    if group not in admitted:
                        admitted[group] = self._count_active(conn, *group)
                    if admitted[group] >= (run.concurrency_limit or 0):
                        continue
                    admitted[group] += 1
                claimed.append(run)
            if not claimed:
                return []
            # A claimed run is running from now on: no other claim takes it while the lease holds, it
            # counts against its concurrency limit, and a cancel request reaches its owner.
            ids = [run.id for run in claimed]
            expires = now + timedelta(seconds=lease_seconds)
            conn.execute(
                update(runs)
                .where(runs.c.id.in_(ids))
                .values(status=RunStatus.RUNNING, lease_owner=owner, lease_expires_at=expires, wake_at=None)
            )
            taken = {row.id: _run(row) for row in conn.execute(select(runs).where(runs.c.id.in_(ids)))}
            return [taken[run_id] for run_id in ids]

        return await self.database.run(_tx)

    @staticmethod
    def _count_active(conn: Connection, workflow: str, key: str | None) -> int:
        same_key = runs.c.concurrency_key.is_(None) if key is None else runs.c.concurrency_key == key
        query = select(func.count()).where(runs.c.workflow == workflow, same_key, runs.c.status.in_(_ACTIVE))
        return int(conn.execute(query).scalar() or 0)

    async def renew_leases(
        self, owner: str, run_ids: Sequence[str], *, lease_seconds: float, now: datetime
    ) -> tuple[set[str], set[str]]:
        """Extend leases; return (ids no longer held by ``owner``, ids whose cancellation was requested)."""
        if not run_ids:
            return set(), set()
        mine = and_(runs.c.id.in_(run_ids), runs.c.lease_owner == owner)

        def _tx(conn: Connection) -> Any:
            conn.execute(update(runs).where(mine).values(lease_expires_at=now + timedelta(seconds=lease_seconds)))
            return conn.execute(select(runs.c.id, runs.c.cancel_requested).where(mine)).all()

        rows = await self.database.run(_tx)
        held = {row.id for row in rows}
        return set(run_ids) - held, {row.id for row in rows if row.cancel_requested}

    async def expire_leases(self) -> int:
        """Make every lease claimable now: after a restart of the only process of an SQLite database."""
        query = (
            update(runs)
            .where(runs.c.lease_owner.is_not(None), runs.c.status == RunStatus.RUNNING)
            .values(lease_owner=None, lease_expires_at=_EPOCH)
        )

        def _tx(conn: Connection) -> Any:
            return conn.execute(query).rowcount

        return await self.database.run(_tx)

    async def release_run(self, run_id: str, owner: str, *, status: RunStatus, wake_at: datetime | None) -> None:
        # A child that finished or a resume that arrived while this run was held set wake_at (claims clear it);
        # keep the earlier of the two so that event is not lost when the run parks.
        mine = and_(runs.c.id == run_id, runs.c.lease_owner == owner)

        def _tx(conn: Connection) -> Any:
            wake = wake_at
            pending = conn.execute(select(runs.c.wake_at).where(mine).with_for_update()).scalar()
            if pending is not None and (wake is None or pending < wake):
                wake = pending
            # A run handed back while running stays claimable at once (its lease has expired).
            expires = _EPOCH if status == RunStatus.RUNNING else None
            conn.execute(
                update(runs).where(mine).values(status=status, wake_at=wake, lease_owner=None, lease_expires_at=expires)
            )
            if status == RunStatus.RUNNING:  # handed back at a stop: another process may take it now
                self._tell_executors(conn)

        await self.database.run(_tx)

    async def request_cancel(self, run_id: str, now: datetime) -> RunRecord | None:
        def _tx(conn: Connection) -> Any:
            row = conn.execute(select(runs).where(runs.c.id == run_id).with_for_update()).first()
            if row is None:
                return None
            run = _run(row)
            if run.finished:
                return run
            values: dict[str, Any] = {"cancel_requested": True}
            if run.status == RunStatus.QUEUED:
                values.update(status=RunStatus.CANCELLED, finished_at=now, error="cancelled before it started")
                self._wake_parent(conn, run, now)  # a parent waiting for this child learns that it ended
            elif run.status == RunStatus.WAITING:
                values.update(wake_at=now)  # its executor cancels the waiting steps and child runs
                self._tell_executors(conn)
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            for key, value in values.items():
                setattr(run, key, value)
            return run

        return await self.database.run(_tx)

    async def resume_step(self, run_id: str, step_id: str, payload: Any, now: datetime) -> StepRecord | None:
        query = (
            select(steps)
            .where(
                steps.c.run_id == run_id,
                steps.c.phase == Phase.MAIN,
                steps.c.step_id == step_id,
                steps.c.status == StepStatus.WAITING,
                steps.c.note == "wait",
            )
            .with_for_update()
        )

        def _tx(conn: Connection) -> Any:
            row = conn.execute(query).first()
            if row is None:
                return None
            record = _step(row)
            record.status, record.output, record.finished_at, record.wake_at = StepStatus.SUCCEEDED, payload, now, None
            conn.execute(update(steps).where(steps.c.id == row.id).values(**_shallow(record)))
            conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status.in_(_ACTIVE)).values(wake_at=now))
            self._tell_executors(conn)
            return record

        return await self.database.run(_tx)

    async def cache_get(self, key: str, now: datetime) -> tuple[bool, Any]:
        query = select(cache.c.output).where(cache.c.key == key, cache.c.expires_at > now)

        def _tx(conn: Connection) -> Any:
            row = conn.execute(query).first()
            return (True, row.output) if row else (False, None)

        return await self.database.run(_tx)

    async def cache_put(self, key: str, output: Any, *, expires_at: datetime) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(self._upsert_cache, {"key": key, "output": output, "expires_at": expires_at})

        await self.database.run(_tx)

    async def active_runs(self, workflow: str, concurrency_key: str | None, *, queued: bool = False) -> list[RunRecord]:
        same_key = (
            runs.c.concurrency_key.is_(None) if concurrency_key is None else runs.c.concurrency_key == concurrency_key
        )
        statuses = (RunStatus.QUEUED, *_ACTIVE) if queued else _ACTIVE
        query = (
            select(runs).where(runs.c.workflow == workflow, same_key, runs.c.status.in_(statuses)).order_by(runs.c.id)
        )

        def _tx(conn: Connection) -> Any:
            return [_run(row) for row in conn.execute(query)]

        return await self.database.run(_tx)

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        query = select(runs).order_by(runs.c.id.desc()).limit(limit + 1)
        if workflow:
            query = query.where(runs.c.workflow == workflow)
        if status:
            query = query.where(runs.c.status == status)
        if cursor:
            query = query.where(runs.c.id < cursor)

        def _tx(conn: Connection) -> Any:
            return [_run(row) for row in conn.execute(query)]

        found = await self.database.run(_tx)
        more = len(found) > limit
        page = found[:limit]
        return RunPage(page, page[-1].id if more and page else None)

    # -- revisions, schedules and shared settings --------------------------------------------

    async def save_revision(self, revision: StoredRevision) -> None:
        packed = zlib.compress(
            json.dumps({path: base64.b64encode(data).decode() for path, data in revision.files.items()}).encode()
        )
        row = {
            "sha": revision.sha,
            "files": packed,
            "message": revision.message[:10_000],
            "author": revision.author[:200],
            "committed_at": revision.committed_at,
            "stored_at": datetime.now(UTC),
        }

        def _tx(conn: Connection) -> Any:
            conn.execute(self._insert_revision, row)

        await self.database.run(_tx)

    async def load_revision(self, sha: str) -> StoredRevision | None:
        def _tx(conn: Connection) -> Any:
            return conn.execute(select(revisions).where(revisions.c.sha == sha)).first()

        row = await self.database.run(_tx)
        if row is None:
            return None
        files = {path: base64.b64decode(data) for path, data in json.loads(zlib.decompress(row.files)).items()}
        return StoredRevision(row.sha, files, row.message or "", row.author or "", row.committed_at)

    async def last_fires(self) -> dict[str, datetime]:
        def _tx(conn: Connection) -> Any:
            return {row.key: row.last_fire_at for row in conn.execute(select(schedules))}

        return await self.database.run(_tx)

    async def record_fire(self, key: str, at: datetime) -> None:
        def _tx(conn: Connection) -> Any:
            conn.execute(self._upsert_fire, {"key": key, "last_fire_at": at})

        await self.database.run(_tx)

    async def shared_value(self, key: str, default: str) -> str:
        def _tx(conn: Connection) -> Any:
            conn.execute(self._insert_meta, {"key": key, "value": default})
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one()

        return str(await self.database.run(_tx))

    async def last_runs(self, workflows: Sequence[str]) -> dict[str, RunRecord]:
        """The newest run of each of ``workflows`` that has one, read in one transaction (one index step each)."""

        def _tx(conn: Connection) -> Any:
            rows = ((name, conn.execute(_LAST_RUN, {"workflow": name}).first()) for name in workflows)
            return {name: _run(row) for name, row in rows if row is not None}

        return await self.database.run(_tx)

    async def oldest_queued(self) -> datetime | None:
        """When the oldest queued run was created, or None when no run is queued (one step down an index)."""

        def _tx(conn: Connection) -> Any:
            return conn.execute(_OLDEST_QUEUED).scalar()

        return await self.database.run(_tx)

    async def count_runs(self, status: RunStatus | None = None) -> dict[str, int]:
        query = select(runs.c.status, func.count()).group_by(runs.c.status)
        if status is not None:  # walks the (status, id) index: cheap enough to ask every second
            query = query.where(runs.c.status == status)

        def _tx(conn: Connection) -> Any:
            return {str(status): int(count) for status, count in conn.execute(query)}

        return await self.database.run(_tx)

    async def prune_runs(self, finished_before: datetime) -> int:
        old = select(runs.c.id).where(runs.c.finished_at < finished_before, runs.c.status.in_(FINISHED_RUN))

        def _tx(conn: Connection) -> Any:
            ids = [row.id for row in conn.execute(old.limit(_PRUNE_BATCH))]
            if ids:
                conn.execute(delete(steps).where(steps.c.run_id.in_(ids)))
                conn.execute(delete(logs).where(logs.c.run_id.in_(ids)))
                conn.execute(delete(runs).where(runs.c.id.in_(ids)))
            return len(ids)

        total = 0
        while True:  # in batches, so a first prune of a large database never holds a long write lock
            pruned: int = await self.database.run(_tx)
            total += pruned
            if pruned < _PRUNE_BATCH:
                return total
