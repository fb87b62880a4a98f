"""The run engine's overhead per durable step, against references measured in the same run.

1. linear: a workflow of 200 `transform` steps, each needing the one before, stored in an
   SQLite file (WAL). Reference: rendering the same 200 transform inputs directly with the
   same template engine, no engine and no database. Target (SPEC §10): ≤ 1 ms per step.
2. foreach: one `transform` step over 200 items (parallel 1 and parallel 8).
3. windmill: the shape of Windmill's published engine benchmark: 40 sequential
   `http.request` steps, each calling a local endpoint that sleeps 10 ms (a separate
   process). Reference: the same 40 requests made directly with httpx in a loop, and the
   400 ms of work. Target: total ≤ 1.05 x 400 ms.

    .venv/bin/python bench/engine.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from weir.testing import Harness

STEPS = 200
HTTP_STEPS = 40
WORK_MS = 10


def linear_workflow(n: int) -> str:
    parts = ['[[steps]]\nid = "s0"\nuses = "transform"\nwith.output = { value = 0 }\n']
    for i in range(1, n):
        parts.append(
            f'[[steps]]\nid = "s{i}"\nuses = "transform"\nneeds = ["s{i - 1}"]\n'
            f'with.output = {{ value = "{{{{ steps.s{i - 1}.output.value + 1 }}}}" }}\n'
        )
    parts.append(f'[outputs]\nlast = "{{{{ steps.s{n - 1}.output.value }}}}"\n')
    return "\n".join(parts)


def foreach_workflow(n: int, parallel: int) -> str:
    return (
        f'[[steps]]\nid = "each"\nuses = "transform"\nforeach = "{{{{ range({n}) | list }}}}"\n'
        f'parallel = {parallel}\nwith.output = "{{{{ item * 2 }}}}"\n'
    )


def http_workflow(n: int, url: str) -> str:
    parts = []
    for i in range(n):
        needs = f'needs = ["h{i - 1}"]\n' if i else ""
        parts.append(f'[[steps]]\nid = "h{i}"\nuses = "http.request"\n{needs}with = {{ url = "{url}" }}\n')
    return "\n".join(parts)


def _serve(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def work(_request: Any) -> JSONResponse:
        await asyncio.sleep(WORK_MS / 1000)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/work", work)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _best(repeat: int, once: Callable[[], Awaitable[float]]) -> float:
    times = [await once() for _ in range(repeat)]
    return min(times)


async def bench_linear(root: Path, repeat: int) -> None:
    async with Harness(root / "linear", {"linear.toml": linear_workflow(STEPS)}) as h:
        await h.run("linear")  # warm up: templates compiled, connections made

        async def engine_once() -> float:
            start = time.perf_counter()
            run = await h.run("linear")
            assert run.status == "succeeded", run.error
            assert run.outputs == {"last": STEPS - 1}
            return time.perf_counter() - start

        engine = await _best(repeat, engine_once)
        templates = h.engine.templates
        inputs = [{"value": f"{{{{ steps.s{i - 1}.output.value + 1 }}}}"} for i in range(1, STEPS)]

        async def direct_once() -> float:
            start = time.perf_counter()
            view: dict[str, Any] = {"s0": {"output": {"value": 0}}}
            for i, value in enumerate(inputs, start=1):
                view[f"s{i}"] = {"output": templates.render_value(value, {"steps": view})}
            return time.perf_counter() - start

        direct = await _best(repeat, direct_once)
    per_step = (engine - direct) / STEPS * 1000
    print(
        f"linear   {STEPS} transform steps      engine {engine * 1000:7.1f} ms   direct {direct * 1000:6.1f} ms"
        f"   overhead {per_step:.3f} ms/step   (target ≤ 1 ms)"
    )


async def bench_foreach(root: Path, repeat: int) -> None:
    for parallel in (1, 8):
        files = {"each.toml": foreach_workflow(STEPS, parallel)}
        async with Harness(root / f"foreach{parallel}", files) as h:
            await h.run("each")

            async def once() -> float:
                start = time.perf_counter()
                run = await h.run("each")
                assert run.status == "succeeded", run.error
                return time.perf_counter() - start

            took = await _best(repeat, once)
        print(
            f"foreach  {STEPS} items, parallel {parallel}      engine {took * 1000:7.1f} ms"
            f"   {took / STEPS * 1000:.3f} ms/item"
        )


async def bench_windmill(root: Path, repeat: int) -> None:
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}/work"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    await client.get(url)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

            async def direct_once() -> float:
                start = time.perf_counter()
                for _ in range(HTTP_STEPS):
                    (await client.get(url)).raise_for_status()
                return time.perf_counter() - start

            direct = await _best(repeat, direct_once)
        async with Harness(root / "windmill", {"chain.toml": http_workflow(HTTP_STEPS, url)}) as h:
            await h.run("chain")

            async def engine_once() -> float:
                start = time.perf_counter()
                run = await h.run("chain")
                assert run.status == "succeeded", run.error
                return time.perf_counter() - start

            engine = await _best(repeat, engine_once)
    finally:
        server.terminate()
        server.join()
    work = HTTP_STEPS * WORK_MS / 1000
    print(
        f"windmill {HTTP_STEPS} x {WORK_MS} ms http steps     engine {engine * 1000:7.1f} ms"
        f"   direct httpx {direct * 1000:6.1f} ms   work {work * 1000:.0f} ms"
        f"   ratio to work {engine / work:.3f}x   to direct {engine / direct:.3f}x   (target ≤ 1.05x work)"
    )


async def main(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await bench_linear(root, repeat)
        await bench_foreach(root, repeat)
        await bench_windmill(root, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is shown")
    args = parser.parse_args()
    start = time.perf_counter()
    asyncio.run(main(args.repeat))
    print(f"(bench took {time.perf_counter() - start:.1f} s; each figure is the best of {args.repeat} runs)")
