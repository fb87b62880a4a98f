"""Strategies and writers shared by the property-based tests.

``documents`` are the values a TOML or JSON file can hold (TOML adds dates and times, and floats
such as ``inf``); ``write_toml`` and ``write_json`` turn them back into file text, so generated
structures go through the same parser users' files do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, TypeVar

from hypothesis import settings, strategies as st

BASE_EXAMPLES = 40
"""``max_examples`` of the default profile (tests/fuzz/conftest.py)."""


def examples(count: int) -> int:
    """``count`` examples under the default profile, proportionally more under ``WEIR_FUZZ=long``."""
    return max(count, count * settings.default.max_examples // BASE_EXAMPLES)


# --- values -------------------------------------------------------------------------------

TRICKY_TEXT = [
    "",
    " ",
    "{{ 7*7 }}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{{",
    "}}",
    "{%",
    "{#",
    "{{ params.x }}",
    "{{ steps.a.output }}",
    "{{ secrets.TOKEN }}",
    "{{ ''.__class__.__mro__ }}",
    "\x00",
    "\x7f",
    "\ufeff",
    "é",
    "日本語",
    "🙂",
    "a\nb",
    '"quoted"',
    "'single'",
    "\\",
    "*/5 * * * *",
    "30s",
    "1h30m",
    "-1s",
    "1e400",
    "9" * 40,
    "@daily",
    "Europe/Berlin",
]
"""Strings that have broken parsers, renderers and signature checks before."""

text = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=30))
keys = st.one_of(
    st.sampled_from(
        ["id", "uses", "with", "needs", "if", "steps", "on", "name", "type", "cron", "every", "path", "auth", "params"]
    ),
    st.text(max_size=12),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(),  # beyond 64 bits: JSON allows them, TOML does not
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
toml_scalars = st.one_of(
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5, minutes=-30))])),
    st.dates(),
    st.times(),
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value (plus floats JSON cannot write, which the writers turn into other text)."""
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=max_leaves,
    )


def toml_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any value a TOML file can hold: JSON values, dates and times."""
    return st.recursive(
        scalars | toml_scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=max_leaves,
    )


# --- writers ------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string; control characters and DEL are escaped, surrogates become U+FFFD."""
    out = []
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One TOML value on one line: inline tables and arrays for containers."""
    if value is None:
        return '""'  # TOML has no null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def write_toml(document: dict[str, Any]) -> str:
    """A TOML file whose top-level keys are ``key = value`` lines."""
    return "".join(f"{toml_key(str(key))} = {toml_value(value)}\n" for key, value in document.items())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def write_json(document: dict[str, Any]) -> str:
    return json.dumps(_json_safe(document), indent=2, ensure_ascii=False)


# --- cron expressions ---------------------------------------------------------------------

CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


@st.composite
def cron_terms(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...], top: int | None = None
) -> tuple[str, set[int]]:
    """One comma-separated term of a cron field, and the values it selects (crontab numbering).

    ``top`` limits the values written out (``*`` still means ``low`` to ``high``).
    """

    def spell(value: int) -> str:
        if names and value - low < len(names) and draw(st.booleans()):
            name = names[value - low]
            return draw(st.sampled_from([name, name.lower(), name.title()]))
        return str(value)

    kind = draw(st.sampled_from(["star", "star-step", "value", "range", "range-step"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "star-step":
        step = draw(st.integers(1, high - low))
        return f"*/{step}", set(range(low, high + 1, step))
    first = draw(st.integers(low, top or high))
    if kind == "value":
        return spell(first), {first}
    last = draw(st.integers(first, top or high))
    if kind == "range" or last == first:
        return f"{spell(first)}-{spell(last)}", set(range(first, last + 1))
    step = draw(st.integers(1, last - first))
    return f"{spell(first)}-{spell(last)}/{step}", set(range(first, last + 1, step))


@st.composite
def cron_fields(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...], top: int | None = None
) -> tuple[str, set[int]]:
    terms = draw(st.lists(cron_terms(low, high, names, top), min_size=1, max_size=3))
    values: set[int] = set().union(*(v for _, v in terms))
    return ",".join(t for t, _ in terms), values


@st.composite
def cron_expressions(draw: st.DrawFn, *, one_day_field: bool = False) -> tuple[str, list[set[int]]]:
    """A valid-looking 5-field expression and the values of each field; day-of-week 7 folded to 0.

    With ``one_day_field`` day-of-month or day-of-week is ``*`` (no W404 warning), and the days of
    month exist in every month (no "never fires").
    """
    texts, sets = [], []
    for name, low, high, names in CRON_FIELDS:
        top = 28 if one_day_field and name == "day-of-month" else None
        text, values = draw(cron_fields(low, high, names, top))
        if top is not None and any(v > top for v in values):  # '*/n' reaches 29-31: not in every month
            text, values = "*", set(range(low, high + 1))
        texts.append(text)
        sets.append(values)
    if one_day_field:
        which = draw(st.sampled_from([2, 4]))
        texts[which] = "*"
        sets[which] = set(range(1, 32)) if which == 2 else set(range(8))
    sets[4] = {0 if v == 7 else v for v in sets[4]}
    spaces = draw(st.sampled_from([" ", "  ", "\t"]))
    return spaces.join(texts), sets


# --- outcomes -----------------------------------------------------------------------------

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def outcome(call: Callable[[], T], expected: type[E]) -> T | E:
    """What ``call`` returns, or the ``expected`` exception it raised; any other exception fails the test."""
    try:
        return call()
    except expected as exc:
        return exc
