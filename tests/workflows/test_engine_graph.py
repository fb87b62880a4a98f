"""The engine walks the step graph: needs, if, run status, foreach, outputs, templates, params, sagas, subflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.engine_probe import Probe, probe_harness
from weir.errors import ParamsInvalid
from weir.testing import Harness

pytestmark = pytest.mark.anyio


# -- needs -----------------------------------------------------------------------------------------

PARALLEL = """
[[steps]]
id = "a"
uses = "probe.work"
with = { value = "a", sleep = 0.2 }

[[steps]]
id = "b"
uses = "probe.work"
with = { value = "b", sleep = 0.2 }
"""


async def test_needs_independent_steps_run_concurrently(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"parallel.toml": PARALLEL}) as h:
        run = await h.run("parallel")
    assert run.status == "succeeded"
    a, b = probe.of("a")[0], probe.of("b")[0]
    assert a.ended is not None
    assert b.ended is not None
    assert max(a.started, b.started) < min(a.ended, b.ended)  # both began before either ended
    assert max(a.ended, b.ended) - min(a.started, b.started) < 0.35


CHAIN = """
[[steps]]
id = "first"
uses = "probe.work"
with = { value = 1, sleep = 0.05 }

[[steps]]
id = "second"
uses = "probe.work"
needs = ["first"]
with = { value = "{{ steps.first.output.value + 1 }}", check = ["first"] }
"""


async def test_needs_dependent_starts_after_its_need_is_committed(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"chain.toml": CHAIN}) as h:
        run = await h.run("chain")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    [second] = probe.of("second")
    assert second.needs_seen == {"first": "succeeded"}
    assert second.value == 2
    assert steps["second"].output == {"value": 2}


# -- if, always(), failure() -----------------------------------------------------------------------

SKIPS = """
[[steps]]
id = "gate"
uses = "transform"
if = "params.go"
with.output = "went"

[[steps]]
id = "after"
uses = "transform"
needs = ["gate"]
with.output = "after"

[[steps]]
id = "cleanup"
uses = "transform"
needs = ["after"]
if = "always()"
with.output = "{{ steps.gate.status }}/{{ steps.after.status }}"

[params.go]
type = "boolean"
default = false
"""


async def test_if_false_skips_the_step_and_its_dependents(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"skips.toml": SKIPS}) as h:
        run = await h.run("skips")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert (steps["gate"].status, steps["gate"].note) == ("skipped", "if was false")
    assert (steps["after"].status, steps["after"].note) == ("skipped", "a step it needs did not succeed")
    assert (steps["cleanup"].status, steps["cleanup"].output) == ("succeeded", "skipped/skipped")


async def test_if_true_runs_the_step(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"skips.toml": SKIPS}) as h:
        run = await h.run("skips", {"go": True})
        steps = await h.steps(run.id)
    assert {k: s.status for k, s in steps.items()} == {
        "gate": "succeeded",
        "after": "succeeded",
        "cleanup": "succeeded",
    }
    assert steps["cleanup"].output == "succeeded/succeeded"


ALWAYS = """
[[steps]]
id = "charge"
uses = "probe.work"
with = { fail = "permanent", message = "card declined" }

[[steps]]
id = "receipt"
uses = "probe.work"
needs = ["charge"]

[[steps]]
id = "report"
uses = "transform"
needs = ["charge", "receipt"]
if = "always()"
with.output.charge = "{{ steps.charge.status }}"
with.output.error = "{{ steps.charge.error }}"
with.output.receipt = "{{ steps.receipt.status }}"
"""


async def test_if_always_runs_after_a_failed_and_a_skipped_need(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"always.toml": ALWAYS}) as h:
        run = await h.run("always")
        steps = await h.steps(run.id)
    assert run.status == "failed"
    assert run.error == "step 'charge' failed: card declined"
    assert steps["receipt"].status == "skipped"
    assert probe.of("receipt") == []
    assert steps["report"].status == "succeeded"
    assert steps["report"].output == {"charge": "failed", "error": "card declined", "receipt": "skipped"}


FAILURE = """
[[steps]]
id = "probe"
uses = "probe.work"
on_error = "continue"
with = { fail = "{{ params.fail }}", message = "no answer" }

[[steps]]
id = "alarm"
uses = "transform"
needs = ["probe"]
if = "failure()"
with.output = "alarm: {{ steps.probe.error }}"

[params.fail]
type = "string"
"""


async def test_if_failure_is_true_only_after_a_failure(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"failure.toml": FAILURE}) as h:
        failed = await h.run("failure", {"fail": "permanent"})
        failed_steps = await h.steps(failed.id)
        fine = await h.run("failure")
        fine_steps = await h.steps(fine.id)
    assert failed.status == "succeeded"  # on_error = "continue"
    assert failed_steps["probe"].status == "failed"
    assert (failed_steps["alarm"].status, failed_steps["alarm"].output) == ("succeeded", "alarm: no answer")
    assert fine.status == "succeeded"
    assert (fine_steps["alarm"].status, fine_steps["alarm"].note) == ("skipped", "if was false")


# -- run status (SPEC §11) -------------------------------------------------------------------------

STATUS = """
[[steps]]
id = "broken"
uses = "probe.work"
with = { fail = "permanent", message = "HTTP 404: no such order" }

[[steps]]
id = "after_broken"
uses = "probe.work"
needs = ["broken"]

[[steps]]
id = "slow"
uses = "probe.work"
with = { sleep = 0.1, value = "slow" }

[[steps]]
id = "after_slow"
uses = "probe.work"
needs = ["slow"]
with = { value = "after slow" }
"""


async def test_run_status_failed_step_skips_dependents_and_independent_steps_still_run(
    tmp_path: Path, probe: Probe
) -> None:
    async with probe_harness(tmp_path, {"status.toml": STATUS}) as h:
        run = await h.run("status")
        steps = await h.steps(run.id)
    assert run.status == "failed"
    assert run.error == "step 'broken' failed: HTTP 404: no such order"
    assert (steps["broken"].status, steps["broken"].error, steps["broken"].error_kind) == (
        "failed",
        "HTTP 404: no such order",
        "permanent",
    )
    assert steps["after_broken"].status == "skipped"
    assert (steps["slow"].status, steps["after_slow"].status) == ("succeeded", "succeeded")
    assert steps["after_slow"].output == {"value": "after slow"}
    assert probe.of("after_broken") == []


CONTINUES = """
[[steps]]
id = "optional"
uses = "probe.work"
on_error = "continue"
with = { fail = "permanent", message = "unavailable" }

[[steps]]
id = "fallback"
uses = "probe.work"
fallback = { ok = false }
with = { fail = "permanent", message = "down for maintenance" }

[[steps]]
id = "use"
uses = "transform"
needs = ["optional", "fallback"]
with.output = { optional = "{{ steps.optional.output }}", fallback = "{{ steps.fallback.output }}" }

[outputs]
fallback = "{{ steps.fallback.output }}"
"""


async def test_run_status_on_error_continue_and_fallback_let_the_run_succeed(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"continues.toml": CONTINUES}) as h:
        run = await h.run("continues")
        steps = await h.steps(run.id)
    assert (run.status, run.error) == ("succeeded", None)
    assert (steps["optional"].status, steps["optional"].error) == ("failed", "unavailable")
    assert (steps["fallback"].status, steps["fallback"].error) == ("failed", "down for maintenance")
    assert steps["fallback"].output == {"ok": False}
    assert steps["fallback"].note == "fallback"
    assert steps["use"].output == {"optional": None, "fallback": {"ok": False}}
    assert run.outputs == {"fallback": {"ok": False}}


FALLBACK_READS_ERROR = """
[[steps]]
id = "fetch"
uses = "fail"
with.message = "upstream said no"
fallback = { ok = false, reason = "{{ error }}" }
"""


async def test_fallback_templates_read_the_step_error(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"reads.toml": FALLBACK_READS_ERROR}) as h:
        run = await h.run("reads")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert steps["fetch"].output == {"ok": False, "reason": "upstream said no"}


FAIL = """
[[steps]]
id = "check"
uses = "fail"
with.message = "order {{ params.order }} is not paid"

[params.order]
type = "integer"
default = 42
"""


async def test_run_status_fail_builtin_sets_the_run_error_to_its_message(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"gate.toml": FAIL}) as h:
        run = await h.run("gate")
        steps = await h.steps(run.id)
    assert (run.status, run.error) == ("failed", "order 42 is not paid")
    assert (steps["check"].status, steps["check"].error, steps["check"].error_kind) == (
        "failed",
        "order 42 is not paid",
        "fail",
    )


# -- outputs -----------------------------------------------------------------------------------------

OUTPUTS = """
[[steps]]
id = "analyze"
uses = "transform"
with.output = { severity = "critical", count = 3 }

[outputs]
severity = "{{ steps.analyze.output.severity }}"
count = "{{ steps.analyze.output.count }}"
summary = "{{ steps.analyze.output.count }} alerts"
"""

BAD_OUTPUTS = """
[[steps]]
id = "analyze"
uses = "transform"
with.output = { severity = "critical" }

[outputs]
owner = "{{ steps.analyze.output.owner }}"
"""


async def test_outputs_are_rendered_to_native_values(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"outputs.toml": OUTPUTS}) as h:
        run = await h.run("outputs")
    assert run.outputs == {"severity": "critical", "count": 3, "summary": "3 alerts"}


async def test_outputs_that_fail_to_render_fail_the_run(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"outputs.toml": BAD_OUTPUTS}) as h:
        run = await h.run("outputs")
        steps = await h.steps(run.id)
    assert run.status == "failed"
    assert steps["analyze"].status == "succeeded"
    assert run.error == (
        "[outputs]: template error in '{{ steps.analyze.output.owner }}': 'dict object' has no attribute 'owner'"
    )
    assert run.outputs is None


# -- templates ----------------------------------------------------------------------------------------

PAYLOAD = """
[[steps]]
id = "echo"
uses = "transform"
with.output = { whole = "{{ payload.text }}", inside = "got {{ payload.text }}" }

[[steps]]
id = "send"
uses = "probe.work"
with = { value = "{{ payload.text }}" }
"""


async def test_templates_leave_payload_values_literal(tmp_path: Path, probe: Probe) -> None:
    trigger = {"type": "webhook", "payload": {"text": "{{ 7*7 }}"}}
    async with probe_harness(tmp_path, {"payload.toml": PAYLOAD}) as h:
        run = await h.run("payload", trigger=trigger)
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert steps["echo"].output == {"whole": "{{ 7*7 }}", "inside": "got {{ 7*7 }}"}
    assert [c.value for c in probe.of("send")] == ["{{ 7*7 }}"]


ESCAPE = """
[[steps]]
id = "escape"
uses = "transform"
with.output = "{{ ''.__class__ }}"
"""


async def test_templates_refuse_a_sandbox_escape_as_a_step_error(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"escape.toml": ESCAPE}) as h:
        run = await h.run("escape")
        steps = await h.steps(run.id)
    assert run.status == "failed"
    assert (steps["escape"].status, steps["escape"].error_kind) == ("failed", "template")
    assert steps["escape"].error == (
        "template error in '{{ ''.__class__ }}': access to attribute '__class__' of 'str' object is unsafe."
    )
    assert run.error == f"step 'escape' failed: {steps['escape'].error}"


UNKNOWN_OUTPUT = """
[[steps]]
id = "lookup"
uses = "transform"
with.output = { id = 7 }

[[steps]]
id = "use"
uses = "transform"
needs = ["lookup"]
with.output = "customer {{ steps.lookup.output.customer.name }}"
"""


async def test_templates_referencing_a_missing_output_key_fail_the_step(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"unknown.toml": UNKNOWN_OUTPUT}) as h:
        run = await h.run("unknown")
        steps = await h.steps(run.id)
    message = (
        "template error in 'customer {{ steps.lookup.output.customer.name }}': "
        "'dict object' has no attribute 'customer'"
    )
    assert (steps["use"].status, steps["use"].error_kind, steps["use"].error) == ("failed", "template", message)
    assert run.error == f"step 'use' failed: {message}"


# -- params -------------------------------------------------------------------------------------------

PARAMS = """
[params.customer]
type = "string"
required = true

[params.limit]
type = "integer"
default = 10

[params.dry_run]
type = "boolean"

[[steps]]
id = "show"
uses = "transform"
with.output = { customer = "{{ params.customer }}", limit = "{{ params.limit }}", dry_run = "{{ params.dry_run }}" }
"""


async def test_params_defaults_are_applied(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"params.toml": PARAMS}) as h:
        run = await h.run("params", {"customer": "acme"})
        steps = await h.steps(run.id)
    assert run.params == {"customer": "acme", "limit": 10, "dry_run": None}
    assert steps["show"].output == {"customer": "acme", "limit": 10, "dry_run": None}


async def test_params_invalid_names_every_bad_param(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"params.toml": PARAMS}) as h:
        with pytest.raises(ParamsInvalid) as caught:
            await h.engine.submit("params", {"limit": "ten", "limt": 3})
        page = await h.store.list_runs()
    assert page.runs == []
    assert caught.value.problems == {
        "limit": "is not of type integer ('ten')",
        "limt": "is not declared (did you mean 'limit'?) (the workflow's params: customer, dry_run, limit)",
        "customer": "is required (string)",
    }
    assert str(caught.value) == (
        "params of workflow 'params' are invalid: param 'limit' is not of type integer ('ten'); param 'limt' is not"
        " declared (did you mean 'limit'?) (the workflow's params: customer, dry_run, limit); param 'customer' is"
        " required (string)"
    )
