"""Runs that wait: durable sleep, wait for a resume call, and concurrency limits between runs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.workflows.engine_probe import Probe, probe_harness
from weir.testing import Harness
from weir.workflows.executor import Executor

pytestmark = pytest.mark.anyio


# -- sleep ---------------------------------------------------------------------------------------------

NAP = """
[[steps]]
id = "nap"
uses = "sleep"
with.duration = "300ms"

[[steps]]
id = "after"
uses = "transform"
needs = ["nap"]
with.output = "awake"
"""

QUICK = """
[[steps]]
id = "hello"
uses = "transform"
with.output = "hello"
"""


async def test_sleep_parks_the_run_without_holding_an_executor_slot(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"nap.toml": NAP, "quick.toml": QUICK}) as h:
        h.executor = Executor(h.engine, max_runs=1, poll_seconds=0.05)
        nap = await h.submit("nap")
        await h.executor.start()
        parked = await h.until(nap.id, "waiting")
        quick = await h.submit("quick")
        quick_done = await h.until(quick.id, "succeeded")
        nap_done = await h.until(nap.id, "succeeded")
        steps = await h.steps(nap.id)
    assert parked.wake_at is not None
    assert parked.lease_owner is None  # no executor holds a parked run
    assert quick_done.finished_at is not None
    assert nap_done.started_at is not None
    assert nap_done.finished_at is not None
    assert quick_done.finished_at < nap_done.finished_at
    assert nap_done.finished_at - nap_done.started_at >= timedelta(milliseconds=300)
    assert (steps["nap"].status, steps["nap"].output) == ("succeeded", None)
    assert steps["after"].output == "awake"


async def test_sleep_is_durable_across_a_restart(tmp_path: Path) -> None:
    files = {"nap.toml": NAP}
    async with Harness(tmp_path, files) as h:
        run = await h.submit("nap")
        await h.executor.start()
        await h.until(run.id, "waiting")
    async with Harness(tmp_path, files) as h:  # a new process on the same database
        final = await h.executor.run_until_finished(run.id)
        steps = await h.steps(run.id)
    assert final.status == "succeeded"
    assert final.finished_at is not None
    assert final.started_at is not None
    assert final.finished_at - final.started_at >= timedelta(milliseconds=300)
    assert steps["after"].output == "awake"


SLEEPY = """
timeout = "200ms"

[[steps]]
id = "nap"
uses = "sleep"
with.duration = "1h"
"""


async def test_sleep_past_the_run_timeout_fails_the_run(tmp_path: Path) -> None:
    async with asyncio.timeout(2):
        async with Harness(tmp_path, {"sleepy.toml": SLEEPY}) as h:
            run = await h.run("sleepy")
            steps = await h.steps(run.id)
    assert (run.status, run.error) == ("failed", "the run timed out after 200ms")
    assert (steps["nap"].status, steps["nap"].error_kind, steps["nap"].error) == (
        "failed",
        "timeout",
        "the run timed out while this step ran",
    )


# -- wait ----------------------------------------------------------------------------------------------

APPROVAL = """
[[steps]]
id = "ask"
uses = "transform"
with.output = {{ link = "{{{{ run.resume_url('approval') }}}}" }}

[[steps]]
id = "approval"
uses = "wait"
needs = ["ask"]
with = {{ timeout = "{timeout}", message = "Ship it?" }}
fallback = {{ ok = false }}

[[steps]]
id = "ship"
uses = "transform"
needs = ["approval"]
if = "steps.approval.output.ok"
with.output = "shipped, approved by {{{{ steps.approval.output.by }}}}"
"""


async def test_wait_resumes_with_the_posted_payload(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"release.toml": APPROVAL.format(timeout="1h")}) as h:
        run = await h.submit("release")
        await h.executor.start()
        await h.until(run.id, "waiting")
        waiting = await h.steps(run.id)
        resumed = await h.engine.resume(run.id, "approval", {"ok": True, "by": "ada"})
        final = await h.until(run.id, "succeeded")
        steps = await h.steps(run.id)
        again = await h.engine.resume(run.id, "approval", {"ok": False})
    assert waiting["approval"].status == "waiting"
    assert "ship" not in waiting  # not started yet
    assert resumed is not None
    assert resumed.status == "succeeded"
    assert final.status == "succeeded"
    assert (steps["approval"].status, steps["approval"].output) == ("succeeded", {"ok": True, "by": "ada"})
    assert steps["ship"].output == "shipped, approved by ada"
    assert again is None  # nothing waits any more


async def test_wait_resume_url_is_absolute_and_signed(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"release.toml": APPROVAL.format(timeout="1h")}) as h:
        run = await h.submit("release")
        await h.executor.start()
        await h.until(run.id, "waiting")
        steps = await h.steps(run.id)
        link = urlsplit(steps["ask"].output["link"])
        [sig] = parse_qs(link.query)["sig"]
        assert (link.scheme, link.netloc) == ("http", "127.0.0.1:8080")
        assert link.path == f"/api/runs/{run.id}/steps/approval/resume"
        assert h.engine.verify_resume(run.id, "approval", sig)
        assert not h.engine.verify_resume(run.id, "ask", sig)
        assert not h.engine.verify_resume(run.id, "approval", sig[:-1] + ("0" if sig[-1] != "0" else "1"))


async def test_wait_timeout_fails_the_step_with_kind_timeout_and_the_fallback_applies(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"release.toml": APPROVAL.format(timeout="100ms")}) as h:
        run = await h.run("release")
        steps = await h.steps(run.id)
    assert (run.status, run.error) == ("succeeded", None)
    approval = steps["approval"]
    assert (approval.status, approval.error_kind, approval.output) == ("failed", "timeout", {"ok": False})
    assert approval.error == "no resume call arrived within the wait timeout (100ms)"
    assert (steps["ship"].status, steps["ship"].note) == ("skipped", "if was false")


async def test_wait_timeout_is_the_deadline_and_is_not_retried(tmp_path: Path) -> None:
    # A retry policy that covers timeouts (here from [defaults], as in weir.toml) must not wait a second time:
    # the approval window would silently become attempts x timeout.
    workflow = 'defaults.retry = { attempts = 3, delay = "10ms", on = ["transient"] }\n' + APPROVAL.format(
        timeout="100ms"
    )
    async with Harness(tmp_path, {"release.toml": workflow}) as h:
        run = await h.run("release")
        steps = await h.steps(run.id)
        tries = [r for r in await h.store.get_steps(run.id) if r.step_id == "approval" and r.attempt > 0]
    assert run.status == "succeeded"
    assert [(r.attempt, r.status, r.error_kind) for r in tries] == [(1, "failed", "timeout")]
    assert (steps["approval"].status, steps["approval"].output) == ("failed", {"ok": False})


# -- concurrency ---------------------------------------------------------------------------------------

LIMITED = """
[concurrency]
limit = 1
policy = "{policy}"

[params.block]
type = "boolean"
default = false

[[steps]]
id = "work"
uses = "probe.work"
with = {{ block = "{{{{ params.block }}}}", sleep = 0.1 }}
"""


async def test_concurrency_skip_refuses_a_run_while_one_is_active(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"limited.toml": LIMITED.format(policy="skip")}) as h:
        first = await h.submit("limited", {"block": True})
        await h.executor.start()
        await probe.started.wait()
        second = await h.engine.submit("limited")
        page = await h.store.list_runs(workflow="limited")
    assert (second.run, second.skipped) == (None, True)
    assert [r.id for r in page.runs] == [first.id]


async def test_concurrency_skip_counts_a_queued_run_as_active(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"limited.toml": LIMITED.format(policy="skip")}) as h:
        first = await h.submit("limited")
        second = await h.engine.submit("limited")  # before any executor took the first
        page = await h.store.list_runs(workflow="limited")
    assert (second.run, second.skipped) == (None, True)
    assert [r.id for r in page.runs] == [first.id]


KEYED = """
[concurrency]
key = "{{ params.customer }}"
policy = "skip"

[params.customer]
type = "string"
required = true

[[steps]]
id = "work"
uses = "probe.work"
with = { block = true }
"""


async def test_concurrency_key_limits_runs_per_key(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"keyed.toml": KEYED}) as h:
        acme = await h.engine.submit("keyed", {"customer": "acme"})
        acme_again = await h.engine.submit("keyed", {"customer": "acme"})
        bob = await h.engine.submit("keyed", {"customer": "bob"})
    assert acme.run is not None
    assert acme.run.concurrency_key == "acme"
    assert acme_again.skipped
    assert bob.run is not None
    assert bob.run.concurrency_key == "bob"


async def test_concurrency_cancel_oldest_cancels_the_older_run(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"limited.toml": LIMITED.format(policy="cancel-oldest")}) as h:
        first = await h.submit("limited", {"block": True})
        await h.executor.start()
        await probe.started.wait()
        submitted = await h.engine.submit("limited")
        assert submitted.run is not None
        old = await h.until(first.id, "cancelled")
        new = await h.until(submitted.run.id, "succeeded")
        old_steps = await h.steps(first.id)
    assert submitted.cancelled == [first.id]
    assert (old.error, old_steps["work"].status) == ("cancelled", "cancelled")
    assert new.status == "succeeded"


async def test_concurrency_queue_starts_the_next_run_after_the_first_finishes(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"limited.toml": LIMITED.format(policy="queue")}) as h:
        first = await h.submit("limited")
        second = await h.submit("limited")
        await h.executor.start()
        await h.until(first.id, "running")
        held = await h.store.get_run(second.id)
        await h.until(first.id, "succeeded")
        await h.until(second.id, "succeeded")
    assert held is not None
    assert held.status == "queued"
    one, two = probe.of("work")
    assert (one.run_id, two.run_id) == (first.id, second.id)
    assert one.ended is not None
    assert two.started >= one.ended
