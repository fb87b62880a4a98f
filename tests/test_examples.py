"""The example automation repository ``workflows/``: it passes the checker, it has a workflow for
each of the 18 patterns, and every script and SQL statement in it is well formed."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from weir.connectors.registry import ConnectorRegistry
from weir.schemas.workflow import Step
from weir.workflows.project import check_paths
from weir.workflows.source import read_directory
from weir.workflows.validation import LoadedWorkflow, validate_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "workflows"

# pattern number (PATTERNS.md) -> the workflows that show it; the first one is the entry point
QUICK_START = "hello"
"""The README's first webhook: no pattern, no secrets, no services."""
PATTERNS: dict[int, list[str]] = {
    1: ["crm-account-sync"],
    2: ["bulk-user-import"],
    3: ["alert-routing"],
    4: ["process-order", "ship-order", "refund-order", "backorder-order", "cancel-order"],
    5: ["customer-360"],
    6: ["daily-sales-export"],
    7: ["payment-options"],
    8: ["product-catalog"],
    9: ["system-audit"],
    10: ["onboard-customer", "data-enrichment", "compliance-check", "provision-account"],
    11: ["document-processing"],
    12: ["order-saga"],
    13: ["event-stats"],
    14: ["refund-approval"],
    15: ["welcome-drip"],
    16: ["github-pr-notify"],
    17: ["search-reindex"],
    18: ["settlement-sync"],
}


@pytest.fixture(scope="module")
def registry() -> ConnectorRegistry:
    return ConnectorRegistry()


@pytest.fixture(scope="module")
def workflows(registry: ConnectorRegistry) -> dict[str, LoadedWorkflow]:
    result = validate_tree(read_directory(EXAMPLES), registry)
    return result.revision.workflows


def _all_steps(loaded: LoadedWorkflow) -> list[Step]:
    return [*loaded.model.steps, *loaded.model.on_failure]


def _script_steps(workflows: dict[str, LoadedWorkflow]) -> list[tuple[str, str, str]]:
    """(workflow, lang, file) of every script step that runs a file."""
    found = []
    for name, loaded in sorted(workflows.items()):
        for step in _all_steps(loaded):
            bodies = [step] + ([step.compensate] if step.compensate else [])
            for body in bodies:
                if body.uses == "script" and "file" in body.with_:
                    found.append((name, body.with_["lang"], body.with_["file"]))
    return found


# --- the checker ---------------------------------------------------------------------------------


def test_examples_pass_the_checker(registry: ConnectorRegistry, workflows: dict[str, LoadedWorkflow]) -> None:
    findings, files = check_paths([str(EXAMPLES)], registry, cwd=ROOT)

    assert [str(f) for f in findings] == []
    assert files == len(workflows) + 1  # every workflow file and weir.toml


def test_checker_accepts_compensations_reading_their_own_step(registry: ConnectorRegistry) -> None:
    findings, _ = check_paths([str(EXAMPLES / "orders" / "order-saga.toml")], registry, cwd=ROOT)

    assert [str(f) for f in findings] == []


# --- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "names"), PATTERNS.items(), ids=[f"pattern-{n}" for n in PATTERNS])
def test_examples_show_pattern(number: int, names: list[str], workflows: dict[str, LoadedWorkflow]) -> None:
    missing = [name for name in names if name not in workflows]
    assert missing == [], f"pattern {number}: workflows {missing} did not load"
    entry = workflows[names[0]].model
    assert entry.description is not None
    assert f"Pattern {number} " in entry.description


def test_examples_every_workflow_belongs_to_a_pattern(workflows: dict[str, LoadedWorkflow]) -> None:
    listed = {name for names in PATTERNS.values() for name in names}

    assert sorted(set(workflows) - listed - {QUICK_START}) == []
    for name, loaded in workflows.items():
        if name == QUICK_START:
            continue
        assert loaded.model.description, f"{name} has no description"
        assert "Pattern " in loaded.model.description, f"{name} does not say which pattern it shows"


def test_examples_show_both_file_formats(workflows: dict[str, LoadedWorkflow]) -> None:
    formats = [PurePosixPath(loaded.relpath).suffix for loaded in workflows.values()]

    assert formats.count(".json") >= 2
    assert formats.count(".toml") >= 2


def test_examples_point_editors_at_the_schema(workflows: dict[str, LoadedWorkflow]) -> None:
    for loaded in workflows.values():
        path = EXAMPLES / loaded.relpath
        up = "../" * (len(PurePosixPath(loaded.relpath).parts))  # to the repository root
        expected = f"{up}schemas/workflow.schema.json"
        if path.suffix == ".json":
            assert json.loads(path.read_text(encoding="utf-8"))["$schema"] == expected, loaded.relpath
        else:
            assert path.read_text(encoding="utf-8").splitlines()[0] == f"#:schema {expected}", loaded.relpath
        assert (ROOT / "workflows" / PurePosixPath(loaded.relpath).parent / expected).resolve() == (
            ROOT / "schemas" / "workflow.schema.json"
        )


# --- scripts -------------------------------------------------------------------------------------


def test_examples_script_files_exist(workflows: dict[str, LoadedWorkflow]) -> None:
    scripts = _script_steps(workflows)

    assert {lang for _, lang, _ in scripts} == {"python", "bash", "node", "pwsh"}
    for name, _, file in scripts:
        assert (EXAMPLES / file).is_file(), f"{name}: script {file} does not exist"


def _scripts_of(lang: str) -> list[str]:
    result = validate_tree(read_directory(EXAMPLES), ConnectorRegistry())
    return sorted({file for _, script_lang, file in _script_steps(result.revision.workflows) if script_lang == lang})


@pytest.mark.parametrize("file", _scripts_of("python"))
def test_examples_python_script_compiles(file: str) -> None:
    path = EXAMPLES / file

    compile(path.read_text(encoding="utf-8"), str(path), "exec")


@pytest.mark.parametrize("file", _scripts_of("bash"))
def test_examples_bash_script_parses(file: str) -> None:
    result = subprocess.run(["bash", "-n", str(EXAMPLES / file)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("file", _scripts_of("node"))
def test_examples_node_script_parses(file: str) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    result = subprocess.run(["node", "--check", str(EXAMPLES / file)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("file", _scripts_of("pwsh"))
def test_examples_powershell_script_parses(file: str) -> None:
    if shutil.which("pwsh") is None:
        pytest.skip("pwsh is not installed")
    command = (
        "$errors = $null; "
        "[System.Management.Automation.Language.Parser]::ParseFile($args[0], [ref]$null, [ref]$errors) | Out-Null; "
        "if ($errors) { $errors | ForEach-Object { Write-Error $_.Message }; exit 1 }"
    )
    result = subprocess.run(
        ["pwsh", "-NoProfile", "-NonInteractive", "-Command", command, str(EXAMPLES / file)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


# --- SQL -----------------------------------------------------------------------------------------


def test_examples_sql_prepares_against_the_warehouse_tables(workflows: dict[str, LoadedWorkflow]) -> None:
    db = sqlite3.connect(":memory:")
    db.executescript((EXAMPLES / "sql" / "warehouse.sql").read_text(encoding="utf-8"))
    statements = 0
    for name, loaded in sorted(workflows.items()):
        for step in _all_steps(loaded):
            if not step.uses.startswith("db."):
                continue
            sql = step.with_["sql"]
            placeholders = set(re.findall(r"(?<!:):([A-Za-z_]\w*)", sql))
            try:
                db.execute(f"EXPLAIN {sql}", dict.fromkeys(placeholders))
            except sqlite3.Error as exc:
                pytest.fail(f"{name}, step '{step.id}': {exc}")
            statements += 1

    assert statements >= 20


def test_examples_sql_binds_every_placeholder(workflows: dict[str, LoadedWorkflow]) -> None:
    for name, loaded in sorted(workflows.items()):
        for step in _all_steps(loaded):
            params = step.with_.get("params") if step.uses.startswith("db.") else None
            if not isinstance(params, dict):
                continue  # `many` from a template: its keys are known only at run time
            placeholders = set(re.findall(r"(?<!:):([A-Za-z_]\w*)", step.with_["sql"]))
            assert placeholders == set(params), f"{name}, step '{step.id}'"
