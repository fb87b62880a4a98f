"""http.request against a real Starlette app served by uvicorn in a thread."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import serve_in_thread
from weir.connectors.base import ActionContext
from weir.connectors.http import HttpConnection, HttpConnector, IPAddress, is_public_address
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio
CTX = ActionContext(run_id="r1", step_id="s1")


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body.decode(),
        }
    )


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return PlainTextResponse(request.query_params.get("text", f"status {code}"), status_code=code)


async def echo_error(request: Request) -> Response:
    return PlainTextResponse(f"bad request, you sent {dict(request.headers)}", status_code=400)


async def slow(request: Request) -> Response:
    await anyio.sleep(float(request.query_params["seconds"]))
    return PlainTextResponse("done")


async def redirect(request: Request) -> Response:
    hops = int(request.path_params["hops"])
    target = "/echo" if hops == 0 else f"/redirect/{hops - 1}"
    return RedirectResponse(target, status_code=int(request.query_params.get("status", 302)))


async def redirect_to(request: Request) -> Response:
    return RedirectResponse(request.query_params["url"], status_code=302)


async def huge(request: Request) -> Response:
    size = int(request.query_params["bytes"])

    async def chunks() -> Any:
        for _ in range(size // 1024):
            yield b"x" * 1024

    if request.query_params.get("length"):
        return Response(b"x" * size)
    return StreamingResponse(chunks(), media_type="text/plain")


async def limited(request: Request) -> Response:
    return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": request.query_params["after"]})


app = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
        Route("/api/echo", echo, methods=["GET", "POST"]),
        Route("/status/{code}", status, methods=["GET", "POST"]),
        Route("/echo-error", echo_error),
        Route("/slow", slow),
        Route("/redirect/{hops}", redirect, methods=["GET", "POST"]),
        Route("/redirect-to", redirect_to),
        Route("/huge", huge),
        Route("/limited", limited),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    with serve_in_thread(app, ssl_keyfile=str(folder / "key.pem"), ssl_certfile=str(folder / "cert.pem")) as url:
        yield url.replace("http://", "https://")


async def call(connection: HttpConnection, **inputs: Any) -> Any:
    conn = HttpConnector(connection)
    try:
        return await conn.call("request", CTX, inputs)
    finally:
        await conn.aclose()


async def test_request_posts_json_and_returns_parsed_json(server: str) -> None:
    out = await call(HttpConnection(), method="post", url=f"{server}/echo", json={"a": [1, 2]}, query={"q": "x y"})
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"]["method"] == "POST"
    assert out["json"]["query"] == {"q": "x y"}
    assert out["json"]["body"] == '{"a":[1,2]}'
    assert out["json"]["headers"]["user-agent"] == "weir/0.1.0"


@pytest.mark.parametrize("path", ["echo", "/echo"])
async def test_request_joins_relative_url_to_base_url_and_sends_connection_headers(server: str, path: str) -> None:
    connection = HttpConnection(base_url=f"{server}/api", headers={"X-Team": "ops"})
    out = await call(connection, url=path, headers={"X-Step": "1"}, body="plain")
    assert out["json"]["path"] == "/api/echo"
    assert out["json"]["headers"]["x-team"] == "ops"
    assert out["json"]["headers"]["x-step"] == "1"
    assert out["json"]["body"] == "plain"


async def test_request_text_response_has_null_json(server: str) -> None:
    out = await call(HttpConnection(), url=f"{server}/status/200?text=hello")
    assert out == {"status": 200, "headers": out["headers"], "json": None, "text": "hello"}


async def test_request_sends_bearer_and_idempotency_key(server: str) -> None:
    connection = HttpConnection.model_validate({"auth": {"type": "bearer", "token": "tok-123"}})
    out = await call(connection, url=f"{server}/echo", idempotency_key=True)
    assert out["json"]["headers"]["authorization"] == "Bearer tok-123"
    assert out["json"]["headers"]["idempotency-key"] == "r1:s1"


async def test_request_sends_basic_auth(server: str) -> None:
    connection = HttpConnection.model_validate({"auth": {"type": "basic", "username": "u", "password": "p"}})
    out = await call(connection, url=f"{server}/echo")
    assert out["json"]["headers"]["authorization"] == "Basic dTpw"


async def test_request_expect_accepts_listed_status(server: str) -> None:
    out = await call(HttpConnection(), url=f"{server}/status/404", expect=[404])
    assert out["status"] == 404


async def test_request_unexpected_4xx_is_permanent_with_excerpt(server: str) -> None:
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(), url=f"{server}/status/404?text=" + "n" * 600)
    assert str(info.value) == f"GET {server}/status/404 returned HTTP 404 (expected 2xx): " + "n" * 500
    assert info.value.kind == "permanent"


@pytest.mark.parametrize(
    "auth",
    [{"type": "bearer", "token": "tok-SECRET"}, {"type": "basic", "username": "u", "password": "pw-SECRET"}],
    ids=["bearer", "basic"],
)
async def test_request_error_never_shows_token_or_password(server: str, auth: dict[str, str]) -> None:
    connection = HttpConnection.model_validate({"auth": auth, "headers": {"X-Api-Key": "key-SECRET"}})
    with pytest.raises(PermanentError) as info:
        await call(connection, url=f"{server}/echo-error")
    assert str(info.value).startswith(f"GET {server}/echo-error returned HTTP 400 (expected 2xx): bad request")
    assert "'authorization': '***'" in str(info.value)
    assert "'x-api-key': '***'" in str(info.value)
    assert "SECRET" not in str(info.value)
    assert "dTpwdy1TRUNSRVQ=" not in str(info.value)  # base64 of u:pw-SECRET


async def test_request_5xx_is_transient(server: str) -> None:
    with pytest.raises(TransientError) as info:
        await call(HttpConnection(), method="POST", url=f"{server}/status/503")
    assert str(info.value) == f"POST {server}/status/503 returned HTTP 503 (expected 2xx): status 503"
    assert (info.value.kind, info.value.retry_after) == ("transient", None)


async def test_request_429_carries_retry_after_seconds(server: str) -> None:
    with pytest.raises(TransientError) as info:
        await call(HttpConnection(), url=f"{server}/limited?after=7")
    assert str(info.value) == f"GET {server}/limited returned HTTP 429 (expected 2xx): slow down"
    assert info.value.retry_after == 7.0


async def test_request_429_reads_retry_after_http_date(server: str) -> None:
    ctx = ActionContext(run_id="r1", step_id="s1", clock=lambda: datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC))
    conn = HttpConnector(HttpConnection())
    with pytest.raises(TransientError) as info:
        await conn.call("request", ctx, {"url": f"{server}/limited?after=Mon, 01 Jan 2024 12:01:30 GMT"})
    await conn.aclose()
    assert info.value.retry_after == 90.0


async def test_request_read_timeout_is_transient_timeout(server: str) -> None:
    with pytest.raises(TransientError) as info:
        await call(HttpConnection(timeout="5s"), url=f"{server}/slow?seconds=1", timeout="100ms")
    assert str(info.value) == f"GET {server}/slow timed out after 0.1s"
    assert info.value.kind == "timeout"


async def test_request_connection_refused_is_transient() -> None:
    with pytest.raises(TransientError) as info:
        await call(HttpConnection(), url="http://127.0.0.1:9/x?token=abc")
    assert str(info.value) == "GET http://127.0.0.1:9/x failed: connection refused"
    assert info.value.kind == "transient"


async def test_request_dns_failure_is_transient() -> None:
    with pytest.raises(TransientError) as info:
        await call(HttpConnection(), url="http://no-such-host.invalid/")
    assert str(info.value).startswith("GET http://no-such-host.invalid/ failed: could not resolve the host (")


async def test_request_tls_verification_failure_is_permanent(tls_server: str) -> None:
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(), url=f"{tls_server}/echo")
    assert str(info.value) == (
        f"GET {tls_server}/echo: the server's TLS certificate failed verification (unable to get local issuer"
        " certificate); fix the certificate, or set verify = false on the connection if you trust this server"
    )


async def test_request_verify_false_accepts_self_signed(tls_server: str) -> None:
    out = await call(HttpConnection(verify=False), url=f"{tls_server}/echo")
    assert out["json"]["path"] == "/echo"


async def test_request_follows_redirect_chain(server: str) -> None:
    out = await call(HttpConnection(), url=f"{server}/redirect/3")
    assert (out["status"], out["json"]["path"]) == (200, "/echo")


async def test_request_303_turns_post_into_get_without_body(server: str) -> None:
    out = await call(HttpConnection(), method="POST", url=f"{server}/redirect/0?status=303", json={"a": 1})
    assert (out["json"]["method"], out["json"]["body"]) == ("GET", "")


async def test_request_307_keeps_method_and_body(server: str) -> None:
    out = await call(HttpConnection(), method="POST", url=f"{server}/redirect/0?status=307", body="keep")
    assert (out["json"]["method"], out["json"]["body"]) == ("POST", "keep")


async def test_request_stops_after_five_redirects(server: str) -> None:
    assert (await call(HttpConnection(), url=f"{server}/redirect/4"))["status"] == 200
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(), url=f"{server}/redirect/5")
    assert str(info.value) == f"GET {server}/redirect/5 redirected more than 5 times"


async def test_request_returns_redirect_when_expected(server: str) -> None:
    out = await call(HttpConnection(), url=f"{server}/redirect/1", expect=[302])
    assert (out["status"], out["headers"]["location"]) == (302, "/redirect/0")


async def test_request_drops_authorization_on_redirect_to_other_host(server: str) -> None:
    connection = HttpConnection.model_validate({"auth": {"type": "bearer", "token": "tok"}})
    other = server.replace("127.0.0.1", "localhost")
    out = await call(connection, url=f"{server}/redirect-to?url={other}/echo")
    assert out["json"]["headers"]["host"] == other.removeprefix("http://")
    assert "authorization" not in out["json"]["headers"]


async def test_request_refuses_host_outside_allowed_hosts(server: str) -> None:
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(allowed_hosts=["*.example.com"]), url=f"{server}/echo")
    assert str(info.value) == "host '127.0.0.1' is not in the connection's allowed_hosts (*.example.com)"


async def test_request_checks_allowed_hosts_on_each_redirect(server: str) -> None:
    other = server.replace("127.0.0.1", "localhost")
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(allowed_hosts=["127.0.0.1"]), url=f"{server}/redirect-to?url={other}/echo")
    assert str(info.value) == "host 'localhost' is not in the connection's allowed_hosts (127.0.0.1)"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_request_deny_private_networks_refuses_loopback(server: str, host: str) -> None:
    connection = HttpConnection(deny_private_networks=True, allowed_hosts=[host])
    with pytest.raises(PermanentError) as info:
        await call(connection, url=server.replace("127.0.0.1", host) + "/echo")
    assert str(info.value) == (
        f"refused to connect to {host}: it resolves to 127.0.0.1, which is not a public address"
        " (the connection sets deny_private_networks = true)"
    )


class LoopbackIsPublic(HttpConnector):
    """Treats 127.0.0.1 as public so a test server can play the public first hop."""

    def allows_address(self, address: IPAddress) -> bool:
        return address == ipaddress.ip_address("127.0.0.1") or super().allows_address(address)


async def test_request_deny_private_networks_checks_each_redirect(server: str) -> None:
    conn = LoopbackIsPublic(HttpConnection(deny_private_networks=True, allowed_hosts=["127.0.0.*"]))
    assert (await conn.call("request", CTX, {"url": f"{server}/echo"}))["status"] == 200
    private = server.replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(PermanentError) as info:
        await conn.call("request", CTX, {"url": f"{server}/redirect-to?url={private}/echo"})
    await conn.aclose()
    assert str(info.value) == (
        "refused to connect to 127.0.0.2: it resolves to 127.0.0.2, which is not a public address"
        " (the connection sets deny_private_networks = true)"
    )


@pytest.mark.parametrize("length", ["", "1"], ids=["streamed", "content-length"])
async def test_request_refuses_body_over_max_response_bytes(server: str, length: str) -> None:
    connection = HttpConnection(max_response_bytes="16KiB")
    assert len((await call(connection, url=f"{server}/huge?bytes=16384&length={length}"))["text"]) == 16384
    with pytest.raises(PermanentError) as info:
        await call(connection, url=f"{server}/huge?bytes=65536&length={length}")
    assert str(info.value) == (
        f"GET {server}/huge returned a body larger than max_response_bytes (16KiB); raise it on the connection"
    )


async def test_request_relative_url_needs_base_url() -> None:
    with pytest.raises(PermanentError) as info:
        await call(HttpConnection(), url="/echo")
    assert str(info.value) == "url '/echo' is relative and the connection has no base_url; give a full URL"


async def test_request_json_and_body_are_exclusive() -> None:
    with pytest.raises(ValueError, match="set either json or body, not both"):
        await call(HttpConnection(), url="http://example.com/", json={}, body="x")


def test_is_public_address_classifies_addresses() -> None:
    refused = [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "192.168.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "240.0.0.1",
    ]
    assert [a for a in refused if is_public_address(ipaddress.ip_address(a))] == []
    assert is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert is_public_address(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))
