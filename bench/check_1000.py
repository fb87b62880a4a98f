"""`weir check` on a generated repository of 1,000 workflow files.

Prints the wall time of the real command (a fresh process, as in CI) next to the
time of merely parsing the same files with tomllib/json in this process, measured
in the same run. Target (SPEC §10): at most 2 s wall.

    .venv/bin/python bench/check_1000.py [--files 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

CONFIG = """
[connections.warehouse]
type = "db"
url = "{{ secrets.WAREHOUSE_URL }}"

[connections.slack]
type = "slack"
token = "{{ secrets.SLACK_BOT_TOKEN }}"

[connections.pagerduty]
type = "pagerduty"
routing_key = "{{ secrets.PAGERDUTY_KEY }}"
"""

WORKFLOW = """
description = "Generated workflow {n}: route alerts for team {team}"
tags = ["generated", "team-{team}"]

[params.error_rate]
type = "number"
required = true

[params.service]
type = "string"
default = "svc-{n}"

[[on.webhook]]
path = "alerts/{n}"
auth = {{ type = "hmac-sha256", secret = "{{{{ secrets.HOOK_SECRET }}}}", header = "X-Signature", prefix = "sha256=" }}
params = {{ error_rate = "{{{{ payload.metrics.error_rate }}}}", service = "{{{{ payload.service }}}}" }}

[[on.schedule]]
cron = "{minute} */{hours} * * 1-5"
timezone = "Europe/Berlin"
params = {{ error_rate = 0 }}

[[steps]]
id = "analyze"
uses = "transform"
with.output = {{ severity = "{{{{ 'critical' if params.error_rate > {hi} else 'warning' if params.error_rate > {lo} else 'info' }}}}" }}

[[steps]]
id = "history"
uses = "db.query"
connection = "warehouse"
needs = ["analyze"]
with = {{ sql = "select count(*) as n from alerts where service = :service", params = {{ service = "{{{{ params.service }}}}" }} }}

[[steps]]
id = "page"
uses = "pagerduty.event"
needs = ["analyze"]
if = "steps.analyze.output.severity == 'critical'"
connection = "pagerduty"
with = {{ action = "trigger", summary = "{{{{ params.service }}}} error rate {{{{ params.error_rate }}}}/min", severity = "critical" }}
retry = {{ attempts = 5, backoff = "exponential", delay = "1s" }}
timeout = "10s"

[[steps]]
id = "notify"
uses = "slack.post_message"
needs = ["analyze", "history"]
connection = "slack"
with = {{ channel = "#team-{team}", text = "{{{{ steps.analyze.output.severity }}}}: {{{{ params.error_rate }}}}/min ({{{{ steps.history.output.rows[0].n }}}} before)" }}
on_error = "continue"

[[steps]]
id = "record"
uses = "db.execute"
connection = "warehouse"
needs = ["analyze"]
with = {{ sql = "insert into alerts (service, severity) values (:service, :severity)", params = {{ service = "{{{{ params.service }}}}", severity = "{{{{ steps.analyze.output.severity }}}}" }} }}

[outputs]
severity = "{{{{ steps.analyze.output.severity }}}}"
"""


def generate(root: Path, files: int) -> None:
    (root / "weir.toml").write_text(CONFIG)
    for n in range(files):
        folder = root / f"team{n % 20:02d}"
        folder.mkdir(exist_ok=True)
        text = WORKFLOW.format(n=n, team=n % 20, minute=n % 60, hours=1 + n % 6, hi=40 + n % 20, lo=10 + n % 10)
        if n % 10 == 0:  # one in ten as JSON, same content
            (folder / f"alerts-{n:04d}.json").write_text(json.dumps(tomllib.loads(text), indent=2))
        else:
            (folder / f"alerts-{n:04d}.toml").write_text(text)


def parse_only(root: Path) -> float:
    start = time.perf_counter()
    for path in sorted(root.rglob("*")):
        if path.suffix == ".toml":
            tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            json.loads(path.read_text())
    return time.perf_counter() - start


def weir_check(root: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "weir", "check", str(root)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"weir check failed on the generated repo:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.files)
        parse = statistics.median(parse_only(root) for _ in range(args.repeat))
        startup = statistics.median(_timed([sys.executable, "-c", "import weir.cli"]) for _ in range(args.repeat))
        check = statistics.median(weir_check(root) for _ in range(args.repeat))
    print(f"files:                         {args.files}")
    print(f"reference, tomllib/json parse: {parse * 1000:8.0f} ms")
    print(f"reference, python startup:     {startup * 1000:8.0f} ms")
    print(f"weir check (fresh process):    {check * 1000:8.0f} ms   = {check / parse:.1f}x parsing alone")
    print(f"target:                        {2000:8.0f} ms   {'OK' if check <= 2.0 else 'MISSED'}")


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
