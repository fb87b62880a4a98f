"""Shared fixtures: the AnyIO backend and probes for the services on loopback."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip when a service is down locally; fail under CI, where service tests must run."""
    if _reachable(port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the service tests; .ci/run starts the services)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", 5432)
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def mariadb_url() -> str:
    require_service("MariaDB", 3306)
    return "mysql+pymysql://root@127.0.0.1:3306/test"


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
