"""Opening the run database: URL rules, SQLite settings, the single-node lock and migrations."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from weir.errors import ConfigError, StoreError
from weir.records import RunRecord
from weir.store.database import (
    MIGRATIONS,
    SCHEMA_HEAD,
    Database,
    SqliteDatabase,
    database_url,
    open_database,
    upgrade,
)
from weir.store.runs import SqlRunStore
from weir.store.tables import metadata
from weir.types import RunStatus

HINT = "write postgresql://user@host/dbname or sqlite:///path/to/weir.db"
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_the_schema_head_the_server_compares_with_is_the_newest_migration() -> None:
    # A migration added without moving SCHEMA_HEAD would never be applied to an existing database.
    assert SCHEMA_HEAD == HEAD


def test_opening_a_migrated_database_does_not_load_alembic(tmp_path: Path) -> None:
    import subprocess

    state = tmp_path / "state"
    code = (
        "import asyncio, sys; from weir.store.database import open_database\n"
        "async def main():\n"
        f"    db = await open_database(None, __import__('pathlib').Path({str(state)!r}))\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "True"  # a new database is migrated by alembic
    assert again.stdout.strip() == "False"  # one at the newest migration is opened without it


TABLES = {"alembic_version", *metadata.tables}


def single_node_message(path: Path) -> str:
    return (
        f"another weir process is using {path}: an SQLite run database is for a single node. "
        "Stop the other process, give this one its own --state-dir, or share work through --db postgresql://..."
    )


async def run_sync(database: Database, function: Callable[[Connection], Any]) -> Any:
    return await database.run(function)


def table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def schema_version(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


# -- URLs ------------------------------------------------------------------------------------


def test_database_url_defaults_to_weir_db_in_the_state_dir(tmp_path: Path) -> None:
    for db in (None, ""):
        url = database_url(db, tmp_path / ".weir")
        assert (url.drivername, url.database) == ("sqlite", str(tmp_path / ".weir" / "weir.db"))


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (
            "postgresql://weir:pw@db.internal:5433/runs?sslmode=require",
            "postgresql+psycopg://weir:pw@db.internal:5433/runs?sslmode=require",
        ),
        ("postgres://weir@db.internal/runs", "postgresql+psycopg://weir@db.internal/runs"),
        ("postgresql+psycopg2://weir@db.internal/runs", "postgresql+psycopg://weir@db.internal/runs"),
        ("sqlite:///relative/weir.db", "sqlite:///relative/weir.db"),
        ("sqlite:////var/lib/weir/weir.db", "sqlite:////var/lib/weir/weir.db"),
    ],
)
def test_database_url_picks_the_async_driver(db: str, expected: str) -> None:
    assert database_url(db, Path("unused")).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("db", ["mysql://root:s3cret@db.internal/runs", "mariadb+pymysql://root:s3cret@db/runs"])
def test_database_url_refuses_other_databases_without_showing_the_password(db: str) -> None:
    backend = db.partition(":")[0].partition("+")[0]

    with pytest.raises(ConfigError) as info:
        database_url(db, Path("unused"))

    assert str(info.value) == (
        f"--db uses '{backend}', but runs are stored in SQLite (one node) or PostgreSQL (several replicas); {HINT}"
    )
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("db", "shown"),
    [
        ("not a url", "not a url"),
        ("weir:s3cret@db.internal/runs", "weir:***@db.internal/runs"),
        ("weir:s3c@ret@db.internal:5432", "weir:***@db.internal:5432"),
        ("postgresql//weir:s3cret@db.internal/runs", "postgresql//weir:***@db.internal/runs"),
        ("postgres ql://weir:s3cret@db.internal/runs", "postgres ql://weir:***@db.internal/runs"),
        ("://weir:s3cret:://x@db.internal", "://weir:***@db.internal"),
    ],
)
def test_database_url_refuses_garbage_without_showing_the_password(db: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        database_url(db, Path("unused"))

    assert str(info.value) == f"--db '{shown}' is not a database URL: {HINT}"
    assert "s3c" not in str(info.value)


@pytest.mark.anyio
async def test_open_database_reports_an_unreachable_server_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        await open_database("postgresql://weir:s3cret@127.0.0.1:1/runs", tmp_path)

    assert str(info.value).startswith("cannot open the run database postgresql://weir:***@127.0.0.1:1/runs: ")
    assert "s3cret" not in str(info.value)


# -- SQLite ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_database_creates_weir_db_in_the_state_dir_in_wal_mode(tmp_path: Path) -> None:
    database = await open_database(None, tmp_path / "new" / ".weir")
    try:
        pragmas = await database.run(
            lambda conn: {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
        )
    finally:
        await database.dispose()

    assert (tmp_path / "new" / ".weir" / "weir.db").is_file()
    assert database.dialect == "sqlite"
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 10000, "foreign_keys": 1}


@pytest.mark.anyio
async def test_open_database_refuses_a_second_open_of_an_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / ".weir"
    monkeypatch.chdir(tmp_path)
    first = await open_database(None, state)
    try:
        # the same file by another name is the same file
        for db, path in [(None, state / "weir.db"), ("sqlite:///.weir/weir.db", Path(".weir/weir.db"))]:
            with pytest.raises(ConfigError) as info:
                await open_database(db, state)
            assert str(info.value) == single_node_message(path)
    finally:
        await first.dispose()

    again = await open_database(None, state)  # closing the database gives up the file
    await again.dispose()


OTHER_PROCESS = """
import asyncio, os, sys
from pathlib import Path
from weir.errors import ConfigError
from weir.store.database import open_database
try:
    asyncio.run(open_database(None, Path(sys.argv[1])))
except ConfigError as exc:
    print(exc)
    sys.exit(3)
print("opened", flush=True)
os._exit(0)  # die like a killed process: no dispose, the lock file stays behind
"""


@pytest.mark.anyio
async def test_open_database_refuses_an_sqlite_file_that_another_process_uses(tmp_path: Path) -> None:
    state = tmp_path / ".weir"
    first = await open_database(None, state)
    try:
        refused = await anyio.run_process([sys.executable, "-c", OTHER_PROCESS, str(state)], check=False)
    finally:
        await first.dispose()
    opened = await anyio.run_process([sys.executable, "-c", OTHER_PROCESS, str(state)], check=False)

    assert (refused.returncode, refused.stdout.decode().strip()) == (3, single_node_message(state / "weir.db"))
    assert (opened.returncode, opened.stdout.decode().strip()) == (0, "opened")
    after_crash = await open_database(None, state)  # a dead process holds no lock, whatever file it left
    await after_crash.dispose()


@pytest.mark.anyio
async def test_open_database_in_memory_needs_no_lock(tmp_path: Path) -> None:
    database = await open_database("sqlite://", tmp_path)
    try:
        store = SqlRunStore(database)
        run = RunRecord("r1", "deploy", "abc", RunStatus.QUEUED, created_at=datetime(2026, 1, 1, tzinfo=UTC))
        await store.create_run(run)
        assert await store.get_run("r1") == run
        assert database.lock is None
    finally:
        await database.dispose()


# -- migrations (both backends) --------------------------------------------------------------


@pytest.mark.anyio
async def test_open_database_migrates_a_new_database_to_the_newest_revision(db_url: str, tmp_path: Path) -> None:
    database = await open_database(db_url, tmp_path / "state")
    try:
        assert await run_sync(database, table_names) == TABLES
        assert await run_sync(database, schema_version) == HEAD
    finally:
        await database.dispose()


@pytest.mark.anyio
async def test_open_database_does_not_migrate_a_database_at_the_newest_revision(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrades: list[str] = []
    upgrade = command.upgrade

    def counting_upgrade(config: Config, revision: str, **options: Any) -> None:
        upgrades.append(revision)
        upgrade(config, revision, **options)

    monkeypatch.setattr(command, "upgrade", counting_upgrade)
    for _ in range(2):
        database = await open_database(db_url, tmp_path / "state")
        await database.dispose()

    assert upgrades == ["head"]


@pytest.mark.anyio
async def test_open_database_without_migrate_leaves_the_schema_alone(db_url: str, tmp_path: Path) -> None:
    database = await open_database(db_url, tmp_path / "state", migrate=False)
    try:
        assert await run_sync(database, table_names) == set()
    finally:
        await database.dispose()


def schema_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


@pytest.mark.anyio
async def test_migrations_build_exactly_the_tables_of_the_code(db_url: str, tmp_path: Path) -> None:
    database = await open_database(db_url, tmp_path / "state")
    try:
        assert await run_sync(database, schema_differences) == []
    finally:
        await database.dispose()


@pytest.mark.anyio
async def test_open_database_by_replicas_starting_together_migrates_once(pg_schema_url: str, tmp_path: Path) -> None:
    with anyio.fail_after(10):
        replicas = [await open_database(pg_schema_url, tmp_path, migrate=False) for _ in range(3)]
        try:
            async with anyio.create_task_group() as group:
                for replica in replicas:
                    group.start_soon(_upgrade, replica)
            assert await run_sync(replicas[0], schema_version) == HEAD
            assert replicas[0].dialect == "postgresql"
        finally:
            for replica in replicas:
                await replica.dispose()


async def _upgrade(database: Database) -> None:
    await database.run(lambda conn: conn.execute(text("SELECT 1")))  # connected, so the upgrades really overlap
    await upgrade(database)


@pytest.mark.anyio
async def test_sqlite_checkpoints_move_committed_data_into_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Commits happen on the event loop without fsync; a background thread checkpoints the WAL into weir.db.
    monkeypatch.setattr(SqliteDatabase, "CHECKPOINT_SECONDS", 0.05)
    database = await open_database(None, tmp_path)
    try:
        before = (tmp_path / "weir.db").stat().st_size
        payload = "x" * 2000
        await database.run(
            lambda conn: conn.exec_driver_sql(
                "INSERT INTO weir_logs (run_id, at, level, message) VALUES (?, ?, ?, ?)",
                [("r", "2026-01-01 00:00:00", "info", payload)] * 500,
            )
        )
        for _ in range(100):
            if (tmp_path / "weir.db").stat().st_size > before + 500_000:
                break
            await anyio.sleep(0.05)
        assert (tmp_path / "weir.db").stat().st_size > before + 500_000
    finally:
        await database.dispose()


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time it starts the WAL over."""
    with wal.open("rb") as handle:
        header = handle.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


@pytest.mark.anyio
async def test_sqlite_wal_starts_over_under_steady_writes_instead_of_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writes that never pause (a stream of webhooks) left the checkpoint thread one step behind for ever, so
    # SQLite appended to the WAL without end: hundreds of megabytes within a minute, every write slower.
    monkeypatch.setattr(SqliteDatabase, "CHECKPOINT_SECONDS", 0.05)
    database = await open_database(None, tmp_path)
    wal = tmp_path / "weir.db-wal"
    rows = [("r", "2026-01-01 00:00:00", "info", "x" * 500)] * 20
    largest = 0
    try:
        await database.run(lambda conn: conn.exec_driver_sql("DELETE FROM weir_logs"))
        first = _wal_restarts(wal)
        deadline = anyio.current_time() + 20
        while _wal_restarts(wal) < first + 3 and anyio.current_time() < deadline:
            for _ in range(20):
                await database.run(
                    lambda conn: conn.exec_driver_sql(
                        "INSERT INTO weir_logs (run_id, at, level, message) VALUES (?, ?, ?, ?)", rows
                    )
                )
                await anyio.lowlevel.checkpoint()  # one write per turn of the loop, as requests arrive
            largest = max(largest, wal.stat().st_size)
        assert _wal_restarts(wal) >= first + 3, "the WAL never started over while writes went on"
        assert largest < 64 * 1024 * 1024
    finally:
        await database.dispose()


@pytest.mark.anyio
async def test_a_database_migrated_by_a_newer_weir_is_refused_with_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "state"
    database = await open_database(None, state)
    await database.run(lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = '0099'")))
    await database.dispose()

    with pytest.raises(StoreError) as info:
        await open_database(None, state)
    message = str(info.value)
    assert f"the run database is at schema 0099, newer than this weir knows (up to {SCHEMA_HEAD})" in message
    assert "run the newer weir that migrated it, or restore a backup" in message
