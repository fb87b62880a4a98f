"""A connector for engine tests: it records every call and fails, sleeps or blocks on request.

Steps use it as ``uses = "probe.work"`` (no connection needed)::

    with = { value = 1, sleep = 0.2, fail = "transient", times = 2 }

fails the first two calls of that step (per item, across runs) with a transient error, then returns
``{"value": 1}``. ``PROBE`` is shared by every instance the engine creates; the ``probe``
fixture resets it and hands it to the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.registry import ConnectorRegistry
from weir.errors import PermanentError, TransientError
from weir.records import RunStore
from weir.testing import Harness


@dataclass
class Call:
    """One call of ``probe.work`` as the connector saw it."""

    run_id: str
    step_id: str
    item_index: int | None
    attempt: int
    idempotency_key: str
    value: Any
    started: float
    ended: float | None = None
    needs_seen: dict[str, str] = field(default_factory=dict)
    """Status of each step named in ``check``, as the store held it when this call started."""


@dataclass
class Probe:
    calls: list[Call] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    store: RunStore | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a call with ``block = true`` has started."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when any call has ended."""
    released: bool = False
    """True: calls with ``block = true`` no longer block (the process 'restarted')."""

    def reset(self) -> None:
        self.calls.clear()
        self.active = self.max_active = 0
        self.store = None
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.released = False

    def of(self, step_id: str) -> list[Call]:
        return [c for c in self.calls if c.step_id == step_id]


PROBE = Probe()


class ProbeConnection(ConnectionSettings):
    label: str = "default"


class Work(ActionInput):
    value: Any = None
    sleep: float = 0
    fail: Literal["transient", "permanent", "timeout", "crash"] | None = None
    times: int = 1_000_000
    """How many calls of the step (per item, across runs) fail before one succeeds."""
    message: str = "the service said no"
    retry_after: float | None = None
    block: bool = False
    usage: list[int] | None = None
    check: list[str] = Field(default_factory=list)


class ProbeConnector(Connector[ProbeConnection]):
    name = "probe"
    connection_model = ProbeConnection
    connection_required = False

    @action("work", input=Work, idempotent=True)
    async def work(self, ctx: ActionContext, inp: Work) -> dict[str, Any]:
        call = Call(
            ctx.run_id, ctx.step_id, ctx.item_index, ctx.attempt, ctx.idempotency_key, inp.value, time.monotonic()
        )
        if inp.check:
            assert PROBE.store is not None, "set PROBE.store = h.store to use check"
            records = await PROBE.store.get_steps(ctx.run_id)
            call.needs_seen = {r.step_id: str(r.status) for r in records if r.step_id in inp.check}
        PROBE.calls.append(call)
        PROBE.active += 1
        PROBE.max_active = max(PROBE.max_active, PROBE.active)
        try:
            if inp.block and not PROBE.released:
                PROBE.started.set()
                await asyncio.Event().wait()
            await asyncio.sleep(inp.sleep)
            if inp.usage:
                ctx.add_usage(inp.usage[0], inp.usage[1])
            tries = sum(1 for c in PROBE.calls if (c.step_id, c.item_index) == (ctx.step_id, ctx.item_index))
            if inp.fail and tries <= inp.times:
                if inp.fail == "transient":
                    raise TransientError(inp.message, action="probe.work", retry_after=inp.retry_after)
                if inp.fail == "timeout":
                    raise TransientError(inp.message, action="probe.work", timeout=True)
                if inp.fail == "permanent":
                    raise PermanentError(inp.message, action="probe.work")
                raise ZeroDivisionError("division by zero")
            return {"value": inp.value}
        finally:
            PROBE.active -= 1
            call.ended = time.monotonic()
            PROBE.ended.set()


def registry() -> ConnectorRegistry:
    return ConnectorRegistry(discover=False, extra={"probe": ProbeConnector})


@asynccontextmanager
async def probe_harness(root: Path, files: Mapping[str, str], **kwargs: Any) -> AsyncIterator[Harness]:
    """A ``Harness`` whose registry holds the probe connector, with ``PROBE.store`` set to its store."""
    async with Harness(root, files, registry=registry(), **kwargs) as h:
        PROBE.store = h.store
        yield h
