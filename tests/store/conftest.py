"""Fixtures of the store tests: a migrated run database in SQLite and in PostgreSQL.

Every PostgreSQL test gets a schema of its own (``search_path`` is set through the URL), so
tests never see each other's rows, can run in parallel, and leave nothing behind: the schema
is dropped with everything in it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

from weir.store.database import open_database
from weir.store.runs import SqlRunStore

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL of the test database whose search_path is a new, empty schema of this test."""
    schema = f"weir_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``--db`` of an empty database: an SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'weir.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[SqlRunStore]:
    """A run store on a freshly migrated database (both backends)."""
    run_store = SqlRunStore(await open_database(db_url, tmp_path / "state"))
    try:
        yield run_store
    finally:
        await run_store.close()
