"""On PostgreSQL an idle executor hears about work another process created at once, without waiting for its poll."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from weir.testing import Harness

pytestmark = pytest.mark.anyio

QUICK = """
[[steps]]
id = "hello"
uses = "transform"
with.output = "hello"
"""

POLL = 30.0
"""Far longer than the test waits: only a notification can start the run in time."""


async def test_a_run_accepted_by_another_process_starts_without_waiting_for_the_poll(
    tmp_path: Path, pg_schema_url: str
) -> None:
    async with (
        Harness(tmp_path / "a", {"quick.toml": QUICK}, db=pg_schema_url, poll_seconds=POLL) as accepting,
        Harness(tmp_path / "b", {"quick.toml": QUICK}, db=pg_schema_url, poll_seconds=POLL) as executing,
    ):
        await executing.executor.start()
        try:
            await anyio.sleep(0.3)  # the executor listens, and its first claim (at start) found nothing
            began = time.monotonic()
            runs = [await accepting.submit("quick") for _ in range(3)]
            for run in runs:
                done = await executing.until(run.id, "succeeded", within=5.0)
                assert done.lease_owner is None or done.lease_owner == executing.executor.owner
            assert time.monotonic() - began < 5.0
        finally:
            await executing.executor.stop()
