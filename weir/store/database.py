"""Open the run database: URL rules, SQLite settings, the single-node lock and migrations.

- No URL: an SQLite file ``weir.db`` in the state directory, in WAL mode with
  ``synchronous=NORMAL`` (a commit survives the process being killed; a power cut may lose
  the last commits, as with any WAL database that does not fsync each commit).
- ``sqlite:///path`` / ``postgresql://...``: the driver is picked for the user (aiosqlite,
  psycopg 3), so URLs read as they do in every other tool.
- An SQLite file is for one process: a second process on the same file is refused with a
  clear message (an exclusive lock on ``<file>.lock``), because leases cannot be trusted there.
- The schema is brought to the newest migration on open (``weir db upgrade`` does the same
  explicitly, for operators who migrate before they roll out).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, func, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from weir.errors import ConfigError, StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
DB_FILE = "weir.db"
MIGRATION_LOCK = 0x7765_6972_0000_0000
"""The PostgreSQL advisory lock held while the schema is migrated ("weir" in the high half)."""


@dataclass
class Database:
    """An open run database: the async engine and, for SQLite files, the lock that keeps it single-node."""

    engine: AsyncEngine
    url: URL
    lock: IO[str] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def database_url(db: str | None, state_dir: Path) -> URL:
    """The async SQLAlchemy URL for ``--db`` (None: the SQLite file in the state directory)."""
    if not db:
        return URL.create("sqlite+aiosqlite", database=str(state_dir / DB_FILE))
    try:
        url = make_url(db)
    except ArgumentError:
        raise ConfigError(
            f"--db '{_hide_password(db)}' is not a database URL: write postgresql://user@host/dbname "
            "or sqlite:///path/to/weir.db"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):  # libpq, Heroku and many DATABASE_URLs write postgres://
        return url.set(drivername="postgresql+psycopg")
    raise ConfigError(
        f"--db uses '{backend}', but runs are stored in SQLite (one node) or PostgreSQL (several replicas); "
        "write postgresql://user@host/dbname or sqlite:///path/to/weir.db"
    )


def _hide_password(text: str) -> str:
    # The text did not parse, so find the password by hand: between the first ':' of the user part (after
    # the scheme, when there is one) and the last '@' (a password may hold '@' itself).
    userinfo, at, host = text.rpartition("@")
    if not at:
        return text
    scheme, sep, auth = userinfo.partition("://")
    if not sep:
        scheme, auth = "", userinfo
    user, colon, _ = auth.partition(":")
    return f"{scheme}{sep}{user}:***@{host}" if colon else text


async def open_database(db: str | None, state_dir: Path, *, migrate: bool = True) -> Database:
    """Connect, lock an SQLite file to this process, and migrate the schema to the newest version."""
    url = database_url(db, state_dir)
    lock = None
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:"):
            kwargs = {"poolclass": StaticPool}
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock = _lock_single_node(Path(path))
            # One connection: SQLite serialises writers anyway, and one connection never waits on a lock.
            kwargs = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
    else:
        kwargs = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    database = Database(engine, url, lock)
    if migrate:
        try:
            await upgrade(database)
        except Exception as exc:
            await database.dispose()
            where = url.render_as_string(hide_password=True)
            raise StoreError(f"cannot open the run database {where}: {exc}") from exc
    return database


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _lock_single_node(path: Path) -> IO[str]:
    handle = (path.parent / f"{path.name}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(
            f"another weir process is using {path}: an SQLite run database is for a single node. "
            "Stop the other process, give this one its own --state-dir, or share work through "
            "--db postgresql://..."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas that start together on a new database take turns: the first migrates, the others then
        # find the schema at head. The lock ends with the transaction of upgrade().
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    if MigrationContext.configure(connection).get_current_revision() != head:
        command.upgrade(_alembic_config(connection), "head")


async def upgrade(database: Database) -> None:
    """Bring the schema to the newest migration; a database that is already there is left alone."""
    async with database.engine.begin() as conn:
        await conn.run_sync(_upgrade)
