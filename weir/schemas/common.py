"""Building blocks shared by the file formats: durations, sizes, names, the strict base model."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
STEP_ID_PATTERN = r"^[a-z0-9_]+$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
WEBHOOK_PATH_PATTERN = r"^[A-Za-z0-9/_-]+$"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w)\s*)+$"
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
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string such as '30s', '5m', '1h30m'")
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("a duration cannot be empty; write e.g. '30s'")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"'{value}' is not a duration: write number+unit groups (units ms, s, m, h, d, w), e.g. '90s' or '1h30m'"
        )
    return timedelta(seconds=total)


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
        raise ValueError(f"'{value}' is not a size: write bytes or a number with KiB, MiB, GiB (e.g. '1MiB')")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


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
