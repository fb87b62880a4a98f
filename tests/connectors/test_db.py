"""db.query and db.execute against SQLite in tmp_path and the PostgreSQL and MariaDB on loopback."""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from weir.connectors.base import ActionContext
from weir.connectors.db import DbConnection, DbConnector, to_json
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio
CTX = ActionContext(run_id="r1", step_id="s1")
SERVICES = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.services),
    pytest.param("mariadb", marks=pytest.mark.services),
]


@dataclass
class Database:
    kind: str
    conn: DbConnector
    table: str

    async def query(self, sql: str, **inputs: Any) -> Any:
        return await self.conn.call("query", CTX, {"sql": sql.format(t=self.table), **inputs})

    async def execute(self, sql: str, **inputs: Any) -> Any:
        return await self.conn.call("execute", CTX, {"sql": sql.format(t=self.table), **inputs})


def plain_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """The URL as users write it: plain scheme names, mapped by the connector to psycopg and pymysql."""
    if kind == "postgres":
        return request.getfixturevalue("postgres_url").replace("postgresql+psycopg://", "postgres://")
    if kind == "mariadb":
        return request.getfixturevalue("mariadb_url").replace("mysql+pymysql://", "mariadb://")
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=SERVICES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    kind = request.param
    conn = DbConnector(DbConnection(url=plain_url(request, kind, tmp_path), timeout="5s"), connection_name="main")
    database = Database(kind, conn, f"weir_test_{uuid.uuid4().hex[:10]}")
    await database.execute(
        "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name VARCHAR(200), amount NUMERIC(10, 2), day DATE)"
    )
    try:
        yield database
    finally:
        await database.execute("DROP TABLE {t}")
        await conn.aclose()


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_execute_then_query_returns_rows_keyed_by_column(db: Database) -> None:
    insert = "INSERT INTO {t} (id, name, amount, day) VALUES (:id, :name, :amount, :day)"
    out = await db.execute(insert, params={"id": 1, "name": "ann", "amount": 12.5, "day": "2024-05-01"})
    assert out == {"row_count": 1}
    await db.execute(insert, params={"id": 2, "name": "bob", "amount": 3, "day": "2024-05-02"})
    out = await db.query("SELECT id, name, amount, day FROM {t} WHERE id >= :low ORDER BY id", params={"low": 1})
    assert out == {
        "rows": [
            {"id": 1, "name": "ann", "amount": 12.5, "day": "2024-05-01"},
            {"id": 2, "name": "bob", "amount": 3, "day": "2024-05-02"},
        ],
        "row_count": 2,
    }


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_execute_many_inserts_in_one_transaction(db: Database) -> None:
    rows = [{"id": i, "name": f"n{i}"} for i in range(1000)]
    out = await db.execute("INSERT INTO {t} (id, name) VALUES (:id, :name)", many=rows)
    assert out == {"row_count": 1000}
    assert (await db.query("SELECT COUNT(*) AS n FROM {t}"))["rows"] == [{"n": 1000}]


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_execute_many_rolls_back_when_one_row_fails(db: Database) -> None:
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1, "name": "again"}]
    with pytest.raises(PermanentError):
        await db.execute("INSERT INTO {t} (id, name) VALUES (:id, :name)", many=rows)
    assert (await db.query("SELECT COUNT(*) AS n FROM {t}"))["rows"] == [{"n": 0}]


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_params_are_bound_never_interpolated(db: Database) -> None:
    attack = f"x'); DROP TABLE {db.table}; --"
    await db.execute("INSERT INTO {t} (id, name) VALUES (1, :name)", params={"name": attack})
    out = await db.query("SELECT name FROM {t} WHERE name = :name", params={"name": attack})
    assert out["rows"] == [{"name": attack}]


SYNTAX_ERRORS = {
    "sqlite": 'db.query failed: near "SELEC": syntax error',
    "postgres": 'db.query failed: syntax error at or near "SELEC"\nLINE 1: SELEC 1\n        ^',
    "mariadb": "db.query failed: You have an error in your SQL syntax; check the manual that corresponds to your"
    " MariaDB server version for the right syntax to use near 'SELEC 1' at line 1 (error 1064)",
}


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_syntax_error_is_permanent(db: Database) -> None:
    with pytest.raises(PermanentError) as info:
        await db.query("SELEC 1")
    assert str(info.value) == SYNTAX_ERRORS[db.kind]
    assert (info.value.kind, info.value.connection, info.value.action) == ("permanent", "main", "db.query")


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_unique_violation_is_permanent(db: Database) -> None:
    await db.execute("INSERT INTO {t} (id) VALUES (1)")
    with pytest.raises(PermanentError) as info:
        await db.execute("INSERT INTO {t} (id) VALUES (1)")
    assert str(info.value).startswith("db.execute failed: ")


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_query_caps_rows_at_max_rows(db: Database) -> None:
    await db.execute("INSERT INTO {t} (id) VALUES (:id)", many=[{"id": i} for i in range(3)])
    assert (await db.query("SELECT id FROM {t}", max_rows=3))["row_count"] == 3
    with pytest.raises(PermanentError) as info:
        await db.query("SELECT id FROM {t}", max_rows=2)
    assert str(info.value) == "db.query returned more than max_rows (2) rows; add LIMIT to the query or raise max_rows"


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_query_caps_the_result_size_at_max_result_bytes(db: Database) -> None:
    await db.execute(
        "INSERT INTO {t} (id, name) VALUES (:id, :name)", many=[{"id": i, "name": "x" * 150} for i in range(8)]
    )
    connection = db.conn.connection.model_copy(update={"max_result_bytes": 1024})
    capped = Database(db.kind, DbConnector(connection, connection_name="main"), db.table)
    try:
        small = await capped.query("SELECT id, name FROM {t} WHERE id < 6")
        with pytest.raises(PermanentError) as info:
            await capped.query("SELECT id, name FROM {t} ORDER BY id")
    finally:
        await capped.conn.aclose()
    assert small["row_count"] == 6  # 6 rows of 169 bytes fit in 1KiB
    assert str(info.value) == (
        "db.query returned more than max_result_bytes (1KiB) of rows as JSON (the limit was passed at row 7);"
        " select fewer rows or columns, or raise max_result_bytes on the connection"
    )
    assert (info.value.kind, info.value.connection, info.value.action) == ("permanent", "main", "db.query")


def test_db_connection_max_result_bytes_takes_sizes_and_defaults_to_10mib() -> None:
    assert DbConnection.model_validate({"url": "sqlite://"}).max_result_bytes == 10 * 1024**2
    assert (
        DbConnection.model_validate({"url": "sqlite://", "max_result_bytes": "512KiB"}).max_result_bytes == 512 * 1024
    )
    with pytest.raises(ValidationError, match="is not a size"):
        DbConnection.model_validate({"url": "sqlite://", "max_result_bytes": "lots"})


@pytest.mark.parametrize("db", SERVICES, indirect=True)
async def test_db_query_refuses_statements_without_rows_and_rolls_back(db: Database) -> None:
    with pytest.raises(PermanentError) as info:
        await db.query("INSERT INTO {t} (id) VALUES (1)")
    assert str(info.value) == (
        "db.query ran a statement that returns no rows (and rolled it back); use db.execute for writes"
    )
    assert (await db.query("SELECT COUNT(*) AS n FROM {t}"))["rows"] == [{"n": 0}]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_db_missing_bind_value_is_permanent(db: Database) -> None:
    with pytest.raises(PermanentError) as info:
        await db.query("SELECT id FROM {t} WHERE id = :id")
    assert str(info.value) == "db.query failed: A value is required for bind parameter 'id'"


async def test_db_execute_many_empty_changes_nothing(tmp_path: Path) -> None:
    conn = DbConnector(DbConnection(url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert await conn.call("execute", CTX, {"sql": "DELETE FROM nowhere", "many": []}) == {"row_count": 0}
    await conn.aclose()


async def test_db_execute_params_and_many_are_exclusive() -> None:
    conn = DbConnector(DbConnection(url="sqlite://"))
    with pytest.raises(ValidationError, match="set either params or many, not both"):
        await conn.call("execute", CTX, {"sql": "SELECT 1", "params": {}, "many": [{}]})


async def test_db_locked_sqlite_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    conn = DbConnector(DbConnection(url=f"sqlite:///{path}", timeout="1s"))
    try:
        with pytest.raises(TransientError) as info:
            await conn.call("execute", CTX, {"sql": "INSERT INTO t VALUES (1)"})
    finally:
        holder.close()
        await conn.aclose()
    assert (str(info.value), info.value.kind) == ("db.execute failed: database is locked", "transient")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://postgres:hunter2@127.0.0.1:1/test", marks=pytest.mark.services, id="postgres"),
        pytest.param("mysql://root:hunter2@127.0.0.1:1/test", marks=pytest.mark.services, id="mariadb"),
    ],
)
async def test_db_unreachable_server_is_transient_without_password(url: str) -> None:
    conn = DbConnector(DbConnection(url=url, timeout="2s"))
    with pytest.raises(TransientError) as info:
        await conn.call("query", CTX, {"sql": "SELECT 1"})
    await conn.aclose()
    assert str(info.value).startswith("db.query failed: ")
    assert "hunter2" not in str(info.value)
    assert info.value.kind == "transient"


@pytest.mark.services
async def test_db_postgres_statement_timeout_is_transient_timeout(postgres_url: str) -> None:
    conn = DbConnector(DbConnection(url=postgres_url, timeout="1s"))
    with pytest.raises(TransientError) as info:
        await conn.call("query", CTX, {"sql": "SELECT pg_sleep(3)"})
    await conn.aclose()
    assert str(info.value) == "db.query failed: canceling statement due to statement timeout"
    assert info.value.kind == "timeout"


@pytest.mark.services
async def test_db_postgres_values_become_json(postgres_url: str) -> None:
    conn = DbConnector(DbConnection(url=postgres_url))
    sql = (
        "SELECT 1.25::numeric AS d, 7::numeric AS whole, TIMESTAMPTZ '2024-05-01 12:00:00+00' AS ts,"
        " '\\x0102'::bytea AS b, '6f1d2c1e-2b1f-4c1a-9a3e-111111111111'::uuid AS u, '{\"a\": [1]}'::jsonb AS j"
    )
    out = await conn.call("query", CTX, {"sql": sql})
    await conn.aclose()
    assert out["rows"] == [
        {
            "d": 1.25,
            "whole": 7,
            "ts": "2024-05-01T12:00:00+00:00",
            "b": "AQI=",
            "u": "6f1d2c1e-2b1f-4c1a-9a3e-111111111111",
            "j": {"a": [1]},
        }
    ]


async def test_db_bad_url_is_permanent_without_password() -> None:
    conn = DbConnector(DbConnection(url="not a url :hunter2@"))
    with pytest.raises(PermanentError) as info:
        await conn.call("query", CTX, {"sql": "SELECT 1"})
    assert str(info.value) == (
        "the connection's url is not a SQLAlchemy URL; write e.g. 'postgresql://user:pass@host/db'"
    )
    assert info.value.__cause__ is None


async def test_db_missing_driver_names_what_to_install() -> None:
    conn = DbConnector(DbConnection(url="mssql+pyodbc://u:hunter2@host/db"))
    with pytest.raises(PermanentError) as info:
        await conn.call("query", CTX, {"sql": "SELECT 1"})
    assert str(info.value) == (
        "the database driver pyodbc is not installed (No module named 'pyodbc'); install the pyodbc driver"
    )


@pytest.mark.parametrize(
    ("url", "module", "hint"),
    [
        ("postgresql://u:hunter2@127.0.0.1/db", "psycopg", "pip install 'weir[postgres]'"),
        ("mysql://u:hunter2@127.0.0.1/db", "pymysql", "pip install 'weir[mysql]'"),
    ],
)
async def test_db_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, hint: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail as if it were not installed
    conn = DbConnector(DbConnection(url=url))
    with pytest.raises(PermanentError) as info:
        await conn.call("query", CTX, {"sql": "SELECT 1"})
    assert str(info.value) == (
        f"the database driver {module} is not installed (import of {module} halted; None in sys.modules); {hint}"
    )


def test_to_json_makes_values_json_safe() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    value = {"d": Decimal("2.50"), "w": Decimal("1E+2"), "n": Decimal("NaN"), "t": (when, date(2024, 5, 2))}
    assert to_json(value) == {"d": 2.5, "w": 100, "n": "NaN", "t": ["2024-05-01T12:00:00+00:00", "2024-05-02"]}
    assert to_json([b"\x00\xff", uuid.UUID(int=1)]) == ["AP8=", "00000000-0000-0000-0000-000000000001"]


@pytest.mark.services
async def test_db_mariadb_read_timeout_is_transient_timeout(mariadb_url: str) -> None:
    conn = DbConnector(DbConnection(url=mariadb_url, timeout="1s"))
    with pytest.raises(TransientError) as info:
        await conn.call("query", CTX, {"sql": "SELECT SLEEP(3)"})
    await conn.aclose()
    assert str(info.value) == "db.query failed: Lost connection to MySQL server during query (timed out) (error 2013)"
    assert info.value.kind == "timeout"
