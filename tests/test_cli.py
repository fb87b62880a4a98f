"""The `weir` command as a user runs it: exit codes, stdout for results, stderr for messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def weir(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weir", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=60
    )


def test_cli_version() -> None:
    result = weir("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("weir ")


def test_cli_unknown_command_is_a_usage_error() -> None:
    result = weir("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_cli_schema_prints_both_schemas() -> None:
    result = weir("schema")
    assert result.returncode == 0
    schemas = json.loads(result.stdout)
    assert sorted(schemas) == ["repo.schema.json", "workflow.schema.json"]
    assert schemas["workflow.schema.json"]["title"] == "weir workflow file (version 1)"


def test_cli_schema_writes_files(tmp_path: Path) -> None:
    result = weir("schema", "--out", str(tmp_path / "out"))
    assert result.returncode == 0
    assert (tmp_path / "out" / "workflow.schema.json").read_text() == (
        ROOT / "schemas/workflow.schema.json"
    ).read_text()
    assert f"wrote {tmp_path / 'out' / 'repo.schema.json'}" in result.stderr


def test_cli_connectors_lists_builtins_and_connectors() -> None:
    result = weir("connectors")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "built-in actions (no connection):"
    for uses in ("slack.post_message", "pagerduty.event", "llm.chat", "transform", "script"):
        assert any(line.strip().startswith(uses + " ") for line in lines), uses


def test_cli_connectors_shows_one_connector_with_inputs() -> None:
    result = weir("connectors", "slack")
    assert result.returncode == 0, result.stderr
    assert "connection settings:" in result.stdout
    assert "      channel:" in result.stdout


def test_cli_connectors_json_has_input_schemas() -> None:
    result = weir("connectors", "pagerduty", "--json")
    catalog = json.loads(result.stdout)
    schema = catalog["connectors"]["pagerduty"]["actions"]["event"]["input_schema"]
    assert "summary" in schema["properties"]


def test_cli_connectors_unknown_name_suggests() -> None:
    result = weir("connectors", "slak")
    assert result.returncode == 2
    assert "no connector or built-in action named 'slak' (did you mean 'slack'?)" in result.stdout


def test_cli_init_scaffolds_a_repo_that_passes_check(tmp_path: Path) -> None:
    target = tmp_path / "automation"
    result = weir("init", str(target))
    assert result.returncode == 0, result.stderr
    for rel in (
        "workflows/weir.toml",
        "workflows/hello.toml",
        ".github/workflows/weir-check.yml",
        ".pre-commit-config.yaml",
        "schemas/workflow.schema.json",
    ):
        assert (target / rel).is_file(), rel
    assert (target / ".git").is_dir()
    check = weir("check", "--strict", cwd=target)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stderr.strip() == "2 files checked, no problems"


def test_cli_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert weir("init", str(tmp_path)).returncode == 0
    again = weir("init", str(tmp_path))
    assert again.returncode == 2
    assert "workflows/weir.toml" in again.stderr
    assert "already exist" in again.stderr


def test_docs_list_every_finding_code() -> None:
    from weir.workflows.findings import CODES

    text = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
    missing = [code for code in CODES if f"| {code} |" not in text]
    assert missing == [], "document these codes in docs/checks.md"
