"""Soak: `weir serve` replicas on one PostgreSQL under a steady webhook load for minutes (not run in CI).

One replica (or ``--replicas 3``) starts on a new, empty schema of the PostgreSQL database
(``--db``; dropped afterwards), following a git repository with the webhook workflow of
bench/webhooks.py (hmac-sha256 auth, a payload schema, a params mapping, 3 `transform` steps,
answered async). `wrk` sends ``--rate`` signed webhooks a second in all for ``--minutes``, one
thread per replica, each request in its own time slot (a clock in wrk's Lua script), so a slow
answer delays the sending only once every connection of a replica waits. Every ``--every``
seconds a row is printed:

- RSS (VmRSS) of each replica,
- queue depth (runs queued in the database) and queue lag (the age of the oldest queued run),
- runs accepted (stored) and finished per second in the interval,
- how long the replicas' event loops and wrk waited for a core (other work on the machine),
  as bench/webhooks.py reports it.

Verdict: memory is flat when each replica's mean RSS in the last minute is within the tolerance
of its mean in the second minute (the first minute warms up: caches, pools, the allocator), and
the queue keeps up when the mean queue lag of the last minute's samples is no longer than the
second minute's plus 1 s (a mean, so that one sample taken while other work held the cores
does not decide). Afterwards the queue drains and the runs stored are compared with the 202
answers. It needs at least 3 minutes for the second and the last minute to differ.

    .venv/bin/python bench/soak.py [--minutes 10] [--replicas 1] [--rate 100] [--every 10] [--tolerance-mb 5]
                                   [--workers N] [--db postgresql://postgres@127.0.0.1:5432/test]

Needs `wrk` (Debian/Ubuntu: apt-get install -y wrk) and a PostgreSQL it may create schemas in.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from scale import (  # noqa: E402 - sibling scripts, not a package
    ALL_CORES,
    DEFAULT_DB,
    SPREAD,
    check_postgres,
    counts,
    drain,
    fresh_schema,
    replicas,
    schema_bytes,
    stop,
    tasks_waited_seconds,
)
from webhooks import (  # noqa: E402 - a sibling script, not a package
    BODY,
    DISTURBED,
    HOOK,
    SIGNATURE,
    WRK_SCRIPT,
    Server,
    Waits,
    bench_repo,
    stored_matches,
    stored_verdict,
)

LAG_SLACK = 1.0
"""Seconds of mean queue lag the last minute may add to the second minute's before it counts as growth."""
CONNECTIONS = 16
"""wrk connections per replica: requests that may wait for an answer at once before the sending slows."""

# Appended to the scripts of bench/webhooks.py and bench/scale.py: each wrk thread sends its next request in
# the next free slot of its own schedule (``interval`` ms apart), read from CLOCK_MONOTONIC through LuaJIT's FFI.
PACE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } weir_timespec;
int clock_gettime(int clk, weir_timespec *tp);
]]
local clock = ffi.new("weir_timespec")
local due = nil
function delay()
  ffi.C.clock_gettime(1, clock)
  local now = tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
  if due == nil then due = now end
  local slot = due
  due = due + interval
  return math.max(0, slot - now)
end
"""


@dataclass
class Sample:
    at: float
    rss: list[float]
    queued: int
    lag: float
    accepted_rate: float
    finished_rate: float
    waits: Waits


HEAD = "    t   RSS MB (each replica)   queued   lag s   accepted/s   finished/s   waited for a core"


def row(sample: Sample) -> str:
    rss = " ".join(f"{mb:6.1f}" for mb in sample.rss)
    return (
        f"{sample.at:5.0f}   {rss:<21}   {sample.queued:6,}  {sample.lag:6.2f}   {sample.accepted_rate:10.1f}   "
        f"{sample.finished_rate:10.1f}   replicas {sample.waits.server:5.1%}, wrk {sample.waits.client:5.1%}"
        f"{' *' if sample.waits.disturbed else ''}"
    )


def start_wrk(root: Path, servers: list[Server], rate: float, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    n = len(servers)
    script = root / "soak.lua"
    ports = ", ".join(str(s.port) for s in servers)
    script.write_text(
        WRK_SCRIPT.format(body=BODY.decode(), signature=SIGNATURE)
        + SPREAD.format(ports=ports)
        + f"\ninterval = {1000 * n / rate!r}\n"
        + PACE
    )
    argv = ["wrk", f"-t{n}", f"-c{n * CONNECTIONS}", f"-d{round(seconds)}s", "--timeout", "30s", "--latency"]
    argv += ["-s", str(script), f"{servers[0].url}/hooks/{HOOK}"]
    with out.open("wb") as handle:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)


def sample_while(
    servers: list[Server], conn: psycopg.Connection, load: subprocess.Popen[bytes], every: float
) -> list[Sample]:
    """A sample every ``every`` seconds while ``load`` runs, printed as it is taken."""
    samples: list[Sample] = []
    start = last = time.perf_counter()
    before = counts(conn)
    waited = [s.waited_seconds() for s in servers]
    wrk_waited = tasks_waited_seconds(load.pid)
    k = 0
    while load.poll() is None:
        k += 1
        while load.poll() is None and time.perf_counter() < start + k * every:
            time.sleep(min(0.5, max(0.0, start + k * every - time.perf_counter())))
        if load.poll() is not None:
            break  # a last, partial interval is not a sample
        wrk_now = wrk_waited
        with contextlib.suppress(OSError):  # wrk ended meanwhile
            wrk_now = tasks_waited_seconds(load.pid)
        now, moment = counts(conn), time.perf_counter()
        interval = moment - last
        waited_now = [s.waited_seconds() for s in servers]
        loops = [(b - a) / interval for a, b in zip(waited, waited_now, strict=True)]
        sample = Sample(
            at=moment - start,
            rss=[s.rss_mb() for s in servers],
            queued=now.queued,
            lag=now.oldest_queued,
            accepted_rate=(now.stored - before.stored) / interval,
            finished_rate=(now.finished - before.finished) / interval,
            waits=Waits(server=sum(loops) / len(loops), client=(wrk_now - wrk_waited) / interval),
        )
        print(row(sample), flush=True)
        samples.append(sample)
        before, last, waited, wrk_waited = now, moment, waited_now, wrk_now
    return samples


def read_wrk(text: str) -> tuple[dict[int, int], str, str]:
    """(answers by status, socket errors, latency percentiles) from wrk's output."""
    statuses: dict[int, int] = {}
    for _, code, n in re.findall(r"^replica (\d+) status (\d+) (\d+)$", text, re.M):
        statuses[int(code)] = statuses.get(int(code), 0) + int(n)
    errors = re.search(r"Socket errors: .*", text)
    latency = ", ".join(f"p{p} {v}" for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", text, re.M))
    return statuses, errors.group(0) if errors else "", latency


# -- verdict -------------------------------------------------------------------------------------------------


def verdict(samples: list[Sample], seconds: float, tolerance_mb: float) -> bool:
    second = [s for s in samples if 60 < s.at <= 120]
    last = [s for s in samples if s.at > seconds - 60]
    if seconds < 180:
        print("(shorter than 3 minutes: the second and the last minute overlap, so the verdict proves little)")
    if not second or not last:
        print("too short for a verdict: it needs samples in the second and in the last minute")
        return False
    ok = True
    print("\nmemory: mean RSS of the second minute → the last minute (slope over every sample after the first minute)")
    after_warmup = [s for s in samples if s.at > 60]
    for i in range(len(samples[0].rss)):
        early, late = statistics.fmean(s.rss[i] for s in second), statistics.fmean(s.rss[i] for s in last)
        allowed = max(tolerance_mb, 0.05 * early)
        flat = late - early <= allowed
        ok &= flat
        slope = 0.0
        if len(after_warmup) >= 2:
            fit = statistics.linear_regression([s.at for s in after_warmup], [s.rss[i] for s in after_warmup])
            slope = fit.slope * 60
        print(
            f"  replica {i + 1}: {early:.1f} MB → {late:.1f} MB ({late - early:+.1f} MB, allowed +{allowed:.1f} MB; "
            f"{slope:+.2f} MB/min): {'flat' if flat else 'GROWING'}"
        )
    early_lag, late_lag = statistics.fmean(s.lag for s in second), statistics.fmean(s.lag for s in last)
    kept_up = late_lag <= early_lag + LAG_SLACK
    ok &= kept_up
    early_q, late_q = statistics.fmean(s.queued for s in second), statistics.fmean(s.queued for s in last)
    print(
        f"queue lag, mean of the samples: second minute {early_lag:.2f} s → last minute {late_lag:.2f} s, "
        f"allowed +{LAG_SLACK:g} s (queued {early_q:,.0f} → {late_q:,.0f}; largest lag of any sample "
        f"{max(s.lag for s in samples):.2f} s): {'no growth' if kept_up else 'GROWING'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="minutes of load (default: 10)")
    parser.add_argument("--replicas", type=int, default=1, choices=range(1, 9), metavar="N", help="default: 1")
    parser.add_argument("--rate", type=float, default=100, help="webhooks sent per second, in all (default: 100)")
    parser.add_argument("--every", type=float, default=10, help="seconds between samples (default: 10)")
    parser.add_argument("--tolerance-mb", type=float, default=5, help="RSS growth allowed, or 5%% if larger")
    parser.add_argument("--workers", type=int, default=0, help="runs executed at once per replica (default: weir's)")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"PostgreSQL to create a schema in (default: {DEFAULT_DB})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop)
    if args.rate <= 0 or args.every <= 0 or args.minutes <= 0:
        parser.error("--rate, --every and --minutes must be positive")
    if shutil.which("wrk") is None:
        print("wrk is not installed; this benchmark needs it (Debian/Ubuntu: apt-get install -y wrk)")
        sys.exit(2)
    check_postgres(args.db)
    seconds = args.minutes * 60
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{len(ALL_CORES)} cores, load average {load}; {args.replicas} replica(s) on PostgreSQL (--workers "
        f"{args.workers or 'default'}), {args.rate:g} webhooks/s for {args.minutes:g} min, a sample every "
        f"{args.every:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="weir-soak-") as tmp:
        root = Path(tmp)
        repo = bench_repo(root)
        try:
            with (
                fresh_schema(args.db) as db,
                replicas(root, repo, db, args.replicas, args.workers) as servers,
                psycopg.connect(db, autocommit=True) as conn,
            ):
                print(f"\n{HEAD}")
                wrk_out = root / "wrk.out"
                load_proc = start_wrk(root, servers, args.rate, seconds, wrk_out)
                try:
                    samples = sample_while(servers, conn, load_proc, args.every)
                finally:
                    if load_proc.poll() is None:
                        load_proc.terminate()
                    load_proc.wait()
                time.sleep(1.0)  # answers in flight when wrk stopped
                drained, drain_seconds = drain(conn, limit=300)
                size = schema_bytes(conn)
                text = wrk_out.read_text(errors="replace")
        except psycopg.OperationalError as exc:
            sys.exit(f"PostgreSQL went away during the soak ({exc}); the samples above stand, the verdict is void")
    if load_proc.returncode != 0:
        sys.exit(f"wrk failed ({load_proc.returncode}):\n{text}")
    if any(s.waits.disturbed for s in samples):
        print(f"* the replicas or wrk waited for a core over {DISTURBED:.0%} of the interval (other work)")
    statuses, errors, latency = read_wrk(text)
    accepted = statuses.get(202, 0)
    other = {s: n for s, n in statuses.items() if s != 202}
    print(
        f"\nanswered {sum(statuses.values()):,} ({sum(statuses.values()) / seconds:.1f}/s): 202 {accepted:,}"
        + (f", NOT 202: {other}" if other else "")
        + (f"; {errors}" if errors else "")
        + f"; answer latency {latency}"
    )
    matches = stored_matches(drained.stored, accepted, args.replicas * CONNECTIONS)
    print(
        f"runs stored {drained.stored:,}, 202 answers {accepted:,}: "
        f"{stored_verdict(drained.stored, accepted, args.replicas * CONNECTIONS)}; "
        f"finished {drained.finished:,} ({drain_seconds:.1f} s after the load)"
    )
    per_run = size / max(drained.stored, 1)
    per_day = per_run * args.rate * 86400 / 1024**3
    print(f"database: {size / 1024**2:.1f} MB, {per_run / 1024:.1f} kB per run ({per_day:.1f} GB a day at this rate)")
    ok = verdict(samples, seconds, args.tolerance_mb)
    ok &= matches and drained.finished == drained.stored
    print(f"\nverdict: {'pass' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
