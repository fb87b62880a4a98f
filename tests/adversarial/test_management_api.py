"""The management API and the web UI of a real ``weir serve --api-token``, against callers without the token.

The API accepts the token in ``Authorization: Bearer`` only: not in the query string, a cookie or
another header, not as a near miss, and not when the header is sent twice. A refused call changes
nothing (no run started, cancelled or resumed). No answer carries CORS headers for a foreign
origin. The UI's forms are refused without the session's CSRF token or from another origin, and
forged, expired or foreign session cookies are not a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.adversarial.conftest import API_TOKEN, assert_nothing_leaked, error_of, run_count
from tests.server.serve_process import ServeProcess, eventually

MISSING = "missing API token: send 'Authorization: Bearer <token>' with the server's --api-token"
INVALID = "invalid API token: send 'Authorization: Bearer <token>' with the server's --api-token"

NOT_THE_TOKEN = {
    "no-header": ({}, None, MISSING),
    "wrong-token": ({"Authorization": "Bearer not-the-token"}, None, INVALID),
    "last-character-changed": ({"Authorization": f"Bearer {API_TOKEN[:-1]}0"}, None, INVALID),
    "prefix-of-the-token": ({"Authorization": f"Bearer {API_TOKEN[:-1]}"}, None, INVALID),
    "token-plus-one-character": ({"Authorization": f"Bearer {API_TOKEN}0"}, None, INVALID),
    "token-in-upper-case": ({"Authorization": f"Bearer {API_TOKEN.upper()}"}, None, INVALID),
    "token-without-scheme": ({"Authorization": API_TOKEN}, None, INVALID),
    "basic-scheme": ({"Authorization": "Basic " + base64.b64encode(f"x:{API_TOKEN}".encode()).decode()}, None, INVALID),
    "token-scheme": ({"Authorization": f"Token {API_TOKEN}"}, None, INVALID),
    "query-token": ({}, {"token": API_TOKEN}, MISSING),
    "query-access-token": ({}, {"access_token": API_TOKEN}, MISSING),
    "query-api-token": ({}, {"api_token": API_TOKEN}, MISSING),
    "query-authorization": ({}, {"authorization": f"Bearer {API_TOKEN}"}, MISSING),
    "cookie": ({"Cookie": f"token={API_TOKEN}; weir_token={API_TOKEN}"}, None, MISSING),
    "other-header": ({"X-Api-Token": API_TOKEN, "X-Weir-Token": API_TOKEN}, None, MISSING),
}


@pytest.mark.parametrize(("headers", "params", "message"), list(NOT_THE_TOKEN.values()), ids=list(NOT_THE_TOKEN))
@pytest.mark.parametrize("path", ["/api/runs", "/api/status", "/api/workflows/echo"])
def test_api_refuses_everything_but_the_bearer_token(
    hooks: httpx.Client, path: str, headers: dict[str, str], params: dict[str, str] | None, message: str
) -> None:
    answer = hooks.get(path, headers=headers, params=params)
    assert error_of(answer) == (401, "unauthorized", message)
    assert_nothing_leaked(answer.text + str(answer.headers))


@pytest.mark.parametrize(
    "pairs",
    [
        [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {API_TOKEN}")],
        [("Authorization", f"Bearer {API_TOKEN}"), ("Authorization", "Bearer wrong")],
        [("Authorization", f"Bearer {API_TOKEN}"), ("authorization", f"Bearer {API_TOKEN}")],
    ],
    ids=["wrong-then-right", "right-then-wrong", "right-twice"],
)
def test_api_refuses_the_authorization_header_sent_twice(hooks: httpx.Client, pairs: list[tuple[str, str]]) -> None:
    answer = hooks.get("/api/runs", headers=pairs)
    assert error_of(answer) == (401, "unauthorized", "the Authorization header was sent 2 times; send it exactly once")


def test_api_accepts_the_bearer_scheme_in_any_case(hooks: httpx.Client) -> None:
    assert hooks.get("/api/runs", headers={"Authorization": f"bEARER {API_TOKEN}"}).status_code == 200


def waiting_run(api: httpx.Client) -> str:
    run_id: str = api.post("/api/workflows/approval/runs", json={}).json()["run_id"]
    assert eventually(lambda: api.get(f"/api/runs/{run_id}").json()["status"] == "waiting", timeout=10)
    return run_id


def test_api_changes_nothing_for_a_caller_without_the_token(hooks: httpx.Client, api: httpx.Client) -> None:
    run_id = waiting_run(api)
    before = {name: run_count(api, name) for name in ("echo", "approval")}
    attempts = [
        hooks.post("/api/workflows/echo/runs", json={"params": {}}),
        hooks.post(f"/api/runs/{run_id}/cancel"),
        hooks.post(f"/api/runs/{run_id}/rerun", json={}),
        hooks.post(f"/api/runs/{run_id}/steps/ask/resume", json={"answer": "yes"}),
        hooks.post("/api/sync"),
    ]
    assert [error_of(a) for a in attempts] == [(401, "unauthorized", MISSING)] * len(attempts)
    assert {name: run_count(api, name) for name in before} == before
    run = api.get(f"/api/runs/{run_id}").json()
    assert (run["status"], run["cancel_requested"]) == ("waiting", False)
    api.post(f"/api/runs/{run_id}/cancel")


def test_api_resume_signature_is_bound_to_its_run_and_step(hooks: httpx.Client, api: httpx.Client) -> None:
    first, second = waiting_run(api), waiting_run(api)
    logs = api.get(f"/api/runs/{first}/logs").json()["logs"]
    link = next(m for m in (line["message"] for line in logs) if "/resume?sig=" in m)
    sig = re.search(r"sig=([0-9a-f]+)", link).group(1)  # type: ignore[union-attr]
    for path in (f"/api/runs/{second}/steps/ask/resume", f"/api/runs/{first}/steps/after/resume"):
        answer = hooks.post(path, params={"sig": sig}, json={"answer": "forged"})
        status, code, _ = error_of(answer)
        assert (status, code) == (401, "unauthorized")
    for empty in ("", "0" * len(sig), sig.upper()):
        assert hooks.post(f"/api/runs/{first}/steps/ask/resume", params={"sig": empty}, json={}).status_code == 401
    assert api.get(f"/api/runs/{second}").json()["status"] == "waiting"
    assert api.get(f"/api/runs/{first}").json()["status"] == "waiting"
    assert (
        hooks.post(f"/api/runs/{first}/steps/ask/resume", params={"sig": sig}, json={"answer": "ok"}).status_code == 202
    )
    for run_id in (first, second):
        api.post(f"/api/runs/{run_id}/cancel")


def raw_get(server: ServeProcess, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalises it); the status and the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/api%2Fruns", 401),
        ("/api/../api/runs", 401),
        ("/api/./runs", 401),
        ("/api/runs/", 401),
        ("//api/runs", 404),
        ("/API/runs", 404),
        ("/%61pi/runs", 401),
    ],
    ids=["encoded-slash", "dot-dot", "dot", "trailing-slash", "double-slash", "upper-case", "encoded-letter"],
)
def test_api_path_tricks_reach_no_run_data(server: ServeProcess, target: str, status: int) -> None:
    code, body = raw_get(server, target)
    assert code == status
    assert b'"runs"' not in body


FOREIGN = "https://evil.example"


@pytest.mark.parametrize(
    ("method", "path", "use_token"),
    [
        ("GET", "/api/runs", True),
        ("OPTIONS", "/api/runs", False),
        ("OPTIONS", "/hooks/echo", False),
        ("POST", "/hooks/echo", False),
        ("GET", "/", False),
    ],
    ids=["api-with-token", "api-preflight", "hook-preflight", "hook-post", "ui-page"],
)
def test_no_cors_headers_for_a_foreign_origin(hooks: httpx.Client, method: str, path: str, use_token: bool) -> None:
    headers = {
        "Origin": FOREIGN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    if use_token:
        headers["Authorization"] = f"Bearer {API_TOKEN}"
    answer = hooks.request(method, path, headers=headers)
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
    assert answer.status_code != 204


@pytest.mark.parametrize(
    "body",
    [b'{"params": {"name": "\\ud800"}}', b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["unpaired-surrogate", "nested-100000-deep"],
)
def test_api_manual_run_with_json_that_could_not_be_shown_again_is_refused(api: httpx.Client, body: bytes) -> None:
    before = run_count(api, "literal")
    answer = api.post("/api/workflows/literal/runs", content=body, headers={"Content-Type": "application/json"})
    assert error_of(answer)[:2] == (400, "bad_request")
    assert run_count(api, "literal") == before


# -- the web UI ------------------------------------------------------------------------------------------------


@pytest.fixture
def browser(server: ServeProcess) -> Iterator[httpx.Client]:
    """A client logged in to the UI (a session cookie, no API token)."""
    with httpx.Client(base_url=server.url, timeout=20) as client:
        login = client.post("/login", data={"token": API_TOKEN, "next": "/"}, headers={"Origin": server.url})
        assert login.status_code == 303
        assert "weir_session" in client.cookies
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


STALE = "The form&#39;s security token is missing or stale: reload the page and try again."
CROSS_SITE = "This form was posted from another site; weir refused it."


def refused(answer: httpx.Response, status: int, message: str) -> None:
    assert answer.status_code == status
    assert message in answer.text
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("action", ["cancel", "rerun", "steps/ask/resume", "logout"])
def test_ui_form_without_the_csrf_token_is_refused(browser: httpx.Client, api: httpx.Client, action: str) -> None:
    run_id = waiting_run(api)
    path = "/logout" if action == "logout" else f"/runs/{run_id}/{action}"
    before = run_count(api, "approval")
    refused(browser.post(path, data={"body": '{"answer": "yes"}', "from": "start"}), 403, STALE)
    assert api.get(f"/api/runs/{run_id}").json()["status"] == "waiting"
    assert run_count(api, "approval") == before
    assert browser.get("/runs").status_code == 200  # still logged in
    api.post(f"/api/runs/{run_id}/cancel")


def test_ui_csrf_token_outside_the_form_body_is_refused(browser: httpx.Client, api: httpx.Client) -> None:
    token = csrf_of(browser.get("/workflows/echo").text)
    before = run_count(api, "echo")
    refused(browser.post("/workflows/echo/run", params={"csrf": token}, data={}), 403, STALE)
    refused(browser.post("/workflows/echo/run", json={"csrf": token}), 403, STALE)
    refused(browser.post("/workflows/echo/run", data={}, headers={"X-CSRF-Token": token}), 403, STALE)
    assert run_count(api, "echo") == before
    assert browser.post("/workflows/echo/run", data={"csrf": token}).status_code == 303
    assert run_count(api, "echo") == before + 1


@pytest.mark.parametrize(
    "origin",
    ["null", FOREIGN, "http://127.0.0.1:1", "http://localhost"],
    ids=["null", "foreign", "other-port", "alias"],
)
def test_ui_form_from_another_origin_is_refused_even_with_the_token(
    browser: httpx.Client, api: httpx.Client, server: ServeProcess, origin: str
) -> None:
    token = csrf_of(browser.get("/workflows/echo").text)
    before = run_count(api, "echo")
    refused(browser.post("/workflows/echo/run", data={"csrf": token}, headers={"Origin": origin}), 403, CROSS_SITE)
    assert run_count(api, "echo") == before


def test_ui_login_from_another_origin_is_refused(hooks: httpx.Client) -> None:
    answer = hooks.post("/login", data={"token": API_TOKEN, "next": "/"}, headers={"Origin": FOREIGN})
    refused(answer, 403, CROSS_SITE)


def session_cookie(token: str, expires: int) -> str:
    """A session cookie as the server makes one for ``token``, expiring at ``expires``."""
    key = hmac.new(token.encode(), b"weir-ui-session-key", hashlib.sha256).digest()
    mac = hmac.new(key, f"session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


FORGED = {
    "garbage": "not-a-session",
    "expired": session_cookie(API_TOKEN, int(time.time()) - 60),
    "signed-with-another-token": session_cookie("another-token", int(time.time()) + 3600),
    "forged-mac": f"{int(time.time()) + 3600}.{'0' * 64}",
    "mac-of-another-expiry": session_cookie(API_TOKEN, int(time.time()) + 3600).split(".")[0] + "1." + "0" * 64,
    "empty": "",
}


@pytest.mark.parametrize("cookie", list(FORGED.values()), ids=list(FORGED))
def test_ui_forged_session_cookie_is_no_session(server: ServeProcess, api: httpx.Client, cookie: str) -> None:
    with httpx.Client(base_url=server.url, cookies={"weir_session": cookie}) as client:
        page = client.get("/runs")
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=%2Fruns")
        assert client.get("/runs/x/live").status_code == 401
        before = run_count(api, "echo")
        post = client.post("/workflows/echo/run", data={"csrf": "0" * 64})
        refused(post, 401, "Your session has ended: log in again, then repeat what you did.")
        assert run_count(api, "echo") == before
        assert client.get("/api/runs").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
    ],
    ids=["absolute", "protocol-relative", "slash-backslash", "backslashes", "javascript", "scheme-single-slash"],
)
def test_ui_login_never_redirects_off_the_server(server: ServeProcess, target: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        answer = client.post("/login", data={"token": API_TOKEN, "next": target})
        assert (answer.status_code, answer.headers["location"]) == (303, "/")


def test_ui_form_over_one_mib_is_refused(browser: httpx.Client, api: httpx.Client) -> None:
    token = csrf_of(browser.get("/workflows/echo").text)
    before = run_count(api, "echo")
    answer = browser.post("/workflows/echo/run", data={"csrf": token, "pad": "x" * (1024 * 1024 + 1)})
    refused(answer, 413, "The form is too large.")
    assert run_count(api, "echo") == before


SHAPES = {
    "nan-inside-an-object": (
        "param.data",
        '{"ratio": NaN}',
        "is not valid JSON: NaN is not a JSON value; write null or a number",
    ),
    "unpaired-surrogate": (
        "param.data",
        '{"name": "\\ud800"}',
        "is not valid JSON: a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode",
    ),
    "nested-100000-deep": ("param.data", "[" * 100_000 + "]" * 100_000, "is not valid JSON: it is nested too deeply"),
    "enum-nested-100000-deep": ("param.level", "[" * 100_000, "must be one of [&#39;low&#39;, &#39;high&#39;]"),
}


@pytest.mark.parametrize(("field", "value", "problem"), list(SHAPES.values()), ids=list(SHAPES))
def test_ui_run_form_refuses_json_that_could_not_be_shown_again(
    browser: httpx.Client, api: httpx.Client, field: str, value: str, problem: str
) -> None:
    token = csrf_of(browser.get("/workflows/shaped").text)
    before = run_count(api, "shaped")
    answer = browser.post("/workflows/shaped/run", data={"csrf": token, field: value})
    assert answer.status_code == 422
    assert problem in answer.text
    assert run_count(api, "shaped") == before
    assert browser.get("/workflows/shaped").status_code == 200
