"""`weir run`: one workflow, in-process, outputs as the last line of stdout, progress on stderr."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import weir
from weir.testing import write_files

ORDER = """
[params.quantity]
type = "integer"
required = true

[params.sku]
type = "string"
default = "A-1"

[[steps]]
id = "price"
uses = "transform"
with.output = { total = "{{ params.quantity * 3 }}" }

[[steps]]
id = "note"
uses = "log"
needs = ["price"]
with = { message = "{{ params.quantity }} x {{ params.sku }} = {{ steps.price.output.total }}" }

[outputs]
total = "{{ steps.price.output.total }}"
sku = "{{ params.sku }}"
"""

BROKEN = """
[[steps]]
id = "first"
uses = "transform"
with.output = 1

[[steps]]
id = "boom"
uses = "fail"
needs = ["first"]
with = { message = "stock is empty" }

[[steps]]
id = "after"
uses = "transform"
needs = ["boom"]
with.output = 2
"""


def make(tmp_path: Path) -> Path:
    write_files(tmp_path / "workflows", {"order.toml": ORDER, "broken.toml": BROKEN})
    return tmp_path / "workflows"


def test_run_prints_outputs_as_last_stdout_line_and_progress_on_stderr(tmp_path: Path) -> None:
    directory = make(tmp_path)
    result = weir("run", "order", "-p", "quantity=4", "--path", str(directory))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"total": 12, "sku": "A-1"}
    assert "✓ price" in result.stderr
    assert "4 x A-1 = 12" in result.stderr
    assert " succeeded" in result.stderr


def test_run_params_file_and_p_override(tmp_path: Path) -> None:
    directory = make(tmp_path)
    params = tmp_path / "params.toml"
    params.write_text('quantity = 1\nsku = "B-2"\n')
    result = weir("run", "order", "--params-file", str(params), "-p", "quantity=5", "--path", str(directory))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"total": 15, "sku": "B-2"}


def test_run_failure_exits_1_with_the_failing_step_error(tmp_path: Path) -> None:
    directory = make(tmp_path)
    result = weir("run", "broken", "--path", str(directory))
    assert result.returncode == 1
    assert "✗ boom" in result.stderr
    assert "failed: stock is empty" in result.stderr
    assert "↷ after" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_run_bad_params_name_each_param(tmp_path: Path) -> None:
    directory = make(tmp_path)
    result = weir("run", "order", "-p", "quantity=many", "-p", "colour=red", "--path", str(directory))
    assert result.returncode == 2
    assert "param 'quantity' is not of type integer ('many')" in result.stderr
    assert "param 'colour' is not declared" in result.stderr
    assert result.stdout == ""


def test_run_unknown_workflow_suggests_a_name(tmp_path: Path) -> None:
    directory = make(tmp_path)
    result = weir("run", "ordr", "--path", str(directory))
    assert result.returncode == 2
    assert "no workflow named 'ordr'" in result.stderr
    assert "did you mean 'order'?" in result.stderr


def test_run_refuses_invalid_files_with_findings(tmp_path: Path) -> None:
    directory = make(tmp_path)
    (directory / "bad.toml").write_text('[[steps]]\nid = "x"\nuses = "transform"\nneeds = ["nope"]\n')
    result = weir("run", "order", "-p", "quantity=1", "--path", str(directory))
    assert result.returncode == 1
    assert "W203" in result.stderr
    assert "has invalid files" in result.stderr


def test_run_bad_p_syntax_is_a_usage_error(tmp_path: Path) -> None:
    directory = make(tmp_path)
    result = weir("run", "order", "-p", "quantity", "--path", str(directory))
    assert result.returncode == 2
    assert "-p 'quantity' is not key=value" in result.stderr


def test_db_upgrade_creates_the_schema_in_the_state_dir(tmp_path: Path) -> None:
    result = weir("db", "upgrade", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert f"run database sqlite:///{tmp_path / 'state' / 'weir.db'} is at the newest schema" in result.stderr
    again = weir("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'state' / 'weir.db'}")
    assert again.returncode == 0, again.stderr


def test_db_upgrade_unreachable_database_is_an_environment_error(tmp_path: Path) -> None:
    result = weir("db", "upgrade", "--db", "postgresql://weir:s3cret@127.0.0.1:1/runs")
    assert result.returncode == 2
    assert "cannot open the run database postgresql://weir:***@127.0.0.1:1/runs" in result.stderr
    assert "s3cret" not in result.stderr
