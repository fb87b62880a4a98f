"""``weir serve`` end to end: a real server process following a real Git repository, driven over HTTP.

Covers what SPEC §5, §8 and §11 promise a client: commits become routes and schedules within a
second, a broken commit is rejected while the last good revision keeps answering, signed
webhooks (GitHub's published test vector, Slack's v0 scheme), the webhook answers of §11, and
the run API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import git, write_repo
from tests.server.serve_process import ServeProcess, eventually, finished
from tests.server.workflows import APPROVAL, FLAKY

GITHUB_SECRET = "It's a Secret to Everybody"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

HELLO = """
description = "greet"

[params.name]
type = "string"
default = "world"

[[on.webhook]]
path = "hello"
auth = { type = "none" }
params = { name = "{{ payload.name | default('world') }}" }

[[steps]]
id = "greet"
uses = "transform"
with.output = { greeting = "Hello, {{ params.name }}!" }

[[steps]]
id = "announce"
uses = "log"
needs = ["greet"]
with = { message = "{{ steps.greet.output.greeting }}" }

[outputs]
greeting = "{{ steps.greet.output.greeting }}"
"""

SECOND = """
[[on.schedule]]
cron = "0 3 * * *"
timezone = "Europe/Berlin"

[[on.webhook]]
path = "second"
auth = { type = "none" }

[[steps]]
id = "only"
uses = "log"
with = { message = "second" }
"""

BROKEN = """
[[steps]]
id = "only"
uses = "log"
needs = ["nobody"]
with = { message = "broken" }
"""

SIGNED = """
[params.text]
type = "string"

[params.delivery]
type = "string"
default = ""

[[on.webhook]]
path = "github"
auth = { type = "github", secret = "{{ secrets.GH_SECRET }}" }
params = { text = "{{ payload }}", delivery = "{{ headers['x-github-delivery'] | default('') }}" }
idempotency_key = "{{ headers['x-github-delivery'] | default('') }}"

[[on.webhook]]
path = "slack"
auth = { type = "slack", secret = "{{ secrets.SLACK_SIGNING_SECRET }}" }
params = { text = "{{ payload.text }}" }

[[steps]]
id = "echo"
uses = "transform"
with.output = "{{ params.text }}"

[outputs]
text = "{{ steps.echo.output }}"
"""

CHECKED = """
[params.severity]
type = "string"
enum = ["info", "warning", "critical"]

[params.count]
type = "integer"
default = 1

[[on.webhook]]
path = "alerts"
auth = { type = "token", token = "{{ secrets.ALERT_TOKEN }}" }
schema = { type = "object", required = ["severity"], properties = { count = { type = "integer" } } }
filter = "payload.severity != 'ignore'"
params = { severity = "{{ payload.severity }}", count = "{{ payload.count | default(1) }}" }

[[on.webhook]]
path = "alerts/sync"
methods = ["PUT"]
auth = { type = "none" }
response = "sync"
timeout = "5s"
params = { severity = "{{ payload.severity }}" }

[[steps]]
id = "classify"
uses = "transform"
with.output = { loud = "{{ params.severity == 'critical' }}", count = "{{ params.count }}" }

[outputs]
loud = "{{ steps.classify.output.loud }}"
count = "{{ steps.classify.output.count }}"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "automation"
    write_repo(root, {"workflows/hello.toml": HELLO}, message="add hello")
    return root


@pytest.fixture
def serve(repo: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    env = {
        "WEIR_SECRET_GH_SECRET": GITHUB_SECRET,
        "WEIR_SECRET_SLACK_SIGNING_SECRET": SLACK_SECRET,
        "WEIR_SECRET_ALERT_TOKEN": "alert-token-5521",
    }
    process = ServeProcess(repo, tmp_path / "state", env=env, args=["--max-body", "4KiB"])
    try:
        yield process.start()
    finally:
        process.kill()


def status(client: httpx.Client) -> dict[str, object]:
    return client.get("/api/status").json()  # type: ignore[no-any-return]


def test_commits_become_routes_and_a_broken_commit_keeps_the_last_good_revision(
    serve: ServeProcess, repo: Path
) -> None:
    with serve.client() as client:
        accepted = client.post("/hooks/hello", json={"name": "Ada"})
        assert accepted.status_code == 202
        run = finished(client, accepted.json()["run_id"])
        assert run["status"] == "succeeded"
        assert run["outputs"] == {"greeting": "Hello, Ada!"}
        assert run["revision"] == git(repo, "rev-parse", "HEAD")
        assert client.post("/hooks/second").status_code == 404

        # A new commit: its route answers and its schedule is listed within a second or so.
        added = write_repo(repo, {"workflows/second.toml": SECOND}, message="add second")
        assert eventually(lambda: client.post("/hooks/second").status_code == 202, timeout=3)
        assert status(client)["revision"]["sha"] == added  # type: ignore[index]
        second = client.get("/api/workflows/second").json()
        schedule = second["triggers"]["schedules"][0]
        assert schedule["cron"] == "0 3 * * *"
        assert len(schedule["next_fire_times"]) == 3

        # A broken commit is rejected: the old routes keep answering, status names the sha, file and finding.
        broken = write_repo(repo, {"workflows/broken.toml": BROKEN}, message="break it")
        rejected = eventually(lambda: status(client)["rejected"], timeout=3)
        assert rejected["sha"] == broken
        assert rejected["files"] == ["workflows/broken.toml"]
        assert any(f["code"] == "W203" and "nobody" in f["message"] for f in rejected["findings"])
        assert status(client)["revision"]["sha"] == added  # type: ignore[index]
        assert client.post("/hooks/second").status_code == 202
        assert 'weir_revisions_total{outcome="rejected"} 1.0' in client.get("/metrics").text

        # The fix applies; the status keeps the last rejected revision, the gauge says it is no longer the newest.
        fixed = write_repo(repo, {"workflows/broken.toml": None}, message="fix it")
        assert eventually(lambda: status(client)["revision"]["sha"] == fixed, timeout=3)  # type: ignore[index]
        assert status(client)["rejected"]["sha"] == broken  # type: ignore[index]
        assert "weir_revision_rejected 0.0" in client.get("/metrics").text

        # Deleting the file removes its route and its schedule.
        gone = write_repo(repo, {"workflows/second.toml": None}, message="remove second")
        assert eventually(lambda: status(client)["revision"]["sha"] == gone, timeout=3)  # type: ignore[index]
        assert client.post("/hooks/second").status_code == 404
        names = [w["name"] for w in client.get("/api/workflows").json()["workflows"]]
        assert names == ["hello"]
    assert "schedule removed: second#0" in serve.output()


def test_signed_webhooks_github_test_vector_slack_and_redeliveries(serve: ServeProcess, repo: Path) -> None:
    write_repo(repo, {"workflows/signed.toml": SIGNED}, message="signed hooks")
    with serve.client() as client:
        assert eventually(lambda: client.get("/api/workflows/signed").status_code == 200, timeout=3)
        vector = {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}
        ok = client.post("/hooks/github", content=b"Hello, World!", headers={**vector, "X-GitHub-Delivery": "d-1"})
        assert ok.status_code == 202, ok.text
        run = finished(client, ok.json()["run_id"])
        assert run["outputs"] == {"text": "Hello, World!"}
        assert run["trigger"]["headers"]["x-github-delivery"] == "d-1"

        again = client.post("/hooks/github", content=b"Hello, World!", headers={**vector, "X-GitHub-Delivery": "d-1"})
        assert again.status_code == 200
        assert again.json() == {"run_id": ok.json()["run_id"], "duplicate": True}

        tampered = client.post("/hooks/github", content=b"Hello, World?", headers=vector)
        assert tampered.status_code == 401
        assert tampered.json()["error"]["code"] == "unauthorized"
        assert "signature does not match" in tampered.json()["error"]["message"]
        assert client.post("/hooks/github", content=b"Hello, World!").status_code == 401

        body = b"token=x&team_id=T1&text=deploy+now"
        stamp = str(int(time.time()))
        mac = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
        form = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp}
        slack = client.post("/hooks/slack", content=body, headers={**form, "X-Slack-Signature": f"v0={mac}"})
        assert slack.status_code == 202, slack.text
        assert finished(client, slack.json()["run_id"])["outputs"] == {"text": "deploy now"}

        old = str(int(time.time()) - 301)
        old_mac = hmac.new(SLACK_SECRET.encode(), f"v0:{old}:".encode() + body, hashlib.sha256).hexdigest()
        replay = {**form, "X-Slack-Request-Timestamp": old, "X-Slack-Signature": f"v0={old_mac}"}
        stale = client.post("/hooks/slack", content=body, headers=replay)
        assert stale.status_code == 401
        assert "300 s" in stale.json()["error"]["message"]
        runs = client.get("/api/runs", params={"workflow": "signed"}).json()["runs"]
        assert len(runs) == 2  # the duplicate, the tampered and the stale requests stored nothing


def test_webhook_answers_of_the_spec(serve: ServeProcess, repo: Path) -> None:
    write_repo(repo, {"workflows/checked.toml": CHECKED}, message="checked hook")
    token = {"Authorization": "Bearer alert-token-5521"}
    with serve.client() as client:
        assert eventually(lambda: client.get("/api/workflows/checked").status_code == 200, timeout=3)
        assert client.post("/hooks/alerts", json={"severity": "info"}).status_code == 401
        wrong = client.post("/hooks/alerts", json={"severity": "info"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

        invalid = client.post("/hooks/alerts", json={"count": "many"}, headers=token)
        assert invalid.status_code == 422
        error = invalid.json()["error"]
        assert error["code"] == "invalid_payload"
        assert {d["path"] for d in error["details"]} == {"/", "/count"}

        ignored = client.post("/hooks/alerts", json={"severity": "ignore"}, headers=token)
        assert (ignored.status_code, ignored.json()) == (202, {"ignored": True})

        bad_param = client.post("/hooks/alerts", json={"severity": "loud"}, headers=token)
        assert bad_param.status_code == 422
        assert "severity" in bad_param.json()["error"]["params"]

        not_json = client.post(
            "/hooks/alerts", content=b'{"severity": ', headers={**token, "Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        assert "not valid JSON" in not_json.json()["error"]["message"]

        big = client.post("/hooks/alerts", content=b"x" * 5000, headers=token)
        assert big.status_code == 413
        assert "--max-body" in big.json()["error"]["message"]

        wrong_method = client.get("/hooks/alerts")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert client.post("/hooks/nowhere").status_code == 404

        accepted = client.post("/hooks/alerts", json={"severity": "critical", "count": 3}, headers=token)
        assert accepted.status_code == 202
        run = finished(client, accepted.json()["run_id"])
        assert run["params"] == {"severity": "critical", "count": 3}
        assert "authorization" not in run["trigger"]["headers"]

        sync = client.put("/hooks/alerts/sync", json={"severity": "warning"})
        assert sync.status_code == 200
        answer = sync.json()
        assert answer["status"] == "succeeded"
        assert answer["outputs"] == {"loud": False, "count": 1}

    metrics = httpx.get(f"{serve.url}/metrics").text
    assert 'weir_webhook_requests_total{path="alerts",status="401"} 2.0' in metrics
    assert 'weir_webhook_requests_total{path="alerts",status="202"} 2.0' in metrics
    assert 'weir_runs_total{status="succeeded",workflow="checked"} 2.0' in metrics


def test_run_api_manual_runs_cancel_rerun_resume_and_logs(serve: ServeProcess, repo: Path) -> None:
    write_repo(repo, {"workflows/approval.toml": APPROVAL, "workflows/flaky.toml": FLAKY}, message="more")
    with serve.client() as client:
        assert eventually(lambda: client.get("/api/workflows/flaky").status_code == 200, timeout=3)

        bad = client.post("/api/workflows/hello/runs", json={"params": {"name": 5}})
        assert bad.status_code == 422
        assert "name" in bad.json()["error"]["params"]
        assert client.post("/api/workflows/nope/runs", json={}).status_code == 404
        assert client.post("/api/workflows/hello/runs", content=b"{").status_code == 400

        # Rerun from the failed step reuses the step that succeeded.
        failed = finished(client, client.post("/api/workflows/flaky/runs", json={}).json()["run_id"])
        assert failed["status"] == "failed"
        assert "second failed on purpose" in failed["error"]
        rerun = client.post(f"/api/runs/{failed['id']}/rerun", json={"from": "failed"})
        assert rerun.status_code == 202
        again = finished(client, rerun.json()["run_id"])
        assert again["rerun_of"] == failed["id"]
        first = next(s for s in again["steps"] if s["id"] == "first")
        assert first["note"] == f"reused from run {failed['id']}"

        # A waiting run is resumed through its signed link, another one cancelled.
        waiting_id = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
        assert eventually(lambda: client.get(f"/api/runs/{waiting_id}").json()["status"] == "waiting")
        wrong = httpx.post(f"{serve.url}/api/runs/{waiting_id}/steps/ask/resume?sig=00", json={"answer": "yes"})
        assert wrong.status_code == 401
        cancel_id = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
        assert eventually(lambda: client.get(f"/api/runs/{cancel_id}").json()["status"] == "waiting")
        assert client.post(f"/api/runs/{cancel_id}/cancel").status_code == 202
        assert finished(client, cancel_id)["status"] == "cancelled"
        assert client.post(f"/api/runs/{cancel_id}/cancel").status_code == 409

        resumed = client.post(f"/api/runs/{waiting_id}/steps/ask/resume", json={"answer": "yes"})
        assert resumed.status_code == 202
        assert finished(client, waiting_id)["outputs"] == {"answer": "yes"}
        assert client.post(f"/api/runs/{waiting_id}/steps/ask/resume", json={}).status_code == 409

        # Pagination, newest first, filters.
        page = client.get("/api/runs", params={"limit": 2}).json()
        assert len(page["runs"]) == 2
        rest = client.get("/api/runs", params={"limit": 50, "cursor": page["next_cursor"]}).json()
        everything = client.get("/api/runs", params={"limit": 50}).json()["runs"]
        assert [r["id"] for r in page["runs"] + rest["runs"]] == [r["id"] for r in everything]
        assert {r["workflow"] for r in client.get("/api/runs?workflow=approval").json()["runs"]} == {"approval"}
        assert client.get("/api/runs?status=bogus").status_code == 400
        assert client.get("/api/runs/0000").status_code == 404

        hello_id = client.post("/api/workflows/hello/runs", json={"params": {"name": "logs"}}).json()["run_id"]
        finished(client, hello_id)
        lines = client.get(f"/api/runs/{hello_id}/logs").json()["logs"]
        assert [line["message"] for line in lines] == ["Hello, logs!"]
        with client.stream("GET", f"/api/runs/{hello_id}/logs", params={"follow": 1}) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert json.loads(events[0][6:])["message"] == "Hello, logs!"
        assert json.loads(events[-1][6:]) == {"run_id": hello_id, "status": "succeeded"}
        assert client.get("/api/openapi.json").json()["openapi"].startswith("3.")


def test_api_token_is_required_and_checked(repo: Path, tmp_path: Path) -> None:
    args = ["--api-token", "s3cret-token", "--metrics-token", "m3trics"]
    process = ServeProcess(repo, tmp_path / "state", args=args).start()
    try:
        # Only a resume link that carries its signature skips the token (and then the signature is checked).
        sneaky = httpx.post(f"{process.url}/api/runs/x/steps/y/resume?xsig=1", json={})
        assert sneaky.status_code == 401
        assert "API token" in sneaky.json()["error"]["message"]
        assert httpx.get(f"{process.url}/metrics").status_code == 401
        metrics = httpx.get(f"{process.url}/metrics", headers={"Authorization": "Bearer m3trics"})
        assert metrics.status_code == 200
        assert "weir_runs_current" in metrics.text
        assert httpx.get(f"{process.url}/api/runs").status_code == 401
        wrong = httpx.get(f"{process.url}/api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        ok = httpx.get(f"{process.url}/api/runs", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert httpx.post(f"{process.url}/hooks/hello", json={}).status_code == 202  # hooks have their own auth
        assert httpx.get(f"{process.url}/healthz").status_code == 200
    finally:
        process.kill()


def test_dev_mode_serves_the_working_tree_and_reloads_on_save(repo: Path, tmp_path: Path) -> None:
    process = ServeProcess(repo, tmp_path / "state", args=["--dev"]).start()
    try:
        with process.client() as client:
            assert client.post("/hooks/second").status_code == 404
            (repo / "workflows" / "second.toml").write_text(SECOND, encoding="utf-8")  # saved, not committed
            assert eventually(lambda: client.post("/hooks/second").status_code == 202, timeout=5)
            run = finished(client, client.post("/hooks/second").json()["run_id"])
            assert run["status"] == "succeeded"
            assert run["revision"].startswith("dev-")
    finally:
        process.kill()


def test_a_signed_push_event_syncs_a_remote_at_once(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    write_repo(upstream, {"workflows/hello.toml": HELLO}, message="hello")
    secret = "push-secret-77"
    args = ["--poll", "1h", "--git-webhook-secret", secret]
    process = ServeProcess(f"file://{upstream}", tmp_path / "state", args=args).start()
    try:
        with process.client() as client:
            pushed = write_repo(upstream, {"workflows/second.toml": SECOND}, message="second")
            body = json.dumps({"ref": "refs/heads/main", "after": pushed}).encode()
            unsigned = client.post("/hooks/_git", content=body, headers={"X-GitHub-Event": "push"})
            assert unsigned.status_code == 401
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
            accepted = client.post("/hooks/_git", content=body, headers=headers)
            assert (accepted.status_code, accepted.json()) == (202, {"sync": "requested"})
            assert eventually(lambda: status(client)["revision"]["sha"] == pushed, timeout=5)  # type: ignore[index]
            assert client.post("/hooks/second").status_code == 202
    finally:
        process.kill()


def test_json_logs_and_a_public_host_without_token_is_refused(repo: Path, tmp_path: Path) -> None:
    process = ServeProcess(repo, tmp_path / "state", args=["--log-format", "json"]).start()
    try:
        httpx.post(f"{process.url}/hooks/hello", json={})
    finally:
        assert process.stop() in (0, -15)
    lines = [json.loads(line) for line in process.output().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["logger"] == "weir.deploy" and "applied" in line["message"] for line in lines)

    refused = ServeProcess(repo, tmp_path / "refused", args=["--host", "0.0.0.0"])
    refused.start(ready=False)
    assert refused.proc is not None
    assert refused.proc.wait(20) == 2
    assert "--api-token" in refused.output()


def test_applying_revisions_drops_no_request_and_runs_finish_on_their_own_revision(
    serve: ServeProcess, repo: Path
) -> None:
    import threading

    write_repo(repo, {"workflows/approval.toml": APPROVAL}, message="approval v1")
    with serve.client() as client:
        assert eventually(lambda: client.get("/api/workflows/approval").status_code == 200, timeout=3)
        v1 = status(client)["revision"]["sha"]  # type: ignore[index]
        waiting_id = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
        assert eventually(lambda: client.get(f"/api/runs/{waiting_id}").json()["status"] == "waiting")

        answers: list[int] = []
        stop = threading.Event()

        def fire() -> None:
            with serve.client() as hammer:
                while not stop.is_set():
                    answers.append(hammer.post("/hooks/hello", json={"name": "load"}).status_code)

        thread = threading.Thread(target=fire)
        thread.start()
        try:
            shas = []
            for n in range(3):
                changed = APPROVAL.replace("steps.after.output }}", f"steps.after.output ~ ' v{n + 2}' }}}}")
                shas.append(write_repo(repo, {"workflows/approval.toml": changed}, message=f"approval v{n + 2}"))
                assert eventually(lambda: status(client)["revision"]["sha"] == shas[-1], timeout=5)  # type: ignore[index]
        finally:
            stop.set()
            thread.join()
        assert len(answers) > 20
        assert set(answers) == {202}

        # The waiting run started on v1 and finishes with v1's outputs, not those of the newest revision.
        client.post(f"/api/runs/{waiting_id}/steps/ask/resume", json={"answer": "ok"})
        run = finished(client, waiting_id)
        assert run["revision"] == v1
        assert run["outputs"] == {"answer": "ok"}
        fresh = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
        assert eventually(lambda: client.get(f"/api/runs/{fresh}").json()["status"] == "waiting")
        client.post(f"/api/runs/{fresh}/steps/ask/resume", json={"answer": "ok"})
        assert finished(client, fresh)["outputs"] == {"answer": "ok v4"}


def test_a_run_of_an_older_revision_finishes_with_it_after_a_restart(serve: ServeProcess, repo: Path) -> None:
    write_repo(repo, {"workflows/approval.toml": APPROVAL}, message="approval v1")
    with serve.client() as client:
        assert eventually(lambda: client.get("/api/workflows/approval").status_code == 200, timeout=3)
        waiting_id = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
        assert eventually(lambda: client.get(f"/api/runs/{waiting_id}").json()["status"] == "waiting")
    changed = APPROVAL.replace("steps.after.output }}", "steps.after.output ~ ' v2' }}")
    v2 = write_repo(repo, {"workflows/approval.toml": changed}, message="approval v2")
    serve.stop()
    serve.start()  # deploys v2 only; v1 comes back from the run database when its run continues
    with serve.client() as client:
        assert status(client)["revision"]["sha"] == v2  # type: ignore[index]
        client.post(f"/api/runs/{waiting_id}/steps/ask/resume", json={"answer": "ok"})
        assert finished(client, waiting_id)["outputs"] == {"answer": "ok"}
    assert "loaded stored revision" in serve.output()


def test_serve_on_postgresql_accepts_runs_and_resumes_them_after_a_restart(
    repo: Path, tmp_path: Path, pg_schema_url: str
) -> None:
    write_repo(repo, {"workflows/approval.toml": APPROVAL}, message="approval")
    process = ServeProcess(repo, tmp_path / "state", args=["--db", pg_schema_url]).start()
    try:
        with process.client() as client:
            hello = finished(client, client.post("/hooks/hello", json={"name": "PG"}).json()["run_id"])
            assert hello["outputs"] == {"greeting": "Hello, PG!"}
            waiting_id = client.post("/api/workflows/approval/runs", json={}).json()["run_id"]
            assert eventually(lambda: client.get(f"/api/runs/{waiting_id}").json()["status"] == "waiting")
        process.stop()
        process.start()
        with process.client() as client:
            client.post(f"/api/runs/{waiting_id}/steps/ask/resume", json={"answer": "from postgres"})
            assert finished(client, waiting_id)["outputs"] == {"answer": "from postgres"}
            assert "weir.db" not in {p.name for p in (tmp_path / "state").iterdir()}
    finally:
        process.kill()


NAP = """
[[steps]]
id = "nap"
uses = "sleep"
with = { duration = "1s" }

[[steps]]
id = "after"
uses = "transform"
needs = ["nap"]
with.output = "rested"

[outputs]
result = "{{ steps.after.output }}"
"""


def test_weir_worker_finishes_runs_a_server_accepted(repo: Path, tmp_path: Path, pg_schema_url: str) -> None:
    import subprocess
    import sys

    write_repo(repo, {"workflows/nap.toml": NAP}, message="nap")
    server = ServeProcess(repo, tmp_path / "state", args=["--db", pg_schema_url]).start()
    try:
        with server.client() as client:
            run_ids = [client.post("/api/workflows/nap/runs", json={}).json()["run_id"] for _ in range(3)]
            assert eventually(lambda: all(client.get(f"/api/runs/{r}").json()["status"] == "waiting" for r in run_ids))
    finally:
        assert server.stop() in (0, -15)

    log = (tmp_path / "worker.log").open("wb")
    command = [sys.executable, "-m", "weir", "worker", "--db", pg_schema_url, "--state-dir", str(tmp_path / "w")]
    worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        import psycopg

        def finished_in_db() -> bool:
            with psycopg.connect(pg_schema_url.replace("postgresql+psycopg", "postgresql")) as conn:
                rows = conn.execute("SELECT status, outputs FROM weir_runs").fetchall()
            return len(rows) == 3 and all(status == "succeeded" for status, _ in rows)

        assert eventually(finished_in_db, timeout=15, interval=0.2), (tmp_path / "worker.log").read_text()
    finally:
        worker.terminate()
        assert worker.wait(20) in (0, -15)
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert "worker executing runs of stored revisions" in output
    assert "loaded stored revision" in output
