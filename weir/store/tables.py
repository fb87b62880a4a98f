"""The tables of the run database (SQLAlchemy Core). Alembic migrations build exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in every database (SQLite has no time zones and hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def as_text(value: datetime | None) -> str | None:
            # The text SQLAlchemy's SQLite DATETIME writes ("2026-01-02 03:04:05.000006"), made by one C call
            # instead of a %-format of seven attributes: every run and step record binds several of these.
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return as_text


class _SqliteSafeJson(TypeDecorator[Any]):
    """JSON that SQLite hands back exactly as it was given.

    SQLite gives a column declared ``JSON`` NUMERIC affinity, so a bare number stored as text
    (a step output of ``10**100``) was turned into a REAL and came back as ``1e+100``. On SQLite
    the JSON text is bound as a BLOB, which no affinity converts; rows written as TEXT before are
    read the same way. Other databases use their JSON type unchanged.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        process = self.impl_instance.bind_processor(dialect)
        if dialect.name != "sqlite" or process is None:
            return process

        def as_blob(value: Any) -> Any:
            text = process(value)
            return text.encode() if isinstance(text, str) else text

        return as_blob

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        process = self.impl_instance.result_processor(dialect, coltype)
        if dialect.name != "sqlite" or process is None:
            return process

        def from_blob(value: Any) -> Any:
            return process(value.decode() if isinstance(value, bytes) else value)

        return from_blob


def _json() -> Any:
    return _SqliteSafeJson()


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

runs = Table(
    "weir_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(64), nullable=False),
    Column("revision", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", _json()),
    Column("trigger", _json()),
    Column("parent_run_id", String(32)),
    Column("parent_step", String(80)),
    Column("rerun_of", String(32)),
    Column("concurrency_key", String(200)),
    Column("concurrency_limit", Integer),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("wake_at", UtcDateTime()),
    Column("outputs", _json()),
    Column("error", Text),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UtcDateTime()),
    Column("dedup_key", String(300), unique=True),
    Index(None, "status", "wake_at"),
    Index(None, "status", "id"),
    Index(None, "workflow", "id"),
    Index(None, "parent_run_id"),
)

steps = Table(
    "weir_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("input", _json()),
    Column("output", _json()),
    Column("error", Text),
    Column("error_kind", String(32)),
    Column("wake_at", UtcDateTime()),
    Column("child_run_id", String(32)),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("note", String(200)),
    UniqueConstraint("run_id", "phase", "step_id", "item_index", "attempt"),
)

logs = Table(
    "weir_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("step_id", String(64)),
    Column("item_index", Integer),
    Column("at", UtcDateTime(), nullable=False),
    Column("level", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Index(None, "run_id", "id"),
)

cache = Table(
    "weir_cache",
    metadata,
    Column("key", String(500), primary_key=True),
    Column("output", _json()),
    Column("expires_at", UtcDateTime(), nullable=False),
)

revisions = Table(
    "weir_revisions",
    metadata,
    Column("sha", String(64), primary_key=True),
    Column("files", LargeBinary, nullable=False),
    Column("message", Text),
    Column("author", String(200)),
    Column("committed_at", UtcDateTime()),
    Column("stored_at", UtcDateTime(), nullable=False),
)
"""The files of every applied revision, so any run can finish with the definition it started with."""

schedules = Table(
    "weir_schedules",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("last_fire_at", UtcDateTime(), nullable=False),
)
"""The last fire time of each schedule, for catching up after downtime."""

meta = Table(
    "weir_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
"""Settings every process sharing the database must agree on (the key that signs resume URLs)."""
