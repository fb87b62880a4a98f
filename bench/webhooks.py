"""`weir serve` as a webhook server, against references measured in the same run (SPEC §10).

1. throughput: accepted-and-stored webhooks/s of one `weir serve` process (SQLite in a temp
   state dir) for a webhook with hmac-sha256 auth, a payload schema and a params mapping that
   starts 3 `transform` steps, answered async. References: a bare Starlette endpoint and a naive
   "parse the JSON, insert and commit one row into SQLite (WAL)" endpoint, both on uvicorn with
   uvloop + httptools. All three are loaded by `wrk` with the same connections and duration,
   the server on one core and wrk on another. Only 2xx answers count; afterwards the stored runs
   are counted in the run database and compared with the 202 answers. weir runs with
   `--max-queued 0`: the load stores more runs than the default limit, and answers refused for
   back-pressure are not intake capacity. Target: ≥ 0.35x bare.
2. latency: webhook → run finished for the same workflow at a moderate rate (50/s), sent by an
   httpx client on the other core: server side (created_at → finished_at), send → finished_at,
   and client-observed with a `response = "sync"` variant of the webhook. Reference: the bare
   endpoint at the same rate from the same client. Target: p50 ≤ 10 ms, p99 ≤ 50 ms.
3. memory: idle RSS (VmRSS) of `weir serve` on the example repository and on 1,000 generated
   workflow files (as bench/check_1000.py makes them). Reference: the bare endpoint's process.
   Targets: ≤ 100 MB and ≤ 200 MB.
4. apply: 1,000 workflows as a revision: the first apply at start (process start → /readyz),
   and a commit changing one file → its sha in /api/status (through the file watcher) and
   through POST /api/sync. Where the time goes: the same steps (read the commit, validate,
   store the revision, build the webhook table, reconcile the schedules) timed in this process,
   with the caches the server keeps from one revision to the next.
   Reference: parsing the same files with tomllib/json. Target: ≤ 1 s.

    .venv/bin/python bench/webhooks.py [--duration 10] [--connections 64] [--only throughput|latency|memory|apply]

Needs `wrk` for the throughput part (Debian/Ubuntu: apt-get install -y wrk); exits 2 without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from check_1000 import generate, parse_only  # noqa: E402 - a sibling script, not a package

SECRET = "bench-hook-secret"  # noqa: S105 - a benchmark fixture
HOOK = "bench/alerts"
SYNC_HOOK = "bench/alerts-sync"
BODY = json.dumps({"service": "checkout", "metrics": {"error_rate": 42.5, "window": "5m"}, "source": "bench"}).encode()
SIGNATURE = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
HEADERS = {"Content-Type": "application/json", "X-Signature": SIGNATURE}
MB = 1024 * 1024
LATENCY_RATE = 50
DISTURBED = 0.05
"""A wall-clock figure is marked when its processes waited for a core longer than this share of the time."""
FINISHED = ("succeeded", "failed", "cancelled")

HOOK_CHECKS = """\
auth = { type = "hmac-sha256", secret = "{{ secrets.BENCH_HOOK_SECRET }}", header = "X-Signature", prefix = "sha256=" }
params = { service = "{{ payload.service }}", error_rate = "{{ payload.metrics.error_rate }}" }
[on.webhook.schema]
type = "object"
required = ["service", "metrics"]
properties.service = { type = "string" }
properties.metrics = { type = "object", required = ["error_rate"], properties = { error_rate = { type = "number" } } }
"""
WORKFLOW = (
    f"""
description = "Benchmark: a signed, checked and mapped webhook starting three trivial steps."

[params.service]
type = "string"
required = true

[params.error_rate]
type = "number"
required = true

[[on.webhook]]
path = "{HOOK}"
response = "async"
{HOOK_CHECKS}
[[on.webhook]]
path = "{SYNC_HOOK}"
response = "sync"
timeout = "10s"
{HOOK_CHECKS}
"""
    + """
[[steps]]
id = "classify"
uses = "transform"
with.output = { severity = "{{ 'critical' if params.error_rate > 40 else 'info' }}" }

[[steps]]
id = "label"
uses = "transform"
needs = ["classify"]
with.output = "{{ params.service }}: {{ steps.classify.output.severity }}"

[[steps]]
id = "summary"
uses = "transform"
needs = ["label"]
with.output = { text = "{{ steps.label.output }}", rate = "{{ params.error_rate }}" }

[outputs]
summary = "{{ steps.summary.output.text }}"
"""
)

# The generated 1,000 workflows name these connections; nothing may leave the machine if a schedule fires.
LOCAL_CONFIG = """
[connections.warehouse]
type = "db"
url = "{{ secrets.WAREHOUSE_URL }}"

[connections.slack]
type = "slack"
token = "{{ secrets.SLACK_BOT_TOKEN }}"
base_url = "http://127.0.0.1:9"

[connections.pagerduty]
type = "pagerduty"
routing_key = "{{ secrets.PAGERDUTY_KEY }}"
base_url = "http://127.0.0.1:9"
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Signature"] = "{signature}"

local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {{}} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {{}}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\\n", status, n)) end
end
"""


# -- reference servers (run as `webhooks.py --serve bare|naive`) -----------------------------------------


def serve_reference(kind: str, port: int, db: str) -> None:
    import uuid
    from datetime import UTC

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def bare(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload TEXT, created_at TEXT)")
    conn.commit()

    async def naive(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        event_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?)", (event_id, json.dumps(payload), datetime.now(UTC).isoformat())
        )
        conn.commit()
        return JSONResponse({"run_id": event_id}, status_code=202)

    endpoint = bare if kind == "bare" else naive
    app = Starlette(routes=[Route("/ping", bare), Route("/hooks/{path:path}", endpoint, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


# -- processes -----------------------------------------------------------------------------------------------


def cores() -> tuple[int | None, int | None]:
    """(server core, client core); None, None on a one-core machine (nothing is pinned)."""
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[1]) if len(available) >= 2 else (None, None)


SERVER_CORE, CLIENT_CORE = cores()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(core: int | None) -> Any:
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


@dataclass
class Server:
    """A server process on the server core, its log in ``log``."""

    argv: list[str]
    log: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log.open("ab") as out:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_pin(SERVER_CORE),
            )
        return self

    def wait(self, path: str, timeout: float = 60.0) -> float:
        """Poll ``path`` until it answers 2xx; the seconds since the process started."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{' '.join(self.argv)} exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + path, timeout=2).is_success:
                    return time.perf_counter() - self.started
            time.sleep(0.01)
        sys.exit(f"{' '.join(self.argv)} was not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # as a service manager stops it
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def waited_seconds(self, *, threads: bool = False) -> float:
        """How long the main thread (the event loop; with ``threads`` all of them) was ready to run but had no core."""
        assert self.proc is not None
        paths = (
            Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat")
            if threads
            else [Path(f"/proc/{self.proc.pid}/schedstat")]
        )
        total = 0
        for path in paths:
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += int(path.read_text().split()[1])
        return total / 1e9


@contextlib.contextmanager
def running(server: Server, ready: str) -> Iterator[Server]:
    server.start()
    try:
        server.wait(ready)
        yield server
    finally:
        server.stop()


def weir_server(repo: Path, state: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Server:
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "weir", "serve", "--repo", str(repo), "--state-dir", str(state), "--port", str(port)]
    argv += args
    return Server(argv, state / "serve.log", port, {"WEIR_SECRET_BENCH_HOOK_SECRET": SECRET, **(env or {})})


def reference_server(kind: str, root: Path) -> Server:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]
    argv += ["--db", str(root / f"{kind}.db")]
    return Server(argv, root / f"{kind}.log", port)


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(repo: Path, write: Any) -> str:
    """A git repository with ``write(repo / "workflows")`` committed; returns the sha."""
    (repo / "workflows").mkdir(parents=True)
    write(repo / "workflows")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    return git(repo, "rev-parse", "HEAD")


def bench_repo(root: Path) -> Path:
    repo = root / "repo"
    make_repo(repo, lambda d: (d / "bench.toml").write_text(WORKFLOW))
    return repo


def runs_db(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "weir.db", timeout=10)


def count_runs(state: Path) -> tuple[int, int]:
    """(runs stored, runs finished) in the run database."""
    with contextlib.closing(runs_db(state)) as conn:
        total, done = conn.execute("SELECT count(*), count(finished_at) FROM weir_runs").fetchone()
    return int(total), int(done)


# -- 1. throughput -------------------------------------------------------------------------------------------


@dataclass
class Load:
    """What wrk reported for one server."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    errors: str
    client_cpu: float
    server_cpu: float
    server_waited: float

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.rate / max(self.server_cpu, 1e-9)

    def describe(self) -> str:
        other = {s: n for s, n in self.statuses.items() if not 200 <= s < 300}
        text = f"{self.rate:9.0f} 2xx/s  ({self.ok} in {self.seconds:.2f} s"
        if other:
            text += f"; NOT 2xx: {other}"
        if self.errors:
            text += f"; {self.errors}"
        return (
            text + f"; {self.per_cpu:.0f} per cpu-s; server cpu {self.server_cpu:.0%}, "
            f"waiting for its core {self.server_waited:.0%}; wrk cpu {self.client_cpu:.0%})"
        )


def stored_matches(stored: int, accepted: int, connections: int) -> bool:
    """Every 202 has its run stored, plus at most one run per connection for requests wrk left in flight."""
    return 0 <= stored - accepted <= connections


def stored_verdict(stored: int, accepted: int, connections: int) -> str:
    """Runs stored against 202 answers: equal, more by the requests wrk left in flight, or a mismatch."""
    in_flight = stored - accepted
    text = "equal" if in_flight == 0 else f"{in_flight:+d}"
    if not stored_matches(stored, accepted, connections):
        return text + "  <-- MISMATCH"
    return text + (f" (requests in flight when wrk stopped, at most {connections})" if in_flight else "")


@dataclass(frozen=True)
class WrkTotals:
    """The summary wrk prints at its end."""

    requests: int
    seconds: float
    errors: str
    """wrk's "Socket errors" line, or empty."""


def wrk_totals(returncode: int, text: str, *, counted: int) -> WrkTotals:
    """Read wrk's summary; exit when wrk failed, printed something else, or the Lua script counted
    ``counted`` answers by status where wrk counted another number of requests."""
    if returncode != 0:
        sys.exit(f"wrk failed ({returncode}):\n{text}")
    found = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", text)
    if not found:
        sys.exit(f"cannot read wrk's output:\n{text}")
    if counted != int(found.group(1)):
        sys.exit(f"the Lua status counts ({counted} answers) do not add up to wrk's request count:\n{text}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}[found.group(3)]
    errors = re.search(r"Socket errors: .*", text)
    return WrkTotals(int(found.group(1)), float(found.group(2)) * unit, errors.group(0) if errors else "")


def wrk(server: Server, script: Path, connections: int, seconds: float) -> Load:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "-s",
        str(script),
        f"{server.url}/hooks/{HOOK}",
    ]
    cpu_before, waited_before, start = server.cpu_seconds(), server.waited_seconds(), time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pin(CLIENT_CORE))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        server_cpu = server.cpu_seconds() - cpu_before
        server_waited = server.waited_seconds() - waited_before
        out.seek(0)
        text = out.read().decode()
    statuses = {int(s): int(n) for s, n in re.findall(r"^status (\d+) (\d+)$", text, re.M)}
    totals = wrk_totals(proc.returncode, text, counted=sum(statuses.values()))
    return Load(
        requests=totals.requests,
        seconds=totals.seconds,
        statuses=statuses,
        errors=totals.errors,
        client_cpu=(usage.ru_utime + usage.ru_stime) / wall,
        server_cpu=server_cpu / wall,
        server_waited=server_waited / wall,
    )


def bench_throughput(root: Path, duration: float, connections: int, warmup: float, table: list[Row]) -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed; the throughput benchmark needs it (Debian/Ubuntu: apt-get install -y wrk)")
        sys.exit(2)
    script = root / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=BODY.decode(), signature=SIGNATURE))
    print(
        f"\n== 1. throughput: wrk -t1 -c{connections} -d{duration:g}s after {warmup:g} s of warm-up, "
        f"server on core {SERVER_CORE}, wrk on core {CLIENT_CORE}"
    )
    print("  (per cpu-s: 2xx answers per second of CPU the server process got, less sensitive to other work on")
    print("  the machine than the wall-clock rate; the bare endpoint is measured before and after the others)")
    results: dict[str, Load] = {}
    for kind in ("bare", "naive"):
        with running(reference_server(kind, root), "/ping") as server:
            wrk(server, script, connections, warmup)
            results[kind] = load = wrk(server, script, connections, duration)
        print(f"  {kind:>10}: {load.describe()}")

    state = root / "state-throughput"
    # Warm-up and load store more runs than the default --max-queued (50,000) allows; what it refuses with 503
    # is back-pressure, measured by tests, not intake capacity, so the limit is off here.
    unlimited = ("--max-queued", "0")
    with running(weir_server(bench_repo(root / "throughput"), state, args=unlimited), "/readyz") as server:
        answer = httpx.post(f"{server.url}/hooks/{HOOK}", content=BODY, headers=HEADERS, timeout=10)
        if answer.status_code != 202:
            sys.exit(f"the benchmark webhook answered {answer.status_code}: {answer.text}")
        wrk(server, script, connections, warmup)
        time.sleep(1.0)  # the warm-up's answers in flight when wrk stopped
        before, _ = count_runs(state)
        results["weir"] = load = wrk(server, script, connections, duration)
        at_end, finished_at_end = count_runs(state)
        time.sleep(1.0)  # answers in flight when wrk stopped
        stored = count_runs(state)[0] - before
    accepted = load.statuses.get(202, 0)
    print(f"  {'weir':>10}: {load.describe()}")
    verdict = stored_verdict(stored, accepted, connections)
    print(f"              runs stored during the load {stored}, 202 answers {accepted}: {verdict}")
    print(
        f"              by the end of the load {finished_at_end} of the {at_end} stored runs had finished "
        f"({at_end - finished_at_end} queued or running)"
    )
    with running(reference_server("bare", root), "/ping") as server:
        wrk(server, script, connections, warmup)
        again = wrk(server, script, connections, duration)
    print(f"  {'bare again':>10}: {again.describe()}")

    bare = (results["bare"].rate + again.rate) / 2
    bare_cpu = (results["bare"].per_cpu + again.per_cpu) / 2
    naive, weir = results["naive"], results["weir"]
    print(
        f"  weir / bare = {weir.rate / bare:.2f}x ({weir.per_cpu / bare_cpu:.2f}x per cpu-s), target ≥ 0.35x;  "
        f"naive SQLite / bare = {naive.rate / bare:.2f}x ({naive.per_cpu / bare_cpu:.2f}x per cpu-s)"
    )
    target, ref, ref_cpu = "≥ 0.35x bare", f"bare {bare:.0f}/s", f"bare {bare_cpu:.0f}"
    ratio, ratio_cpu = weir.rate / bare, weir.per_cpu / bare_cpu
    disturbed = max(load.server_waited for load in (*results.values(), again)) > DISTURBED
    table.append(Row("accepted webhooks/s", f"{weir.rate:.0f}/s", target, ref, ratio, ratio >= 0.35, disturbed))
    table.append(
        Row("  the same per server cpu-s", f"{weir.per_cpu:.0f}", target, ref_cpu, ratio_cpu, ratio_cpu >= 0.35)
    )
    table.append(Row("naive SQLite endpoint", f"{naive.rate:.0f}/s", "(reference)", ref, naive.rate / bare, None))


# -- 2. latency ----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def describe(values: list[float]) -> str:
    p50, p99, top = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000, max(values) * 1000
    return f"p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {top:6.1f} ms"


async def paced(url: str, rate: int, seconds: float) -> list[tuple[float, float, httpx.Response]]:
    """POST the signed body to ``url`` ``rate`` times a second (open loop); (sent wall time, latency, answer)."""
    results: list[tuple[float, float, httpx.Response]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one() -> None:
            sent, start = time.time(), time.perf_counter()
            answer = await client.post(url, content=BODY, headers=HEADERS)
            results.append((sent, time.perf_counter() - start, answer))

        for _ in range(5):  # open the connections
            await one()
        results.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return results


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def finished_runs(
    server: Server, sent: list[tuple[float, float, httpx.Response]]
) -> list[tuple[float, dict[str, Any]]]:
    """(sent wall time, run JSON) of each answered request, once its run has finished."""
    runs = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        deadline = time.monotonic() + 60
        for when, _, answer in sent:
            while True:
                run = client.get(f"/api/runs/{answer.json()['run_id']}").json()
                if run["status"] in FINISHED or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            runs.append((when, run))
    failed = [run["status"] for _, run in runs if run["status"] != "succeeded"]
    if failed:
        sys.exit(f"{len(failed)} runs did not succeed: {failed[:10]}")
    return runs


def own_waited_seconds() -> float:
    return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9


@dataclass
class Waits:
    """Shares of a phase's wall time that the server's loop and this client were ready but had no core."""

    server: float
    client: float

    @property
    def disturbed(self) -> bool:
        return max(self.server, self.client) > DISTURBED

    def __str__(self) -> str:
        return f"(waited for a core: server {self.server:.1%}, client {self.client:.1%})"


def paced_on(server: Server, path: str, rate: int, seconds: float) -> tuple[list[Any], Waits]:
    """``paced`` at ``server``, and how long the server's loop and this client waited for their cores meanwhile."""
    server_before, client_before, start = server.waited_seconds(), own_waited_seconds(), time.perf_counter()
    sent = asyncio.run(paced(f"{server.url}{path}", rate, seconds))
    wall = time.perf_counter() - start
    server_waited, client_waited = server.waited_seconds() - server_before, own_waited_seconds() - client_before
    return sent, Waits(server_waited / wall, client_waited / wall)


def bench_latency(root: Path, seconds: float, table: list[Row]) -> None:
    rate = LATENCY_RATE
    print(f"\n== 2. latency: {rate} webhooks/s for {seconds:g} s from an httpx client on core {CLIENT_CORE}")
    with running(reference_server("bare", root), "/ping") as server:
        sent, ref_waits = paced_on(server, "/hooks/x", rate, seconds / 2)
    reference = [latency for _, latency, _ in sent]
    print(f"  bare endpoint, client-observed:      {describe(reference)}   {ref_waits}")

    state = root / "state-latency"
    with running(weir_server(bench_repo(root / "latency"), state), "/readyz") as server:
        sent, async_waits = paced_on(server, f"/hooks/{HOOK}", rate, seconds)
        bad = [answer.status_code for _, _, answer in sent if answer.status_code != 202]
        if bad:
            sys.exit(f"async webhook answers that are not 202: {bad[:10]}")
        runs = finished_runs(server, sent)
        synced, sync_waits = paced_on(server, f"/hooks/{SYNC_HOOK}", rate, seconds)
        not_done = [
            a.status_code for _, _, a in synced if a.status_code != 200 or a.json().get("status") != "succeeded"
        ]
        if not_done:
            sys.exit(f"sync webhook answers that are not 200 succeeded: {not_done[:10]}")
        sync_runs = finished_runs(server, synced)
    accepted = [latency for _, latency, _ in sent]
    server_side = [stamp(run["finished_at"]) - stamp(run["created_at"]) for _, run in runs]
    send_to_finished = [stamp(run["finished_at"]) - when for when, run in runs]
    sync = [latency for _, latency, _ in synced]
    sync_finished = [stamp(run["finished_at"]) - when for when, run in sync_runs]
    print(f"  weir async, answer (202):            {describe(accepted)}")
    print(f"  weir async, created_at→finished_at:  {describe(server_side)}   (server clock)")
    print(f"  weir async, sent→finished_at:        {describe(send_to_finished)}   {async_waits}")
    print(f"  weir sync, sent→finished_at:         {describe(sync_finished)}")
    print(f"  weir sync, answer (200 + outputs):   {describe(sync)}   {sync_waits}")
    ref50, ref99 = percentile(reference, 0.5) * 1000, percentile(reference, 0.99) * 1000
    for name, values, waits in (
        ("sent → run finished", send_to_finished, async_waits),
        ("created → finished (server)", server_side, async_waits),
        ("sync webhook answered", sync, sync_waits),
    ):
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        disturbed = waits.disturbed or ref_waits.disturbed
        ref = f"bare {ref50:.1f} ms"
        table.append(Row(f"{name} p50", f"{p50:.1f} ms", "≤ 10 ms", ref, p50 / ref50, p50 <= 10, disturbed))
        ref = f"bare {ref99:.1f} ms"
        table.append(Row(f"{name} p99", f"{p99:.1f} ms", "≤ 50 ms", ref, p99 / ref99, p99 <= 50, disturbed))


# -- 3. memory and 4. apply ----------------------------------------------------------------------------------


def settled_rss(server: Server, limit: float = 8.0) -> float:
    """VmRSS once it has stopped changing (three samples 0.5 s apart within 0.5 MB), or after ``limit`` s."""
    samples = [server.rss_mb()]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(server.rss_mb())
        if len(samples) >= 3 and max(samples[-3:]) - min(samples[-3:]) < 0.5:
            break
    return samples[-1]


def thousand_env(root: Path) -> dict[str, str]:
    return {
        "WEIR_SECRET_HOOK_SECRET": SECRET,
        "WEIR_SECRET_WAREHOUSE_URL": f"sqlite:///{root / 'warehouse.db'}",
        "WEIR_SECRET_SLACK_BOT_TOKEN": "xoxb-bench",
        "WEIR_SECRET_PAGERDUTY_KEY": "bench",
    }


def write_thousand(directory: Path) -> None:
    generate(directory, 1000)
    (directory / "weir.toml").write_text(LOCAL_CONFIG)


def bench_memory(root: Path, table: list[Row]) -> None:
    print("\n== 3. memory: VmRSS once settled after start")
    with running(reference_server("bare", root), "/ping") as server:
        reference = settled_rss(server)
    print(f"  bare Starlette endpoint (uvicorn):   {reference:6.1f} MB")
    examples = root / "examples"
    make_repo(examples, lambda d: shutil.copytree(ROOT / "workflows", d, dirs_exist_ok=True, ignore=_ignored))
    with running(weir_server(examples, root / "state-examples"), "/readyz") as server:
        count = httpx.get(f"{server.url}/api/status").json()["revision"]["workflows"]
        small = settled_rss(server)
    print(f"  weir serve, example repo ({count} workflows): {small:6.1f} MB")
    ref = f"bare {reference:.0f} MB"
    table.append(Row("idle RSS, example repo", f"{small:.0f} MB", "≤ 100 MB", ref, small / reference, small <= 100))
    thousand = root / "thousand-memory"
    make_repo(thousand, write_thousand)
    with running(weir_server(thousand, root / "state-thousand-memory", thousand_env(root)), "/readyz") as server:
        big = settled_rss(server)
    print(f"  weir serve, 1,000 workflows:          {big:6.1f} MB")
    table.append(Row("idle RSS, 1,000 workflows", f"{big:.0f} MB", "≤ 200 MB", ref, big / reference, big <= 200))


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n.startswith(".") or n == "__pycache__"}


def change_one(repo: Path, relpath: str, round_: int) -> str:
    """Commit a new description of one workflow file; returns the new sha."""
    path = repo / "workflows" / relpath
    text = re.sub(r'description = "[^"]*"', f'description = "changed in round {round_}"', path.read_text(), count=1)
    path.write_text(text)
    git(repo, "commit", "-q", "-am", f"change {relpath} ({round_})")
    return git(repo, "rev-parse", "HEAD")


def time_applies(server: Server, repo: Path, relpath: str, rounds: int) -> tuple[list[float], list[float], float]:
    """Seconds from a commit to its sha in /api/status: noticed by the file watcher, and with POST /api/sync.

    Also the share of the time the server's threads waited for a core.
    """
    watched, synced = [], []
    waited, begin = server.waited_seconds(threads=True), time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(rounds):
            sha = change_one(repo, relpath, 2 * i)
            start = time.perf_counter()
            while client.get("/api/status").json()["revision"]["sha"] != sha:
                time.sleep(0.02)  # each poll takes the GIL from the thread applying the revision
                if time.perf_counter() - start > 30:
                    sys.exit(f"revision {sha} was not applied within 30 s:\n{server.output()}")
            watched.append(time.perf_counter() - start)
            sha = change_one(repo, relpath, 2 * i + 1)
            start = time.perf_counter()
            client.post("/api/sync").raise_for_status()
            synced.append(time.perf_counter() - start)
            if client.get("/api/status").json()["revision"]["sha"] != sha:
                sys.exit(f"POST /api/sync did not apply {sha}")
    return watched, synced, (server.waited_seconds(threads=True) - waited) / (time.perf_counter() - begin)


def listing(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1000:6.0f} ms  [{', '.join(f'{t * 1000:.0f}' for t in times)}]"


def bench_apply(root: Path, rounds: int, table: list[Row]) -> None:
    print("\n== 4. apply 1,000 workflows as a revision")
    small = root / "apply-small"
    make_repo(small, lambda d: (d / "bench.toml").write_text(WORKFLOW))
    with running(weir_server(small, root / "state-apply-small"), "/readyz") as server:
        startup = time.perf_counter() - server.started
        small_watched, small_synced, _ = time_applies(server, small, "bench.toml", rounds)
    repo = root / "thousand-apply"
    make_repo(repo, write_thousand)
    parse = parse_only(repo / "workflows")
    with running(weir_server(repo, root / "state-apply", thousand_env(root)), "/readyz") as server:
        first = time.perf_counter() - server.started
        watched, synced, waited = time_applies(server, repo, "team07/alerts-0007.toml", rounds)
    print(f"  reference: tomllib/json parse of the 1,000 files        {parse * 1000:6.0f} ms")
    print(
        f"  first apply: process start → /readyz                   {first * 1000:6.0f} ms "
        f"(with one workflow: {startup * 1000:.0f} ms; the 1,000 cost {(first - startup) * 1000:.0f} ms)"
    )
    print(f"  one file changed, commit → /api/status (file watcher): {listing(watched)}")
    print(f"  one file changed, commit → POST /api/sync answered:    {listing(synced)}")
    print(f"  (the server's threads waited for a core {waited:.1%} of that time)")
    print(
        f"  the same with a one-workflow repo (watcher / sync):    {listing(small_watched)} / {listing(small_synced)}"
    )
    steps = asyncio.run(apply_steps(root, repo))
    print("  the server's apply steps timed in this process (first apply / one file changed):")
    for name, (once, again) in steps.items():
        print(f"    {name:<34} {once * 1000:6.0f} ms   {again * 1000:6.0f} ms")
    watch, sync = statistics.median(watched), statistics.median(synced)
    ref = f"parse {parse * 1000:.0f} ms"
    noisy = waited > DISTURBED
    table.append(
        Row("apply 1,000: commit → status", f"{watch * 1000:.0f} ms", "≤ 1 s", ref, watch / parse, watch <= 1, noisy)
    )
    table.append(
        Row("apply 1,000: POST /api/sync", f"{sync * 1000:.0f} ms", "≤ 1 s", ref, sync / parse, sync <= 1, noisy)
    )
    ref = f"1 wf {startup * 1000:.0f} ms"
    table.append(Row("apply 1,000: first, at start", f"{first * 1000:.0f} ms", "(start)", ref, first / startup, None))


async def apply_steps(root: Path, repo: Path) -> dict[str, tuple[float, float]]:
    """Time what ``Runtime._apply`` and the deployer do, step by step, for HEAD~1 then HEAD.

    With the caches the server keeps between revisions (blob bytes, per-file validation results,
    parsed schedules), so the second column is what a commit changing one file costs.
    """
    from weir.records import StoredRevision
    from weir.server.gitsync import ObjectCache, commit_info, read_commit_tree
    from weir.server.hooks import HookTable
    from weir.server.metrics import Metrics
    from weir.server.schedules import Scheduler
    from weir.testing import Harness
    from weir.workflows.validation import ValidationCache, validate_tree

    times: dict[str, list[float]] = {}

    def timed(name: str, start: float) -> None:
        times.setdefault(name, []).append(time.perf_counter() - start)

    secrets = {name.removeprefix("WEIR_SECRET_"): value for name, value in thousand_env(root).items()}
    objects, cache = ObjectCache(), ValidationCache()
    async with Harness(root / "apply-steps", secrets=secrets) as h:
        scheduler = Scheduler(h.engine, Metrics())
        scheduler.start()
        try:
            for ref in ("HEAD~1", "HEAD"):
                start = time.perf_counter()
                info = commit_info(repo, ref)
                tree = read_commit_tree(repo, info.sha, "workflows", prefix="workflows/", cache=objects)
                files = tree.files()
                timed("read the commit (git)", start)
                start = time.perf_counter()
                result = validate_tree(tree, h.registry, cache)
                timed("validate", start)
                parsed, checked = len(cache.last.parsed), len(cache.last.checked)
                assert ref == "HEAD~1" or (parsed, checked) == (1, 1), (ref, parsed, checked)
                assert result.revision is not None, result.findings
                start = time.perf_counter()
                table = HookTable.build(result.revision, h.engine)
                timed("webhook table (secrets, schemas)", start)
                start = time.perf_counter()
                await h.engine.publish(StoredRevision(info.sha, files, info.message), result.revision)
                timed("store the revision + deploy", start)
                start = time.perf_counter()
                await scheduler.apply(result.revision)
                timed("reconcile schedules", start)
                assert len(table.routes) == 1000
        finally:
            await scheduler.stop()
    return {name: (values[0], values[1]) for name, values in times.items()}


# -- summary -------------------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    target: str
    reference: str
    ratio: float
    ok: bool | None
    disturbed: bool = False
    """Other work on the machine took the cores for a noticeable share of the measurement."""


def print_table(rows: list[Row]) -> None:
    print()
    head = ("figure", "value", "target", "reference (same run)", "ratio", "")
    widths = [max(len(head[0]), *(len(r.figure) for r in rows)), 10, 12, 20, 7]
    print(
        f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]:<{widths[3]}}  {head[4]:>{widths[4]}}"
    )
    for r in rows:
        verdict = "" if r.ok is None else ("pass" if r.ok else "FAIL")
        verdict += " *" if r.disturbed else ""
        print(
            f"{r.figure:<{widths[0]}}  {r.value:>{widths[1]}}  {r.target:<{widths[2]}}  "
            f"{r.reference:<{widths[3]}}  {r.ratio:>{widths[4] - 1}.2f}x  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per server and latency phase")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--only", choices=("throughput", "latency", "memory", "apply"))
    parser.add_argument("--rounds", type=int, default=3, help="one-file changes applied per way of noticing them")
    parser.add_argument("--serve", choices=("bare", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_reference(args.serve, args.port, args.db)
        return
    if CLIENT_CORE is not None:
        os.sched_setaffinity(0, {CLIENT_CORE})  # this process is the latency client
    else:
        print("one core only: servers and clients share it (nothing pinned)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} (other work on the machine shows in the wall-clock figures)")
    started = time.perf_counter()
    table: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as tmp:
        root = Path(tmp)
        if args.only in (None, "throughput"):
            bench_throughput(root, args.duration, args.connections, min(2.0, args.duration), table)
        if args.only in (None, "latency"):
            bench_latency(root, args.duration, table)
        if args.only in (None, "memory"):
            bench_memory(root, table)
        if args.only in (None, "apply"):
            bench_apply(root, args.rounds, table)
    print_table(table)
    if any(row.disturbed for row in table):
        print(
            f"* measured while the server or the client waited for a core over {DISTURBED:.0%} of the time (other work)"
        )
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
