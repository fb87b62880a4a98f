"""Reusing earlier work: cached step outputs and reruns that keep what succeeded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.workflows.engine_probe import Probe, probe_harness

pytestmark = pytest.mark.anyio


# -- cache ---------------------------------------------------------------------------------------------

CACHED = """
[params.city]
type = "string"
default = "Oslo"

[[steps]]
id = "lookup"
uses = "probe.work"
cache = {{ key = "{{{{ params.city }}}}", ttl = "{ttl}" }}
with = {{ value = "weather in {{{{ params.city }}}}" }}
"""


async def test_cache_reuses_the_output_within_its_ttl(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"cached.toml": CACHED.format(ttl="1h")}) as h:
        first = await h.run("cached")
        second = await h.run("cached")
        other = await h.run("cached", {"city": "Rome"})
        steps = await h.steps(second.id)
    assert [c.value for c in probe.of("lookup")] == ["weather in Oslo", "weather in Rome"]
    assert (first.status, second.status, other.status) == ("succeeded", "succeeded", "succeeded")
    assert (steps["lookup"].status, steps["lookup"].note) == ("succeeded", "cached")
    assert steps["lookup"].output == {"value": "weather in Oslo"}


async def test_cache_calls_again_after_its_ttl(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"cached.toml": CACHED.format(ttl="100ms")}) as h:
        await h.run("cached")
        await asyncio.sleep(0.15)
        second = await h.run("cached")
        steps = await h.steps(second.id)
    assert len(probe.of("lookup")) == 2
    assert steps["lookup"].note is None


# -- rerun ---------------------------------------------------------------------------------------------

PIPELINE = """
[[steps]]
id = "extract"
uses = "probe.work"
with = { value = "rows" }

[[steps]]
id = "load"
uses = "probe.work"
needs = ["extract"]
with = { value = "{{ steps.extract.output.value }} loaded", fail = "transient", times = 1, message = "warehouse busy" }

[outputs]
loaded = "{{ steps.load.output.value }}"
"""


async def test_rerun_from_failed_reuses_succeeded_steps(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"pipeline.toml": PIPELINE}) as h:
        first = await h.run("pipeline")
        rerun = await h.engine.rerun(first.id, from_failed=True)
        final = await h.executor.run_until_finished(rerun.id)
        steps = await h.steps(rerun.id)
    assert (first.status, first.error) == ("failed", "step 'load' failed: warehouse busy")
    assert (final.status, final.outputs, final.rerun_of) == ("succeeded", {"loaded": "rows loaded"}, first.id)
    assert final.trigger == {"type": "rerun", "run_id": first.id, "from": "failed"}
    assert len(probe.of("extract")) == 1
    assert [c.run_id for c in probe.of("load")] == [first.id, rerun.id]
    assert (steps["extract"].status, steps["extract"].note) == ("succeeded", f"reused from run {first.id}")
    assert steps["extract"].output == {"value": "rows"}
    assert steps["load"].output == {"value": "rows loaded"}


async def test_rerun_from_the_start_runs_every_step_again(tmp_path: Path, probe: Probe) -> None:
    async with probe_harness(tmp_path, {"pipeline.toml": PIPELINE}) as h:
        first = await h.run("pipeline")
        rerun = await h.engine.rerun(first.id)
        final = await h.executor.run_until_finished(rerun.id)
        steps = await h.steps(rerun.id)
    assert final.status == "succeeded"
    assert final.trigger == {"type": "rerun", "run_id": first.id, "from": "start"}
    assert [c.run_id for c in probe.of("extract")] == [first.id, rerun.id]
    assert steps["extract"].note is None
