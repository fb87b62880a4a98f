"""``weir runs list|show|cancel|rerun`` as a user runs them, against a real server with an API token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.server import free_port
from tests.helpers import write_repo
from tests.server.serve_process import REPO, ServeProcess, eventually, finished

TOKEN = "runs-cli-token"
FAILURE = re.escape("second failed [on purpose]")

HELLO = """
[params.name]
type = "string"
default = "world"

[[steps]]
id = "greet"
uses = "log"
with = { message = "Hello, {{ params.name }}!" }

[outputs]
greeting = "Hello, {{ params.name }}!"
"""

FLAKY = """
[[steps]]
id = "first"
uses = "transform"
with.output = "done"

[[steps]]
id = "second"
uses = "fail"
needs = ["first"]
with = { message = "second failed [on purpose]" }  # brackets: data, not rich markup
"""

APPROVAL = """
[[steps]]
id = "ask"
uses = "wait"
with = { timeout = "1h" }
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("runs-cli")
    files = {"workflows/hello.toml": HELLO, "workflows/flaky.toml": FLAKY, "workflows/approval.toml": APPROVAL}
    write_repo(root / "automation", files, message="workflows")
    process = ServeProcess(root / "automation", root / "state", args=["--api-token", TOKEN])
    try:
        yield process.start()
    finally:
        process.kill()


@pytest.fixture(scope="module")
def api(serve: ServeProcess) -> Iterator[httpx.Client]:
    with serve.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture(scope="module")
def runs(api: httpx.Client) -> dict[str, str]:
    """One finished run of each kind, oldest first: hello (succeeded), flaky (failed)."""
    hello = api.post("/api/workflows/hello/runs", json={"params": {"name": "Ada"}}).json()["run_id"]
    flaky = api.post("/api/workflows/flaky/runs").json()["run_id"]
    finished(api, hello)
    finished(api, flaky)
    return {"hello": hello, "flaky": flaky}


def weir(
    *args: str, server: ServeProcess | None = None, columns: int = 150, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m weir runs ARGS`` with the server's URL and token in WEIR_SERVER and WEIR_API_TOKEN."""
    environ = {k: v for k, v in os.environ.items() if k not in ("WEIR_SERVER", "WEIR_API_TOKEN")}
    environ.update({"TZ": "UTC", "COLUMNS": str(columns), "NO_COLOR": "1"})
    if server is not None:
        environ.update({"WEIR_SERVER": server.url, "WEIR_API_TOKEN": TOKEN})
    environ.update(env)
    command = [sys.executable, "-m", "weir", "runs", *args]
    return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60, check=False)


def test_runs_list_prints_a_table_newest_first(serve: ServeProcess, runs: dict[str, str]) -> None:
    result = weir("list", server=serve)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "TRIGGER", "CREATED", "DURATION", "ERROR"]
    flaky = next(row for row in rows if row.startswith(runs["flaky"]))
    assert re.fullmatch(
        rf"{runs['flaky']}  flaky +failed +manual +\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ms  {FAILURE}",
        flaky,
    ), flaky
    assert rows.index(flaky) < next(i for i, row in enumerate(rows) if row.startswith(runs["hello"]))
    assert result.stderr == ""


def test_runs_list_is_two_lines_per_run_in_a_narrow_terminal(serve: ServeProcess, runs: dict[str, str]) -> None:
    result = weir("list", "--workflow", "flaky", server=serve, columns=60)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert re.fullmatch(rf"{runs['flaky']}  failed  \d+ms", first), first
    assert re.fullmatch(rf"  flaky  manual  \d\d-\d\d \d\d:\d\d  {FAILURE}", second), second
    assert all(len(line) <= 60 for line in result.stdout.splitlines())


def test_runs_list_filters_pages_and_prints_json(serve: ServeProcess, runs: dict[str, str]) -> None:
    first = weir("list", "--limit", "1", "--json", server=serve)
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert len(page["runs"]) == 1
    assert page["next_cursor"]

    table = weir("list", "--limit", "1", server=serve)
    assert table.stderr == f"more runs: weir runs list --limit 1 --cursor {page['next_cursor']}\n"
    rest = weir("list", "--cursor", page["next_cursor"], "--json", server=serve)
    assert page["runs"][0]["id"] not in {run["id"] for run in json.loads(rest.stdout)["runs"]}

    hello = weir("list", "--workflow", "hello", "--status", "succeeded", server=serve)
    assert [line.split()[0] for line in hello.stdout.splitlines()[1:]] == [runs["hello"]]
    none = weir("list", "--workflow", "nobody", server=serve)
    assert (none.returncode, none.stdout, none.stderr) == (0, "", "no runs (--workflow nobody)\n")

    bad = weir("list", "--limit", "0", server=serve)
    assert bad.returncode == 2
    assert bad.stderr == "weir runs list: limit '0' must be a whole number from 1 to 500\n"


def test_runs_show_prints_the_run_its_steps_and_logs(serve: ServeProcess, runs: dict[str, str]) -> None:
    result = weir("show", runs["hello"], "--logs", server=serve)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {runs['hello']}  succeeded"
    assert "  workflow  hello" in lines
    assert "  trigger   manual by=api" in lines
    assert lines[lines.index("params") + 1] == '  name  "Ada"'
    assert lines[lines.index("outputs") + 1] == '  greeting  "Hello, Ada!"'
    steps = lines.index("steps")
    assert lines[steps + 1].split() == ["STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR", "/", "NOTE"]
    assert re.fullmatch(r"  greet +succeeded +1 +\d+ms", lines[steps + 2]), lines[steps + 2]
    assert "usage  0 input tokens, 0 output tokens" in lines
    assert re.fullmatch(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d info greet Hello, Ada!", lines[-1]), lines[-1]
    assert lines[-2] == "logs"

    failed = weir("show", runs["flaky"], server=serve)
    assert failed.returncode == 0  # showing a failed run works; the run's status is in the output
    assert "  error     second failed [on purpose]" in failed.stdout.splitlines()
    assert re.search(rf"^  second +failed +1 +\d+ms +{FAILURE}$", failed.stdout, re.MULTILINE)
    assert "logs" not in failed.stdout.splitlines()

    as_json = json.loads(weir("show", runs["hello"], "--json", "--logs", server=serve).stdout)
    assert as_json["outputs"] == {"greeting": "Hello, Ada!"}
    assert [line["message"] for line in as_json["logs"]] == ["Hello, Ada!"]

    missing = weir("show", "nope", server=serve)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == "weir runs show: no run with id 'nope'\n"


def test_runs_cancel_a_waiting_run_then_a_finished_one_fails(serve: ServeProcess, api: httpx.Client) -> None:
    waiting = api.post("/api/workflows/approval/runs").json()["run_id"]
    assert eventually(lambda: api.get(f"/api/runs/{waiting}").json()["status"] == "waiting")

    rerun_early = weir("rerun", waiting, server=serve)
    assert rerun_early.returncode == 1
    assert rerun_early.stderr == f"weir runs rerun: run {waiting} is still waiting; rerun it once it has finished\n"

    cancelled = weir("cancel", waiting, server=serve)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout in (f"run {waiting} cancelled\n", f"run {waiting}: cancel requested (it was waiting)\n")
    assert finished(api, waiting)["status"] == "cancelled"

    again = weir("cancel", waiting, server=serve)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == (
        f"weir runs cancel: run {waiting} already cancelled; only queued, running and waiting runs can be cancelled\n"
    )


def test_runs_rerun_prints_the_new_run_id(serve: ServeProcess, api: httpx.Client, runs: dict[str, str]) -> None:
    result = weir("rerun", runs["flaky"], "--from-failed", server=serve)
    assert result.returncode == 0, result.stderr
    new_id = result.stdout.strip()
    assert result.stderr == (
        f"rerun of {runs['flaky']} from the failed steps queued as run {new_id}: weir runs show {new_id}\n"
    )
    rerun = finished(api, new_id)
    assert rerun["rerun_of"] == runs["flaky"]
    assert next(s for s in rerun["steps"] if s["id"] == "first")["note"] == f"reused from run {runs['flaky']}"

    from_start = weir("rerun", runs["hello"], server=serve)
    assert from_start.returncode == 0, from_start.stderr
    assert finished(api, from_start.stdout.strip())["outputs"] == {"greeting": "Hello, Ada!"}


def test_runs_token_from_the_flag_or_the_environment(serve: ServeProcess) -> None:
    missing = weir("list", "--server", serve.url)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        f"weir runs list: weir at {serve.url} requires an API token: pass --token or set WEIR_API_TOKEN\n"
    )
    wrong = weir("list", "--server", serve.url, "--token", "nope")
    assert wrong.returncode == 2
    assert wrong.stderr == (
        f"weir runs list: weir at {serve.url} refused the API token: "
        "pass its --api-token with --token or WEIR_API_TOKEN\n"
    )
    wrong_env = weir("list", "--server", serve.url, WEIR_API_TOKEN="nope")
    assert "refused the API token" in wrong_env.stderr
    assert weir("list", "--server", serve.url, "--token", TOKEN).returncode == 0


def test_runs_unreachable_server_is_an_environment_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = weir("list", "--server", url)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"weir runs list: cannot reach weir at {url}: is `weir serve` running? (pass --server)\n"

    from_env = weir("show", "some-run", WEIR_SERVER=url)
    assert from_env.returncode == 2
    assert f"cannot reach weir at {url}:" in from_env.stderr

    not_a_url = weir("cancel", "some-run", "--server", "localhost:8080")
    assert not_a_url.returncode == 2
    assert not_a_url.stderr == (
        "weir runs cancel: --server 'localhost:8080' is not an http:// or https:// URL, e.g. http://127.0.0.1:8080\n"
    )


def test_runs_help_lists_the_subcommands() -> None:
    result = weir("--help")
    assert result.returncode == 0
    for line in ("list      Runs, newest first", "show      One run:", "cancel    Cancel", "rerun     Run a finished"):
        assert line in result.stdout
    assert "[--server URL]" in weir("list", "--help").stdout
