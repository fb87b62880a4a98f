"""Runs survive kill -9: real weir processes on one SQLite file, killed and restarted (SPEC §6).

Each test starts ``python -m tests.e2e.crash_worker`` (a Harness with a real Executor) on a root
directory, kills it with SIGKILL at a chosen moment, and starts it again on the same database.
The side effects of the steps are lines in ``effects.log`` (``<step> <idempotency key> <attempt>``),
written by the action when it starts, so they tell which steps ran how often across processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.crash_worker import EFFECTS
from weir.records import new_run_id
from weir.testing import write_files

REPO = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 30.0
"""A worker gives up by itself after this long, so none outlives a broken test for long."""


class Worker:
    """One ``crash_worker`` process; its stdout and stderr go to files in the root."""

    def __init__(self, root: Path, run_id: str, name: str, submit: str | None, extra: list[str]) -> None:
        self.name = name
        self.out = root / f"{name}.out"
        self.err = root / f"{name}.err"
        args = [sys.executable, "-m", "tests.e2e.crash_worker", str(root), run_id, "--timeout", str(WORKER_TIMEOUT)]
        if submit:
            args += ["--submit", submit]
        args += extra
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=err)

    def events(self) -> list[dict[str, Any]]:
        complete = self.out.read_text(encoding="utf-8").split("\n")[:-1]  # a line being written has no \n yet
        return [json.loads(line) for line in complete if line.strip()]

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}) before {what}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {what} within {timeout}s:\n{self.stderr()}")
            time.sleep(0.005)

    def ready(self) -> None:
        """Wait until the run is stored and the executor is starting."""
        self.wait_for("ready line", lambda: any(e["event"] == "ready" for e in self.events()))

    def kill(self) -> bool:
        """``kill -9``; False when the process had already exited by itself."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        return self.proc.returncode == -signal.SIGKILL

    def exit_code(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout}s:\n{self.stderr()}")

    def finish(self, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for the worker to exit by itself; return its ``finished`` line."""
        self.exit_code(timeout)
        assert self.proc.returncode == 0, f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()}"
        finished = [e for e in self.events() if e["event"] == "finished"]
        assert finished, f"{self.name} printed no finished line:\n{self.stderr()}"
        return finished[-1]


Spawn = Callable[..., Worker]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start workers; any still alive at the end of the test is killed (by its own pid)."""
    started: list[Worker] = []

    def start(root: Path, run_id: str, *, submit: str | None = None, extra: tuple[str, ...] = ()) -> Worker:
        worker = Worker(root, run_id, f"worker{len(started) + 1}", submit, list(extra))
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=5)


# -- reading what a process left behind ------------------------------------------------------------


def effects(root: Path) -> list[tuple[str, str, int]]:
    """The lines of effects.log as (step, idempotency key, attempt)."""
    path = root / EFFECTS
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    return [(step, key, int(attempt)) for step, key, attempt in rows]


def effect_counts(root: Path) -> Counter[str]:
    return Counter(step for step, _, _ in effects(root))


@contextlib.contextmanager
def database(root: Path) -> Iterator[sqlite3.Connection]:
    """The run database, read-only (a worker may be writing it, or have died mid-write)."""
    uri = (root / "state" / "weir.db").as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def db_run(root: Path, run_id: str) -> dict[str, Any] | None:
    with database(root) as conn:
        row = conn.execute("SELECT * FROM weir_runs WHERE id = ?", (run_id,)).fetchone()
    return dict(row) if row else None


def db_steps(root: Path, run_id: str) -> list[dict[str, Any]]:
    with database(root) as conn:
        rows = conn.execute("SELECT * FROM weir_steps WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
    return [dict(r) for r in rows]


def db_logs(root: Path, run_id: str) -> list[tuple[str | None, str, str]]:
    with database(root) as conn:
        rows = conn.execute("SELECT step_id, level, message FROM weir_logs WHERE run_id = ? ORDER BY id", (run_id,))
        return [tuple(r) for r in rows]


def integrity(root: Path) -> list[str]:
    with database(root) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def lines_of(root: Path, step: str) -> list[tuple[str, str, int]]:
    return [line for line in effects(root) if line[0] == step]


# -- a step in flight --------------------------------------------------------------------------------


def chain(two: str = "") -> str:
    """one → two → three; ``two`` waits while the file ``block`` exists."""
    return f"""
        [[steps]]
        id = "one"
        uses = "fx.append"

        [[steps]]
        id = "two"
        uses = "fx.append"
        needs = ["one"]
        with = {{ block_while = "block" }}
        {two}

        [[steps]]
        id = "three"
        uses = "fx.append"
        needs = ["two"]
    """


def crash_in_two(root: Path, spawn: Spawn, two: str = "", *, while_alive: Callable[[], None] = lambda: None) -> str:
    """Run the chain until ``two`` is in flight, kill -9 the process, unblock ``two``; return the run id."""
    write_files(root / "workflows", {"chain.toml": chain(two)})
    (root / "block").touch()
    run_id = new_run_id()
    first = spawn(root, run_id, submit="chain")
    first.wait_for("start of step two", lambda: "two" in effect_counts(root))
    while_alive()
    assert first.kill()
    left = [(s["step_id"], s["attempt"], s["status"]) for s in db_steps(root, run_id)]
    assert left == [("one", 1, "succeeded"), ("two", 1, "running")]
    assert db_run(root, run_id)["status"] == "running"  # type: ignore[index]
    (root / "block").unlink()
    return run_id


def test_an_idempotent_step_in_flight_runs_again_with_the_same_key(tmp_path: Path, spawn: Spawn) -> None:
    def second_process_is_refused() -> None:  # SQLite is for one node: not while the first one lives
        refused = spawn(tmp_path, "any")
        assert refused.exit_code() != 0
        assert "another weir process is using" in refused.stderr()

    run_id = crash_in_two(tmp_path, spawn, while_alive=second_process_is_refused)

    final = spawn(tmp_path, run_id).finish()

    assert (final["run"]["status"], final["run"]["error"]) == ("succeeded", None)
    assert lines_of(tmp_path, "one") == [("one", f"{run_id}:one", 1)]  # committed: not run again
    assert lines_of(tmp_path, "two") == [("two", f"{run_id}:two", 1)] * 2  # in flight: again, same key
    assert lines_of(tmp_path, "three") == [("three", f"{run_id}:three", 1)]
    assert [(s["step_id"], s["attempt"], s["status"]) for s in final["steps"]] == [
        ("one", 1, "succeeded"),
        ("two", 1, "succeeded"),
        ("three", 1, "succeeded"),
    ]
    assert ("two", "warning", "step was interrupted; running it again") in db_logs(tmp_path, run_id)
    assert integrity(tmp_path) == ["ok"]


def test_a_step_in_flight_that_is_not_idempotent_fails_as_interrupted(tmp_path: Path, spawn: Spawn) -> None:
    run_id = crash_in_two(tmp_path, spawn, two="idempotent = false")

    final = spawn(tmp_path, run_id).finish()

    run, steps = final["run"], {s["step_id"]: s for s in final["steps"]}
    assert run["status"] == "failed"
    assert (steps["two"]["status"], steps["two"]["error_kind"]) == ("failed", "interrupted")
    assert "was interrupted" in steps["two"]["error"]
    assert "so it was not run again" in steps["two"]["error"]
    assert "so it was not run again" in run["error"]
    assert steps["three"]["status"] == "skipped"
    assert effect_counts(tmp_path) == {"one": 1, "two": 1}
    assert integrity(tmp_path) == ["ok"]


# -- a durable sleep ----------------------------------------------------------------------------------

NAP = """
[[steps]]
id = "one"
uses = "fx.append"

[[steps]]
id = "nap"
uses = "sleep"
needs = ["one"]
with = { duration = "2s" }

[[steps]]
id = "three"
uses = "fx.append"
needs = ["nap"]
"""


def test_a_run_killed_while_it_sleeps_wakes_after_a_restart(tmp_path: Path, spawn: Spawn) -> None:
    write_files(tmp_path / "workflows", {"nap.toml": NAP})
    run_id = new_run_id()
    first = spawn(tmp_path, run_id, submit="nap")
    first.ready()  # the database exists and holds the run
    first.wait_for("the run to park", lambda: (db_run(tmp_path, run_id) or {}).get("status") == "waiting")
    assert first.kill()
    parked = db_run(tmp_path, run_id)
    assert parked is not None
    assert parked["status"] == "waiting"
    assert effect_counts(tmp_path) == {"one": 1}
    wake_at = datetime.fromisoformat(parked["wake_at"]).replace(tzinfo=UTC)
    time.sleep(max(0.0, (wake_at - datetime.now(UTC)).total_seconds()) + 0.1)  # restart after the deadline

    final = spawn(tmp_path, run_id).finish()

    assert (final["run"]["status"], final["run"]["error"]) == ("succeeded", None)
    assert effect_counts(tmp_path) == {"one": 1, "three": 1}
    assert [(s["step_id"], s["attempt"], s["status"], s["note"]) for s in final["steps"]] == [
        ("one", 1, "succeeded", None),
        ("nap", 1, "succeeded", "sleep"),
        ("three", 1, "succeeded", None),
    ]
    assert integrity(tmp_path) == ["ok"]


# -- kill at random points ---------------------------------------------------------------------------

QUICK = """
[[steps]]
id = "one"
uses = "fx.append"
with = { sleep = 0.05 }

[[steps]]
id = "two"
uses = "fx.append"
needs = ["one"]
with = { sleep = 0.08 }

[[steps]]
id = "three"
uses = "fx.append"
needs = ["one"]
retry = { attempts = 2, delay = "50ms", jitter = false }
with = { sleep = 0.06, fail_times = 1 }

[[steps]]
id = "four"
uses = "fx.append"
needs = ["two", "three"]
with = { sleep = 0.1 }

[[steps]]
id = "five"
uses = "fx.append"
needs = ["four"]
with = { sleep = 0.07 }

[[steps]]
id = "six"
uses = "fx.append"
needs = ["four"]
with = { sleep = 0.05 }
"""
"""Six quick steps, two pairs of them in parallel; the first call of ``three`` fails and is retried."""
QUICK_STEPS = {"one", "two", "three", "four", "five", "six"}
WRITES = r"^(INSERT INTO|UPDATE) weir_"
"""The SQL statements that change a run: a worker started with ``--die-before WRITES --nth N`` dies before the Nth."""


def test_runs_killed_at_random_points_finish_without_repeating_committed_steps(tmp_path: Path, spawn: Spawn) -> None:
    seed = int(os.environ.get("WEIR_CRASH_SEED") or random.randrange(1 << 30))  # noqa: S311 - not a secret
    rng = random.Random(seed)  # noqa: S311 - the failure message names the seed; WEIR_CRASH_SEED replays it
    interrupted = 0
    for round_ in range(5):
        root = tmp_path / f"round{round_}"
        write_files(root / "workflows", {"quick.toml": QUICK})
        run_id = new_run_id()
        # Even rounds: kill -9 from outside 0-600 ms after the run was stored, once or twice.
        # Odd rounds: the worker kills itself just before a random write to the database.
        at_write = rng.randint(1, 18) if round_ % 2 else None  # a run of quick makes 20 writes
        context = f"seed {seed}, round {round_}, run {run_id}, write {at_write}"
        extra = ("--die-before", WRITES, "--nth", str(at_write)) if at_write else ()
        worker = spawn(root, run_id, submit="quick", extra=extra)
        kills: list[tuple[set[tuple[str, int]], Counter[tuple[str, int]]]] = []
        """At each kill: the attempts whose record was committed finished, and the effects so far."""
        for _ in range(1 if at_write else rng.choice([1, 1, 2])):
            if at_write:
                died = worker.exit_code() == -signal.SIGKILL
            else:
                worker.ready()
                time.sleep(rng.uniform(0.0, 0.6))
                died = worker.kill()
            if not died:
                break  # it finished first
            assert integrity(root) == ["ok"], context
            run = db_run(root, run_id) if (root / "state" / "weir.db").exists() else None
            interrupted += run is None or run["finished_at"] is None
            finished = {
                (s["step_id"], s["attempt"])
                for s in (db_steps(root, run_id) if run else [])
                if s["status"] in ("succeeded", "failed") and s["attempt"] > 0
            }
            kills.append((finished, Counter((step, attempt) for step, _, attempt in effects(root))))
            # A run killed before its first write was never accepted: only then may the restart store it.
            worker = spawn(root, run_id, submit="quick" if at_write else None)

        final = worker.finish()

        assert final["run"]["status"] == "succeeded", f"{context}: {final['run']['error']}"
        assert {s["step_id"] for s in final["steps"] if s["status"] == "succeeded"} == QUICK_STEPS, context
        lines = effects(root)
        assert {step for step, _, _ in lines} == QUICK_STEPS, context  # every side effect happened
        assert all(key == f"{run_id}:{step}" for step, key, _ in lines), context
        assert {attempt for step, _, attempt in lines if step != "three"} == {1}, context
        assert {attempt for step, _, attempt in lines if step == "three"} <= {1, 2}, context
        counts = Counter((step, attempt) for step, _, attempt in lines)
        for number, (finished, then) in enumerate(kills):
            for step, attempt in finished:  # committed before the kill: never run again
                assert counts[step, attempt] == then[step, attempt], (
                    f"{context}: attempt {attempt} of '{step}' ran again after kill {number + 1}"
                )
                if number == 0:
                    assert then[step, attempt] == 1, f"{context}: '{step}' ran twice in the first process"
        assert integrity(root) == ["ok"], context
    assert interrupted >= 2, f"seed {seed}: only {interrupted} kills interrupted a run; the test proved little"


# -- a first start killed while it creates the schema --------------------------------------------------------


def test_a_first_start_killed_while_it_creates_the_schema_starts_again(tmp_path: Path, spawn: Spawn) -> None:
    write_files(tmp_path / "workflows", {"chain.toml": chain()})
    run_id = new_run_id()
    first = spawn(tmp_path, run_id, submit="chain", extra=("--die-before", "^CREATE TABLE weir_logs"))
    assert first.exit_code() == -signal.SIGKILL

    final = spawn(tmp_path, run_id, submit="chain").finish()

    assert final["run"]["status"] == "succeeded"
    assert effect_counts(tmp_path) == {"one": 1, "two": 1, "three": 1}
