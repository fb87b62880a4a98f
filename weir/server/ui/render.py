"""The UI's Jinja2 environment: the product's own templates, autoescaped, with a few display filters.

This is not the workflow template sandbox: these templates ship in the package. Everything that
comes from runs, payloads and workflow files reaches them as variables and is escaped on output.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from weir.text import duration_text

SECURITY_HEADERS = {
    # Defence in depth: no inline script or style can run even if something slipped through escaping.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def pretty(value: Any) -> str:
    """A value as indented JSON (what the API would answer), for a <pre>."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def compact(value: Any) -> str:
    """A value as one line of JSON."""
    return json.dumps(value, ensure_ascii=False, default=str)


def duration(millis: float | None) -> str:
    """12 ms, 3.4 s, 2 min 5 s, 1 h 2 min; an en dash when unknown."""
    return "\N{EN DASH}" if millis is None else duration_text(millis)


def when(value: str | datetime | None) -> str:
    """An ISO time (or datetime) as ``2024-05-01 12:00:03 UTC``; the page's script shows it in local time."""
    if value is None:
        return "\N{EN DASH}"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: str | datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def first_line(value: str | None, limit: int = 140) -> str:
    if not value:
        return ""
    line = value.strip().splitlines()[0] if value.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def build_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("weir.server.ui", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(pretty=pretty, compact=compact, duration=duration, when=when, iso=iso, first_line=first_line)
    return env


class Renderer:
    """Renders a page with the context every template needs (the CSRF token, whether login is on)."""

    def __init__(self) -> None:
        self.env = build_environment()

    def page(self, request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        session = request.scope.get("weir_ui", {})
        base = {
            "csrf": session.get("csrf", ""),
            "login_required": session.get("login_required", False),
            "path": request.url.path,
            "bare": False,
        }
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
