"""Run the code of a ``script`` step: python, bash, node or pwsh, in a child process.

The code is written to a file in a fresh temporary directory and run by its interpreter, never
through a shell. Data reaches the code only as JSON: on stdin and in the file named by
``$WEIR_INPUT``. Code and data are never spliced together, so quotes, ``$(...)`` and the like in
the input stay data.

- Interpreters: python is ``sys.executable``, the Python that runs weir, so packages installed
  next to weir can be imported; bash, node and pwsh are looked up on ``PATH``.
- Environment: a clean one, with nothing of the server's own (no ``WEIR_SECRET_*``). ``PATH`` is
  the server's, ``HOME`` and ``TMPDIR`` are the temporary directory, ``LANG``/``LC_ALL`` are
  ``C.UTF-8``; then the step's ``env``; then ``WEIR_INPUT`` and ``WEIR_OUTPUT``.
- Output: JSON written to ``$WEIR_OUTPUT``, else the last stdout line if it is JSON, else stdout
  as text, else ``None``.
- Logs: each stderr line goes to the run's log, up to ``MAX_LOG_LINES`` lines and ``max_output``
  characters; a script that floods stderr cannot fill the run database.
- Processes: the script leads its own process group. The group is killed (SIGKILL) when the
  script exits, so nothing it started in the background outlives the step, and also on timeout,
  on cancellation and when stdout grows past ``max_output``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weir.errors import PermanentError, TransientError
from weir.secrets import active_masker

DEFAULT_MAX_OUTPUT = 10 * 1024 * 1024
"""Bytes of stdout (or of the ``$WEIR_OUTPUT`` file) a script may produce. Default 10 MiB."""
STDERR_TAIL = 4096
"""Characters of stderr kept for the result and for error messages; the rest only reaches ``log``."""
MAX_LOG_LINES = 10_000
"""Lines of stderr one script may add to the run's log; stderr beyond them (or beyond ``max_output``
characters) is not logged, so a runaway script cannot fill the run database. Default 10000."""
_ERROR_LINES, _ERROR_CHARS = 20, 2000
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class _Interpreter:
    command: tuple[str, ...]
    suffix: str
    install: str


INTERPRETERS = {
    "python": _Interpreter((sys.executable,), ".py", "the Python that runs weir"),
    "bash": _Interpreter(("bash",), ".sh", "GNU Bash: the 'bash' package of your distribution"),
    "node": _Interpreter(("node",), ".js", "Node.js: https://nodejs.org"),
    "pwsh": _Interpreter(
        ("pwsh", "-NoProfile", "-NonInteractive", "-File"), ".ps1", "PowerShell 7: https://aka.ms/powershell"
    ),
}
"""How each ``lang`` is run: the command before the script path, the file suffix, where to get it."""


@dataclass(frozen=True)
class ScriptResult:
    """What a script that exited with code 0 produced."""

    output: Any
    """JSON from ``$WEIR_OUTPUT``, else the last stdout line if it is JSON, else stdout text; ``None`` if neither."""
    stderr: str
    """The last ``STDERR_TAIL`` characters of stderr, decoded as UTF-8, secrets masked."""


async def run_script(
    lang: str,
    code: str,
    *,
    name: str,
    input: Any = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float | None = None,  # noqa: ASYNC109 - on timeout the process group is killed, then TransientError
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> ScriptResult:
    """Run ``code`` with the interpreter for ``lang`` and return its output.

    ``name`` (the step) appears in error messages. ``input`` is sent as JSON on stdin and in
    ``$WEIR_INPUT``; ``env`` is added to the clean environment; ``args`` follow the script path in
    argv. Each stderr line is passed to ``log``. ``workdir`` is the working directory (default:
    the temporary directory, removed afterwards).

    Raises ``PermanentError`` when the interpreter is missing, the script exits with a non-zero
    code, stdout exceeds ``max_output`` bytes or ``$WEIR_OUTPUT`` does not hold JSON, and
    ``TransientError`` (kind ``timeout``) when it runs longer than ``timeout`` seconds.
    """
    if lang not in INTERPRETERS:
        raise PermanentError(f"script '{name}' has unknown lang '{lang}' (use python, bash, node or pwsh)")
    interpreter = INTERPRETERS[lang]
    try:
        data = (json.dumps(input, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"the input of script '{name}' cannot be sent as JSON: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="weir-script-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp)
        script, input_file, output_file = home / f"script{interpreter.suffix}", home / "in.json", home / "out.json"
        script.write_text(code, encoding="utf-8")
        input_file.write_bytes(data)
        child_env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": tmp, "TMPDIR": tmp}
        child_env |= {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **(env or {})}
        child_env |= {"WEIR_INPUT": str(input_file), "WEIR_OUTPUT": str(output_file)}
        program = shutil.which(interpreter.command[0], path=child_env["PATH"])
        if program is None:
            raise PermanentError(
                f"the '{interpreter.command[0]}' interpreter is not installed on this server "
                f"({interpreter.install}); install it or use another lang"
            )
        # Reviewed (ruff S603 does not see asyncio's exec): no shell, a fixed interpreter, the code in a
        # file, the input only on stdin and in $WEIR_INPUT, args as separate argv entries.
        process = await asyncio.create_subprocess_exec(
            program,
            *interpreter.command[1:],
            str(script),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir or home,
            env=child_env,
            start_new_session=True,
        )
        stdout, stderr = await _communicate(process, data, name=name, seconds=timeout, log=log, limit=max_output)
        if process.returncode:
            raise PermanentError(_exit_message(name, process.returncode, stderr))
        return ScriptResult(_output(name, output_file, stdout, max_output), stderr)


async def _communicate(
    process: asyncio.subprocess.Process,
    data: bytes,
    *,
    name: str,
    seconds: float | None,
    log: Callable[[str], None] | None,
    limit: int,
) -> tuple[bytes, str]:
    if process.stdin is None or process.stdout is None or process.stderr is None:
        raise RuntimeError("the script's stdin, stdout and stderr must be pipes")
    out_task = asyncio.create_task(_read_stdout(process, process.stdout, limit))
    err_task = asyncio.create_task(_read_stderr(process.stderr, log, limit))
    in_task = asyncio.create_task(_feed(process.stdin, data))
    tasks = (out_task, err_task, in_task)
    try:
        async with asyncio.timeout(seconds):
            await _exited(process)
            _kill_group(process)  # what the script left running in the background would hold the pipes open
            stdout, stderr, _ = await asyncio.gather(out_task, err_task, in_task)
    except TimeoutError:
        raise TransientError(f"script '{name}' timed out after {seconds:g}s and was killed", timeout=True) from None
    finally:  # also on cancellation: no process of the group survives the step, none is left a zombie
        _kill_group(process)
        for task in tasks:
            task.cancel()
        await asyncio.gather(_exited(process), *tasks, return_exceptions=True)
        _close_pipes(process)
    if stdout is None:
        raise PermanentError(f"script '{name}' wrote more than {limit} bytes to stdout and was killed")
    return stdout, stderr


async def _exited(process: asyncio.subprocess.Process) -> None:
    # Process.wait() returns only once the pipes are closed as well (Python 3.11), and children the
    # script left in the background hold them open; returncode is set as soon as it is reaped.
    delay = 0.001
    while process.returncode is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def _close_pipes(process: asyncio.subprocess.Process) -> None:
    # A Process has no public close: a pipe whose reader was cancelled (a timeout, a cancelled step) would
    # stay open until the garbage collector finds it. Everything wanted has been read by now.
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The script leads its session, so its process group id is its pid; after it has been reaped
    # the group lives on (and its id is not reused) as long as a member is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def _read_stdout(process: asyncio.subprocess.Process, stream: asyncio.StreamReader, limit: int) -> bytes | None:
    buffer = bytearray()
    while chunk := await stream.read(_CHUNK):
        buffer += chunk
        if len(buffer) > limit:
            _kill_group(process)
            return None
    return bytes(buffer)


async def _read_stderr(stream: asyncio.StreamReader, log: Callable[[str], None] | None, limit: int) -> str:
    """Pass each stderr line to ``log`` and return the last ``STDERR_TAIL`` characters.

    At most ``MAX_LOG_LINES`` lines and ``limit`` characters reach ``log``; then one line says that
    the rest is not logged, and stderr is still read to the end (for the tail, and so that the
    script does not block on a full pipe).

    Secrets are masked (by the masker of the running step) in whole lines, before anything is cut:
    the tail's cut, or the cut of a runaway line into pieces, cannot leave half of a secret unmasked.
    A runaway piece keeps its last characters back, as long as the longest masked form, for the next
    piece, so a secret that arrives across the cut is whole when it is masked.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    masker = active_masker()
    mask, keep = (masker.mask_text, masker.longest) if masker is not None else (lambda text: text, 0)
    tail, pending = "", ""
    lines_left, chars_left = MAX_LOG_LINES, limit

    def emit(text: str, newline: bool) -> None:
        nonlocal tail, lines_left, chars_left
        tail = (tail + text + ("\n" if newline else ""))[-STDERR_TAIL:]
        if log is None or lines_left < 0:
            return
        lines_left, chars_left = lines_left - 1, chars_left - len(text)
        if lines_left >= 0 and chars_left >= 0:
            log(text.rstrip("\r"))
        else:  # said once, when it happens: a script killed later still has it in its log
            lines_left = -1
            log(
                f"stderr passed the log limit of {MAX_LOG_LINES} lines or {limit} characters; the rest of it is "
                f"not logged (the step keeps its last {STDERR_TAIL} characters)"
            )

    while chunk := await stream.read(_CHUNK):
        *lines, pending = (pending + decoder.decode(chunk)).split("\n")
        for line in lines:
            emit(mask(line), newline=True)
        if len(pending) > STDERR_TAIL + keep:  # a runaway line without newlines is logged in pieces
            masked = mask(pending)
            cut = len(masked) - keep
            if cut > 0:
                emit(masked[:cut], newline=False)
                pending = masked[cut:]
    pending += decoder.decode(b"", final=True)
    if pending:
        emit(mask(pending), newline=False)
    return tail


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    # A script may exit without reading stdin; it still has the input in $WEIR_INPUT. When it exits
    # before this task first runs (a busy event loop), uvloop has already closed the pipe: writing
    # then raises RuntimeError, which is no reason to fail the step.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
        if not stdin.is_closing():
            stdin.write(data)
            await stdin.drain()
        stdin.close()


def _exit_message(name: str, code: int, stderr: str) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = "\n".join(stderr.strip().splitlines()[-_ERROR_LINES:])[-_ERROR_CHARS:]
    return f"script '{name}' {how}: {tail}" if tail else f"script '{name}' {how} and wrote nothing to stderr"


def _output(name: str, output_file: Path, stdout: bytes, limit: int) -> Any:
    if output_file.exists():
        if output_file.stat().st_size > limit:
            raise PermanentError(f"script '{name}' wrote more than {limit} bytes to $WEIR_OUTPUT")
        try:
            return _loads(output_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PermanentError(
                f"script '{name}' wrote to $WEIR_OUTPUT, but the file does not hold JSON: "
                f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        except ValueError as exc:
            raise PermanentError(f"script '{name}' wrote to $WEIR_OUTPUT, but not JSON in UTF-8: {exc}") from exc
    text = stdout.decode("utf-8", "replace").rstrip("\r\n")
    if not text.strip():
        return None
    with contextlib.suppress(ValueError):
        return _loads(text.splitlines()[-1])
    return text


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)
