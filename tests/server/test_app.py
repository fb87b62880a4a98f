"""`weir serve` as a client sees it: a real server on a free port following a real Git repository."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.server import serve_in_thread
from tests.helpers import git, write_repo
from weir.server.app import create_app
from weir.settings import build_settings

HELLO = """
description = "say hello"

[params.who]
type = "string"
default = "world"

[[on.schedule]]
cron = "0 9 * * 1-5"
timezone = "Europe/Berlin"

[[on.webhook]]
path = "hello"
auth = { type = "token", token = "{{ secrets.HELLO_TOKEN }}" }

[[steps]]
id = "say"
uses = "log"
with = { message = "Hello {{ params.who }}" }
"""

BROKEN = """
[[steps]]
id = "say"
uses = "log"
needs = ["nobody"]
with = { message = "hi" }
"""


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns a truthy value (a new commit is applied asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "automation"
    write_repo(root, {"workflows/hello.toml": HELLO}, message="add hello")
    return root


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = build_settings(repo=str(repo), state_dir=str(tmp_path / "state"), port=8080)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=5) as client:
        yield client


def test_app_serves_the_committed_workflows(server: httpx.Client, repo: Path) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["revision"] == git(repo, "rev-parse", "HEAD")
    workflows = server.get("/api/workflows").json()["workflows"]
    assert [w["name"] for w in workflows] == ["hello"]
    hello = workflows[0]
    assert hello["file"] == "workflows/hello.toml"
    assert hello["triggers"]["webhooks"] == [
        {
            "path": "hello",
            "methods": ["POST"],
            "url": "http://127.0.0.1:8080/hooks/hello",
            "auth": "token",
            "response": "async",
        }
    ]
    schedule = hello["triggers"]["schedules"][0]
    assert schedule["cron"] == "0 9 * * 1-5"
    assert len(schedule["next_fire_times"]) == 3
    assert all(t.endswith(("+01:00", "+02:00")) and "T09:00:00" in t for t in schedule["next_fire_times"])


def test_app_reads_commits_not_the_working_tree(server: httpx.Client, repo: Path) -> None:
    (repo / "workflows" / "hello.toml").write_text(BROKEN)  # saved, never committed
    (repo / "workflows" / "draft.toml").write_text(HELLO.replace('path = "hello"', 'path = "draft"'))
    time.sleep(0.5)
    assert [w["name"] for w in server.get("/api/workflows").json()["workflows"]] == ["hello"]
    assert server.get("/api/status").json()["rejected"] is None


def test_app_applies_new_commits_and_keeps_last_good_on_a_broken_one(server: httpx.Client, repo: Path) -> None:
    good = git(repo, "rev-parse", "HEAD")
    added = write_repo(repo, {"workflows/bye.toml": HELLO.replace('path = "hello"', 'path = "bye"')}, message="bye")
    names = eventually(
        lambda: [w["name"] for w in server.get("/api/workflows").json()["workflows"]] == ["bye", "hello"]
    )
    assert names, "the new workflow did not appear"
    assert server.get("/api/status").json()["revision"]["sha"] == added

    broken = write_repo(repo, {"workflows/bye.toml": BROKEN}, message="break bye")
    status = eventually(lambda: (s := server.get("/api/status").json())["rejected"] and s)
    assert status["rejected"]["sha"] == broken
    assert status["rejected"]["message"] == "break bye"
    assert status["rejected"]["files"] == ["workflows/bye.toml"]
    assert status["rejected"]["findings"][0] == {
        "code": "W203",
        "severity": "error",
        "file": "workflows/bye.toml",
        "line": 5,
        "column": 10,
        "message": "step 'say' needs unknown step 'nobody'",
    }
    assert status["revision"]["sha"] == added, "the last good revision must keep serving"
    assert good != added
    assert [w["name"] for w in server.get("/api/workflows").json()["workflows"]] == ["bye", "hello"]

    fixed = write_repo(repo, {"workflows/bye.toml": None}, message="drop bye")
    status = eventually(lambda: (s := server.get("/api/status").json())["revision"]["sha"] == fixed and s)
    assert status["rejected"]["sha"] == broken, "the rejection stays visible until a later revision replaces it"
    assert [w["name"] for w in server.get("/api/workflows").json()["workflows"]] == ["hello"]


def test_app_not_ready_while_no_revision_is_valid(tmp_path: Path) -> None:
    repo = tmp_path / "automation"
    write_repo(repo, {"workflows/hello.toml": BROKEN}, message="broken from the start")
    settings = build_settings(repo=str(repo), state_dir=str(tmp_path / "state"))
    with serve_in_thread(create_app(settings)) as url:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "unavailable"
        workflows = httpx.get(f"{url}/api/workflows")
        assert workflows.status_code == 503
        assert "no valid revision" in workflows.json()["error"]["message"]


def test_app_errors_are_json(server: httpx.Client) -> None:
    missing = server.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no such endpoint: GET /api/nothing-here"}}
    unknown = server.get("/api/workflows/helo")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no workflow named 'helo' (did you mean 'hello'?)"
    wrong_method = server.delete("/api/status")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_a_webhook_that_fails_inside_the_server_gets_a_json_500_and_the_next_one_is_served(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEIR_SECRET_HELLO_TOKEN", "hello-token-7731")
    settings = build_settings(repo=str(repo), state_dir=str(tmp_path / "state"), port=8080)
    app = create_app(settings)
    token = {"Authorization": "Bearer hello-token-7731"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=5) as client:
        engine = app.state.runtime.engine
        submit = engine.submit

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the engine")

        engine.submit = broken  # the one way to reach this path: a bug, injected
        failed = client.post("/hooks/hello", json={}, headers=token)
        engine.submit = submit
        served = client.post("/hooks/hello", json={}, headers=token)
        metrics = client.get("/metrics").text

    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal"
    assert "a bug in the engine" not in failed.text  # the details go to the log, not to the sender
    assert "a bug in the engine" in caplog.text
    assert served.status_code == 202
    assert 'weir_webhook_requests_total{path="hello",status="500"} 1.0' in metrics


def test_app_api_token_required_when_set(repo: Path, tmp_path: Path) -> None:
    settings = build_settings(repo=str(repo), state_dir=str(tmp_path / "state"), api_token="s3cret")
    with serve_in_thread(create_app(settings)) as url:
        assert httpx.get(f"{url}/api/status").status_code == 401
        wrong = httpx.get(f"{url}/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"].startswith("invalid API token")
        assert httpx.get(f"{url}/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/api/openapi.json").status_code == 200, "the OpenAPI document needs no token"
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_app_openapi_lists_the_endpoints(server: httpx.Client) -> None:
    document = server.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/healthz", "/readyz", "/api/status", "/api/workflows", "/api/workflows/{name}"} <= set(document["paths"])


def test_serve_refuses_public_host_without_token(repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "weir", "serve", "--repo", str(repo), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--host 0.0.0.0 would expose the API without a token: set --api-token" in result.stderr


def test_serve_refuses_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "weir", "serve", "--repo", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"--repo {tmp_path} is not a Git repository" in result.stderr
