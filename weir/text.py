"""Small text helpers for messages that tell users how to fix things."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def duration_text(millis: float, *, compact: bool = False) -> str:
    """A duration for people: ``12 ms``, ``3.4 s``, ``2 min 5 s``, ``1 h 2 min``; compact ``2m05s`` for tables.

    The CLI (compact) and the web UI show the same rounding: a value never reads as ``60.0 s`` or
    ``1000 ms``, and 119.6 s is 2 minutes in both.
    """
    if millis < 999.5:
        return f"{millis:.0f}ms" if compact else f"{millis:.0f} ms"
    seconds = millis / 1000
    if seconds < 59.95:
        return f"{seconds:.1f}s" if compact else f"{seconds:.1f} s"
    minutes, seconds_left = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds_left:02d}s" if compact else f"{minutes} min {seconds_left} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if compact else f"{hours} h {minutes} min"
