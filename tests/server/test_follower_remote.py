"""Following a remote repository: a real upstream Git repository in a temporary folder, fetched over file://."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.server import free_port, serve_in_thread
from tests.helpers import git, write_repo
from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConfigError
from weir.server.app import create_app
from weir.server.deploy import Deployer
from weir.server.follower import Follower
from weir.settings import build_settings

HELLO = """
description = "say hello"

[[steps]]
id = "say"
uses = "log"
with = { message = "hello" }
"""

BROKEN = """
[[steps]]
id = "say"
uses = "log"
needs = ["nobody"]
with = { message = "hi" }
"""

PASSWORD = "s3cret-t0ken"


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    write_repo(root, {"workflows/hello.toml": HELLO}, message="add hello")
    return root


def follow(tmp_path: Path, url: str, **flags: Any) -> Follower:
    settings = build_settings(repo=url, state_dir=str(tmp_path / "state"), **flags)
    return Follower(settings, Deployer(ConnectorRegistry()))


def active_sha(follower: Follower) -> str | None:
    return follower.deployer.active.info.sha if follower.deployer.active else None


async def eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_follower_remote_first_sync_clones_and_applies_the_head(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}")

    assert follower.sync() is True
    assert active_sha(follower) == git(upstream, "rev-parse", "HEAD")
    assert follower.deployer.active is not None
    assert follower.deployer.active.info.message == "add hello"
    assert sorted(follower.deployer.active.revision.workflows) == ["hello"]
    assert follower.branch == "main", "the remote's default branch is followed"
    assert follower.state.last_error is None
    assert follower.state.last_sync is not None
    assert follower.source == f"file://{upstream}"
    assert follower.repo_path.parent == (tmp_path / "state" / "clones").resolve()
    assert not (follower.repo_path / "workflows").exists(), "a bare clone: nothing is checked out"


def test_follower_remote_applies_a_new_upstream_commit_on_sync(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}")
    follower.sync()
    added = write_repo(upstream, {"workflows/bye.toml": HELLO}, message="add bye")

    assert follower.sync() is True
    assert active_sha(follower) == added
    assert follower.deployer.active is not None
    assert sorted(follower.deployer.active.revision.workflows) == ["bye", "hello"]
    assert follower.sync() is False, "an unchanged head is not deployed again"


def test_follower_remote_broken_commit_is_rejected_and_the_last_good_keeps_serving(
    upstream: Path, tmp_path: Path
) -> None:
    follower = follow(tmp_path, f"file://{upstream}")
    follower.sync()
    good = active_sha(follower)
    broken = write_repo(upstream, {"workflows/hello.toml": BROKEN}, message="break hello")

    assert follower.sync() is False
    assert follower.deployer.rejected is not None
    assert follower.deployer.rejected.info.sha == broken
    assert [f.code for f in follower.deployer.rejected.findings] == ["W203"]
    assert str(follower.deployer.rejected.findings[0].location).startswith("workflows/hello.toml:")
    assert active_sha(follower) == good
    assert follower.state.last_error is None, "Git worked; the files were wrong"

    fixed = write_repo(upstream, {"workflows/hello.toml": HELLO}, message="fix hello")
    assert follower.sync() is True
    assert active_sha(follower) == fixed


@pytest.mark.anyio
async def test_follower_remote_request_sync_wakes_watch(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}", poll="1h")
    await follower.sync_now()
    stop = asyncio.Event()
    watcher = asyncio.create_task(follower.watch(stop))
    try:
        added = write_repo(upstream, {"workflows/bye.toml": HELLO}, message="add bye")
        await asyncio.sleep(0.2)
        assert active_sha(follower) != added, "nothing fetches before the hour is up unless asked"
        follower.request_sync()
        assert await eventually(lambda: active_sha(follower) == added)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


@pytest.mark.anyio
async def test_follower_remote_watch_fetches_every_poll(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}", poll="50ms")
    stop = asyncio.Event()
    watcher = asyncio.create_task(follower.watch(stop))
    try:
        assert await eventually(lambda: active_sha(follower) == git(upstream, "rev-parse", "HEAD"))
        added = write_repo(upstream, {"workflows/bye.toml": HELLO}, message="add bye")
        assert await eventually(lambda: active_sha(follower) == added)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)
    assert watcher.result() is None


@pytest.mark.anyio
async def test_follower_sync_now_reports_whether_a_revision_was_applied(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}")

    assert await follower.sync_now() is True
    assert await follower.sync_now() is False
    added = write_repo(upstream, {"workflows/bye.toml": HELLO}, message="add bye")
    assert await follower.sync_now() is True
    assert active_sha(follower) == added


@pytest.mark.anyio
async def test_follower_requests_during_a_sync_coalesce_into_one_more(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = follow(tmp_path, f"file://{upstream}", poll="1h")
    calls: list[int] = []
    release = threading.Event()

    def slow_sync() -> bool:
        calls.append(1)
        release.wait(timeout=5)
        return False

    monkeypatch.setattr(follower, "sync", slow_sync)
    stop = asyncio.Event()
    watcher = asyncio.create_task(follower.watch(stop))
    try:
        follower.request_sync()
        assert await eventually(lambda: len(calls) == 1)
        for _ in range(3):
            follower.request_sync()
        release.set()
        assert await eventually(lambda: len(calls) == 2)
        await asyncio.sleep(0.2)
        assert len(calls) == 2
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


@pytest.mark.anyio
async def test_follower_local_request_sync_syncs_at_once(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, str(upstream))
    follower.sync()
    first = follower.state.last_sync
    stop = asyncio.Event()
    watcher = asyncio.create_task(follower.watch(stop))
    try:
        await asyncio.sleep(0.2)
        assert follower.state.last_sync == first, "nothing changed in the repository, so nothing synced"
        follower.request_sync()
        assert await eventually(lambda: follower.state.last_sync != first)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


def test_follower_remote_missing_repository_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    follower = follow(tmp_path, f"file://{missing}")

    assert follower.sync() is False
    assert follower.deployer.active is None
    assert follower.state.last_error == (
        f"cannot clone file://{missing}: '{missing}' does not appear to be a git repository; "
        "check the URL: there is no repository there, or these credentials cannot see it"
    )
    assert f"sync failed: {follower.state.last_error} (serving nothing yet; retrying in 1m)" in caplog.messages

    write_repo(missing, {"workflows/hello.toml": HELLO})  # the next poll retries the clone
    assert follower.sync() is True
    assert follower.state.last_error is None


def test_follower_remote_unreachable_url_masks_the_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    follower = follow(tmp_path, f"https://ada:{PASSWORD}@127.0.0.1:{port}/automation.git")

    assert follower.sync() is False
    error = follower.state.last_error
    assert error is not None
    assert error.startswith(f"cannot clone https://ada:***@127.0.0.1:{port}/automation.git: unable to access ")
    assert error.endswith("; check the URL and that this machine reaches the remote (network, proxy, DNS)")
    assert follower.source == f"https://ada:***@127.0.0.1:{port}/automation.git"
    assert PASSWORD not in error
    assert PASSWORD not in caplog.text
    assert error in caplog.text


class _Unauthorized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_follower_remote_authentication_failure_says_to_check_the_credentials(
    refusing_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    follower = follow(tmp_path, f"http://ada:{PASSWORD}@{refusing_server}/automation.git")

    assert follower.sync() is False
    assert follower.state.last_error == (
        f"cannot clone http://ada:***@{refusing_server}/automation.git: "
        f"Authentication failed for 'http://{refusing_server}/automation.git/'; "
        "check the credentials: the token in the URL (as user:TOKEN@host) or the SSH key of weir's user"
    )
    assert PASSWORD not in caplog.text


def test_follower_remote_restart_reuses_the_clone(upstream: Path, tmp_path: Path) -> None:
    first = follow(tmp_path, f"file://{upstream}")
    first.sync()
    (first.repo_path / "kept-by-weir").write_text("marker")
    added = write_repo(upstream, {"workflows/bye.toml": HELLO}, message="add bye")

    again = follow(tmp_path, f"file://{upstream}")
    assert again.repo_path == first.repo_path
    assert again.sync() is True
    assert active_sha(again) == added
    assert (again.repo_path / "kept-by-weir").exists(), "fetched into the existing clone, not cloned anew"
    assert [p.name for p in (tmp_path / "state" / "clones").iterdir()] == [first.repo_path.name]


def test_follower_remote_restart_while_the_remote_is_down_serves_the_fetched_commit(
    upstream: Path, tmp_path: Path
) -> None:
    first = follow(tmp_path, f"file://{upstream}")
    first.sync()
    fetched = active_sha(first)
    upstream.rename(tmp_path / "moved")

    again = follow(tmp_path, f"file://{upstream}")
    assert again.sync() is True
    assert active_sha(again) == fetched
    assert again.state.last_error is not None
    assert again.state.last_error.startswith(f"cannot fetch file://{upstream}: ")

    (tmp_path / "moved").rename(upstream)
    assert again.sync() is False, "the same head: nothing new to apply"
    assert again.state.last_error is None


def test_follower_remote_a_different_url_never_reuses_a_clone(upstream: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_repo(other, {"workflows/other.toml": HELLO})
    first, second = follow(tmp_path, f"file://{upstream}"), follow(tmp_path, f"file://{other}")
    first.sync()
    second.sync()

    assert first.repo_path != second.repo_path
    assert second.deployer.active is not None
    assert sorted(second.deployer.active.revision.workflows) == ["other"]


def test_follower_remote_branch_option_selects_a_branch(upstream: Path, tmp_path: Path) -> None:
    git(upstream, "checkout", "--quiet", "-b", "staging")
    staged = write_repo(upstream, {"workflows/staged.toml": HELLO}, message="stage")
    git(upstream, "checkout", "--quiet", "main")

    follower = follow(tmp_path, f"file://{upstream}", branch="staging")
    assert follower.sync() is True
    assert active_sha(follower) == staged
    assert follower.branch == "staging"


def test_follower_remote_follows_the_remote_default_branch(upstream: Path, tmp_path: Path) -> None:
    git(upstream, "checkout", "--quiet", "-b", "trunk")
    trunk = write_repo(upstream, {"workflows/trunk.toml": HELLO}, message="trunk")

    follower = follow(tmp_path, f"file://{upstream}")
    assert follower.sync() is True
    assert follower.branch == "trunk"
    assert active_sha(follower) == trunk


def test_follower_remote_unknown_branch_is_a_clear_error(upstream: Path, tmp_path: Path) -> None:
    git(upstream, "branch", "staging")
    follower = follow(tmp_path, f"file://{upstream}", branch="stagign")

    assert follower.sync() is False
    assert follower.deployer.active is None
    assert follower.state.last_error == (
        f"branch 'stagign' not found in file://{upstream} (did you mean 'staging'?); "
        "pass --branch with one of its branches (main, staging)"
    )


def test_follower_remote_deleted_branch_keeps_the_last_good_revision(upstream: Path, tmp_path: Path) -> None:
    git(upstream, "branch", "staging")
    follower = follow(tmp_path, f"file://{upstream}", branch="staging")
    follower.sync()
    good = active_sha(follower)
    git(upstream, "branch", "--delete", "staging")

    assert follower.sync() is False
    assert follower.state.last_error is not None
    assert follower.state.last_error.startswith("branch 'staging' not found in ")
    assert active_sha(follower) == good


def test_follower_remote_missing_directory_names_the_url(upstream: Path, tmp_path: Path) -> None:
    follower = follow(tmp_path, f"file://{upstream}", path="flows")
    sha = git(upstream, "rev-parse", "HEAD")

    assert follower.sync() is False
    assert follower.state.last_error == (
        f"directory 'flows' does not exist in {sha} ({sha[:7]}) of file://{upstream}; "
        "commit the automation directory or pass the right --path"
    )


def test_follower_remote_empty_repository_asks_for_a_branch(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "--quiet", "--initial-branch=main")
    follower = follow(tmp_path, f"file://{empty}")

    assert follower.sync() is False
    assert follower.state.last_error == (
        f"the default branch of file://{empty} is unknown (is the repository empty?); "
        "pass the branch to follow with --branch"
    )


def test_follower_remote_url_with_dev_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        follow(tmp_path, f"https://ada:{PASSWORD}@example.com/automation.git", dev=True)
    assert str(caught.value) == (
        "--dev follows the files of a local repository, and --repo https://ada:***@example.com/automation.git "
        "is a URL; clone it and pass the local path with --dev, or drop --dev"
    )


def test_serve_follows_a_remote_and_starts_even_when_it_is_unreachable(upstream: Path, tmp_path: Path) -> None:
    settings = build_settings(repo=f"file://{upstream}", state_dir=str(tmp_path / "state"))
    with serve_in_thread(create_app(settings)) as url:
        assert httpx.get(f"{url}/readyz").json()["revision"] == git(upstream, "rev-parse", "HEAD")

    missing = build_settings(
        repo=f"https://ada:{PASSWORD}@127.0.0.1:{free_port()}/a.git", state_dir=str(tmp_path / "s2")
    )
    with serve_in_thread(create_app(missing)) as url:
        assert httpx.get(f"{url}/readyz").status_code == 503
        status = httpx.get(f"{url}/api/status").text
        assert "cannot clone https://ada:***@127.0.0.1:" in status
        assert PASSWORD not in status
