"""Script steps under attack: argument and environment injection, leaking variables, floods and fork trees.

Each case runs a workflow through ``weir.testing.Harness`` (a real engine, store and child
processes). Data from params reaches a script only as argv entries, environment values and JSON;
the server's own environment never does; every output channel is bounded; and when a step ends, no
process it started is left, whatever the script did to stay alive (within its process group).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.adversarial.conftest import CANARY, MAPPED_SECRET, SECRET_VALUES, pids_alive
from tests.server.serve_process import eventually
from weir.testing import Harness
from weir.workflows.scripts import DEFAULT_MAX_OUTPUT, MAX_LOG_LINES, STDERR_TAIL

pytestmark = pytest.mark.anyio


def script(code: str, *, lang: str = "python", timeout: str = "10s", extra: str = "") -> str:
    """A workflow of one script step ``run`` whose params are ``arg`` (string) and ``dir`` (string)."""
    return f"""
[params.arg]
type = "string"
default = ""

[params.dir]
type = "string"
default = ""

[[steps]]
id = "run"
uses = "script"
timeout = "{timeout}"
with = {{ lang = "{lang}", input = {{ dir = "{{{{ params.dir }}}}" }}, {extra} run = '''
{code}
''' }}
"""


async def run_script(tmp_path: Path, workflow: str, **params: Any) -> tuple[Any, Any, list[str]]:
    """Run the ``job`` workflow; the run, its step record and its log messages."""
    async with Harness(tmp_path, {"job.toml": workflow}) as h:
        run = await h.run("job", params)
        step = (await h.steps(run.id))["run"]
        logs = await h.store.get_logs(run.id, limit=MAX_LOG_LINES + 100)
    return run, step, [record.message for record in logs]


# -- argument and environment injection -----------------------------------------------------------------

ARGUMENTS = {
    "interpreter-option": "-c",
    "long-option": "--version",
    "shell-separator": "; rm -rf {dir}",
    "command-substitution": "$(touch {dir}/pwned)",
    "backticks": "`touch {dir}/pwned`",
    "newline-and-option": "\n-e",
    "end-of-options": "--",
    "glob": "{dir}/*",
}


@pytest.mark.parametrize("arg", list(ARGUMENTS.values()), ids=list(ARGUMENTS))
@pytest.mark.parametrize("lang", ["python", "bash"])
async def test_script_argument_from_a_param_is_one_argv_entry(tmp_path: Path, arg: str, lang: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("still here")
    value = arg.format(dir=victim)
    code = "import json, sys\nprint(json.dumps(sys.argv[1:]))" if lang == "python" else 'printf "%s|%s" "$#" "$1"'
    workflow = script(code, lang=lang, extra='args = ["{{ params.arg }}", "last"],')
    run, step, _ = await run_script(tmp_path, workflow, arg=value)
    assert run.status == "succeeded", step.error
    assert step.output == ([value, "last"] if lang == "python" else f"2|{value}")
    assert (victim / "keep").read_text() == "still here"
    assert not (victim / "pwned").exists()


async def test_script_environment_value_from_a_param_is_not_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    workflow = script('printf "%s" "$NOTE"', lang="bash", extra='env = { NOTE = "{{ params.arg }}" },')
    hostile = f"$(touch {marker}) `touch {marker}` ${{PATH}}"
    run, step, _ = await run_script(tmp_path, workflow, arg=hostile)
    assert run.status == "succeeded", step.error
    assert step.output == hostile
    assert not marker.exists()


SERVER_ENVIRONMENT = {
    "WEIR_SECRET_DATABASE_PASSWORD": "server-secret-1",
    "WEIR_API_TOKEN": "server-secret-2",
    "AWS_SECRET_ACCESS_KEY": "server-secret-3",
    "PYTHONPATH": "/nonexistent/evil-modules",
    "PYTHONSTARTUP": "/nonexistent/evil-startup.py",
    "BASH_ENV": "/nonexistent/evil-bash-env",
    "NODE_OPTIONS": "--require /nonexistent/evil.js",
}
CLEAN = ["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR", "WEIR_INPUT", "WEIR_OUTPUT"]


async def test_script_sees_none_of_the_server_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    code = "import json, os\nprint(json.dumps(dict(os.environ)))"
    workflow = script(code, extra='env = { MAPPED = "{{ params.arg }}" },')
    run, step, _ = await run_script(tmp_path, workflow, arg="only this")
    assert run.status == "succeeded", step.error
    assert sorted(step.output) == sorted([*CLEAN, "MAPPED"])
    assert step.output["MAPPED"] == "only this"
    for value in SERVER_ENVIRONMENT.values():
        assert value not in json.dumps(step.output)


def test_script_of_a_real_server_sees_only_the_mapped_secret(hooks: httpx.Client) -> None:
    answer = hooks.post("/hooks/environ")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "succeeded"
    seen = result["outputs"]["seen"]
    assert seen["names"] == sorted([*CLEAN, "MAPPED"])
    assert seen["mapped"] == hashlib.sha256(MAPPED_SECRET.encode()).hexdigest()
    others = {hashlib.sha256(v.encode()).hexdigest() for v in SECRET_VALUES if v != MAPPED_SECRET}
    assert others.isdisjoint(seen["values"])
    assert hashlib.sha256(CANARY.encode()).hexdigest() not in seen["values"]


async def test_script_code_is_never_rendered_as_a_template(tmp_path: Path) -> None:
    run, step, _ = await run_script(tmp_path, script("print('{{ 7*7 }} {% raw %}')"))
    assert run.status == "succeeded", step.error
    assert step.output == "{{ 7*7 }} {% raw %}"


# -- runaway output ----------------------------------------------------------------------------------------


async def test_script_flooding_stdout_is_killed_at_max_output(tmp_path: Path) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    started = time.perf_counter()
    run, step, _ = await run_script(tmp_path, script(code))
    assert time.perf_counter() - started < 8
    assert run.status == "failed"
    assert step.error == f"script 'run' wrote more than {DEFAULT_MAX_OUTPUT} bytes to stdout and was killed"


async def test_script_writing_a_huge_output_file_fails(tmp_path: Path) -> None:
    code = "import os\nwith open(os.environ['WEIR_OUTPUT'], 'w') as f:\n    f.write('[' + '1,' * 6_000_000 + '1]')"
    run, step, _ = await run_script(tmp_path, script(code))
    assert run.status == "failed"
    assert step.error == f"script 'run' wrote more than {DEFAULT_MAX_OUTPUT} bytes to $WEIR_OUTPUT"


LOG_LIMIT_NOTICE = (
    f"stderr passed the log limit of {MAX_LOG_LINES} lines or {DEFAULT_MAX_OUTPUT} characters; the rest of it is "
    f"not logged (the step keeps its last {STDERR_TAIL} characters)"
)


@pytest.mark.parametrize(
    ("line", "lines_logged"),
    [("'e' * 65536", None), ("'e'", MAX_LOG_LINES)],
    ids=["long-lines-hit-the-size-limit", "short-lines-hit-the-line-limit"],
)
async def test_script_flooding_stderr_fills_a_bounded_log(tmp_path: Path, line: str, lines_logged: int | None) -> None:
    code = f"import sys\nwhile True:\n    sys.stderr.write({line} + chr(10))"
    run, step, messages = await run_script(tmp_path, script(code, timeout="2s"))
    assert run.status == "failed"
    assert step.error == "step 'run' timed out after 2s"
    assert messages[-1] == LOG_LIMIT_NOTICE
    assert messages.count(LOG_LIMIT_NOTICE) == 1
    if lines_logged is not None:
        assert len(messages) == lines_logged + 1
    assert sum(map(len, messages[:-1])) <= DEFAULT_MAX_OUTPUT


# -- processes that try to outlive their step ----------------------------------------------------------------


def started_pids(folder: Path, count: int) -> list[int]:
    """The pids the script's processes wrote into ``folder``, once ``count`` of them have."""
    assert eventually(lambda: len(list(folder.iterdir())) >= count, timeout=10), list(folder.iterdir())
    return [int(p.name) for p in folder.iterdir()]


FORK_TREE = """
import json, os, sys, time
folder = json.load(sys.stdin)["dir"]
def spawn(depth):
    for _ in range(2):
        if os.fork() == 0:
            open(os.path.join(folder, str(os.getpid())), "w").close()
            if depth:
                spawn(depth - 1)
            time.sleep(600)
            os._exit(0)
spawn(5)
time.sleep(600)
"""


async def test_script_fork_tree_is_killed_whole_at_the_timeout(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    started = time.perf_counter()
    run, step, _ = await run_script(tmp_path, script(FORK_TREE, timeout="3s"), dir=str(folder))
    elapsed = time.perf_counter() - started
    pids = started_pids(folder, 126)
    assert len(pids) == 126
    assert run.status == "failed"
    assert (step.error, step.error_kind) == ("step 'run' timed out after 3s", "timeout")
    assert elapsed < 8
    assert eventually(lambda: pids_alive(pids) == [], timeout=5), pids_alive(pids)


SIGNAL_PROOF = """
trap '' TERM HUP INT
( trap '' TERM HUP INT; exec sleep 600 ) &
echo $! > "$DIR/$!"
nohup sleep 600 > /dev/null 2>&1 &
echo $! > "$DIR/$!"
disown -a
echo $$ > "$DIR/$$"
sleep 600
"""


async def test_script_sleepers_that_ignore_signals_are_killed_at_the_timeout(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    workflow = script(SIGNAL_PROOF, lang="bash", timeout="2s", extra='env = { DIR = "{{ params.dir }}" },')
    run, step, _ = await run_script(tmp_path, workflow, dir=str(folder))
    pids = started_pids(folder, 3)
    assert step.error == "step 'run' timed out after 2s"
    assert run.status == "failed"
    assert eventually(lambda: pids_alive(pids) == [], timeout=5), pids_alive(pids)


DAEMON = """
import json, os, sys, time
folder = json.load(sys.stdin)["dir"]
if os.fork() == 0:
    if os.fork() == 0:  # the classic double fork: the grandchild is orphaned and lives on
        open(os.path.join(folder, str(os.getpid())), "w").close()
        os.close(1)
        os.close(2)
        time.sleep(600)
    os._exit(0)
os.wait()
while not os.listdir(folder):
    time.sleep(0.01)
print(json.dumps("detached"))
"""


async def test_script_double_forked_daemon_does_not_outlive_a_successful_step(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    run, step, _ = await run_script(tmp_path, script(DAEMON), dir=str(folder))
    assert run.status == "succeeded", step.error
    assert step.output == "detached"
    pids = started_pids(folder, 1)
    assert eventually(lambda: pids_alive(pids) == [], timeout=5), pids_alive(pids)


async def test_script_that_closes_its_pipes_and_hangs_is_killed_at_the_timeout(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    code = "import json, os, sys, time\nfolder = json.load(sys.stdin)['dir']\n"
    code += "open(os.path.join(folder, str(os.getpid())), 'w').close()\nos.close(1)\nos.close(2)\ntime.sleep(600)"
    run, step, _ = await run_script(tmp_path, script(code, timeout="2s"), dir=str(folder))
    assert step.error == "step 'run' timed out after 2s"
    assert run.status == "failed"
    assert eventually(lambda: pids_alive(started_pids(folder, 1)) == [], timeout=5)
