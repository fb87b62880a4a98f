"""Turn template and action results into values that survive a round trip through JSON.

Step outputs are stored as JSON, so a later step must see the same value whether it runs
right away or after a restart: datetimes become ISO 8601 strings, tuples and sets lists,
other objects their ``str``.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from typing import Any

_SCALARS = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (the same object when it already is)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        if all(isinstance(k, str) and isinstance(v, _SCALARS) for k, v in value.items()):
            return value
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value):
            return value
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=str)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
