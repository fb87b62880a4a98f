"""A real ``weir serve`` process on a free port, for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.server import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


class ServeProcess:
    """``python -m weir serve`` following ``repo``; stdout and stderr go to ``<state>/serve.log``."""

    def __init__(
        self,
        repo: Path | str,
        state_dir: Path,
        *,
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.repo, self.state_dir = repo, state_dir
        self.args = args or []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state_dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> ServeProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "weir", "serve", "--repo", str(self.repo), "--state-dir", str(self.state_dir)]
        command += ["--port", str(self.port), *self.args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"weir serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"weir serve was not ready within {START_TIMEOUT}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:] if self.log.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"weir serve did not stop within {timeout}s of SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL: nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def finished(client: httpx.Client, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The run once it has finished (fails the test when it does not within ``timeout``)."""

    def look() -> dict[str, Any] | None:
        run = client.get(f"/api/runs/{run_id}").json()
        return run if run.get("status") in ("succeeded", "failed", "cancelled") else None

    run: dict[str, Any] | None = eventually(look, timeout)
    assert run, f"run {run_id} did not finish within {timeout}s: {client.get(f'/api/runs/{run_id}').json()}"
    return run
