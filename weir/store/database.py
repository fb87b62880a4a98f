"""Open the run database: URL rules, SQLite settings, the single-node lock and migrations.

- No URL: an SQLite file ``weir.db`` in the state directory, in WAL mode with
  ``synchronous=NORMAL`` (a commit survives the process being killed; a power cut may lose
  the last commits, as with any WAL database that does not fsync each commit).
- ``sqlite:///path`` / ``postgresql://...``: the driver is picked for the user (sqlite3,
  psycopg 3), so URLs read as they do in every other tool.
- An SQLite file is for one process: a second process on the same file is refused with a
  clear message (an exclusive lock on ``<file>.lock``), because leases cannot be trusted there.
- The schema is brought to the newest migration on open (``weir db upgrade`` does the same
  explicitly, for operators who migrate before they roll out).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, make_url, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from weir.errors import ConfigError, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")
log = logging.getLogger("weir.store")
MIGRATIONS = Path(__file__).parent / "migrations"
DB_FILE = "weir.db"
MIGRATION_LOCK = 0x7765_6972_0000_0000
"""The PostgreSQL advisory lock held while the schema is migrated ("weir" in the high half)."""


class Database:
    """An open run database. ``run(fn)`` calls ``fn(connection)`` in one transaction, off the event loop.

    The store's statements are SQLAlchemy Core on a synchronous ``Connection``; how they reach
    the database depends on the backend:

    - SQLite: one connection for the life of the process, used on the event loop; a thread
      runs the WAL checkpoints (the only part that waits for the disk). SQLite serialises
      writers anyway. Measured with bench/engine.py on this project's 2-core CI machine:
      aiosqlite through SQLAlchemy's async engine spent 0.84 ms per step commit, a dedicated
      thread 0.35 ms (the hop), the loop itself 0.13 ms.
    - PostgreSQL: SQLAlchemy's asyncio engine with psycopg 3; ``run`` uses ``run_sync`` on a
      pooled async connection, so many transactions are in flight at once.
    """

    def __init__(self, url: URL, lock: IO[str] | None = None) -> None:
        self.url = url
        self.lock = lock

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another process notifies ``channel``; runs until cancelled.

        Only PostgreSQL has notifications: other backends return at once (one process, nothing to hear).
        """

    async def dispose(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


class SqliteDatabase(Database):
    """SQLite through one connection, used on the event loop, with checkpoints in a thread (see ``Database``)."""

    CHECKPOINT_SECONDS = 1.0

    def __init__(self, url: URL, lock: IO[str] | None = None) -> None:
        super().__init__(url, lock)
        self.engine: Engine = create_engine(url, poolclass=StaticPool)
        self.path = url.database or ""
        in_memory = self.path in ("", ":memory:")
        event.listen(self.engine, "connect", _sqlite_pragmas if in_memory else _sqlite_file_pragmas)
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if not in_memory:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="weir-sqlite-checkpoint", daemon=True)
            self._checkpointer.start()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        # On the loop itself: a commit in WAL mode with synchronous=NORMAL writes to the OS cache and does not
        # fsync, so it takes tens of microseconds, less than a hop to a thread. The fsyncs of checkpoints, the
        # only slow part, happen in the checkpoint thread.
        if self._conn is None:
            self._conn = self.engine.connect()
            self._loop = asyncio.get_running_loop()
        conn = self._conn
        try:
            result = fn(conn)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return result

    def _checkpoints(self) -> None:
        # The bulk of each checkpoint (copying pages back and the fsyncs) runs here, off the loop. Under steady
        # writes it never catches up by itself: frames committed while it copies are left over, and SQLite only
        # starts the WAL over when a write begins with every frame copied back. So the loop copies the few
        # frames left right after (``_finish_checkpoint``); without that the WAL grew by tens of megabytes a
        # second under load and every write slowed down looking pages up in it.
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn:
            while not self._stop.wait(self.CHECKPOINT_SECONDS):
                try:
                    # fetchall: a statement left unfinished would hold a read lock and keep the WAL from restarting.
                    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                except sqlite3.Error:  # busy or the file went away; the next round tries again
                    log.debug("WAL checkpoint of %s skipped", self.path, exc_info=True)
                    continue
                loop = self._loop
                if frames > 0 and loop is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._finish_checkpoint)

    def _finish_checkpoint(self) -> None:
        """Copy back, on the loop and between two transactions, the frames written since the thread's checkpoint."""
        conn = self._conn
        if conn is None or conn.in_transaction() or (raw := conn.connection.dbapi_connection) is None:
            return
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.debug("WAL checkpoint of %s skipped", self.path, exc_info=True)

    async def dispose(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()
        await super().dispose()


class PostgresDatabase(Database):
    """PostgreSQL through SQLAlchemy's asyncio engine and psycopg 3 (see ``Database``)."""

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        self.engine: AsyncEngine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        try:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        except (OperationalError, InterfaceError) as exc:  # the server is down, restarting or unreachable
            raise StoreUnavailable(f"the run database does not answer: {_first_line(exc.orig or exc)}") from exc

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """LISTEN on a connection of its own (outside the pool); reconnects after a lost connection.

        ``callback`` is also called after every (re)connect, since notifications sent while no
        connection listened are lost: the caller looks for work once instead.
        """
        import psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {channel}")
                    delay = 0.5
                    callback()
                    async for _ in conn.notifies():
                        callback()
            except psycopg.Error as exc:
                log.warning("listening for new work failed (%s); polling until it reconnects in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def dispose(self) -> None:
        await self.engine.dispose()
        await super().dispose()


def database_url(db: str | None, state_dir: Path) -> URL:
    """The SQLAlchemy URL for ``--db`` (None: the SQLite file in the state directory)."""
    if not db:
        return URL.create("sqlite", database=str(state_dir / DB_FILE))
    try:
        url = make_url(db)
    except ArgumentError:
        raise ConfigError(
            f"--db '{_hide_password(db)}' is not a database URL: write postgresql://user@host/dbname "
            "or sqlite:///path/to/weir.db"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite")
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


def _reason(exc: BaseException) -> str:
    """What the driver said, on one line (through the wrappers of SQLAlchemy and ``StoreUnavailable``)."""
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None else exc
    return _first_line(getattr(cause, "orig", None) or cause)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def open_database(db: str | None, state_dir: Path, *, migrate: bool = True, wait: float = 0.0) -> Database:
    """Connect, lock an SQLite file to this process, and migrate the schema to the newest version.

    With ``wait``, a database that does not answer yet (PostgreSQL starting beside the server) is
    tried again every few seconds for that long before giving up.
    """
    url = database_url(db, state_dir)
    database: Database
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        lock = None
        if path not in ("", ":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock = _lock_single_node(Path(path))
        database = SqliteDatabase(url, lock)
    else:
        database = PostgresDatabase(url)
    if migrate:
        await _when_answering(database, upgrade, wait)
    return database


async def schema_revision(db: str | None, state_dir: Path, *, wait: float = 0.0) -> str | None:
    """The migration the database is at (None when new), waiting up to ``wait`` for it to answer."""
    database = await open_database(db, state_dir, migrate=False)
    try:
        return await _when_answering(database, lambda d: d.run(_current_revision), wait)
    finally:
        await database.dispose()


async def _when_answering(database: Database, call: Callable[[Database], Awaitable[T]], wait: float) -> T:
    """``call(database)``, tried again while the database does not answer, for ``wait`` seconds.

    Raises StoreError (and closes the database) when it never answers or the call fails.
    """
    url = database.url
    where = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
    deadline = time.monotonic() + wait
    delay = 1.0
    while True:
        try:
            return await call(database)
        except (OperationalError, InterfaceError, StoreUnavailable) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                await database.dispose()
                tried = f" (tried for {wait:g}s)" if wait else ""
                raise StoreError(
                    f"cannot open the run database {where}{tried}: {_reason(exc)}; "
                    "check that it runs and that --db is right"
                ) from exc
            log.warning("the run database %s does not answer (%s); trying again", where, _reason(exc))
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)
        except Exception as exc:
            await database.dispose()
            raise StoreError(f"cannot open the run database {where}: {exc}") from exc


_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON")
_FILE_PRAGMAS = (
    "wal_autocheckpoint=0",  # checkpoints (the fsyncs) belong to the checkpoint thread, not to the commits on the loop
    f"journal_size_limit={64 * 1024 * 1024}",  # a WAL that grew in a burst is cut back to this when it starts over
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, extra: tuple[str, ...] = ()) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (*_PRAGMAS, *extra):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_file_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, _FILE_PRAGMAS)


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


SCHEMA_HEAD = "0004"
"""The newest migration. A database already there is opened without loading alembic (about 11 MB of
memory for the life of the server); a test checks that this is alembic's head."""


_KNOWN_REVISIONS = frozenset(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
"""The migrations this weir ships (their ids are the file names' numbers)."""


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas that start together on a new database take turns: the first migrates, the others then
        # find the schema at head. The lock ends with the transaction of upgrade().
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    else:
        # The sqlite3 driver begins a transaction only before INSERT/UPDATE/DELETE, so the CREATE TABLEs of a
        # migration would commit one by one and a process killed halfway would leave half a schema that no
        # later start can migrate. Begin explicitly: the whole migration commits or none of it.
        connection.exec_driver_sql("BEGIN")
    current = _current_revision(connection)
    if current is not None and current not in _KNOWN_REVISIONS:
        raise StoreError(
            f"the run database is at schema {current}, newer than this weir knows (up to {SCHEMA_HEAD}): "
            "run the newer weir that migrated it, or restore a backup taken before"
        )
    if current != SCHEMA_HEAD:
        from alembic import command

        command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    """The migration the database is at (None for a new database), read without alembic."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def upgrade(database: Database) -> None:
    """Bring the schema to the newest migration; a database that is already there is left alone."""
    await database.run(_upgrade)
