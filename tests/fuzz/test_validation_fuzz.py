"""``weir check`` on generated files: it always answers with findings, never with a traceback.

Three kinds of input go through ``validate_tree`` (what ``weir check``, ``weir plan`` and the
server run on a revision):

- workflows built to be valid, written as TOML or JSON: they check clean, with no finding;
- those workflows with random keys added, values replaced by values of any type, and keys
  removed: every problem is a finding with a known code, the file, a line and a sentence;
- random text and bytes, as a workflow file and as ``weir.toml``: the same.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, assume, example, given, settings, strategies as st

from tests.fuzz.strategies import (
    cron_expressions,
    examples,
    json_values,
    text,
    toml_values,
    write_json,
    write_toml,
)
from weir.cli import EXIT_FAILED, EXIT_OK, main
from weir.connectors.registry import ConnectorRegistry
from weir.schemas.common import format_duration
from weir.workflows.findings import CODES, Finding, Severity
from weir.workflows.source import tree_from_files
from weir.workflows.validation import validate_tree

REGISTRY = ConnectorRegistry()
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
PARAM_VALUES = {
    "string": st.text(alphabet=st.characters(exclude_characters="{}"), max_size=10),
    "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000),
    "integer": st.integers(-1000, 1000),
    "boolean": st.booleans(),
    "object": st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    "array": st.lists(st.integers(), max_size=3),
}
plain = st.text(alphabet=st.characters(exclude_characters="{}%#", exclude_categories=["Cs"]), max_size=20)
step_ids = st.from_regex(r"[a-z0-9_]{1,10}", fullmatch=True)
param_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
durations = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=30)).map(
    lambda d: timedelta(milliseconds=round(d.total_seconds() * 1000))
)


def check(files: dict[str, bytes]) -> list[Finding]:
    """Validate an automation directory held in memory; whatever it holds, only findings come back."""
    return validate_tree(tree_from_files(files), REGISTRY).findings


def assert_well_formed(findings: list[Finding], files: dict[str, bytes]) -> None:
    """Every finding names a known code, a file of the directory, a line, and says what to do."""
    for finding in findings:
        assert finding.code in CODES, finding
        assert finding.severity in (Severity.ERROR, Severity.WARNING), finding
        assert finding.location.file in files, finding
        assert finding.location.line >= 1, finding
        assert finding.location.column >= 0, finding
        assert finding.message.strip(), finding
        assert "Traceback" not in finding.message, finding
        assert str(finding).startswith(f"{finding.location}: {finding.severity} {finding.code} "), finding


# --- valid workflows ------------------------------------------------------------------------


@st.composite
def templates(draw: st.DrawFn, params: list[str], steps: list[str]) -> str:
    """Text, possibly with references to declared params and to steps the reader needs."""
    parts = [draw(plain)]
    for _ in range(draw(st.integers(0, 2))):
        choices = [f"params.{p}" for p in params] + [f"steps['{s}'].output" for s in steps]
        choices += [f"steps.{s}.output" for s in steps if not s[0].isdigit()]
        choices += ["workflow.name", "run.id", "now().year"]
        parts.append("{{ " + draw(st.sampled_from(choices)) + " }}")
        parts.append(draw(plain))
    return "".join(parts)


@st.composite
def valid_workflows(draw: st.DrawFn, others: list[str], hook_paths: set[str]) -> dict[str, Any]:
    """A workflow that ``weir check`` accepts without a finding; ``others`` are workflows it may call."""
    doc: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name in draw(st.lists(param_names, max_size=3, unique=True)):
        kind = draw(st.sampled_from(sorted(PARAM_VALUES)))
        param: dict[str, Any] = {"type": kind}
        if draw(st.booleans()):
            param["default"] = draw(PARAM_VALUES[kind])
        if draw(st.booleans()):
            param["description"] = draw(plain)
        params[name] = param
    if params:
        doc["params"] = params
    if draw(st.booleans()):
        doc["description"] = draw(plain)
    if draw(st.booleans()):
        doc["tags"] = draw(st.lists(plain, max_size=3))
    if draw(st.booleans()):
        doc["enabled"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["defaults"] = {"timeout": format_duration(draw(durations))}
    if draw(st.booleans()):
        doc["concurrency"] = {
            "limit": draw(st.integers(1, 10)),
            "policy": draw(st.sampled_from(["queue", "skip", "cancel-oldest"])),
        }
    triggers: dict[str, Any] = {}
    schedules = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            expression, _ = draw(cron_expressions(one_day_field=True))
            schedule: dict[str, Any] = {"cron": expression, "timezone": draw(st.sampled_from(ZONES))}
        else:
            schedule = {"every": format_duration(draw(durations))}
        schedules.append(schedule)
    if schedules:
        triggers["schedule"] = schedules
    hooks = []
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.from_regex(r"[A-Za-z0-9_-]{1,12}(/[A-Za-z0-9_-]{1,8})?", fullmatch=True))
        assume(path not in hook_paths)
        hook_paths.add(path)
        hook: dict[str, Any] = {"path": path, "auth": {"type": "none"}}
        if draw(st.booleans()):
            hook["methods"] = draw(st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, unique=True))
        if params and draw(st.booleans()):
            hook["params"] = dict.fromkeys(params, "{{ payload.value }}")
        hooks.append(hook)
    if hooks:
        triggers["webhook"] = hooks
    if triggers:
        doc["on"] = triggers

    steps: list[dict[str, Any]] = []
    ancestors: dict[str, set[str]] = {}
    for step_id in draw(st.lists(step_ids, min_size=1, max_size=5, unique=True)):
        needs = draw(st.lists(st.sampled_from([s["id"] for s in steps]), unique=True)) if steps else []
        seen = set(needs).union(*(ancestors[n] for n in needs))
        ancestors[step_id] = seen
        uses = draw(st.sampled_from(["log", "transform", "fail", "wait", "sleep"] + (["workflow"] if others else [])))
        with_: dict[str, Any]
        if uses == "log":
            with_ = {"message": draw(templates(list(params), sorted(seen)))}
        elif uses == "transform":
            with_ = {"output": {"text": draw(templates(list(params), sorted(seen))), "n": draw(st.integers())}}
        elif uses == "fail":
            with_ = {"message": draw(templates(list(params), sorted(seen)))}
        elif uses == "wait":
            with_ = {"timeout": format_duration(draw(durations))}
        elif uses == "sleep":
            with_ = {"duration": format_duration(draw(durations))}
        else:
            with_ = {"workflow": draw(st.sampled_from(others))}
        step: dict[str, Any] = {"id": step_id, "uses": uses, "with": with_}
        if needs:
            step["needs"] = needs
        if draw(st.booleans()):
            step["if"] = draw(st.sampled_from(["true", "always()", "failure()", "1 < 2"]))
        if draw(st.booleans()):
            step["on_error"] = draw(st.sampled_from(["fail", "continue"]))
        if draw(st.booleans()):
            step["retry"] = {"attempts": draw(st.integers(1, 5)), "delay": format_duration(draw(durations))}
        steps.append(step)
    doc["steps"] = steps
    if draw(st.booleans()):
        doc["outputs"] = {"result": draw(templates(list(params), [s["id"] for s in steps]))}
    return doc


@st.composite
def valid_directories(draw: st.DrawFn) -> dict[str, bytes]:
    """One to three valid workflows (later ones may call earlier ones), each as TOML or JSON."""
    files: dict[str, bytes] = {}
    names: list[str] = []
    hook_paths: set[str] = set()
    for index in range(draw(st.integers(1, 3))):
        name = f"flow-{index}"
        doc = draw(valid_workflows(list(names), hook_paths))
        if draw(st.booleans()):
            files[f"{name}.toml"] = write_toml(doc).encode()
        else:
            files[f"nested/{name}.json"] = write_json(doc).encode()
        names.append(name)
    return files


@settings(max_examples=examples(60))
@given(valid_directories())
def test_valid_workflows_check_clean(files: dict[str, bytes]) -> None:
    findings = check(files)
    assert findings == [], "\n".join(str(f) for f in findings) + "\n" + "\n".join(f.decode() for f in files.values())


# --- mutated workflows ----------------------------------------------------------------------


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every dict and list inside ``value``."""
    found = []
    if isinstance(value, dict):
        found.append(path)
        for key, item in value.items():
            found.extend(_containers(item, (*path, key)))
    elif isinstance(value, list):
        found.append(path)
        for index, item in enumerate(value):
            found.extend(_containers(item, (*path, index)))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A valid workflow with keys added, values swapped for random ones and keys removed."""
    doc = draw(valid_workflows([], set()))
    for _ in range(draw(st.integers(1, 4))):
        target = _at(doc, draw(st.sampled_from(_containers(doc))))
        action = draw(st.sampled_from(["add", "replace", "remove"]))
        if isinstance(target, dict):
            if action == "add" or not target:
                target[draw(st.text(max_size=10) | st.sampled_from(["if", "with", "needs", "timeout", "retry"]))] = (
                    draw(values)
                )
            else:
                key = draw(st.sampled_from(sorted(target)))
                if action == "replace":
                    target[key] = draw(values)
                else:
                    del target[key]
        elif target:
            index = draw(st.integers(0, len(target) - 1))
            if action == "remove":
                del target[index]
            else:
                target[index] = draw(values)
        else:
            target.append(draw(values))
    return doc


@settings(max_examples=examples(100))
@given(mutated(toml_values()))
def test_mutated_toml_workflows_give_findings_only(doc: dict[str, Any]) -> None:
    files = {"alerts.toml": write_toml(doc).encode()}
    assert_well_formed(check(files), files)


@settings(max_examples=examples(100))
@given(mutated(json_values()))
def test_mutated_json_workflows_give_findings_only(doc: dict[str, Any]) -> None:
    files = {"ops/alerts.json": write_json(doc).encode("utf-8", "surrogatepass")}
    assert_well_formed(check(files), files)


@settings(max_examples=examples(60))
@given(st.dictionaries(st.sampled_from(["connections", "defaults", "exclude", "$schema"]) | text, toml_values()))
def test_random_repo_config_gives_findings_only(config: dict[str, Any]) -> None:
    files = {"weir.toml": write_toml(config).encode(), "flow.toml": b'[[steps]]\nid = "a"\nuses = "log"\n'}
    files["flow.toml"] += b'with = { message = "hi" }\n'
    assert_well_formed(check(files), files)


# --- random text ----------------------------------------------------------------------------

FRAGMENTS = [
    "[[steps]]\n",
    'id = "a"\n',
    'uses = "log"\n',
    "with = { message = 1 }\n",
    "needs = [",
    "[on.schedule]\n",
    '[[on.schedule]]\ncron = "',
    "[params.x]\n",
    'type = "string"\n',
    "{",
    "}",
    '"steps": [',
    '{"id": "a", "uses": "log"}',
    "]",
    ",",
    "\ufeff",
    "\\u",
    '"""',
    "'''",
    "= ",
    "\n",
]


@settings(max_examples=examples(150))
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.sampled_from(FRAGMENTS) | text, max_size=20).map(lambda parts: "".join(parts).encode()),
    ),
    st.sampled_from(["alerts.toml", "alerts.json", "weir.toml"]),
)
@example(b'[defaults]\ntimeout = inf\n[[steps]]\nid = "a"\nuses = "log"\nwith = { message = "x" }\n', "a.toml")
@example(b'[defaults]\ntimeout = "9999999999999w"\n[[steps]]\nid = "a"\nuses = "log"\n', "a.toml")
@example(b'{"steps": [{"id": "a", "uses": "sleep", "with": {"duration": 1e300}}]}', "a.json")
def test_random_text_gives_findings_only(raw: bytes, name: str) -> None:
    files = {name: raw}
    if name == "weir.toml":
        files["flow.toml"] = b'[[steps]]\nid = "a"\nuses = "log"\nwith = { message = "hi" }\n'
    assert_well_formed(check(files), files)


@settings(max_examples=examples(5), phases=[Phase.generate])  # shrinking thousands of steps takes minutes
@given(st.integers(1000, 4000), st.randoms(use_true_random=False))
def test_long_dependency_chains_in_any_order_are_checked_quickly(length: int, rng: Any) -> None:
    ids = [f"s{n}" for n in range(length)]
    order = list(range(length))
    rng.shuffle(order)
    steps = [
        {"id": ids[i], "uses": "log", "with": {"message": "{{ steps.s0.output }}" if i else "x"}}
        | ({"needs": [ids[i - 1]]} if i else {})
        for i in order
    ]
    started = time.perf_counter()
    assert check({"chain.json": json.dumps({"steps": steps}).encode()}) == []
    assert time.perf_counter() - started < 5  # linear: a few hundred ms; quadratic took minutes for 10,000 steps
    first = order.index(0)
    steps[first]["needs"] = [ids[-1]]  # close the chain into a cycle
    steps[first]["with"]["message"] = f"{{{{ steps.{ids[1]}.output }}}}"  # ... which also reads a later step
    findings = check({"chain.json": json.dumps({"steps": steps}).encode()})
    assert [f.code for f in findings] == ["W204"]
    assert findings[0].message.startswith("steps depend on each other in a cycle: ")
    assert findings[0].message.endswith("; remove one of these needs")


# --- the command itself -----------------------------------------------------------------------


@settings(max_examples=examples(15))
@given(
    st.dictionaries(
        st.sampled_from(["a.toml", "b.json", "weir.toml", "sub/c.toml"]),
        st.one_of(mutated(toml_values()).map(write_toml), text),
        min_size=1,
    ),
    st.sampled_from(["text", "json", "github", "sarif"]),
)
def test_weir_check_exits_0_or_1_and_prints_its_format(files: dict[str, str], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content.encode("utf-8", "surrogatepass"))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", str(root), "--format", fmt])
    assert code in (EXIT_OK, EXIT_FAILED), err.getvalue()
    if fmt == "json":
        listed = json.loads(out.getvalue())
        assert all(set(f) == {"code", "severity", "file", "line", "column", "message"} for f in listed)
        assert (code == EXIT_FAILED) == any(f["severity"] == "error" for f in listed)
    elif fmt == "sarif":
        assert json.loads(out.getvalue())["version"] == "2.1.0"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308", "99999999999999999999", '"9999999999999w"'])
def test_huge_and_infinite_durations_are_findings(value: str) -> None:
    files = {"a.toml": f'timeout = {value}\n[[steps]]\nid = "a"\nuses = "log"\nwith = {{ message = "x" }}\n'.encode()}
    findings = check(files)
    assert [(f.code, f.location.line) for f in findings] == [("W402", 1)], findings
