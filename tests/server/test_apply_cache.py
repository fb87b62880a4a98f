"""Applying a revision reuses what the one before it already read, parsed and scheduled.

A real ``weir serve`` follows a real Git repository: each commit it applies or rejects is
reported exactly as ``weir check`` reports the same files, whatever it took from its caches, and
its log says how many files it parsed and checked. In process: the Git object cache reads only
what a commit changed, and the scheduler keeps the jobs of unchanged schedules as they were.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually
from tests.workflows.test_validation_cache import NOTIFY
from weir.server.gitsync import ObjectCache, read_commit_tree
from weir.server.metrics import Metrics
from weir.server.schedules import Scheduler
from weir.testing import Harness

CONFIG = """\
[connections.warehouse]
type = "db"
url = "sqlite://"
"""

REPORT = """\
description = "Daily report"

[[on.webhook]]
path = "report"
auth = { type = "none" }

[[on.schedule]]
cron = "0 6 * * *"
timezone = "Europe/Berlin"

[[steps]]
id = "count"
uses = "db.query"
connection = "warehouse"
with = { sql = "select count(*) as n from alerts" }

[[steps]]
id = "notify"
uses = "workflow"
needs = ["count"]
with = { workflow = "notify-team", params = { team = "ops" } }
"""


def hello(message: str) -> str:
    return f"""\
[[on.webhook]]
path = "hello"
auth = {{ type = "none" }}

[[steps]]
id = "hello"
uses = "log"
with = {{ message = "{message}" }}
"""


FILES: dict[str, str | None] = {
    "workflows/weir.toml": CONFIG,
    "workflows/report.toml": REPORT,
    "workflows/notify-team.toml": NOTIFY,
    "workflows/team/hello.toml": hello("hi"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServeProcess]]:
    root = tmp_path_factory.mktemp("apply-cache")
    repo = root / "repo"
    write_repo(repo, FILES, message="first")
    process = ServeProcess(repo, root / "state").start()
    try:
        yield repo, process
    finally:
        process.stop()


def commit(served: tuple[Path, ServeProcess], files: dict[str, str | None]) -> tuple[str, dict[str, Any]]:
    """Commit ``files`` over the base set, sync with ``POST /api/sync``; the sha and ``/api/status`` once it is seen."""
    repo, process = served
    extra = {
        f"workflows/{path.relative_to(repo / 'workflows').as_posix()}": None
        for path in (repo / "workflows").rglob("*.toml")
        if f"workflows/{path.relative_to(repo / 'workflows').as_posix()}" not in {**FILES, **files}
    }
    wanted = {**FILES, **extra, **files}
    sha = write_repo(repo, {path: text for path, text in wanted.items() if text is not None or (repo / path).exists()})
    with process.client() as client:
        assert client.post("/api/sync").status_code == 200

        def seen() -> dict[str, Any] | None:
            status: dict[str, Any] = client.get("/api/status").json()
            shas = (status["revision"]["sha"], (status["rejected"] or {}).get("sha"))
            return status if sha in shas else None

        status = eventually(seen, timeout=10)
    assert status, f"revision {sha} was neither applied nor rejected:\n{process.output()}"
    return sha, status


def weir_check(repo: Path) -> list[dict[str, Any]]:
    """``weir check --format json workflows`` run in the repository: what the commit's files give without a server."""
    result = subprocess.run(
        [sys.executable, "-m", "weir", "check", "--format", "json", "workflows"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def applied_line(process: ServeProcess, sha: str) -> str:
    lines = [line for line in process.log.read_text().splitlines() if f"revision {sha[:12]} applied" in line]
    assert len(lines) == 1, process.output()
    return lines[0].split(" applied: ", 1)[1]


def test_a_weir_toml_change_rejects_a_commit_for_a_workflow_file_it_did_not_touch(
    served: tuple[Path, ServeProcess],
) -> None:
    repo, process = served
    good, _status = commit(served, {})

    sha, status = commit(
        served, {"workflows/weir.toml": CONFIG.replace("[connections.warehouse]", "[connections.dwh]")}
    )

    assert status["revision"]["sha"] == good  # the last good revision keeps serving
    assert status["rejected"]["sha"] == sha
    assert status["rejected"]["findings"] == [
        {
            "code": "W210",
            "severity": "error",
            "file": "workflows/report.toml",
            "line": 14,
            "column": 1,
            "message": "unknown connection 'warehouse'; connections are defined in weir.toml (dwh)",
        }
    ]
    assert status["rejected"]["findings"] == weir_check(repo)

    fixed, status = commit(served, {})
    assert status["revision"]["sha"] == fixed
    assert applied_line(process, fixed) == "3 workflow(s) (0 file(s) parsed, 3 workflow(s) checked, 0 unchanged)"


def test_a_commit_that_changes_one_file_parses_and_checks_that_file_alone(served: tuple[Path, ServeProcess]) -> None:
    _repo, process = served
    commit(served, {})

    sha, status = commit(served, {"workflows/team/hello.toml": hello("changed")})

    assert status["revision"]["sha"] == sha
    assert applied_line(process, sha) == "3 workflow(s) (1 file(s) parsed, 1 workflow(s) checked, 2 unchanged)"
    with process.client() as client:
        assert client.post("/hooks/hello").status_code == 202
        assert client.post("/hooks/report").status_code == 202


def test_every_revision_is_reported_as_weir_check_reports_its_files(served: tuple[Path, ServeProcess]) -> None:
    repo, _process = served
    steps: list[dict[str, str | None]] = [
        {"workflows/team/hello.toml": hello("{{ params.who }}")},  # an error in one file
        {"workflows/notify-team.toml": None, "workflows/notify-teams.toml": NOTIFY},  # a rename breaks its caller
        {"workflows/notify-team.toml": None},  # a deletion
        {"workflows/notify-team.toml": NOTIFY.replace('type = "string"', 'type = "integer"')},  # an added file
        {"workflows/team/copy.toml": 'name = "report"\n' + hello("copy")},  # a second workflow named report
        {"workflows/team/other.toml": hello("other")},  # a second workflow on the webhook path hello
        {},  # all fixed
    ]
    codes = []
    for files in steps:
        sha, status = commit(served, files)
        expected = weir_check(repo)
        if status["revision"]["sha"] == sha:
            assert status["revision"]["warnings"] == expected
            codes.append([])
        else:
            assert status["rejected"]["sha"] == sha
            assert status["rejected"]["findings"] == expected
            codes.append([finding["code"] for finding in expected])
    assert codes == [["W301"], ["W208"], ["W208"], ["W213"], ["W206"], ["W207"], []]


# --- in process -------------------------------------------------------------------------------


def test_reading_a_commit_reads_only_the_trees_and_blobs_it_changed(tmp_path: Path) -> None:
    files: dict[str, str | None] = {f"workflows/team{n}/hello-{n}.toml": hello(str(n)) for n in range(5)}
    write_repo(tmp_path, {**files, "README.md": "not read"})
    cache = ObjectCache()
    first = read_commit_tree(tmp_path, "HEAD", "workflows", cache=cache)
    assert {path: entry.load() for path, entry in first.entries.items()} == {
        path.removeprefix("workflows/"): str(text).encode() for path, text in files.items()
    }
    assert (cache.tree_reads, cache.blob_reads) == (6, 5)

    write_repo(tmp_path, {"workflows/team3/hello-3.toml": hello("three"), "workflows/team4/hello-4.toml": None})
    tree = read_commit_tree(tmp_path, "HEAD", "workflows", cache=cache)
    assert tree.entries["team3/hello-3.toml"].load() == hello("three").encode()
    assert tree.entries["team1/hello-1.toml"].load() == hello("1").encode()
    assert "team4/hello-4.toml" not in tree.entries
    assert (cache.tree_reads, cache.blob_reads) == (6 + 2, 5 + 1)  # workflows/ and team3/; the new blob
    assert len(cache) == 5 + 4  # what this commit holds: five trees, four blobs; the rest was dropped


SCHEDULED = """\
[[on.schedule]]
cron = "{cron}"
timezone = "Europe/Berlin"
params = {{ source = "{source}" }}

[params.source]
type = "string"

[[steps]]
id = "tick"
uses = "log"
with = {{ message = "{{{{ params.source }}}}" }}
"""


@pytest.mark.anyio
async def test_a_revision_changing_one_schedule_replaces_that_job_and_keeps_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept, changed = "a#0|*/10 * * * *|Europe/Berlin", "b#0|0 3 * * *|Europe/Berlin"
    async with Harness(tmp_path) as harness:
        harness.deploy(
            {
                "a.toml": SCHEDULED.format(cron="*/10 * * * *", source="one"),
                "b.toml": SCHEDULED.format(cron="0 3 * * *", source="one"),
            }
        )
        scheduler = Scheduler(harness.engine, Metrics())
        scheduler.start()
        try:
            await scheduler.apply(harness.engine.deployment().revision)
            trigger, next_fire = scheduler.entries[kept].parsed, scheduler.next_fire_time(kept)
            assert next_fire is not None

            harness.deploy(
                {
                    "a.toml": SCHEDULED.format(cron="*/10 * * * *", source="two"),
                    "b.toml": SCHEDULED.format(cron="0 4 * * *", source="two"),
                }
            )
            with caplog.at_level(logging.INFO, logger="weir.schedules"):
                await scheduler.apply(harness.engine.deployment().revision)
            assert scheduler.next_fire_time(kept) == next_fire
        finally:
            await scheduler.stop()

    assert sorted(scheduler.entries) == [kept, "b#0|0 4 * * *|Europe/Berlin"]
    assert scheduler.entries[kept].parsed is trigger  # not parsed again
    assert scheduler.entries[kept].schedule.params == {"source": "two"}  # the next fire uses the new params
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(" (")[0] for m in messages] == [f"schedule removed: {changed}", "schedule added: b"]


@pytest.mark.parametrize(
    ("path", "wakes"),
    [
        ("refs/heads/main", True),
        ("refs/heads/team/feature", True),
        ("refs/remotes/origin/main", True),
        ("HEAD", True),
        ("packed-refs", True),
        ("refs/heads/main.lock", False),
        ("index", False),
        ("COMMIT_EDITMSG", False),
        ("objects/ab/cdef0123", False),
        ("logs/refs/heads/main", False),
    ],
)
def test_the_repository_watcher_wakes_for_what_can_move_a_branch(tmp_path: Path, path: str, wakes: bool) -> None:
    from weir.server.follower import _ref_changes

    assert _ref_changes(None, str(tmp_path / "repo" / ".git" / path)) is wakes
