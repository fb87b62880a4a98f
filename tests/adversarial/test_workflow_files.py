"""Hostile automation directories: links and paths that leave it, parser bombs, huge files and graphs.

``weir check`` (through the CLI's Python entry, in this process) must answer each with its exact
finding, quickly, and never crash; a real ``weir serve`` following a Git repository must reject the
same commits while it keeps serving the last good revision, and must survive a commit that deletes
the workflows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually
from weir.cli import main as weir

LOG_STEP = '[[steps]]\nid = "only"\nuses = "log"\nwith = { message = "hi" }\n'
HELLO = 'name = "hello"\n\n[[on.webhook]]\npath = "hello"\nauth = { type = "none" }\n\n' + LOG_STEP
TOO_DEEP = "W105 document is nested more than 64 levels deep; flatten the data or move it into a separate file"
LINKED = (
    "error W106 {name} is a symbolic link; workflow files must be regular files inside the automation directory: "
    "replace the link with a copy of the file"
)


def check(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    """``weir check .`` in ``directory``: the exit code and the finding lines."""
    monkeypatch.chdir(directory)
    code = weir(["check", "."])
    return code, capsys.readouterr().out.splitlines()


def script_step(file: str) -> str:
    return '[[steps]]\nid = "run"\nuses = "script"\nwith = { lang = "python", file = \'' + file + "' }\n"


@pytest.fixture
def automation(tmp_path: Path) -> Path:
    """An automation directory with one good workflow, next to a folder outside it."""
    directory = tmp_path / "automation"
    directory.mkdir()
    (directory / "hello.toml").write_text(HELLO, encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.toml").write_text(HELLO.replace("hello", "evil"), encoding="utf-8")
    (outside / "steal.py").write_text("print(open('/etc/hostname').read())\n", encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    ("link", "target"),
    [("evil.toml", "../outside/evil.toml"), ("passwd.json", "/etc/passwd"), ("nested/deeper/evil.toml", "/etc")],
    ids=["relative-link-leaving", "absolute-link-to-etc-passwd", "link-in-a-subfolder"],
)
def test_check_rejects_a_workflow_file_that_is_a_symbolic_link(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], link: str, target: str
) -> None:
    path = automation / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    code, lines = check(automation, monkeypatch, capsys)
    assert code == 1
    assert lines == [f"{link}: " + LINKED.format(name=link)]


def test_check_reports_a_linked_folder_instead_of_skipping_it_silently(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (automation / "shared").symlink_to(automation.parent / "outside")
    _code, lines = check(automation, monkeypatch, capsys)
    assert any(line.startswith("shared: ") and " W106 " in line for line in lines), lines


def test_check_rejects_a_script_file_that_is_a_symbolic_link(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (automation / "scripts").mkdir()
    (automation / "scripts" / "run.py").symlink_to(automation.parent / "outside" / "steal.py")
    (automation / "job.toml").write_text(script_step("scripts/run.py"), encoding="utf-8")
    code, lines = check(automation, monkeypatch, capsys)
    assert code == 1
    # Git cannot tell a linked file from a linked folder, so every link is reported where it is, and the step
    # that uses it is reported too.
    assert lines == [
        "job.toml:4:27: error W106 script file 'scripts/run.py' is a symbolic link; "
        "scripts must be regular files inside the automation directory",
        "scripts/run.py: error W106 scripts/run.py is a symbolic link; workflow files must be regular files inside "
        "the automation directory: replace the link with a copy of the file",
    ]


@pytest.mark.parametrize(
    "file",
    ["../outside/steal.py", "/etc/passwd", "scripts/../../outside/steal.py", "..\\outside\\steal.py", "C:/steal.py"],
    ids=["parent", "absolute", "climbing-back-out", "backslashes", "drive-letter"],
)
def test_check_rejects_a_script_path_that_leaves_the_directory(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], file: str
) -> None:
    (automation / "job.toml").write_text(script_step(file), encoding="utf-8")
    code, lines = check(automation, monkeypatch, capsys)
    assert code == 1
    assert lines == [
        f"job.toml:4:27: error W504 script file '{file}' is outside the automation directory; "
        "scripts must live inside it (paths are relative to it)"
    ]


BOMBS = {
    "toml-100000-nested-arrays": (
        "bomb.toml",
        "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
        f"bomb.toml:1:1: error {TOO_DEEP}",
    ),
    "toml-70-nested-inline-tables": (
        "bomb.toml",
        "a = " + "{b = " * 70 + "1" + "}" * 70 + "\n",
        f"bomb.toml:1:316: error {TOO_DEEP}",
    ),
    "json-100000-nested-arrays": (
        "bomb.json",
        '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
        f"bomb.json:1:1: error {TOO_DEEP}",
    ),
    "toml-2-mib-string": (
        "bomb.toml",
        'description = "' + "x" * (2 * 1024 * 1024) + '"\n',
        "bomb.toml:1:1: error W100 file is 2.0 MiB (2097169 bytes); workflow files may be at most 1 MiB: "
        "split it into several workflows or move data out of it",
    ),
    "json-1.5-mib-array": (
        "bomb.json",
        '{"tags": [' + ",".join(['"xxxxxxxxxx"'] * 120_000) + "]}",
        "bomb.json:1:1: error W100 file is 1.5 MiB (1560011 bytes); workflow files may be at most 1 MiB: "
        "split it into several workflows or move data out of it",
    ),
    "toml-integer-of-5000-digits": (
        "bomb.toml",
        LOG_STEP + "retry = { attempts = " + "9" * 5000 + " }\n",
        "bomb.toml:5:22: error W201 a number has more than 4300 digits, more than weir reads; write it as a string",
    ),
    "workflow-name-climbing-out": (
        "bomb.toml",
        'name = "../../etc"\n' + LOG_STEP,
        "bomb.toml:1:1: error W201 key 'name' in the file is '../../etc', which does not match "
        "^[a-z0-9][a-z0-9_-]{0,62}$ (lowercase letters, digits, - and _, starting with a letter or digit, "
        "at most 63 characters)",
    ),
    "webhook-path-climbing-into-the-api": (
        "bomb.toml",
        '[[on.webhook]]\npath = "../api/sync"\nauth = { type = "none" }\n' + LOG_STEP,
        "bomb.toml:2:1: error W201 key 'path' in webhook '../api/sync' is '../api/sync', which does not match "
        "^[A-Za-z0-9/_-]+$ (letters, digits, /, _ and -)",
    ),
}


@pytest.mark.parametrize(("name", "text", "finding"), list(BOMBS.values()), ids=list(BOMBS))
def test_check_answers_a_parser_bomb_with_one_finding_quickly(
    automation: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    finding: str,
) -> None:
    (automation / name).write_text(text, encoding="utf-8")
    started = time.perf_counter()
    code, lines = check(automation, monkeypatch, capsys)
    assert time.perf_counter() - started < 5
    assert code == 1
    assert lines == [finding]


def test_check_accepts_a_file_just_under_the_size_limit(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = 'description = "' + "x" * 1_000_000 + '"\n' + LOG_STEP
    (automation / "nearly.toml").write_text(text, encoding="utf-8")
    assert check(automation, monkeypatch, capsys) == (0, [])


def steps(count: int, *, cycle: bool) -> str:
    parts = []
    for i in range(count):
        needs = f'needs = ["s{(i - 1) % count}"]\n' if i or cycle else ""
        parts.append(f'[[steps]]\nid = "s{i}"\nuses = "log"\n{needs}with = {{ message = "{i}" }}\n')
    return "\n".join(parts)


def test_check_handles_a_chain_of_three_thousand_steps(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (automation / "chain.toml").write_text(steps(3000, cycle=False), encoding="utf-8")
    started = time.perf_counter()
    assert check(automation, monkeypatch, capsys) == (0, [])
    assert time.perf_counter() - started < 10


def test_check_reports_a_cycle_through_three_thousand_steps(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (automation / "cycle.toml").write_text(steps(3000, cycle=True), encoding="utf-8")
    started = time.perf_counter()
    code, lines = check(automation, monkeypatch, capsys)
    assert time.perf_counter() - started < 10
    assert code == 1
    assert len(lines) == 1
    path = " -> ".join(["s0", *(f"s{i}" for i in range(2999, 0, -1)), "s0"])
    assert (
        lines[0]
        == f"cycle.toml:4:1: error W204 steps depend on each other in a cycle: {path}; remove one of these needs"
    )


def test_check_refuses_a_webhook_on_the_reserved_push_path(
    automation: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (automation / "push.toml").write_text('[[on.webhook]]\npath = "_git"\nauth = { type = "none" }\n' + LOG_STEP)
    code, lines = check(automation, monkeypatch, capsys)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("push.toml:2:1: error W403 ")


# -- a real server following a repository that receives hostile commits ------------------------------------


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Path]]:
    base = tmp_path_factory.mktemp("followed")
    repo = base / "automation"
    write_repo(repo, {"workflows/hello.toml": HELLO, "workflows/weir.toml": ""}, message="hello")
    (base / "outside").mkdir()
    (base / "outside" / "evil.toml").write_text(HELLO.replace("hello", "evil"), encoding="utf-8")
    process = ServeProcess(repo, base / "state")
    try:
        yield process.start(), repo
    finally:
        process.kill()


def status(client: httpx.Client) -> dict[str, object]:
    return client.get("/api/status").json()  # type: ignore[no-any-return]


def applied(client: httpx.Client, sha: str) -> bool:
    return status(client)["revision"]["sha"] == sha  # type: ignore[index]


def restore(repo: Path, client: httpx.Client) -> None:
    """Commit the good state again and wait until it is applied."""
    sha = write_repo(repo, {"workflows/hello.toml": HELLO, "workflows/weir.toml": ""}, message="restore")
    assert eventually(lambda: applied(client, sha), timeout=10), status(client)


@pytest.mark.parametrize(
    ("files", "finding"),
    [
        ({"workflows/evil.toml": "link"}, "W106"),
        ({"workflows/bomb.toml": "a = " + "[" * 100_000 + "]" * 100_000 + "\n"}, "W105"),
        ({"workflows/huge.toml": 'description = "' + "x" * (2 * 1024 * 1024) + '"\n'}, "W100"),
    ],
    ids=["link-leaving-the-directory", "nesting-bomb", "two-mib-file"],
)
def test_serve_rejects_a_hostile_commit_and_keeps_serving_the_last_good_revision(
    followed: tuple[ServeProcess, Path], files: dict[str, str], finding: str
) -> None:
    server, repo = followed
    with server.client() as client:
        good = status(client)["revision"]["sha"]  # type: ignore[index]
        for relpath, text in files.items():
            if text == "link":
                (repo / relpath).symlink_to(repo.parent / "outside" / "evil.toml")
                files = {}
        bad = write_repo(repo, files, message="hostile")
        rejected = eventually(lambda: (status(client)["rejected"] or {}).get("sha") == bad, timeout=10)
        assert rejected, status(client)
        report = status(client)
        assert report["revision"]["sha"] == good  # type: ignore[index]
        assert [f["code"] for f in report["rejected"]["findings"]] == [finding]  # type: ignore[index]
        assert client.post("/hooks/hello").status_code == 202
        assert client.post("/hooks/evil").status_code == 404
        for relpath in ("workflows/evil.toml", "workflows/bomb.toml", "workflows/huge.toml"):
            if (repo / relpath).is_symlink() or (repo / relpath).exists():
                os.unlink(repo / relpath)
        restore(repo, client)


def test_serve_keeps_the_last_good_revision_when_a_commit_deletes_the_whole_directory(
    followed: tuple[ServeProcess, Path],
) -> None:
    server, repo = followed
    with server.client() as client:
        good = status(client)["revision"]["sha"]  # type: ignore[index]
        gone = write_repo(repo, {"workflows/hello.toml": None, "workflows/weir.toml": None}, message="delete all")

        def sync_error() -> str | None:
            return status(client)["sync"]["error"]  # type: ignore[index,no-any-return]

        error = eventually(sync_error, timeout=10)
        assert error == (
            f"directory 'workflows' does not exist in {gone} ({gone[:7]}) of {repo}; "
            "commit the automation directory or pass the right --path"
        )
        assert status(client)["revision"]["sha"] == good  # type: ignore[index]
        assert client.post("/hooks/hello").status_code == 202
        restore(repo, client)
        assert status(client)["sync"]["error"] is None  # type: ignore[index]


def test_serve_applies_a_commit_that_deletes_every_workflow_and_says_so(followed: tuple[ServeProcess, Path]) -> None:
    server, repo = followed
    with server.client() as client:
        empty = write_repo(repo, {"workflows/hello.toml": None}, message="delete the workflows, keep weir.toml")
        assert eventually(lambda: applied(client, empty), timeout=10), status(client)
        revision = status(client)["revision"]
        assert revision["workflows"] == 0  # type: ignore[index]
        assert revision["warnings"] == [  # type: ignore[index]
            {
                "code": "W109",
                "severity": "warning",
                "file": "workflows",
                "line": 0,
                "column": 0,
                "message": "no workflow files (*.toml, *.json) found; add one, or name the directory that holds them "
                "(weir check DIR, weir serve --path DIR)",
            }
        ]
        gone = client.post("/hooks/hello")
        assert gone.status_code == 404
        assert gone.json()["error"]["message"] == "no webhook at /hooks/hello"
        restore(repo, client)
        assert client.post("/hooks/hello").status_code == 202
