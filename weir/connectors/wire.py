"""Small helpers shared by connectors that speak HTTP: Retry-After and body excerpts for messages."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from weir.secrets import mask_active


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (a number of seconds or an HTTP date); None when absent or bad."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def excerpt(body: str | bytes | bytearray, limit: int = 200) -> str:
    """The start of a body on one line, at most ``limit`` characters, for error messages.

    Secrets are masked before the body is cut, so a cut through a secret cannot leave half of it.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    flat = " ".join(mask_active(text).split())
    if not flat:
        return "an empty body"
    return flat if len(flat) <= limit else flat[:limit] + "…"
