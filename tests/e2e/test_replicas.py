"""Several ``weir serve`` replicas on one PostgreSQL database, killed and restarted under load (SPEC §6).

Three replicas share a steady webhook load and an every-second schedule while one of them is
killed with SIGKILL every few seconds and started again; then the same load meets a PostgreSQL
restart; then a single SQLite node is killed and restarted. Each step (a bash script, cheap to
start) appends ``<run> <step>`` to an effects file when it starts, so the file tells how often
each step really ran. At the end: every accepted webhook has exactly one run, every run
finished, no step that succeeded ran twice, and every fire time of the schedule in the window
has exactly one run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually

STEP = """
[[steps]]
id = "{id}"
uses = "script"
{needs}
[steps.with]
lang = "bash"
run = 'echo "$RUN $STEP" >> "$EFFECTS"; sleep {pause}; echo "{{\\"step\\": \\"$STEP\\"}}"'
env = {{ RUN = "{{{{ run.id }}}}", STEP = "{id}", EFFECTS = "{{{{ env.WEIR_VAR_EFFECTS }}}}" }}
"""

WORK = (
    """
[params.n]
type = "integer"

[[on.webhook]]
path = "work"
auth = { type = "none" }
params = { n = "{{ payload.n }}" }
idempotency_key = "{{ payload.key }}"
"""
    + STEP.format(id="one", needs="", pause=0.05)
    + STEP.format(id="two", needs='needs = ["one"]', pause=0.2)
    + STEP.format(id="three", needs='needs = ["two"]', pause=0.05)
)

TICK = """
[[on.schedule]]
every = "1s"
catchup = "all"

[[steps]]
id = "tick"
uses = "transform"
with.output = "tick"
"""

LEASE = "3s"
FINISHED = ("succeeded", "failed", "cancelled")


class Load(threading.Thread):
    """Webhooks at a steady rate, each with its own idempotency key, sent round-robin to the replicas.

    A request that fails (a replica killed under it, a 503) is sent again with the same key to the
    next replica until one accepts it, as a sender with retries would.
    """

    def __init__(self, urls: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.urls, self.rate = urls, rate
        self.stop = threading.Event()
        self.accepted: dict[str, str] = {}
        """idempotency key -> run id of the answer."""
        self.retries = 0
        self.refused: Counter[int] = Counter()

    def run(self) -> None:
        targets = itertools.cycle(self.urls)
        with httpx.Client(timeout=5) as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                key = f"delivery-{n}"
                for _attempt in range(200):
                    url = next(targets)
                    try:
                        answer = client.post(f"{url}/hooks/work", json={"n": n, "key": key})
                    except httpx.TransportError:
                        self.retries += 1
                        time.sleep(0.05)
                        continue
                    if answer.status_code in (200, 202):
                        self.accepted[key] = answer.json()["run_id"]
                        break
                    self.refused[answer.status_code] += 1
                    time.sleep(0.05)
                time.sleep(1 / self.rate)


def effects(path: Path) -> Counter[tuple[str, ...]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Counter(tuple(line.split()) for line in lines if line.strip())


def query(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the run database ``db``: a PostgreSQL URL or an SQLite file (JSON columns decoded)."""
    if db.startswith("postgresql"):
        conninfo = make_url(db).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo) as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]  # fixed test SQL
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute(sql).fetchall()
    return [tuple(_decoded(v) for v in row) for row in rows]


def _decoded(value: Any) -> Any:
    """A JSON column's object as a dict (weir binds JSON as a BLOB on SQLite; older rows hold text)."""
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "automation"
    write_repo(root, {"workflows/work.toml": WORK, "workflows/tick.toml": TICK}, message="work and tick")
    return root


@pytest.fixture
def replicas(repo: Path, tmp_path: Path, pg_schema_url: str) -> Iterator[list[ServeProcess]]:
    env = {"WEIR_VAR_EFFECTS": str(tmp_path / "effects.log")}
    args = ["--db", pg_schema_url, "--lease", LEASE, "--workers", "8"]
    processes = [ServeProcess(repo, tmp_path / f"state-{i}", env=env, args=args) for i in range(3)]
    processes[0].start()  # the first one migrates the schema; the others find it ready
    for process in processes[1:]:
        process.start(ready=False)
    for process in processes[1:]:
        process.wait_ready()
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()


def wait_all_finished(db: str, timeout: float) -> list[tuple[Any, ...]]:
    def done() -> bool:
        rows = query(db, "SELECT count(*) FROM weir_runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')")
        return rows[0][0] == 0

    assert eventually(done, timeout, interval=0.5), query(
        db, "SELECT id, workflow, status, lease_owner, lease_expires_at FROM weir_runs WHERE finished_at IS NULL"
    )
    return query(db, "SELECT id, workflow, status, dedup_key, trigger FROM weir_runs")


def check_invariants(db: str, load: Load, effect_file: Path, window: tuple[datetime, datetime]) -> None:
    runs = wait_all_finished(db, timeout=60)
    work = {row[3].removeprefix("hook:work:"): row for row in runs if row[1] == "work"}
    # Every accepted delivery has exactly one run, the one its answer named; no run without an answer.
    assert set(work) == set(load.accepted), set(work) ^ set(load.accepted)
    assert {key: row[0] for key, row in work.items()} == load.accepted

    ran = effects(effect_file)
    twice = [step for step, count in ran.items() if count > 1]
    assert not twice, f"steps ran twice: {twice}"
    steps = query(db, "SELECT run_id, step_id, status, error FROM weir_steps WHERE phase = 'main'")
    for run_id, step_id, status, error in steps:
        if status == "succeeded" and run_id in load.accepted.values():
            assert ran[(run_id, step_id)] == 1, (run_id, step_id)
        if status == "failed":  # only a script in flight when its replica died; it is not run again, it says why
            assert "interrupted" in (error or "") or "was running when" in (error or ""), error
    statuses = Counter(row[2] for row in work.values())
    assert statuses["succeeded"] >= len(work) * 0.7, statuses

    # Each fire time of the schedule in the window has exactly one run.
    fires = Counter(
        datetime.fromisoformat(row[4]["fire_time"].replace("Z", "+00:00")) for row in runs if row[1] == "tick"
    )
    assert max(fires.values()) == 1, [t for t, c in fires.items() if c > 1]
    start, end = window
    expected = {start + timedelta(seconds=s) for s in range(1, int((end - start).total_seconds()))}
    missing = sorted(expected - set(fires))
    assert not missing, f"fire times without a run: {missing}"


def test_three_replicas_killed_in_turn_lose_nothing_and_run_nothing_twice(
    replicas: list[ServeProcess], tmp_path: Path, pg_schema_url: str
) -> None:
    load = Load([r.url for r in replicas], rate=25)
    window_start = datetime.now().astimezone().replace(microsecond=0)
    load.start()
    try:
        for victim in [0, 1, 2]:
            time.sleep(2.5)
            replicas[victim].kill()
            time.sleep(0.5)
            replicas[victim].start()
        time.sleep(2)
    finally:
        load.stop.set()
        load.join(30)
    window_end = datetime.now().astimezone().replace(microsecond=0)
    assert len(load.accepted) > 100, len(load.accepted)
    assert load.retries > 0, "no request met a killed replica; the test proves nothing"
    check_invariants(pg_schema_url, load, tmp_path / "effects.log", (window_start, window_end))


def test_a_postgresql_restart_refuses_requests_with_503_and_loses_none(
    replicas: list[ServeProcess], tmp_path: Path, pg_schema_url: str
) -> None:
    load = Load([r.url for r in replicas], rate=25)
    window_start = datetime.now().astimezone().replace(microsecond=0)
    load.start()
    try:
        time.sleep(3)
        cluster = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True, check=True).stdout.split()[
            0
        ]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart", "-m", "fast"],
            check=True,
            capture_output=True,
        )
        time.sleep(4)
    finally:
        load.stop.set()
        load.join(30)
    window_end = datetime.now().astimezone().replace(microsecond=0)
    assert load.refused[503] > 0, f"no request met the restart: {load.refused}"
    assert set(load.refused) <= {503}, load.refused
    for replica in replicas:
        assert replica.proc is not None
        assert replica.proc.poll() is None, replica.output()
    check_invariants(pg_schema_url, load, tmp_path / "effects.log", (window_start, window_end))


def test_sqlite_single_node_killed_under_load_loses_nothing(repo: Path, tmp_path: Path) -> None:
    env = {"WEIR_VAR_EFFECTS": str(tmp_path / "effects.log")}
    server = ServeProcess(repo, tmp_path / "state", env=env, args=["--workers", "8"]).start()
    try:
        load = Load([server.url], rate=25)
        window_start = datetime.now().astimezone().replace(microsecond=0)
        load.start()
        try:
            for _ in range(2):
                time.sleep(2.5)
                server.kill()
                time.sleep(1)  # fire times pass while nothing runs: the restart catches them up
                server.start()
            time.sleep(2)
        finally:
            load.stop.set()
            load.join(30)
        window_end = datetime.now().astimezone().replace(microsecond=0)
        assert load.retries > 0, "no request met the killed server; the test proves nothing"
        check_invariants(
            str(tmp_path / "state" / "weir.db"), load, tmp_path / "effects.log", (window_start, window_end)
        )
    finally:
        server.kill()


def test_a_database_that_does_not_answer_at_start_is_retried_then_named_in_a_clear_error(
    repo: Path, tmp_path: Path
) -> None:
    unused = "postgresql://weir@127.0.0.1:9/weir"  # the discard port: nothing listens there
    server = ServeProcess(repo, tmp_path / "state", args=["--db", unused, "--db-wait", "3s"]).start(ready=False)
    assert server.proc is not None
    began = time.monotonic()
    code = server.proc.wait(timeout=30)
    waited = time.monotonic() - began
    output = server.output()
    assert code == 2, output  # the CLI's code for a setting or service it cannot use
    assert 2.5 <= waited < 20, waited
    assert "does not answer" in output, output
    assert "trying again" in output, output
    assert "cannot open the run database postgresql://weir@127.0.0.1:9/weir (tried for 3s)" in output, output
    assert "check that it runs and that --db is right" in output
