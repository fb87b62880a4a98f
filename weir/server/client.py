"""A small client of a running server's HTTP API, and the text ``weir runs`` prints from its answers.

``WeirClient`` turns every failure into an ``ApiError`` whose message says what to do: the
server does not answer (``status`` None), refuses the token (401), or answers with its own
error (404, 409, …, the server's message). The ``*_report`` functions call it and return what to
print: ``(stdout text, stderr hint or None)``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from weir.errors import WeirError
from weir.text import duration_text

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for the server to connect and answer."""
ERROR_WIDTH = 80
"""Characters of a run's error shown in ``weir runs list``; ``weir runs show`` prints it whole."""
PIPE_WIDTH = 120
"""Table width when stdout is not a terminal (and COLUMNS is not set)."""
TABLE_WIDTH = 100
"""From this terminal width on, ``weir runs list`` prints a table; narrower, two lines per run."""
WIDE = 120
"""From this width on, the table shows creation dates with the year and seconds."""
STATUS_STYLES = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "running": "cyan",
    "waiting": "magenta",
    "queued": "dim",
    "skipped": "dim",
    "pending": "dim",
}


class ApiError(WeirError):
    """Raised when a call to the server fails; ``status`` is the HTTP status, None when the server did not answer."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class WeirClient:
    """Calls the API of the server at ``server`` (a base URL), with ``token`` as the bearer token when given."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise ApiError(f"--server '{server}' is not an http:// or https:// URL, e.g. {DEFAULT_SERVER}")
        self.token = token
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> WeirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        """The JSON answer of ``method path``; raises ApiError with a message for the user otherwise."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, params=query, json=body)
        except httpx.ConnectError:
            raise ApiError(f"cannot reach weir at {self.server}: is `weir serve` running? (pass --server)") from None
        except httpx.TimeoutException:
            raise ApiError(
                f"weir at {self.server} did not answer within {self.timeout:g}s; is --server right and the server up?"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot talk to weir at {self.server}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if response.status_code == 401:
            raise ApiError(self._unauthorized(), 401, "unauthorized")
        if not isinstance(error, dict) or "message" not in error:
            raise ApiError(
                f"{self.server} answered {method} {path} with HTTP {response.status_code} "
                f"{response.reason_phrase}, which is not weir's API; check --server",
                response.status_code,
            )
        raise ApiError(str(error["message"]), response.status_code, error.get("code"))

    def _unauthorized(self) -> str:
        if self.token is None:
            return f"weir at {self.server} requires an API token: pass --token or set WEIR_API_TOKEN"
        return f"weir at {self.server} refused the API token: pass its --api-token with --token or WEIR_API_TOKEN"

    def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        query = {"workflow": workflow, "status": status, "limit": limit, "cursor": cursor}
        page: dict[str, Any] = self.request("GET", "/api/runs", params=query)
        return page

    def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("GET", f"/api/runs/{_segment(run_id)}")
        return run

    def get_logs(self, run_id: str) -> list[dict[str, Any]]:
        """Every log line of the run, fetched a page (5000 lines) at a time."""
        lines: list[dict[str, Any]] = []
        while True:
            page = self.request(
                "GET", f"/api/runs/{_segment(run_id)}/logs", params={"after": lines[-1]["id"] if lines else 0}
            )
            lines += page["logs"]
            if len(page["logs"]) < 5000:
                return lines

    def cancel(self, run_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("POST", f"/api/runs/{_segment(run_id)}/cancel")
        return answer

    def rerun(self, run_id: str, *, from_failed: bool = False) -> dict[str, Any]:
        body = {"from": "failed" if from_failed else "start"}
        answer: dict[str, Any] = self.request("POST", f"/api/runs/{_segment(run_id)}/rerun", body=body)
        return answer


# --- what `weir runs` prints ----------------------------------------------------------------------


def list_report(
    client: WeirClient,
    *,
    workflow: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> tuple[str, str | None]:
    page = client.list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor)
    following = page.get("next_cursor")
    if as_json:
        return json.dumps(page, indent=2, ensure_ascii=False), None
    flags = [f"--{k} {v}" for k, v in (("workflow", workflow), ("status", status)) if v]
    flags += [f"--limit {limit}"] if limit != 50 else []
    hint = f"more runs: weir runs list {' '.join([*flags, f'--cursor {following}'])}" if following else None
    if not page["runs"]:
        return "", "no runs" + (f" ({', '.join(flags)})" if flags else "")
    width = terminal_width()
    return render(_runs_table(page["runs"], width) if width >= TABLE_WIDTH else _runs_lines(page["runs"])), hint


def _runs_table(runs: list[dict[str, Any]], width: int) -> Table:
    wide = width >= WIDE
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("ID", "WORKFLOW", "STATUS", "TRIGGER", "CREATED"):
        table.add_column(name, no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("ERROR", overflow="ellipsis", no_wrap=True)
    for run in runs:
        created = _time(run["created_at"])
        table.add_row(
            run["id"],
            run["workflow"],
            _status(run["status"]),
            run["trigger"] or "",
            created if wide else created[5:16],
            _duration(run["duration_ms"]),
            _shorten(run["error"]),
        )
    return table


def _runs_lines(runs: list[dict[str, Any]]) -> Group:
    """Two lines per run, for terminals too narrow for the table."""
    lines: list[Text] = []
    for run in runs:
        took = _duration(run["duration_ms"])
        lines.append(Text.assemble((run["id"], "bold"), "  ", _status(run["status"]), f"  {took}" if took else ""))
        about = [run["workflow"], run["trigger"] or "", _time(run["created_at"])[5:16], _shorten(run["error"])]
        lines.append(Text("  " + "  ".join(a for a in about if a), no_wrap=True, overflow="ellipsis"))
    return Group(*lines)


def show_report(client: WeirClient, run_id: str, *, logs: bool, as_json: bool) -> str:
    run = client.get_run(run_id)
    lines = client.get_logs(run_id) if logs else []
    if as_json:
        return json.dumps({**run, "logs": lines} if logs else run, indent=2, ensure_ascii=False)
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold", no_wrap=True)
    header.add_column(overflow="fold")
    trigger = run["trigger"] or {}
    details = " ".join(f"{k}={v}" for k, v in trigger.items() if k != "type" and isinstance(v, str | int | bool))
    rows = [
        ("workflow", run["workflow"]),
        ("trigger", f"{trigger.get('type', '?')} {details}".strip()),
        ("revision", run["revision"][:12]),
        ("created", _time(run["created_at"])),
        ("started", _time(run["started_at"])),
        ("finished", f"{_time(run['finished_at'])} ({_duration(run['duration_ms'])})" if run["finished_at"] else ""),
        ("wakes", _time(run["wake_at"])),
        ("rerun of", run["rerun_of"]),
        ("parent", run["parent_run_id"]),
        ("error", run["error"]),
        ("cancel", "requested" if run["cancel_requested"] and not run["finished_at"] else ""),
    ]
    for name, value in rows:
        if value:
            header.add_row(f"  {name}", value)
    parts: list[RenderableType] = [Text.assemble(("run ", "bold"), (run["id"], "bold"), "  ", _status(run["status"]))]
    parts += [header, _values("params", run["params"]), _values("outputs", run["outputs"])]
    parts += [Text("steps", style="bold"), _steps(run["steps"]) if run["steps"] else Text("  (none yet)")]
    usage = run["usage"]
    tokens = f"  {usage['input_tokens']} input tokens, {usage['output_tokens']} output tokens"
    parts.append(Text.assemble(("usage", "bold"), tokens))
    if logs:
        parts += [Text("logs", style="bold"), _logs(lines) if lines else Text("  (none)")]
    return render(*parts)


def cancel_report(client: WeirClient, run_id: str) -> str:
    answer = client.cancel(run_id)
    if answer["status"] == "cancelled":
        return f"run {answer['run_id']} cancelled"
    return f"run {answer['run_id']}: cancel requested (it was {answer['status']})"


def rerun_report(client: WeirClient, run_id: str, *, from_failed: bool) -> tuple[str, str]:
    new_id = client.rerun(run_id, from_failed=from_failed)["run_id"]
    how = "from the failed steps" if from_failed else "from the start"
    return new_id, f"rerun of {run_id} {how} queued as run {new_id}: weir runs show {new_id}"


def terminal_width() -> int:
    """COLUMNS, else the terminal's width, else ``PIPE_WIDTH``."""
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


def render(*parts: RenderableType) -> str:
    """Rich renderables as text at the terminal's width, in color only on a terminal (and without NO_COLOR)."""
    console = Console(
        width=terminal_width(),
        force_terminal=sys.stdout.isatty(),
        markup=False,  # errors, params and log lines are data: a '[' in them is not rich markup
        emoji=False,
        highlight=False,
    )
    with console.capture() as capture:
        for part in parts:
            console.print(part)
    return "\n".join(line.rstrip() for line in capture.get().splitlines())


def _values(title: str, values: Any) -> RenderableType:
    if not isinstance(values, dict) or not values:
        return Text.assemble((title, "bold"), "  ", "(none)" if values in (None, {}) else _json(values))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in values.items():
        grid.add_row(f"  {key}", _json(value))
    table = Table.grid()
    table.add_row(Text(title, style="bold"))
    table.add_row(grid)
    return table


def _steps(steps: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    table.add_column("  STEP", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("ERROR / NOTE", overflow="fold")
    for step in steps:
        name = step["id"] if step["phase"] == "main" else f"{step['id']} ({step['phase']})"
        note = Text(step["error"], style="red") if step["error"] else Text(step["note"] or "", style="dim")
        attempts = str(step["attempts"]) if step["attempts"] else ""
        table.add_row(f"  {name}", _status(step["status"]), attempts, _duration(step["duration_ms"]), note)
    return table


def _logs(lines: list[dict[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="dim")
    table.add_column(overflow="fold")
    for line in lines:
        where = (line["step"] or "") + (f"[{line['item']}]" if line["item"] is not None else "")
        level = Text(line["level"], style="red" if line["level"] == "error" else "")
        table.add_row(f"  {_time(line['at'])}", level, where, line["message"])
    return table


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _time(value: str | None) -> str:
    """An ISO time from the API in the local time zone, to the second."""
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(millis: float | None) -> str:
    return "" if millis is None else duration_text(millis, compact=True)


def _shorten(text: str | None, width: int = ERROR_WIDTH) -> str:
    lines = (text or "").strip().splitlines() or [""]
    if len(lines[0]) > width or len(lines) > 1:
        return lines[0][: width - 1].rstrip() + "…"
    return lines[0]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
