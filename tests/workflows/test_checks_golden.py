"""Golden tests of ``weir check``: one failing and one passing automation directory per finding code.

``tests/fixtures/checks/<code>/bad/`` must produce exactly the lines of ``expected.txt`` (paths
relative to ``bad/``, in the order the checker sorts them), and ``good/``, its corrected version,
must produce nothing. A few inputs cannot live in git as plain files (a symbolic link, a file over
the size limit); ``RUNTIME`` adds them to a copy of ``bad/`` before the check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from weir.connectors.registry import ConnectorRegistry
from weir.workflows.findings import CODES, Finding
from weir.workflows.project import check_paths

FIXTURES = Path(__file__).parent.parent / "fixtures" / "checks"
CODE_DIRS = sorted(path for path in FIXTURES.iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def registry() -> ConnectorRegistry:
    return ConnectorRegistry()


def _add_oversized_workflow(directory: Path) -> None:
    managers = {f"customer-{n:05d}": f"manager-{n % 97:02d}@example.com" for n in range(25_000)}
    workflow = {
        "description": "Look up the account manager of a customer",
        "steps": [{"id": "lookup", "uses": "transform", "with": {"output": managers}}],
    }
    (directory / "customer-lookup.json").write_text(json.dumps(workflow, indent=2) + "\n", encoding="utf-8")


def _link_workflow_from_outside(directory: Path) -> None:
    outside = directory.parent / "outside"
    outside.mkdir()
    shutil.copy(FIXTURES / "W106" / "good" / "shared" / "escalation.toml", outside / "escalation.toml")
    (directory / "shared").mkdir()
    (directory / "shared" / "escalation.toml").symlink_to(outside / "escalation.toml")


RUNTIME: dict[str, Callable[[Path], None]] = {
    "W100": _add_oversized_workflow,
    "W106": _link_workflow_from_outside,
}


def _bad_dir(code_dir: Path, tmp_path: Path) -> Path:
    hook = RUNTIME.get(code_dir.name)
    if hook is None:
        return code_dir / "bad"
    copy = tmp_path / "bad"
    shutil.copytree(code_dir / "bad", copy)
    hook(copy)
    return copy


def _check(directory: Path, registry: ConnectorRegistry) -> list[Finding]:
    findings, _ = check_paths(["."], registry, cwd=directory)
    return findings


def _expected(code_dir: Path) -> list[str]:
    return (code_dir / "expected.txt").read_text(encoding="utf-8").splitlines()


def test_every_code_has_a_fixture() -> None:
    missing = [code for code in CODES if not (FIXTURES / code / "bad").is_dir()]
    assert missing == [], f"add tests/fixtures/checks/<code>/{{bad,good,expected.txt}} for {missing}"
    unknown = [path.name for path in CODE_DIRS if path.name not in CODES]
    assert unknown == []


@pytest.mark.parametrize("code_dir", CODE_DIRS, ids=[path.name for path in CODE_DIRS])
def test_check_bad_fixture_gives_expected_findings(code_dir: Path, tmp_path: Path, registry: ConnectorRegistry) -> None:
    findings = _check(_bad_dir(code_dir, tmp_path), registry)

    assert [str(f) for f in findings] == _expected(code_dir)
    assert code_dir.name in {f.code for f in findings}


@pytest.mark.parametrize("code_dir", CODE_DIRS, ids=[path.name for path in CODE_DIRS])
def test_check_good_fixture_gives_no_findings(code_dir: Path, registry: ConnectorRegistry) -> None:
    assert [str(f) for f in _check(code_dir / "good", registry)] == []


def test_check_empty_directory_warns_w109(tmp_path: Path, registry: ConnectorRegistry) -> None:
    assert [str(f) for f in _check(tmp_path, registry)] == _expected(FIXTURES / "W109")


# --- the real command line ----------------------------------------------------------------------


def _weir(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weir", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


W203 = FIXTURES / "W203" / "bad"
W203_LINE = "alert-routing.toml:15:10: error W203 step 'notify' needs unknown step 'analyse' (did you mean 'analyze'?)"
W203_MESSAGE = "step 'notify' needs unknown step 'analyse' (did you mean 'analyze'?)"


def test_cli_check_text_format() -> None:
    result = _weir("check", ".", cwd=W203)

    assert (result.returncode, result.stdout) == (1, W203_LINE + "\n")
    assert result.stderr == "2 files checked: 1 error, 0 warnings\n"


def test_cli_check_json_format() -> None:
    result = _weir("check", ".", "--format", "json", cwd=W203)

    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {
            "code": "W203",
            "severity": "error",
            "file": "alert-routing.toml",
            "line": 15,
            "column": 10,
            "message": W203_MESSAGE,
        }
    ]
    assert result.stderr == ""


def test_cli_check_github_format() -> None:
    result = _weir("check", ".", "--format", "github", cwd=W203)

    assert result.returncode == 1
    assert result.stdout == f"::error file=alert-routing.toml,line=15,col=10,title=W203::{W203_MESSAGE}\n"


def test_cli_check_sarif_format() -> None:
    result = _weir("check", ".", "--format", "sarif", cwd=W203)

    assert result.returncode == 1
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].endswith("sarif-2.1.0.json")
    run = sarif["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "weir"
    assert [rule["id"] for rule in driver["rules"]] == ["W203"]
    assert driver["rules"][0]["shortDescription"]["text"] == CODES["W203"]
    assert run["results"] == [
        {
            "ruleId": "W203",
            "ruleIndex": 0,
            "level": "error",
            "message": {"text": W203_MESSAGE},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": "alert-routing.toml"},
                        "region": {"startLine": 15, "startColumn": 10},
                    }
                }
            ],
        }
    ]


def test_cli_check_sarif_without_findings_is_a_valid_empty_run() -> None:
    result = _weir("check", ".", "--format", "sarif", cwd=FIXTURES / "W203" / "good")

    assert result.returncode == 0
    run = json.loads(result.stdout)["runs"][0]
    assert (run["tool"]["driver"]["rules"], run["results"]) == ([], [])


def test_cli_check_good_directory_exits_0() -> None:
    result = _weir("check", ".", cwd=FIXTURES / "W203" / "good")

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "2 files checked, no problems\n")


def test_cli_check_strict_fails_on_warnings_only() -> None:
    directory = FIXTURES / "W303" / "bad"

    assert _weir("check", ".", cwd=directory).returncode == 0
    strict = _weir("check", ".", "--strict", cwd=directory)
    assert strict.returncode == 1
    assert strict.stdout.splitlines() == _expected(FIXTURES / "W303")


def test_cli_check_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = _weir("check", "no-such-dir", cwd=tmp_path)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "weir check: no-such-dir: no such file or directory; pass an automation directory or workflow files\n"
    )


def test_cli_check_file_reports_only_that_file(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "W203" / "bad", tmp_path, dirs_exist_ok=True)
    shutil.copy(FIXTURES / "W402" / "bad" / "nightly-export.toml", tmp_path)

    whole = _weir("check", ".", cwd=tmp_path)
    one = _weir("check", "nightly-export.toml", cwd=tmp_path)

    assert whole.stdout.splitlines() == [W203_LINE, *_expected(FIXTURES / "W402")]
    assert (one.returncode, one.stdout.splitlines()) == (1, _expected(FIXTURES / "W402"))
    assert one.stderr == "1 file checked: 1 error, 0 warnings\n"
