"""Scale-out: accepted webhooks/s of 1, 2 and 3 `weir serve` replicas sharing one PostgreSQL (SPEC §6, §10).

For each replica count the replicas start on a new, empty schema of the PostgreSQL database
(``--db``, the schema is put in the URL's search_path and dropped afterwards), all following
the same git repository with the webhook workflow of bench/webhooks.py: hmac-sha256 auth, a
payload schema and a params mapping that starts 3 `transform` steps, answered async. One
`wrk` loads them for ``--duration`` seconds with ``--connections`` connections in all, one
wrk thread per replica, so each replica gets the same share. Only 2xx answers count; the runs
stored in the database during the load are counted afterwards and compared with them.

Printed for each replica count: accepted webhooks/s (and per replica), runs finished/s while
the load runs and afterwards, executing only, for ``--drain`` seconds while the queue drains
(with the CPU a run costs and how long runs took), where the machine's cores went (the
replicas, wrk, PostgreSQL, other work) and how long the replicas' event loops and wrk waited
for a core. Then the ratios to one replica.

Target (SPEC §10): 3 replicas ≥ 2.5x one replica's accepted webhooks/s, on a machine with the
cores for it: one per replica plus PostgreSQL's and wrk's. On a smaller machine the replicas
take turns on the same cores and the figure says how much the replicas cost each other, not
how weir scales; the script prints whether the machine could meet the target. Nothing is
pinned to a core here (there are more busy processes than cores).

    .venv/bin/python bench/scale.py [--duration 10] [--connections 64] [--replicas 1,2,3] [--drain 60]
                                    [--workers N] [--db postgresql://postgres@127.0.0.1:5432/test]

Needs `wrk` (Debian/Ubuntu: apt-get install -y wrk) and a PostgreSQL it may create schemas in;
exits 2 without them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import make_url

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from webhooks import (  # noqa: E402 - a sibling script, not a package
    BODY,
    DISTURBED,
    HOOK,
    SIGNATURE,
    WRK_SCRIPT,
    Server,
    Waits,
    bench_repo,
    stored_verdict,
    weir_server,
    wrk_totals,
)

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/test"
TARGET = 2.5
"""SPEC §10: 3 replicas on one PostgreSQL ≥ 2.5x one replica's accepted webhooks/s."""
TICK = os.sysconf("SC_CLK_TCK")
ALL_CORES = sorted(os.sched_getaffinity(0))

# Appended to bench/webhooks.py's wrk script: thread i sends to replica i (wrk's documented way
# to load several hosts from one wrk), and the answers are counted per replica.
SPREAD = """
local ports = {{ {ports} }}
local addrs = nil
function setup(thread)
  if addrs == nil then
    addrs = {{}}
    for i, port in ipairs(ports) do addrs[i] = wrk.lookup("127.0.0.1", tostring(port))[1] end
  end
  table.insert(threads, thread)
  thread.addr = addrs[(#threads - 1) % #addrs + 1]
end
function done(summary, latency, requests)
  for i, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("replica %d status %d %d\\n", (i - 1) % #ports + 1, status, n))
    end
  end
end
"""


# -- PostgreSQL ----------------------------------------------------------------------------------------------


def check_postgres(base: str) -> None:
    try:
        with psycopg.connect(admin_url(base), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = make_url(base).render_as_string(hide_password=True)
        print(f"cannot connect to PostgreSQL at {where}: {exc}".rstrip())
        print("start it or pass --db postgresql://user@host:port/dbname (a database this user may create schemas in)")
        sys.exit(2)


def admin_url(base: str) -> str:
    return make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A URL of ``base`` whose search_path is a new, empty schema; the schema is dropped afterwards."""
    schema = f"weir_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(base), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        url = make_url(base).set(drivername="postgresql").update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        for attempt in range(30):  # PostgreSQL may be restarting (by other work on the machine)
            try:
                with psycopg.connect(admin_url(base), autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
                break
            except psycopg.OperationalError:
                if attempt == 29:
                    print(f"could not drop schema {schema}; drop it by hand: DROP SCHEMA {schema} CASCADE")
                time.sleep(1)


@dataclass
class Counts:
    """The runs table at one moment."""

    stored: int
    finished: int
    queued: int
    oldest_queued: float
    """Age in seconds of the oldest queued run (0 when none is queued): the queue lag."""


COUNTS = """
SELECT count(*), count(finished_at), count(*) FILTER (WHERE status = 'queued'),
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE status = 'queued')), 0)
FROM weir_runs
"""


def counts(conn: psycopg.Connection) -> Counts:
    stored, finished, queued, oldest = conn.execute(COUNTS).fetchone() or (0, 0, 0, 0)
    return Counts(int(stored), int(finished), int(queued), max(0.0, float(oldest)))


def schema_bytes(conn: psycopg.Connection) -> int:
    """Bytes of the tables and indexes in the schema of the connection's search_path."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
    ).fetchone()
    return int(row[0]) if row else 0


def drain(conn: psycopg.Connection, limit: float, stall: float = 30.0) -> tuple[Counts, float]:
    """Wait until every stored run has finished (or ``limit`` s, or ``stall`` s without progress)."""
    start = last_progress = time.perf_counter()
    now = counts(conn)
    while now.finished < now.stored and time.perf_counter() - start < limit:
        time.sleep(0.25)
        before, now = now, counts(conn)
        if now.finished > before.finished:
            last_progress = time.perf_counter()
        elif time.perf_counter() - last_progress > stall:
            break
    return now, time.perf_counter() - start


# -- processes -----------------------------------------------------------------------------------------------


def unpin(server: Server) -> None:
    """Let every thread of ``server`` run on any core (bench/webhooks.py's servers start on one)."""
    assert server.proc is not None
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), ALL_CORES)


@contextlib.contextmanager
def replicas(root: Path, repo: Path, db: str, n: int, workers: int = 0) -> Iterator[list[Server]]:
    """``n`` `weir serve` processes on ``db``, started together, once every one answers /readyz."""
    servers = []
    for i in range(n):
        server = weir_server(repo, root / f"state-{n}-{i}")
        server.argv += ["--db", db, *(["--workers", str(workers)] if workers else [])]
        servers.append(server)
    try:
        for server in servers:
            server.start()
            unpin(server)
        for server in servers:
            server.wait("/readyz")
            unpin(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def pg_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process by pid (the server is shared: other users' work counts too)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = (proc / "stat").read_text()
            if text[text.index("(") + 1 : text.rindex(")")] != "postgres":
                continue
            fields = text.rsplit(")", 1)[1].split()
            found[int(proc.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return found


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def tasks_waited_seconds(pid: int) -> float:
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(path.read_text().split()[1])
    return total / 1e9


@dataclass
class Cores:
    """How many cores each part used (CPU seconds per second of wall time)."""

    busy: float
    replicas: float
    wrk: float
    postgres: float
    this: float

    @property
    def other(self) -> float:
        return max(0.0, self.busy - self.replicas - self.wrk - self.postgres - self.this)

    def __str__(self) -> str:
        wrk = f", wrk {self.wrk:.2f}" if self.wrk else ""
        return (
            f"{self.busy:.2f} of {len(ALL_CORES)} busy: replicas {self.replicas:.2f}{wrk}, "
            f"PostgreSQL {self.postgres:.2f} (all its processes), other work {self.other:.2f}"
        )


@dataclass
class Usage:
    """What the replicas, PostgreSQL and the machine used over a stretch of wall time."""

    wall: float
    cores: Cores
    replica_cpu: float
    """CPU seconds of all replicas together."""
    loops_waited: float
    """The share of the time the replicas' event loops (mean) were ready to run but had no core."""


@dataclass
class Meter:
    """Counters of the replicas, PostgreSQL, the machine and this process from one moment on."""

    servers: list[Server]
    start: float = 0.0
    cpu: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    pg: dict[int, float] = field(default_factory=dict)
    busy: float = 0.0
    own: float = 0.0

    def __post_init__(self) -> None:
        self.cpu = [s.cpu_seconds() for s in self.servers]
        self.waited = [s.waited_seconds() for s in self.servers]
        self.pg, self.busy, self.own = pg_cpu_seconds(), busy_cpu_seconds(), _own_cpu()
        self.start = time.perf_counter()

    def read(self, wrk_cpu: float = 0.0) -> Usage:
        wall = time.perf_counter() - self.start
        pg_used = sum(after - self.pg.get(pid, 0.0) for pid, after in pg_cpu_seconds().items())
        replica_cpu = sum(s.cpu_seconds() - before for s, before in zip(self.servers, self.cpu, strict=True))
        loops = [(s.waited_seconds() - before) / wall for s, before in zip(self.servers, self.waited, strict=True)]
        cores = Cores(
            busy=(busy_cpu_seconds() - self.busy) / wall,
            replicas=replica_cpu / wall,
            wrk=wrk_cpu / wall,
            postgres=pg_used / wall,
            this=(_own_cpu() - self.own) / wall,
        )
        return Usage(wall, cores, replica_cpu, sum(loops) / len(loops))


@dataclass
class Load:
    """What one wrk run against the replicas did."""

    seconds: float
    statuses: list[dict[int, int]]
    """Answers by status, per replica."""
    errors: str
    usage: Usage
    waits: Waits
    """The replicas' event loops (mean) and wrk's threads."""

    @property
    def ok(self) -> int:
        return sum(n for each in self.statuses for status, n in each.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def not_ok(self) -> dict[int, int]:
        other: dict[int, int] = {}
        for each in self.statuses:
            for status, n in each.items():
                if not 200 <= status < 300:
                    other[status] = other.get(status, 0) + n
        return other


def wrk(servers: list[Server], script: Path, connections: int, seconds: float) -> Load:
    """One wrk with a thread per replica; CPU and waiting for a core of everything involved, meanwhile."""
    argv = ["wrk", f"-t{len(servers)}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script)]
    argv.append(f"{servers[0].url}/hooks/{HOOK}")
    meter = Meter(servers)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wrk_waited = 0.0
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(OSError):  # wrk's schedstat can only be read while it runs
                wrk_waited = tasks_waited_seconds(proc.pid)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        usage = meter.read(wrk_cpu=rusage.ru_utime + rusage.ru_stime)
        out.seek(0)
        text = out.read().decode()
    statuses: list[dict[int, int]] = [{} for _ in servers]
    for replica, code, n in re.findall(r"^replica (\d+) status (\d+) (\d+)$", text, re.M):
        statuses[int(replica) - 1][int(code)] = int(n)
    totals = wrk_totals(proc.returncode, text, counted=sum(n for each in statuses for n in each.values()))
    return Load(
        seconds=totals.seconds,
        statuses=statuses,
        errors=totals.errors,
        usage=usage,
        waits=Waits(server=usage.loops_waited, client=wrk_waited / usage.wall),
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_script(root: Path, servers: list[Server]) -> Path:
    script = root / f"spread-{len(servers)}.lua"
    ports = ", ".join(str(s.port) for s in servers)
    script.write_text(WRK_SCRIPT.format(body=BODY.decode(), signature=SIGNATURE) + SPREAD.format(ports=ports))
    return script


# -- one replica count ---------------------------------------------------------------------------------------

DURATIONS = """
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))
FROM weir_runs WHERE finished_at IS NOT NULL AND started_at IS NOT NULL
"""


@dataclass
class Phase:
    replicas: int
    load: Load
    finished_during: float
    """Runs finished per second while the load ran."""
    finished_after: float
    """Runs finished per second after the load, while the queue drained."""
    after: Usage
    """What the replicas and PostgreSQL used after the load, while the queue drained."""
    finished_after_count: int

    @property
    def per_cpu(self) -> float:
        """Accepted webhooks per CPU second the replicas got."""
        return self.load.ok / max(self.load.usage.replica_cpu, 1e-9)

    @property
    def runs_per_cpu(self) -> float:
        """Runs finished per CPU second the replicas got, after the load (executing only)."""
        return self.finished_after_count / max(self.after.replica_cpu, 1e-9)


def measure(
    root: Path, repo: Path, base: str, n: int, duration: float, connections: int, drain_limit: float, workers: int
) -> Phase:
    connections = max(n, connections - connections % n)  # wrk gives each thread connections / threads
    warmup = min(2.0, duration)
    print(
        f"\n== {n} replica{'s' if n > 1 else ''}: wrk -t{n} -c{connections} -d{duration:g}s "
        f"({connections // n} connections per replica) after {warmup:g} s of warm-up"
    )
    with fresh_schema(base) as db, replicas(root, repo, db, n, workers) as servers, psycopg.connect(db) as conn:
        conn.autocommit = True
        script = write_script(root, servers)
        wrk(servers, script, connections, warmup)
        before = counts(conn)
        load = wrk(servers, script, connections, duration)
        at_end = counts(conn)
        meter = Meter(servers)
        drained_to, drain_seconds = drain(conn, limit=drain_limit)
        after_usage = meter.read()
        size = schema_bytes(conn)
        row = conn.execute(DURATIONS).fetchone()
        p50, p99 = row[0] if row and row[0] else (0.0, 0.0)
    stored = drained_to.stored - before.stored
    accepted = sum(each.get(202, 0) for each in load.statuses)
    per_replica = " / ".join(f"{sum(n for s, n in each.items() if 200 <= s < 300):,}" for each in load.statuses)
    text = f"  accepted: {load.rate:8,.0f} 2xx/s ({load.ok:,} in {load.seconds:.2f} s; per replica {per_replica})"
    if load.not_ok():
        text += f"; NOT 2xx: {load.not_ok()}"
    if load.errors:
        text += f"; {load.errors}"
    print(text)
    verdict = stored_verdict(stored, accepted, connections)
    print(f"  runs stored during the load {stored:,}, 202 answers {accepted:,}: {verdict}")
    print(f"  cores {load.usage.cores}")
    print(f"  accepted per replica cpu-s: {load.ok / max(load.usage.replica_cpu, 1e-9):,.0f}   {load.waits}")
    during = (at_end.finished - before.finished) / load.seconds
    after_done = drained_to.finished - at_end.finished
    after = after_done / drain_seconds
    left = drained_to.stored - drained_to.finished
    print(
        f"  runs finished: {during:,.0f}/s during the load ({at_end.stored - at_end.finished:,} queued or running "
        f"at its end); {after:,.0f}/s afterwards ({after_done:,} in {drain_seconds:.0f} s"
        + (f"; {left:,} left, about {left / after:.0f} s more at that rate)" if left and after else ")")
    )
    print(
        f"  afterwards, executing only: cores {after_usage.cores}; {after_done / max(after_usage.replica_cpu, 1e-9):,.0f}"
        f" runs per replica cpu-s; replicas waited for a core {after_usage.loops_waited:.1%}"
    )
    print(f"  a run took p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms from claimed to finished")
    print(
        f"  database: {size / 1024 / 1024:.1f} MB for {drained_to.stored:,} runs "
        f"({size / max(drained_to.stored, 1) / 1024:.1f} kB/run)"
    )
    return Phase(n, load, during, after, after_usage, after_done)


# -- summary -------------------------------------------------------------------------------------------------


def summarize(phases: list[Phase]) -> None:
    base = phases[0]
    name = "one replica" if base.replicas == 1 else f"{base.replicas} replicas"
    print(
        f"\nreplicas  accepted/s  ratio to {name:<12}  per replica cpu-s  busy cores  waited   "
        "runs finished/s: during  after  per replica cpu-s"
    )
    for p in phases:
        mark = " *" if p.load.waits.disturbed else "  "
        print(
            f"{p.replicas:>8}  {p.load.rate:>10,.0f}  {p.load.rate / base.load.rate:>20.2f}x  {p.per_cpu:>17,.0f}  "
            f"{p.load.usage.cores.busy:>10.2f}  {p.load.waits.server:>5.0%}{mark}  {p.finished_during:>22,.0f}  "
            f"{p.finished_after:>5,.0f}  {p.runs_per_cpu:>17,.0f}"
        )
    print(
        "(replica CPU during the load includes the runs they executed meanwhile, the 'during' column: "
        "more replicas bring more executors, which take a larger share of the same cores)"
    )
    if any(p.load.waits.disturbed for p in phases):
        print(
            f"* the replicas' event loops (mean, shown) or wrk waited for a core over {DISTURBED:.0%} of the time: "
            "more busy processes than cores, and any other work on the machine"
        )
    three = next((p for p in phases if p.replicas == 3), None)
    one = next((p for p in phases if p.replicas == 1), None)
    cores = len(ALL_CORES)
    needed = 3 + 2
    print(f"\nSPEC §10 target: 3 replicas on one PostgreSQL ≥ {TARGET}x one replica's accepted webhooks/s")
    if three is None or one is None:
        print("  not measured (needs --replicas with 1 and 3)")
        return
    ratio = three.load.rate / one.load.rate
    print(f"  measured: {three.load.rate:,.0f}/s vs {one.load.rate:,.0f}/s = {ratio:.2f}x")
    projected = 3 * three.per_cpu / one.per_cpu
    print(
        f"  accepted per replica cpu-s, 3 replicas vs 1: {three.per_cpu / one.per_cpu:.2f}x; with a core for each "
        f"replica that would be roughly {projected:.2f}x, if PostgreSQL keeps up (it used "
        f"{three.load.usage.cores.postgres:.2f} cores for {three.load.rate:,.0f} accepted/s here)"
    )
    if cores >= needed:
        print(f"  this machine has {cores} cores (≥ {needed}: 3 replicas, PostgreSQL, wrk): {_verdict(ratio)}")
    else:
        print(
            f"  this machine has {cores} cores, shared by 3 replicas + PostgreSQL + wrk (+ other work): a fair test "
            f"needs ≥ {needed}. It cannot meet the target whatever weir does; the ratio above is not a verdict"
        )


def _verdict(ratio: float) -> str:
    return "pass" if ratio >= TARGET else "FAIL"


def stop(_signum: int, _frame: object) -> None:
    """SIGTERM ends the benchmark like Ctrl-C: the replicas stop and the schema is dropped."""
    sys.exit(143)


def parse_replicas(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write replica counts separated by commas, e.g. 1,2,3") from None
    if not values or any(n < 1 or n > 16 for n in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each count must be between 1 and 16")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per replica count")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all, shared by the replicas")
    parser.add_argument("--replicas", type=parse_replicas, default=[1, 2, 3], help="replica counts (default: 1,2,3)")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"PostgreSQL to create schemas in (default: {DEFAULT_DB})")
    parser.add_argument("--drain", type=float, default=60, help="seconds to watch the queue drain after the load")
    parser.add_argument("--workers", type=int, default=0, help="runs executed at once per replica (default: weir's)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop)
    if shutil.which("wrk") is None:
        print("wrk is not installed; this benchmark needs it (Debian/Ubuntu: apt-get install -y wrk)")
        sys.exit(2)
    check_postgres(args.db)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{len(ALL_CORES)} cores, load average {load}; up to {max(args.replicas)} replicas (--workers "
        f"{args.workers or 'default'}), PostgreSQL and wrk share them, nothing is pinned (other work on the machine "
        "shows in the figures)"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="weir-scale-") as tmp:
        root = Path(tmp)
        repo = bench_repo(root)
        try:
            phases = [
                measure(root, repo, args.db, n, args.duration, args.connections, args.drain, args.workers)
                for n in args.replicas
            ]
        except psycopg.OperationalError as exc:
            sys.exit(f"PostgreSQL went away during the measurement ({exc}); the figures are void, run again")
    summarize(phases)
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
