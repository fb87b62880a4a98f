"""What the engine stores about a run: secrets masked everywhere, token usage summed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.engine_probe import Probe, probe_harness

pytestmark = pytest.mark.anyio


# -- secrets and usage ---------------------------------------------------------------------------------

SECRET_USE = """
[[steps]]
id = "login"
uses = "probe.work"
with = { value = "Bearer {{ secrets.API_TOKEN }}" }

[outputs]
header = "{{ steps.login.output.value }}"
"""


async def test_secrets_are_stored_masked_while_the_step_gets_the_value(tmp_path: Path, probe: Probe) -> None:
    token = "tok-8f3a9c2e71"
    async with probe_harness(tmp_path, {"login.toml": SECRET_USE}, secrets={"API_TOKEN": token}) as h:
        run = await h.run("login")
        [record] = await h.store.get_steps(run.id)
    assert [c.value for c in probe.of("login")] == [f"Bearer {token}"]
    assert record.input == {"value": "Bearer ***"}
    assert record.output == {"value": "Bearer ***"}
    assert run.outputs == {"header": "Bearer ***"}


LEAKY = """
[[steps]]
id = "login"
uses = "probe.work"
with = { fail = "permanent", message = "token {{ secrets.API_TOKEN }} was rejected" }
"""


async def test_secrets_in_error_messages_are_masked(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"leaky.toml": LEAKY}, secrets={"API_TOKEN": "tok-8f3a9c2e71"}) as h:
        run = await h.run("leaky")
        [record] = await h.store.get_steps(run.id)
    assert record.error == "token *** was rejected"
    assert run.error == "step 'login' failed: token *** was rejected"


USAGE = """
[[steps]]
id = "summarize"
uses = "probe.work"
with = { usage = [10, 5] }

[[steps]]
id = "classify"
uses = "probe.work"
needs = ["summarize"]
with = { usage = [10, 5] }
"""


async def test_usage_reported_by_actions_is_summed_per_run(tmp_path: Path) -> None:
    async with probe_harness(tmp_path, {"usage.toml": USAGE}) as h:
        run = await h.run("usage")
        steps = await h.steps(run.id)
    assert (run.input_tokens, run.output_tokens) == (20, 10)
    assert (steps["classify"].input_tokens, steps["classify"].output_tokens) == (10, 5)
