"""How the engine handles failing steps: retry, timeouts, unexpected exceptions, sagas, on_failure, secrets."""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import serve_in_thread
from tests.workflows.engine_probe import Probe, ProbeConnector, probe_harness
from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.http import HttpConnector
from weir.connectors.registry import ConnectorRegistry
from weir.records import Phase
from weir.testing import Harness

pytestmark = pytest.mark.anyio


def gaps(probe: Probe, step_id: str) -> list[float]:
    """Seconds between the end of each attempt and the start of the next."""
    calls = probe.of(step_id)
    return [b.started - (a.ended or 0) for a, b in itertools.pairwise(calls)]


# -- retry ---------------------------------------------------------------------------------------------

FLAKY = """
[[steps]]
id = "fetch"
uses = "probe.work"
retry = {{ attempts = 3, delay = "10ms", jitter = false }}
with = {{ value = "ok", fail = "transient", times = {times}, message = "503 Service Unavailable" }}
"""


async def test_retry_counts_attempts_and_records_each(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"flaky.toml": FLAKY.format(times=2)}) as h:
        run = await h.run("flaky")
        records = await h.store.get_steps(run.id)
    assert run.status == "succeeded"
    assert [(r.attempt, r.status, r.error) for r in records] == [
        (1, "failed", "503 Service Unavailable"),
        (2, "failed", "503 Service Unavailable"),
        (3, "succeeded", None),
    ]
    assert records[-1].output == {"value": "ok"}
    assert [c.attempt for c in probe.of("fetch")] == [1, 2, 3]
    assert {c.idempotency_key for c in probe.of("fetch")} == {f"{run.id}:fetch"}


async def test_retry_gives_up_after_its_attempts(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"flaky.toml": FLAKY.format(times=5)}) as h:
        run = await h.run("flaky")
        steps = await h.steps(run.id)
    assert (run.status, run.error) == ("failed", "step 'fetch' failed: 503 Service Unavailable")
    assert (steps["fetch"].attempt, steps["fetch"].error_kind) == (3, "transient")
    assert len(probe.of("fetch")) == 3


BACKOFF = """
[[steps]]
id = "fetch"
uses = "probe.work"
retry = {{ attempts = 4, backoff = "{backoff}", delay = "40ms", max_delay = "120ms", jitter = false }}
with = {{ fail = "transient" }}
"""


@pytest.mark.parametrize(("backoff", "expected"), [("exponential", [0.04, 0.08, 0.12]), ("fixed", [0.04, 0.04, 0.04])])
async def test_retry_backoff_waits_between_attempts(
    tmp_path: Path, probe: Probe, backoff: str, expected: list[float]
) -> None:
    async with probe_harness(tmp_path, {"backoff.toml": BACKOFF.format(backoff=backoff)}) as h:
        await h.run("backoff")
    waited = gaps(probe, "fetch")
    assert len(waited) == 3
    for got, want in zip(waited, expected, strict=True):
        assert want - 0.005 <= got < want + 0.06, waited


RETRY_ON = """
[[steps]]
id = "call"
uses = "probe.work"
retry = {{ attempts = 3, delay = "10ms", on = {on} }}
with = {{ fail = "{fail}" }}
"""


@pytest.mark.parametrize(
    ("on", "fail", "calls"),
    [
        ('["transient"]', "permanent", 1),
        ('["transient"]', "timeout", 3),
        ('["permanent"]', "permanent", 3),
        ('["permanent"]', "transient", 1),
        ('["timeout"]', "transient", 1),
        ('["timeout"]', "timeout", 3),
        ('["any"]', "permanent", 3),
        ('["any"]', "transient", 3),
    ],
)
async def test_retry_on_selects_the_error_kinds_worth_retrying(
    tmp_path: Path, probe: Probe, on: str, fail: str, calls: int
) -> None:
    async with probe_harness(tmp_path, {"on.toml": RETRY_ON.format(on=on, fail=fail)}) as h:
        run = await h.run("on")
        steps = await h.steps(run.id)
    assert len(probe.of("call")) == calls
    assert (steps["call"].attempt, steps["call"].error_kind) == (calls, fail)


RETRY_AFTER = """
[[steps]]
id = "call"
uses = "probe.work"
retry = { attempts = 2, delay = "10ms" }
with = { fail = "transient", times = 1, retry_after = 0.2, message = "429 Too Many Requests" }
"""


async def test_retry_honours_retry_after(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"after.toml": RETRY_AFTER}) as h:
        run = await h.run("after")
    assert run.status == "succeeded"
    [waited] = gaps(probe, "call")
    assert 0.195 <= waited < 0.3


RATE_LIMITED = """
[params.base]
type = "string"
required = true

[[steps]]
id = "fetch"
uses = "http.request"
retry = { attempts = 2, delay = "10ms" }
with = { method = "GET", url = "{{ params.base }}/items" }

[outputs]
items = "{{ steps.fetch.output.json['items'] }}"
"""


async def test_retry_honours_retry_after_of_a_real_http_429(tmp_path: Path) -> None:
    arrivals: list[float] = []

    async def items(request: Request) -> Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "0.3"})
        return JSONResponse({"items": [1, 2]})

    app = Starlette(routes=[Route("/items", items)])
    registry = ConnectorRegistry(discover=False, extra={"http": HttpConnector})
    with serve_in_thread(app) as base:
        async with Harness(tmp_path, {"rate.toml": RATE_LIMITED}, registry=registry) as h:
            run = await h.run("rate", {"base": base})
            records = await h.store.get_steps(run.id)
    assert (run.status, run.outputs) == ("succeeded", {"items": [1, 2]})
    assert [(r.attempt, r.status, r.error_kind, r.error) for r in records] == [
        (1, "failed", "transient", f'GET {base}/items returned HTTP 429 (expected 2xx): {{"error":"slow down"}}'),
        (2, "succeeded", None, None),
    ]
    assert 0.3 <= arrivals[1] - arrivals[0] < 0.6


WORKFLOW_DEFAULTS = """
[defaults]
retry = { attempts = 2, delay = "10ms" }

[[steps]]
id = "inherits"
uses = "probe.work"
with = { fail = "transient" }

[[steps]]
id = "overrides"
uses = "probe.work"
retry = { attempts = 3, delay = "10ms" }
with = { fail = "transient" }
"""

REPO_DEFAULTS = """
[defaults]
retry = { attempts = 4, delay = "10ms" }
"""

PLAIN = """
[[steps]]
id = "inherits"
uses = "probe.work"
with = { fail = "transient" }
"""


async def test_retry_defaults_of_the_workflow_apply_to_steps_without_retry(tmp_path: Path, probe: Probe) -> None:
    files = {"weir.toml": REPO_DEFAULTS, "defaults.toml": WORKFLOW_DEFAULTS}
    async with probe_harness(tmp_path, files) as h:
        await h.run("defaults")
    assert (len(probe.of("inherits")), len(probe.of("overrides"))) == (2, 3)


async def test_retry_defaults_of_weir_toml_apply_when_the_workflow_has_none(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"weir.toml": REPO_DEFAULTS, "plain.toml": PLAIN}) as h:
        await h.run("plain")
    assert len(probe.of("inherits")) == 4


# -- timeouts ------------------------------------------------------------------------------------------

STEP_TIMEOUT = """
[[steps]]
id = "slow"
uses = "probe.work"
timeout = "100ms"
retry = { attempts = 2, delay = "10ms", on = ["timeout"] }
with = { sleep = 5 }
"""


async def test_timeout_per_attempt_fails_the_attempt_with_kind_timeout(tmp_path: Path, probe: Probe) -> None:
    started = time.monotonic()
    async with probe_harness(tmp_path, {"slow.toml": STEP_TIMEOUT}) as h:
        run = await h.run("slow")
        records = await h.store.get_steps(run.id)
    assert time.monotonic() - started < 1.5
    assert [(r.attempt, r.status, r.error_kind, r.error) for r in records] == [
        (1, "failed", "timeout", "'probe.work' timed out after 0.1s"),
        (2, "failed", "timeout", "'probe.work' timed out after 0.1s"),
    ]
    assert run.error == "step 'slow' failed: 'probe.work' timed out after 0.1s"
    assert len(probe.of("slow")) == 2


DEFAULT_TIMEOUT = """
[defaults]
timeout = "100ms"

[[steps]]
id = "slow"
uses = "probe.work"
with = { sleep = 5 }
"""


async def test_timeout_from_defaults_applies_to_each_step(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"slow.toml": DEFAULT_TIMEOUT}) as h:
        run = await h.run("slow")
        steps = await h.steps(run.id)
    assert (steps["slow"].status, steps["slow"].error_kind) == ("failed", "timeout")


RUN_TIMEOUT = """
timeout = "200ms"

[[steps]]
id = "quick"
uses = "probe.work"

[[steps]]
id = "stuck"
uses = "probe.work"
with = { sleep = 5 }

[[steps]]
id = "after"
uses = "probe.work"
needs = ["stuck"]
"""


async def test_timeout_of_the_run_fails_it_and_the_running_step(tmp_path: Path, probe: Probe) -> None:
    started = time.monotonic()
    async with probe_harness(tmp_path, {"deadline.toml": RUN_TIMEOUT}) as h:
        run = await h.run("deadline")
        steps = await h.steps(run.id)
    assert 0.2 <= time.monotonic() - started < 1.5
    assert (run.status, run.error) == ("failed", "the run timed out after 200ms")
    assert steps["quick"].status == "succeeded"
    assert (steps["stuck"].status, steps["stuck"].error_kind, steps["stuck"].error) == (
        "failed",
        "timeout",
        "the run timed out while this step ran",
    )
    assert steps["after"].status == "skipped"
    assert probe.of("after") == []


SLEEP_AND_WORK = """
timeout = "300ms"

[[steps]]
id = "nap"
uses = "sleep"
with.duration = "1h"

[[steps]]
id = "busy"
uses = "probe.work"
with = { block = true }

[[on_failure]]
id = "tell_ops"
uses = "probe.work"
with = { value = "{{ run.error }}" }
"""


async def test_timeout_of_the_run_ends_sleeping_steps_too_and_on_failure_runs(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"both.toml": SLEEP_AND_WORK}) as h:
        run = await h.run("both")
        steps = await h.steps(run.id)
        records = await h.store.get_steps(run.id)
    assert (run.status, run.error) == ("failed", "the run timed out after 300ms")
    assert {k: (s.status, s.error_kind) for k, s in steps.items()} == {
        "nap": ("failed", "timeout"),
        "busy": ("failed", "timeout"),
    }
    assert "waiting" not in {r.status for r in records}
    assert [c.value for c in probe.of("tell_ops")] == ["the run timed out after 300ms"]


# -- unexpected exceptions and unknown actions ----------------------------------------------------------

CRASH = """
[[steps]]
id = "buggy"
uses = "probe.work"
retry = { attempts = 3, delay = "10ms" }
with = { fail = "crash" }
"""


async def test_bad_input_connector_exception_fails_the_step_not_the_engine(
    tmp_path: Path, probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="weir.engine"):
        async with probe_harness(tmp_path, {"crash.toml": CRASH}) as h:
            run = await h.run("crash")
            steps = await h.steps(run.id)
    message = "unexpected error in 'probe.work': ZeroDivisionError: division by zero"
    assert (steps["buggy"].status, steps["buggy"].error_kind, steps["buggy"].error) == ("failed", "permanent", message)
    assert (run.status, run.error) == ("failed", f"step 'buggy' failed: {message}")
    assert len(probe.of("buggy")) == 1  # a bug is not worth a retry
    assert "ZeroDivisionError" in caplog.text  # the traceback goes to the log, for whoever runs the server


class GoneConnection(ConnectionSettings):
    pass


class Ping(ActionInput):
    pass


class GoneConnector(Connector[GoneConnection]):
    name = "gone"
    connection_model = GoneConnection
    connection_required = False

    @action("ping", input=Ping)
    async def ping(self, ctx: ActionContext, inp: Ping) -> dict[str, bool]:
        return {"pong": True}


UNINSTALLED = """
[[steps]]
id = "ping"
uses = "gone.ping"
"""


async def test_bad_input_action_uninstalled_after_deploy_fails_the_step_clearly(tmp_path: Path) -> None:
    registry = ConnectorRegistry(discover=False, extra={"gone": GoneConnector, "probe": ProbeConnector})
    async with Harness(tmp_path, {"ping.toml": UNINSTALLED}, registry=registry) as h:
        h.engine.registry = ConnectorRegistry(discover=False, extra={"probe": ProbeConnector})
        run = await h.run("ping")
        steps = await h.steps(run.id)
    message = "no connector named 'gone' is installed; `weir connectors` lists the installed ones"
    assert (steps["ping"].status, steps["ping"].error) == ("failed", message)
    assert (run.status, run.error) == ("failed", f"step 'ping' failed: {message}")


BAD_WITH = """
[params.sleep]
type = "string"
default = "long"

[[steps]]
id = "call"
uses = "probe.work"
with = { sleep = "{{ params.sleep }}" }
"""


async def test_bad_input_rendered_inputs_that_do_not_fit_the_action_fail_the_step(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"bad.toml": BAD_WITH}) as h:
        run = await h.run("bad")
        steps = await h.steps(run.id)
    assert (steps["call"].status, steps["call"].error_kind) == ("failed", "permanent")
    assert steps["call"].error == (
        "inputs of 'probe.work' are invalid: sleep: Input should be a valid number, unable to parse string as a number"
    )


# -- compensate (saga) -------------------------------------------------------------------------------

SAGA = """
[[steps]]
id = "reserve"
uses = "probe.work"
with = { value = "seat 12A" }
compensate = { uses = "probe.work", with = { value = "release {{ steps.reserve.output.value }}" } }

[[steps]]
id = "hold"
uses = "probe.work"
needs = ["reserve"]
with = { value = "hold 99" }
compensate = { uses = "probe.work", with = { value = "unhold {{ steps.hold.output.value }}" } }

[[steps]]
id = "charge"
uses = "probe.work"
needs = ["hold"]
with = { fail = "permanent", message = "card declined" }
compensate = { uses = "probe.work", with = { value = "refund" } }

[[steps]]
id = "confirm"
uses = "probe.work"
needs = ["charge"]
with = { value = "confirmed" }
"""


async def test_compensate_undoes_succeeded_steps_in_reverse_order(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"saga.toml": SAGA}) as h:
        run = await h.run("saga")
        steps = await h.steps(run.id)
        compensations = [r for r in await h.store.get_steps(run.id) if r.phase == Phase.COMPENSATE]
    assert (run.status, run.error) == ("failed", "step 'charge' failed: card declined")
    assert steps["confirm"].status == "skipped"
    assert [c.value for c in probe.calls] == ["seat 12A", "hold 99", None, "unhold hold 99", "release seat 12A"]
    # an undo has an idempotency key of its own: a service must not answer it with the step's own result
    keys = {c.value: c.idempotency_key.removeprefix(f"{run.id}:") for c in probe.calls}
    assert keys["hold 99"] != keys["unhold hold 99"]
    assert keys["unhold hold 99"].endswith("@compensate")
    assert [(r.step_id, r.status, r.output) for r in compensations] == [
        ("hold", "succeeded", {"value": "unhold hold 99"}),
        ("reserve", "succeeded", {"value": "release seat 12A"}),
    ]


# -- on_failure ----------------------------------------------------------------------------------------

ON_FAILURE = """
[params.fail]
type = "boolean"
default = false

[[steps]]
id = "work"
uses = "probe.work"
with = { value = "work", fail = "{{ 'permanent' if params.fail else none }}", message = "disk full" }

[[on_failure]]
id = "tell_ops"
uses = "probe.work"
with = { value = "{{ workflow.name }} failed: {{ run.error }}" }
"""


async def test_on_failure_steps_run_once_when_the_run_fails(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"nightly.toml": ON_FAILURE}) as h:
        failed = await h.run("nightly", {"fail": True})
        records = [r for r in await h.store.get_steps(failed.id) if r.phase == Phase.ON_FAILURE]
        assert [c.value for c in probe.of("tell_ops")] == ["nightly failed: step 'work' failed: disk full"]
        fine = await h.run("nightly")
    assert (failed.status, failed.error) == ("failed", "step 'work' failed: disk full")
    assert [(r.step_id, r.status) for r in records] == [("tell_ops", "succeeded")]
    assert fine.status == "succeeded"
    assert len(probe.of("tell_ops")) == 1
