"""Steps that fan out: foreach items, matrix products, parallel limits, and child workflow runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.engine_probe import Probe, probe_harness
from weir.testing import Harness

pytestmark = pytest.mark.anyio


# -- foreach -----------------------------------------------------------------------------------------

FOREACH = """
[params.names]
type = "array"
default = ["ada", "bob", "cy"]

[[steps]]
id = "greet"
uses = "probe.work"
foreach = "{{ params.names }}"
with = { value = "{{ index }}:{{ item }}" }

[[steps]]
id = "literal"
uses = "transform"
foreach = [1, 2, 3]
with.output = "{{ item * 10 }}"

[outputs]
greet = "{{ steps.greet.output }}"
literal = "{{ steps.literal.output }}"
"""


async def test_foreach_runs_once_per_item_and_outputs_the_list_in_order(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"each.toml": FOREACH}) as h:
        run = await h.run("each")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert run.outputs == {
        "greet": [{"value": "0:ada"}, {"value": "1:bob"}, {"value": "2:cy"}],
        "literal": [10, 20, 30],
    }
    assert [c.item_index for c in probe.of("greet")] == [0, 1, 2]
    assert [c.idempotency_key for c in probe.of("greet")] == [f"{run.id}:greet:{i}" for i in range(3)]
    assert steps["greet"].input == ["ada", "bob", "cy"]
    assert [steps[f"greet[{i}]"].status for i in range(3)] == ["succeeded"] * 3


MATRIX = """
[[steps]]
id = "deploy"
uses = "transform"
matrix = { region = ["eu", "us"], shard = [1, 2] }
with.output = "{{ item.region }}-{{ item.shard }}"

[[steps]]
id = "items"
uses = "transform"
matrix = { region = ["eu"], shard = [1, 2] }
with.output = "{{ item }}"
"""


async def test_foreach_matrix_is_the_product_of_its_axes_as_dicts(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"matrix.toml": MATRIX}) as h:
        run = await h.run("matrix")
        steps = await h.steps(run.id)
    assert steps["deploy"].output == ["eu-1", "eu-2", "us-1", "us-2"]
    assert steps["items"].output == [{"region": "eu", "shard": 1}, {"region": "eu", "shard": 2}]


PARALLEL_ITEMS = """
[[steps]]
id = "fan"
uses = "probe.work"
foreach = [1, 2, 3, 4, 5, 6]
parallel = {parallel}
with = {{ value = "{{{{ item }}}}", sleep = 0.05 }}
"""


@pytest.mark.parametrize("parallel", [1, 3])
async def test_foreach_parallel_limits_items_in_flight(tmp_path: Path, probe: Probe, parallel: int) -> None:
    async with probe_harness(tmp_path, {"fan.toml": PARALLEL_ITEMS.format(parallel=parallel)}) as h:
        run = await h.run("fan")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert probe.max_active == parallel
    assert steps["fan"].output == [{"value": i} for i in range(1, 7)]


ITEM_FAILS = """
[[steps]]
id = "charge"
uses = "probe.work"
foreach = ["a", "b", "c"]
parallel = 3
with = { value = "{{ item }}", fail = "{{ 'permanent' if index == 1 else none }}", message = "card {{ item }} failed" }
"""


async def test_foreach_one_failed_item_fails_the_step(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"items.toml": ITEM_FAILS}) as h:
        run = await h.run("items")
        steps = await h.steps(run.id)
    assert steps["charge"].status == "failed"
    assert steps["charge"].error == "1 of 3 items failed; item 1: card b failed"
    assert steps["charge"].output == [{"value": "a"}, None, {"value": "c"}]
    assert [steps[f"charge[{i}]"].status for i in range(3)] == ["succeeded", "failed", "succeeded"]
    assert run.error == "step 'charge' failed: 1 of 3 items failed; item 1: card b failed"


NOT_A_LIST = """
[params.count]
type = "integer"
default = 3

[[steps]]
id = "each"
uses = "transform"
foreach = "{{ params.count }}"
with.output = "{{ item }}"
"""


async def test_foreach_that_is_not_a_list_fails_the_step_with_a_template_error(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"notalist.toml": NOT_A_LIST}) as h:
        run = await h.run("notalist")
        steps = await h.steps(run.id)
    assert (steps["each"].status, steps["each"].error_kind) == ("failed", "template")
    assert steps["each"].error == "foreach of step 'each' gave an integer, not a list"
    assert run.error == "step 'each' failed: foreach of step 'each' gave an integer, not a list"


# -- workflow (child runs) -----------------------------------------------------------------------------

PARENT = """
[params.n]
type = "integer"
default = 2

[params.child_params]
type = "object"
default = {}

[[steps]]
id = "double"
uses = "workflow"
with = { workflow = "child", params = "{{ dict(n=params.n, **params.child_params) }}" }

[outputs]
result = "{{ steps.double.output.doubled }}"
"""

CHILD = """
[params.n]
type = "integer"
required = true

[[steps]]
id = "compute"
uses = "transform"
with.output = "{{ params.n * 2 }}"

[[steps]]
id = "check"
uses = "fail"
needs = ["compute"]
if = "params.n < 0"
with.message = "n must not be negative"

[outputs]
doubled = "{{ steps.compute.output }}"
"""


async def test_workflow_child_run_is_linked_and_its_outputs_are_the_step_output(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"parent.toml": PARENT, "child.toml": CHILD}) as h:
        run = await h.run("parent", {"n": 21})
        steps = await h.steps(run.id)
        child = await h.store.get_run(steps["double"].child_run_id or "")
    assert (run.status, run.outputs) == ("succeeded", {"result": 42})
    assert steps["double"].output == {"doubled": 42}
    assert child is not None
    assert (child.status, child.workflow, child.parent_run_id) == ("succeeded", "child", run.id)
    assert child.trigger == {"type": "workflow", "parent_run_id": run.id, "step": "double"}
    assert child.params == {"n": 21}


async def test_workflow_child_failure_fails_the_parent_step(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"parent.toml": PARENT, "child.toml": CHILD}) as h:
        run = await h.run("parent", {"n": -1})
        steps = await h.steps(run.id)
    child_id = steps["double"].child_run_id
    assert steps["double"].status == "failed"
    assert steps["double"].error == f"child run {child_id} of workflow 'child' failed: n must not be negative"
    assert run.error == f"step 'double' failed: child run {child_id} of workflow 'child' failed: n must not be negative"


async def test_workflow_child_params_are_validated(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"parent.toml": PARENT, "child.toml": CHILD}) as h:
        run = await h.run("parent", {"child_params": {"m": 1}})
        steps = await h.steps(run.id)
        page = await h.store.list_runs(workflow="child")
    assert steps["double"].status == "failed"
    assert steps["double"].error == (
        "params of workflow 'child' are invalid: param 'm' is not declared (the workflow's params: n)"
    )
    assert page.runs == []
