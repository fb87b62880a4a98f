from __future__ import annotations

from pathlib import Path

import pytest

from weir.testing import Harness

pytestmark = pytest.mark.anyio

HELLO = """
[params.name]
type = "string"
default = "world"

[[steps]]
id = "greet"
uses = "transform"
with.output = { greeting = "hello {{ params.name }}" }

[outputs]
greeting = "{{ steps.greet.output.greeting }}"
"""


async def test_harness_runs_a_workflow(tmp_path: Path) -> None:
    async with Harness(tmp_path, {"hello.toml": HELLO}) as h:
        run = await h.run("hello", {"name": "ada"})
    assert run.status == "succeeded"
    assert run.outputs == {"greeting": "hello ada"}
