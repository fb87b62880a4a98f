"""Connectors fed by hostile params, run through the engine: SSRF, SQL and header injection, response bombs.

Each case is a workflow file whose inputs come from params (what a webhook payload would supply),
run by ``weir.testing.Harness`` against real servers on loopback and real databases. The step
fails with the exact message, is not retried when retrying cannot help, and the guarded side
(the loopback server, the table) shows that nothing got through.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.server import serve_in_thread
from weir.connectors.http import HttpConnector, IPAddress
from weir.connectors.registry import ConnectorRegistry
from weir.testing import Harness

pytestmark = pytest.mark.anyio

HITS: list[str] = []
"""Paths the loopback server was asked for: empty after a refused request."""


async def hit(request: Request) -> Response:
    HITS.append(request.url.path)
    return JSONResponse({"hit": True})


async def echo(request: Request) -> Response:
    HITS.append(request.url.path)
    return JSONResponse({"headers": dict(request.headers), "query": list(request.query_params.multi_items())})


async def redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("status", "302")))


async def gzip_bomb(request: Request) -> Response:
    return Response(BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def endless(request: Request) -> Response:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0)

    return StreamingResponse(forever(), media_type="text/plain")


async def trickle(request: Request) -> Response:
    async def slowly() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x"
            await asyncio.sleep(0.2)

    return StreamingResponse(slowly(), media_type="text/plain")


class ClaimsTenGiB:
    """Declares a 10 GiB body and sends two bytes (a raw ASGI app: Starlette would correct the length)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10737418240")]})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


BOMB = gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=9)

APP = Starlette(
    routes=[
        Route("/hit", hit),
        Route("/echo", echo, methods=["GET", "POST"]),
        Route("/redirect", redirect),
        Route("/bomb", gzip_bomb),
        Route("/endless", endless),
        Route("/trickle", trickle),
        Route("/claims", ClaimsTenGiB()),
    ]
)


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    with serve_in_thread(APP) as url:
        yield url


@pytest.fixture(autouse=True)
def clear_hits() -> None:
    HITS.clear()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def with_query(base: str, path: str, **query: str) -> str:
    return str(httpx.URL(base + path).copy_merge_params(query))


FETCH = """
[params.url]
type = "string"

[[steps]]
id = "fetch"
uses = "http.request"
connection = "api"
retry = { attempts = 3, delay = "10ms" }
with = { url = "{{ params.url }}" }
"""


def guarded(**settings: Any) -> str:
    lines = ["[connections.api]", 'type = "http"', "deny_private_networks = true"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


async def fetch(tmp_path: Path, url: str, config: str, registry: ConnectorRegistry | None = None) -> tuple[Any, Any]:
    """Run the FETCH workflow for ``url``; the run and its step record."""
    async with Harness(tmp_path, {"weir.toml": config, "fetch.toml": FETCH}, registry=registry) as h:
        run = await h.run("fetch", {"url": url})
        step = (await h.steps(run.id))["fetch"]
    return run, step


def refusal(host: str, address: str) -> str:
    return (
        f"refused to connect to {host}: it resolves to {address}, which is not a public address"
        " (the connection sets deny_private_networks = true)"
    )


SSRF = {
    "decimal-ipv4": ("http://2130706433:{port}/hit", "2130706433", "127.0.0.1"),
    "hex-ipv4": ("http://0x7f.1:{port}/hit", "0x7f.1", "127.0.0.1"),
    "short-ipv4": ("http://127.1:{port}/hit", "127.1", "127.0.0.1"),
    "zero-address": ("http://0:{port}/hit", "0", "0.0.0.0"),
    "ipv4-mapped-ipv6": ("http://[::ffff:127.0.0.1]:{port}/hit", "::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    "ipv6-loopback": ("http://[::1]:{port}/hit", "::1", "::1"),
    "localhost-name": ("http://localhost:{port}/hit", "localhost", "127.0.0.1"),
    "credentials-before-host": ("http://ops@127.0.0.1:{port}/hit", "127.0.0.1", "127.0.0.1"),
    "cloud-metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "169.254.169.254"),
    "private-ten": ("http://10.0.0.1/", "10.0.0.1", "10.0.0.1"),
    "ipv6-link-local": ("http://[fe80::1]/", "fe80::1", "fe80::1"),
    "carrier-grade-nat": ("http://100.64.0.1/", "100.64.0.1", "100.64.0.1"),
}


@pytest.mark.parametrize(("url", "host", "address"), list(SSRF.values()), ids=list(SSRF))
async def test_http_deny_private_networks_refuses_every_spelling_of_a_private_address(
    tmp_path: Path, loopback: str, url: str, host: str, address: str
) -> None:
    run, step = await fetch(tmp_path, url.format(port=port_of(loopback)), guarded())
    assert run.status == "failed"
    assert (step.status, step.error, step.error_kind, step.attempt) == (
        "failed",
        refusal(host, address),
        "permanent",
        1,
    )
    assert HITS == []


async def test_http_octal_ipv4_is_refused_as_an_invalid_url(tmp_path: Path, loopback: str) -> None:
    """``0177.0.0.1`` means 127.0.0.1 to some resolvers; the URL parser refuses the spelling outright."""
    run, step = await fetch(tmp_path, f"http://0177.0.0.1:{port_of(loopback)}/hit", guarded())
    assert run.status == "failed"
    assert step.error == (
        f"url 'http://0177.0.0.1:{port_of(loopback)}/hit' is not a valid URL: Invalid IPv4 address: '0177.0.0.1'"
    )
    assert (step.error_kind, step.attempt) == ("permanent", 1)
    assert HITS == []


class LoopbackIsPublic(HttpConnector):
    """Treats exactly 127.0.0.1 as public, so the loopback server can play an allowed server on the internet."""

    def allows_address(self, address: IPAddress) -> bool:
        return address == ipaddress.ip_address("127.0.0.1") or super().allows_address(address)


REDIRECTS = {
    "to-another-loopback-address": ("http://127.0.0.2:{port}/hit", 302, "127.0.0.2", "127.0.0.2"),
    "to-a-decimal-spelling": ("http://2130706434:{port}/hit", 302, "2130706434", "127.0.0.2"),
    "to-ipv6-loopback": ("http://[::1]:{port}/hit", 307, "::1", "::1"),
    "to-cloud-metadata": ("http://169.254.169.254/latest/meta-data/iam/", 301, "169.254.169.254", "169.254.169.254"),
    "to-a-private-network": ("http://192.168.1.1/admin", 303, "192.168.1.1", "192.168.1.1"),
}


@pytest.mark.parametrize(("target", "status", "host", "address"), list(REDIRECTS.values()), ids=list(REDIRECTS))
async def test_http_redirect_from_an_allowed_server_to_a_private_address_is_refused(
    tmp_path: Path, loopback: str, target: str, status: int, host: str, address: str
) -> None:
    registry = ConnectorRegistry(extra={"http": LoopbackIsPublic})
    first = with_query(loopback, "/redirect", to=target.format(port=port_of(loopback)), status=str(status))
    run, step = await fetch(tmp_path, first, guarded(), registry)
    assert (step.status, step.error, step.attempt) == ("failed", refusal(host, address), 1)
    assert run.status == "failed"
    assert HITS == []


async def test_http_allowed_server_is_reached_when_nothing_redirects(tmp_path: Path, loopback: str) -> None:
    registry = ConnectorRegistry(extra={"http": LoopbackIsPublic})
    run, step = await fetch(tmp_path, f"{loopback}/hit", guarded(), registry)
    assert run.status == "succeeded"
    assert step.output["json"] == {"hit": True}
    assert HITS == ["/hit"]


# -- header and query injection from params ---------------------------------------------------------------

HEADERS = """
[params.url]
type = "string"

[params.value]
type = "string"

[params.headers]
type = "object"
default = {}

[[steps]]
id = "send"
uses = "http.request"
retry = { attempts = 3, delay = "10ms" }
with = { url = "{{ params.url }}", headers = { X-Note = "{{ params.value }}" } }
"""
CONTROL = (
    "header 'X-Note' has a line break or another control character in its value; a header value is one line of "
    "text: remove them in the template, e.g. with | replace('\\n', ' ')"
)


@pytest.mark.parametrize(
    "value",
    ["ok\r\nX-Injected: 1", "ok\nSet-Cookie: admin=1", "ok\rX-Injected: 1", "ok\x00hidden", "ok\x1b[31m"],
    ids=["crlf", "lf", "cr", "nul", "escape"],
)
async def test_http_header_value_from_a_param_cannot_add_headers(tmp_path: Path, loopback: str, value: str) -> None:
    async with Harness(tmp_path, {"headers.toml": HEADERS}) as h:
        run = await h.run("headers", {"value": value, "url": f"{loopback}/echo"})
        step = (await h.steps(run.id))["send"]
    assert (step.status, step.error, step.error_kind, step.attempt) == ("failed", CONTROL, "permanent", 1)
    assert HITS == []


async def test_http_header_name_from_a_param_cannot_add_headers(tmp_path: Path, loopback: str) -> None:
    workflow = HEADERS.replace('headers = { X-Note = "{{ params.value }}" }', 'headers = "{{ params.headers }}"')
    async with Harness(tmp_path, {"names.toml": workflow}) as h:
        run = await h.run("names", {"value": "", "url": f"{loopback}/echo", "headers": {"X-A\r\nX-Injected": "1"}})
        step = (await h.steps(run.id))["send"]
    assert (step.status, step.attempt) == ("failed", 1)
    assert (
        step.error
        == "header name 'X-A\\r\\nX-Injected' is not a valid HTTP header name; use letters, digits and - only"
    )
    assert HITS == []


async def test_http_header_value_with_a_tab_and_unicode_is_sent_whole(tmp_path: Path, loopback: str) -> None:
    async with Harness(tmp_path, {"headers.toml": HEADERS}) as h:
        run = await h.run("headers", {"value": "a\tb c", "url": f"{loopback}/echo"})
        step = (await h.steps(run.id))["send"]
    assert run.status == "succeeded", step.error
    assert step.output["json"]["headers"]["x-note"] == "a\tb c"


async def test_http_query_value_from_a_param_stays_one_value(tmp_path: Path, loopback: str) -> None:
    workflow = """
[params.q]
type = "string"

[params.url]
type = "string"

[[steps]]
id = "search"
uses = "http.request"
with = { url = "{{ params.url }}", query = { q = "{{ params.q }}" } }
"""
    hostile = "x&admin=1#fragment\r\nX-Injected: 1"
    async with Harness(tmp_path, {"search.toml": workflow}) as h:
        run = await h.run("search", {"q": hostile, "url": f"{loopback}/echo"})
        step = (await h.steps(run.id))["search"]
    assert run.status == "succeeded", step.error
    assert step.output["json"]["query"] == [["q", hostile]]
    assert "x-injected" not in step.output["json"]["headers"]


# -- oversized and endless responses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/bomb", "/endless", "/claims"], ids=["gzip-bomb-16-mib", "endless-stream", "claims-ten-gib"]
)
async def test_http_response_over_max_response_bytes_fails_the_step(tmp_path: Path, loopback: str, path: str) -> None:
    config = '[connections.api]\ntype = "http"\nmax_response_bytes = "1MiB"\n'
    run, step = await fetch(tmp_path, f"{loopback}{path}", config)
    assert run.status == "failed"
    assert step.error == (
        f"GET {loopback}{path} returned a body larger than max_response_bytes (1MiB); raise it on the connection"
    )
    assert (step.error_kind, step.attempt) == ("permanent", 1)


async def test_http_trickling_response_is_cut_by_the_step_timeout(tmp_path: Path, loopback: str) -> None:
    workflow = FETCH.replace('retry = { attempts = 3, delay = "10ms" }', 'timeout = "1s"')
    async with Harness(tmp_path, {"weir.toml": '[connections.api]\ntype = "http"\n', "fetch.toml": workflow}) as h:
        run = await h.run("fetch", {"url": f"{loopback}/trickle"})
        step = (await h.steps(run.id))["fetch"]
    assert run.status == "failed"
    assert (step.error, step.error_kind) == ("'http.request' timed out after 1s", "timeout")
    assert (step.finished_at - step.started_at).total_seconds() < 3


# -- SQL injection through bound params -----------------------------------------------------------------------

NOTES = """
[params.text]
type = "string"

[params.id]
type = "string"
default = "1"

[[steps]]
id = "insert"
uses = "db.execute"
connection = "db"
with = { sql = "INSERT INTO notes (body) VALUES (:text)", params = { text = "{{ params.text }}" } }

[[steps]]
id = "find"
uses = "db.query"
connection = "db"
needs = ["insert"]
with = { sql = "SELECT body FROM notes WHERE body = :text", params = { text = "{{ params.text }}" } }

[[steps]]
id = "by_id"
uses = "db.query"
connection = "db"
needs = ["insert"]
with = { sql = "SELECT count(*) AS n FROM notes WHERE CAST(id AS TEXT) = :id", params = { id = "{{ params.id }}" } }
"""
INJECTIONS = {
    "drop-table": "x'); DROP TABLE notes; --",
    "tautology": "' OR '1'='1",
    "stacked-delete": "'; DELETE FROM notes; --",
    "comment-out-the-rest": "a' --",
    "placeholder-in-the-value": ":text",
    "attach-database": "'; ATTACH DATABASE 'weir-pwned.db' AS pwned; --",
    "backslash-quote": "\\'; DROP TABLE notes; --",
}


def seed(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        id_type = "INTEGER PRIMARY KEY AUTOINCREMENT" if url.startswith("sqlite") else "SERIAL PRIMARY KEY"
        conn.execute(sqlalchemy.text(f"CREATE TABLE notes (id {id_type}, body TEXT NOT NULL)"))
        conn.execute(sqlalchemy.text("INSERT INTO notes (body) VALUES ('seed')"))
    return engine


async def inject(tmp_path: Path, url: str, text: str, row_id: str = "1") -> tuple[Any, dict[str, Any], list[Any]]:
    engine = seed(url)
    config = '[connections.db]\ntype = "db"\nurl = "{{ secrets.NOTES_URL }}"\n'
    async with Harness(tmp_path, {"weir.toml": config, "notes.toml": NOTES}, secrets={"NOTES_URL": url}) as h:
        run = await h.run("notes", {"text": text, "id": row_id})
        steps = await h.steps(run.id)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sqlalchemy.text("SELECT id, body FROM notes ORDER BY id"))]
    engine.dispose()
    return run, steps, rows


@pytest.mark.parametrize("text", list(INJECTIONS.values()), ids=list(INJECTIONS))
async def test_db_params_from_a_payload_are_stored_literally_in_sqlite(tmp_path: Path, text: str) -> None:
    url = f"sqlite:///{tmp_path / 'notes.db'}"
    run, steps, rows = await inject(tmp_path, url, text)
    assert run.status == "succeeded", run.error
    assert rows == [(1, "seed"), (2, text)]
    assert steps["find"].output == {"rows": [{"body": text}], "row_count": 1}
    tables = sqlite3.connect(tmp_path / "notes.db").execute("SELECT name FROM sqlite_master").fetchall()
    assert ("notes",) in tables
    assert not await anyio.Path("weir-pwned.db").exists()  # relative to the working directory, as ATTACH is


@pytest.mark.parametrize("text", [INJECTIONS["drop-table"], INJECTIONS["stacked-delete"]], ids=["drop", "delete"])
async def test_db_params_from_a_payload_are_stored_literally_in_postgresql(
    tmp_path: Path, pg_schema_url: str, text: str
) -> None:
    run, steps, rows = await inject(tmp_path, pg_schema_url, text)
    assert run.status == "succeeded", run.error
    assert rows == [(1, "seed"), (2, text)]
    assert steps["find"].output == {"rows": [{"body": text}], "row_count": 1}


@pytest.mark.parametrize("row_id", ["1 OR 1=1", "1; DELETE FROM notes", "1) OR (1=1"], ids=["or", "stacked", "parens"])
async def test_db_id_param_cannot_widen_a_where_clause(tmp_path: Path, row_id: str) -> None:
    run, steps, rows = await inject(tmp_path, f"sqlite:///{tmp_path / 'notes.db'}", "plain", row_id)
    assert run.status == "succeeded", run.error
    assert steps["by_id"].output == {"rows": [{"n": 0}], "row_count": 1}
    assert rows == [(1, "seed"), (2, "plain")]
