"""The script runner: real interpreters, real process groups, exact outputs and messages."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from weir.errors import PermanentError, TransientError
from weir.workflows.builtins import SCRIPT_LANGUAGES
from weir.workflows.scripts import INTERPRETERS, ScriptResult, run_script

pytestmark = pytest.mark.anyio

HOSTILE = "\"; rm -rf / #'$(id)`id`\n{{ secret }}"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this machine")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 may be slow to reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_dead(*pids: int) -> list[int]:
    """Return the pids still alive after up to a second (SIGKILL is delivered asynchronously)."""
    for _ in range(100):
        if not any(alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.01)
    return [pid for pid in pids if alive(pid)]


async def script_error(lang: str, code: str, **options: Any) -> str:
    with pytest.raises(PermanentError) as caught:
        await run_script(lang, code, name=options.pop("name", "step"), **options)
    return str(caught.value)


def test_scripts_cover_every_lang_the_schema_accepts() -> None:
    assert set(INTERPRETERS) == set(SCRIPT_LANGUAGES)


async def test_scripts_python_reads_input_from_stdin_and_weir_input() -> None:
    code = "import json, os, sys\nprint(json.dumps([json.load(sys.stdin), json.load(open(os.environ['WEIR_INPUT']))]))"
    result = await run_script("python", code, name="echo", input={"alert": "disk", "n": [1, 2.5, None]})
    assert result == ScriptResult([{"alert": "disk", "n": [1, 2.5, None]}] * 2, "")


async def test_scripts_output_file_wins_over_stdout() -> None:
    code = "import json, os\nprint('[1]')\njson.dump({'ok': True}, open(os.environ['WEIR_OUTPUT'], 'w'))"
    assert (await run_script("python", code, name="out")).output == {"ok": True}


async def test_scripts_last_stdout_line_is_the_output_when_it_is_json() -> None:
    code = "print('checking 3 hosts')\nprint('{\"down\": [\"db1\"]}')"
    assert (await run_script("python", code, name="last")).output == {"down": ["db1"]}


async def test_scripts_stdout_that_is_not_json_is_text() -> None:
    code = "print('line one')\nprint('{not json')\n"
    assert (await run_script("python", code, name="text")).output == "line one\n{not json"


async def test_scripts_no_stdout_and_no_output_file_is_none() -> None:
    assert await run_script("python", "pass", name="quiet") == ScriptResult(None, "")


async def test_scripts_bash_gets_args_unsplit_and_env() -> None:
    code = 'echo "$#|$1|$2|$GREETING"'
    result = await run_script("bash", code, name="bash", args=["a b", "$HOME"], env={"GREETING": "hi there"})
    assert result.output == "2|a b|$HOME|hi there"


@needs_node
async def test_scripts_node_reads_stdin() -> None:
    code = (
        "const inp = JSON.parse(require('fs').readFileSync(0, 'utf8'));\nconsole.log(JSON.stringify({n: inp.n * 2}));"
    )
    assert (await run_script("node", code, name="node", input={"n": 21})).output == {"n": 42}


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="pwsh is installed here; the next test runs it")
async def test_scripts_missing_pwsh_says_how_to_install_it() -> None:
    assert await script_error("pwsh", "Write-Output 1") == (
        "the 'pwsh' interpreter is not installed on this server (PowerShell 7: https://aka.ms/powershell); "
        "install it or use another lang"
    )


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh is not installed on this machine")
async def test_scripts_pwsh_reads_weir_input() -> None:
    code = "$data = Get-Content -Raw $env:WEIR_INPUT | ConvertFrom-Json\nWrite-Output ($data.n + 1)"
    assert (await run_script("pwsh", code, name="pwsh", input={"n": 1})).output == 2


async def test_scripts_missing_interpreter_on_the_given_path(tmp_path: Path) -> None:
    assert await script_error("bash", "echo hi", env={"PATH": str(tmp_path)}) == (
        "the 'bash' interpreter is not installed on this server (GNU Bash: the 'bash' package of your "
        "distribution); install it or use another lang"
    )


@pytest.mark.parametrize(
    ("lang", "code"),
    [("python", "import sys\nsys.stdout.write(sys.stdin.read())"), ("bash", 'cat; cat "$WEIR_INPUT"')],
    ids=["python", "bash"],
)
async def test_scripts_input_with_shell_metacharacters_stays_data(lang: str, code: str) -> None:
    result = await run_script(lang, code, name="hostile", input=HOSTILE)
    assert result.output == HOSTILE


async def test_scripts_non_zero_exit_fails_with_the_stderr_tail() -> None:
    code = "import sys\nprint('partial')\nsys.stderr.write('connecting\\nrefused: db1:5432\\n')\nsys.exit(3)"
    assert await script_error("python", code, name="probe") == (
        "script 'probe' exited with code 3: connecting\nrefused: db1:5432"
    )


async def test_scripts_exit_message_keeps_the_last_20_stderr_lines() -> None:
    code = 'for i in $(seq 1 30); do echo "line $i" >&2; done; exit 1'
    expected = "\n".join(f"line {i}" for i in range(11, 31))
    assert await script_error("bash", code, name="noisy") == f"script 'noisy' exited with code 1: {expected}"


async def test_scripts_exit_without_stderr_says_so() -> None:
    assert (
        await script_error("bash", "exit 2", name="mute")
        == "script 'mute' exited with code 2 and wrote nothing to stderr"
    )


async def test_scripts_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = f'sleep 30 &\necho "$$ $!" > {pids}\nwait'
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        await run_script("bash", code, name="slow", timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert str(caught.value) == "script 'slow' timed out after 0.5s and was killed"
    assert caught.value.kind == "timeout"
    assert await wait_dead(*map(int, pids.read_text().split())) == []


async def test_scripts_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = asyncio.create_task(run_script("bash", f'sleep 30 &\necho "$$ $!" > {pids}\nwait', name="cancelled"))
    for _ in range(200):  # until bash has started its child and written both pids
        if pids.exists() and pids.read_text().endswith("\n"):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_dead(*map(int, pids.read_text().split())) == []


async def test_scripts_background_children_do_not_outlive_the_script(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = await run_script("bash", f"sleep 30 &\necho $! > {pids}\necho done", name="leaves", timeout=5)
    assert result.output == "done"
    assert time.monotonic() - started < 1
    assert await wait_dead(int(pids.read_text())) == []


async def test_scripts_runaway_stdout_hits_max_output() -> None:
    assert await script_error("bash", "yes", name="yes", max_output=64 * 1024, timeout=5) == (
        "script 'yes' wrote more than 65536 bytes to stdout and was killed"
    )


async def test_scripts_see_a_clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEIR_SECRET_X", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter3")
    code = "import json, os\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    output = (await run_script("python", code, name="env", env={"REGION": "eu"})).output
    env = output["env"]
    assert sorted(env) == ["HOME", "LANG", "LC_ALL", "PATH", "REGION", "TMPDIR", "WEIR_INPUT", "WEIR_OUTPUT"]
    assert "hunter" not in json.dumps(env)
    assert env["HOME"] == env["TMPDIR"] == output["cwd"]
    assert (env["LANG"], env["LC_ALL"], env["REGION"], env["PATH"]) == ("C.UTF-8", "C.UTF-8", "eu", os.environ["PATH"])
    assert not await anyio.Path(env["HOME"]).exists()  # the temporary directory is removed afterwards


async def test_scripts_run_in_the_given_workdir(tmp_path: Path) -> None:
    result = await run_script("python", "import os\nprint(os.getcwd())", name="cwd", workdir=tmp_path)
    assert result.output == str(tmp_path)


async def test_scripts_stream_stderr_lines_to_log() -> None:
    lines: list[str] = []
    result = await run_script("bash", "echo one >&2; echo 'two  2' >&2; printf three >&2", name="log", log=lines.append)
    assert lines == ["one", "two  2", "three"]
    assert result.stderr == "one\ntwo  2\nthree"


async def test_scripts_keep_a_bounded_stderr_tail() -> None:
    lines: list[str] = []
    result = await run_script("bash", "head -c 100000 /dev/zero | tr '\\0' x >&2", name="flood", log=lines.append)
    assert result.stderr == "x" * 4096
    assert "".join(lines) == "x" * 100000
    assert max(map(len, lines)) <= 4096 + 64 * 1024


async def test_scripts_invalid_json_in_weir_output_fails() -> None:
    code = "import os\nopen(os.environ['WEIR_OUTPUT'], 'w').write(\"{'a': 1}\")"
    assert await script_error("python", code, name="bad") == (
        "script 'bad' wrote to $WEIR_OUTPUT, but the file does not hold JSON: "
        "Expecting property name enclosed in double quotes at line 1 column 2"
    )


def test_scripts_a_script_that_exits_before_its_input_is_written_still_succeeds() -> None:
    # Under uvloop (what `weir serve` runs on) the pipes of an exited script are closed at once; a
    # busy event loop may only get to writing stdin after that. The step must not fail for it.
    import uvloop

    async def main() -> ScriptResult:
        task = asyncio.create_task(run_script("bash", "echo '{\"ok\": true}'", name="quick", input={"big": "x" * 1000}))
        await asyncio.sleep(0)  # let the script start
        time.sleep(0.5)  # noqa: ASYNC251 - the event loop is busy elsewhere while the script exits
        return await task

    result = uvloop.run(main())
    assert result.output == {"ok": True}
