"""Fixtures of the store tests: a migrated run database in SQLite and in PostgreSQL.

Every PostgreSQL test gets a schema of its own (``search_path`` is set through the URL), so
tests never see each other's rows, can run in parallel, and leave nothing behind: the schema
is dropped with everything in it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from weir.store.database import open_database
from weir.store.runs import SqlRunStore

BACKENDS = ["sqlite", "postgresql"]


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
