"""A weir process for the crash tests: one run on the SQLite file of a root directory, until it finishes.

    python -m tests.e2e.crash_worker ROOT RUN_ID [--submit WORKFLOW] [--die-before REGEX [--nth N]]

(from the repository root). The automation directory is ``ROOT/workflows`` and the database
``ROOT/state/weir.db`` (``weir.testing.Harness``), so every start of the worker sees the same runs.
With ``--submit`` the worker stores the run ``RUN_ID`` of ``WORKFLOW`` first, unless the database
holds it already; without it, it only executes (a restart: the executor frees the leases of the
dead process at start). It prints one JSON object per line on stdout: ``{"event": "ready", ...}``
once the run is stored and the executor is about to start, then
``{"event": "finished", "run": {...}, "steps": [...]}``.

With ``--die-before`` the worker kills itself with SIGKILL just before its Nth SQL statement that
matches REGEX (``^CREATE TABLE weir_logs``, ``^(INSERT|UPDATE)``): a crash at an exact point.

Steps use ``uses = "fx.append"``: the action appends ``"<step> <idempotency key> <attempt>"`` to
``ROOT/effects.log`` when it starts, then waits while the file ``ROOT/<block_while>`` exists,
then sleeps ``sleep`` seconds, then fails with a transient error while the log holds at most
``fail_times`` lines of its idempotency key (so failures count across processes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.registry import ConnectorRegistry
from weir.errors import TransientError
from weir.testing import Harness

EFFECTS = "effects.log"
ROOT = Path()
"""Where effects.log and the block files are: the root given on the command line."""


class FxConnection(ConnectionSettings):
    pass


class Append(ActionInput):
    sleep: float = 0
    block_while: str | None = None
    fail_times: int = 0
    """Fail (transient) while effects.log holds at most this many lines of the call's idempotency key."""


class FxConnector(Connector[FxConnection]):
    name = "fx"
    connection_model = FxConnection
    connection_required = False

    @action("append", input=Append, idempotent=True)
    async def append(self, ctx: ActionContext, inp: Append) -> dict[str, Any]:
        """Append a line to effects.log (the side effect), then block and sleep as asked."""
        with (ROOT / EFFECTS).open("a+", encoding="utf-8") as effects:
            effects.write(f"{ctx.step_id} {ctx.idempotency_key} {ctx.attempt}\n")
            effects.seek(0)
            calls = sum(1 for line in effects if line.split()[1] == ctx.idempotency_key)
        if inp.block_while:
            while (ROOT / inp.block_while).exists():  # noqa: ASYNC110 - another process removes it
                await asyncio.sleep(0.02)
        await asyncio.sleep(inp.sleep)
        if calls <= inp.fail_times:
            raise TransientError(f"call {calls} of {ctx.idempotency_key} fails", action="fx.append")
        return {"step": ctx.step_id, "item": ctx.item_index}


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


async def work(root: Path, run_id: str, submit: str | None) -> None:
    registry = ConnectorRegistry(discover=True, extra={"fx": FxConnector})
    async with Harness(root, registry=registry) as h:
        if await h.store.get_run(run_id) is None:
            if not submit:
                raise SystemExit(f"no run {run_id} in {h.state_dir}")
            await h.submit(submit, run_id=run_id)
        emit("ready", pid=os.getpid(), run_id=run_id)
        run = await h.executor.run_until_finished(run_id)
        steps = await h.store.get_steps(run_id)
    emit("finished", run=dataclasses.asdict(run), steps=[dataclasses.asdict(s) for s in steps])


def die_before(pattern: str, nth: int) -> None:
    """SIGKILL this process just before its ``nth`` SQL statement matching ``pattern``: a crash at an exact point."""
    wanted = re.compile(pattern, re.IGNORECASE)
    seen = 0

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal seen
        if wanted.search(statement.strip()):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", before)


def main(argv: list[str] | None = None) -> None:
    global ROOT
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.crash_worker")
    parser.add_argument("root", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--submit", metavar="WORKFLOW", help="store the run first unless it is stored (a first start)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    parser.add_argument("--die-before", metavar="REGEX", help="kill -9 itself before an SQL statement like this")
    parser.add_argument("--nth", type=int, default=1, help="... before the nth such statement")
    args = parser.parse_args(argv)
    if args.die_before:
        die_before(args.die_before, args.nth)
    ROOT = args.root.resolve()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    async def bounded() -> None:
        async with asyncio.timeout(args.timeout):  # an orphaned worker never outlives its test for long
            await work(ROOT, args.run_id, args.submit)

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
