"""Building blocks shared by the file formats: durations, sizes, names, the strict base model."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
STEP_ID_PATTERN = r"^[a-z0-9_]+$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
WEBHOOK_PATH_PATTERN = r"^[A-Za-z0-9/_-]+$"

_DURATION_UNITS = {
    u: Decimal(n) for u, n in (("ms", "0.001"), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800))
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w)\s*)+$"
MAX_DURATION_DAYS = timedelta.max.days
"""The longest duration a file may give: 999,999,999 days (what a timedelta holds)."""
_MAX_SECONDS = Decimal(MAX_DURATION_DAYS) * 86400 + timedelta.max.seconds + Decimal(timedelta.max.microseconds) / 10**6
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> timedelta:
    """Turn ``90``, ``"90s"``, ``"1h30m"`` or ``"250ms"`` into a timedelta; raise ValueError otherwise."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '30s', '5m', '1h30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return _seconds(value, value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string such as '30s', '5m', '1h30m'")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("a duration cannot be empty; write e.g. '30s'")
    pos, total = 0, Decimal(0)  # decimal: '14285w4d23h59m59s998ms' is exactly that many milliseconds
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"'{_shown(value)}' is not a duration: write number+unit groups (units ms, s, m, h, d, w), "
            "e.g. '90s' or '1h30m'"
        )
    return _seconds(total, _shown(value))


def _seconds(total: float | Decimal, value: object) -> timedelta:
    """``total`` seconds as a timedelta; ValueError (not OverflowError) for NaN, infinity and the absurdly long."""
    shown = repr(value) if isinstance(value, str) else _shown(repr(value))
    if isinstance(total, float) and math.isnan(total):
        raise ValueError(f"a duration must be a number of seconds, got {shown}")
    try:
        if isinstance(total, Decimal):
            if total > _MAX_SECONDS:
                raise OverflowError(shown)
            return timedelta(microseconds=int(total.scaleb(6).to_integral_value()))
        return timedelta(seconds=total)
    except (OverflowError, ValueError):  # infinity, or more than a timedelta holds
        raise ValueError(
            f"the duration {shown} is longer than weir can count ({MAX_DURATION_DAYS:,} days); write a shorter one"
        ) from None


def _shown(value: str) -> str:
    """``value`` for a message: long input is cut, so an error never repeats a whole file back."""
    return value if len(value) <= 40 else value[:37] + "..."


def format_duration(value: timedelta) -> str:
    """The shortest string that parse_duration reads back as ``value``."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("w", 604800000), ("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(value: object) -> int:
    """Turn ``1048576``, ``"1MiB"`` or ``"512KiB"`` into bytes; raise ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(
            f"'{_shown(str(value))}' is not a size: write bytes or a number with KiB, MiB, GiB (e.g. '1MiB')"
        )
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not math.isfinite(size):
        raise ValueError(f"'{_shown(str(value))}' is too large for a size: write bytes or a number with KiB, MiB, GiB")
    return int(size)


def _validate_duration(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "description": "seconds"},
                {"type": "string", "pattern": _DURATION_PATTERN},
            ],
            "examples": ["30s", "5m", "1h30m"],
        }
    ),
]
"""A duration: seconds as a number, or number+unit groups such as '1h30m' (units ms s m h d w)."""


class StrictModel(BaseModel):
    """A file-format model: unknown keys are errors, keys are spelt as in the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


Backoff = Literal["fixed", "exponential"]
ErrorKind = Literal["transient", "permanent", "timeout", "any"]


def _default_retry_kinds() -> list[ErrorKind]:
    return ["transient"]


class RetryPolicy(StrictModel):
    """How often and how patiently a failing step is tried again."""

    attempts: int = Field(1, ge=1, le=100, description="Total tries, the first one included. Default 1 (no retry).")
    backoff: Backoff = Field(
        "exponential", description="'fixed' waits `delay` each time; 'exponential' doubles it. Default exponential."
    )
    delay: Duration = Field(timedelta(seconds=1), description="Wait before the second try. Default 1s.")
    max_delay: Duration = Field(timedelta(seconds=60), description="Upper bound of any wait. Default 60s.")
    jitter: bool = Field(True, description="Randomise each wait by up to ±50% so retries do not align. Default true.")
    on: list[ErrorKind] = Field(
        default_factory=_default_retry_kinds,
        description="Error kinds worth retrying: transient (default), permanent, timeout, any.",
    )


class Defaults(StrictModel):
    """Settings applied to every step that does not set them itself."""

    timeout: Duration | None = Field(None, description="Per-attempt timeout of each step, e.g. '30s'.")
    retry: RetryPolicy | None = Field(None, description="Retry policy of each step.")
