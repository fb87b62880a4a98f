"""Schedule triggers, parsed and checked exactly the way the server runs them.

``weir check``, ``weir plan`` and the server all build their triggers here, with APScheduler 3.x, so a
schedule that validates is the schedule that runs, and the fire times ``weir plan`` prints are the
ones the server will use. APScheduler is imported inside the functions that need it, so importing
this module stays cheap.

Cron expressions have 5 fields (minute hour day-of-month month day-of-week) or are one of
``@hourly @daily @midnight @weekly @monthly @yearly @annually``. weir reads them as crontab does and
translates them for APScheduler, which differs from crontab in two ways:

- Weekday numbers: crontab counts 0-7 from Sunday (0 and 7 are Sunday, 1 is Monday), APScheduler
  3.x counts 0-6 from Monday. Every day-of-week field is expanded to the set of days it names and
  handed over as day names (``1-5`` becomes ``mon-fri``, ``*/2`` becomes ``tue,thu,sat-sun``).
- Day-of-month and day-of-week: when both are restricted, Vixie cron fires when *either* matches,
  APScheduler only when *both* do. weir keeps APScheduler's rule and sets
  ``CronSchedule.both_days_restricted`` so the checker can warn about it.

Daylight saving time is left to APScheduler (3.11): a wall time that does not exist on the
spring-forward day fires once, at the same offset from the start of the gap (02:30 in a 02:00-03:00
gap fires at 03:30), and a wall time that occurs twice on the fall-back day fires twice, once in each
offset. Vixie cron fires the repeated time only once.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from weir.schemas.common import format_duration
from weir.text import did_you_mean

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MIN_INTERVAL = timedelta(seconds=1)
"""The shortest ``every`` the server accepts."""

_FIELD_ORDER = "minute hour day-of-month month day-of-week"
_APS_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TERM = re.compile(r"(?P<start>\*|[0-9]+|[A-Za-z]+)(?:-(?P<end>[0-9]+|[A-Za-z]+))?(?:/(?P<step>[0-9]+))?")


class CronError(ValueError):
    """Raised when a cron expression, time zone or interval cannot be scheduled; the message says how to fix it."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    examples: tuple[str, str, str]  # a range, a list, a step
    names: tuple[str, ...] = ()  # names[i] is the value low + i


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = (
    _Field("minute", 0, 59, ("0-30", "0,30", "*/15")),
    _Field("hour", 0, 23, ("9-17", "9,17", "*/2")),
    _Field("day-of-month", 1, 31, ("1-15", "1,15", "*/2")),
    _Field("month", 1, 12, ("JAN-JUN", "1,7", "*/3"), _MONTHS),
    _Field("day-of-week", 0, 7, ("MON-FRI", "1,3,5", "*/2"), _WEEKDAYS),
)


@dataclass(frozen=True)
class CronSchedule:
    """A cron schedule in a time zone, with the APScheduler ``CronTrigger`` the server runs."""

    expression: str
    """The expression with its whitespace normalised, e.g. ``'0 2 * * *'`` or ``'@daily'``."""
    timezone: ZoneInfo
    """The zone the expression is read in."""
    both_days_restricted: bool
    """True when neither day-of-month nor day-of-week starts with ``*``: crontab would fire when either
    matches, weir (APScheduler) fires only when both do."""
    trigger: Any = field(compare=False, repr=False)
    """The ``apscheduler.triggers.cron.CronTrigger`` built from the expression."""

    def next_fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after``, in the schedule's time zone."""
        # The cursor stays what APScheduler returned (it may be a wall time inside a DST gap);
        # only the answer is normalised, so the sequence matches the scheduler's own.
        cursor = last = _aware(after).astimezone(UTC)
        times: list[datetime] = []
        while len(times) < count:
            fire = self.trigger.get_next_fire_time(cursor, cursor)
            if fire is None:
                break
            cursor = fire
            moment = fire.astimezone(UTC)  # a wall time in a gap -> the instant after it
            if moment <= last:  # '0:00' inside the gap and the '1:00' after it are one instant: list it once
                continue
            times.append(moment.astimezone(self.timezone))
            last = moment
        return times

    def describe(self) -> str:
        """A short text for ``weir plan`` and the API, e.g. ``cron '0 2 * * *' in Europe/Berlin``."""
        return f"cron '{self.expression}' in {self.timezone.key}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class IntervalSchedule:
    """A fixed interval (``every = "15m"``)."""

    every: timedelta
    """Time between two fires, at least ``MIN_INTERVAL``."""

    def make_trigger(self, first_fire: datetime) -> Any:
        """The ``apscheduler.triggers.interval.IntervalTrigger`` firing at ``first_fire`` and every interval after."""
        from apscheduler.triggers.interval import IntervalTrigger

        seconds = self.every.seconds + self.every.microseconds / 1_000_000
        return IntervalTrigger(days=self.every.days, seconds=seconds, start_date=_aware(first_fire), timezone=UTC)

    def next_fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``after``, in UTC, on the interval's grid.

        The grid is the multiples of the interval since 1970-01-01 00:00 UTC (``every = "15m"``
        fires at :00, :15, :30 and :45), so every replica, and every restart, computes the same
        fire times whatever its clock said when it started.
        """
        now = _aware(after).astimezone(UTC)
        first = _EPOCH + ((now - _EPOCH) // self.every + 1) * self.every
        return [first + n * self.every for n in range(count)]

    def describe(self) -> str:
        """A short text for ``weir plan`` and the API, e.g. ``every 15m``."""
        return f"every {format_duration(self.every)}"


def validate_timezone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name such as ``'Europe/Berlin'``; raise CronError with a suggestion otherwise."""
    if name == "localtime":
        raise CronError("time zone 'localtime' depends on the server's settings; write an IANA name such as 'UTC'")
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    suggestion = _suggest_zone(name)
    if suggestion:
        raise CronError(f"unknown time zone '{name}' (did you mean '{suggestion}'?)")
    raise CronError(f"unknown time zone '{name}'; write an IANA name such as 'Europe/Berlin' or 'UTC'")


def parse_cron(expr: str, timezone: str = "UTC") -> CronSchedule:
    """Check a cron expression and build its trigger; raise CronError with a fix when it cannot run."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        expression = text.lower()
        if expression not in ALIASES:
            raise CronError(
                f"unknown cron alias '{text}'{did_you_mean(expression, ALIASES)}; "
                f"use one of {' '.join(ALIASES)} or 5 fields: {_FIELD_ORDER}"
            )
        parts = ALIASES[expression].split()
    else:
        expression, parts = text, text.split()
        _check_field_count(text, parts)
    minute, hour, day, month, weekday = (_parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True))
    if not any(d <= _MONTH_DAYS[m - 1] for m in month for d in day):
        raise CronError(
            f"cron expression '{text}' never fires: day-of-month '{parts[2]}' does not occur in month "
            f"'{parts[3]}'; choose days that exist in those months"
        )
    zone = validate_timezone(timezone)
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger(
            minute=_aps_numbers(minute, _FIELDS[0]),
            hour=_aps_numbers(hour, _FIELDS[1]),
            day=_aps_numbers(day, _FIELDS[2]),
            month=_aps_numbers(month, _FIELDS[3]),
            day_of_week=_aps_weekdays(weekday),
            timezone=zone,
        )
    except ValueError as exc:  # pragma: no cover - the fields were checked above
        raise CronError(f"cron expression '{text}' was refused by the scheduler: {exc}") from exc
    both = not parts[2].startswith("*") and not parts[4].startswith("*")
    return CronSchedule(expression=expression, timezone=zone, both_days_restricted=both, trigger=trigger)


def parse_interval(every: timedelta) -> IntervalSchedule:
    """Check a fixed interval; raise CronError when it is shorter than ``MIN_INTERVAL``."""
    if every < MIN_INTERVAL:
        shown = format_duration(every) if every >= timedelta(0) else f"-{format_duration(-every)}"
        raise CronError(f"every = '{shown}' is shorter than 1 second; use at least '1s'")
    return IntervalSchedule(every=every)


def _aware(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime, e.g. datetime.now(UTC)")
    return moment


def _check_field_count(text: str, parts: list[str]) -> None:
    count = len(parts)
    if count == 5:
        return
    if count == 0:
        raise CronError(f"cron expression is empty; write 5 fields: {_FIELD_ORDER} (e.g. '*/5 * * * *')")
    if count == 6:
        raise CronError(
            f"cron expression '{text}' has 6 fields; weir uses 5 fields ({_FIELD_ORDER}) and cannot "
            f"schedule seconds, so drop the seconds field (e.g. '{' '.join(parts[1:])}')"
        )
    example = " ".join(parts + ["*"] * (5 - count)) if count < 5 else "*/5 * * * *"
    noun = "field" if count == 1 else "fields"
    raise CronError(f"cron expression '{text}' has {count} {noun}; write 5: {_FIELD_ORDER} (e.g. '{example}')")


def _parse_field(spec: _Field, text: str) -> frozenset[int]:
    """The values one field selects, in crontab numbering (day-of-week 7 folded to 0)."""
    values: set[int] = set()
    for term in text.split(","):
        values.update(_parse_term(spec, text, term))
    if spec.name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def _parse_term(spec: _Field, text: str, term: str) -> range:
    match = _TERM.fullmatch(term)
    if not match or (match["start"] == "*" and match["end"]):
        raise _invalid(spec, text)
    first_text, last_text, step_text = match["start"], match["end"], match["step"]
    if first_text == "*":
        start, end = spec.low, spec.high
    else:
        start = _value(spec, text, first_text)
        end = start if last_text is None else _value(spec, text, last_text)
        if spec.name == "day-of-week" and last_text is not None and last_text.isalpha() and end == 0 < start:
            end = 7  # 'FRI-SUN' means Friday to Sunday, as '5-7' does
        if last_text is None and step_text is not None:
            raise CronError(
                f"{spec.name} field '{text}' has a step on a single value ('{term}'); write a range before "
                f"the step, e.g. '{first_text}-{spec.high}/{step_text}', or '*/{step_text}'"
            )
        if end < start:
            low, high = (spec.names[0], spec.names[-1]) if last_text.isalpha() else (spec.low, spec.high)
            raise CronError(
                f"{spec.name} field '{text}' has a backwards range '{term}'; ranges do not wrap around, so write "
                f"it low to high or as two ranges, e.g. '{first_text}-{high},{low}-{last_text}'"
            )
    step = 1 if step_text is None else int(step_text)
    if step == 0:
        raise CronError(f"{spec.name} field '{text}' has step 0; a step must be at least 1")
    if step_text is not None and step > end - start:
        unit = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}.get(spec.name)
        fix = "use a smaller step"
        if unit:
            fix += f", or every = '{format_duration(step * unit)}' for a fixed interval"
        raise CronError(
            f"{spec.name} field '{text}' has step {step}, larger than the range {start}-{end} it steps through; {fix}"
        )
    return range(start, end + 1, step)


def _invalid(spec: _Field, text: str) -> CronError:
    first, many, step = spec.examples
    named = f" or a name {spec.names[0]}-{spec.names[-1]}" if spec.names else ""
    return CronError(
        f"{spec.name} field '{text}' is not valid; write '*', a number {spec.low}-{spec.high}{named}, "
        f"a range like '{first}', a list like '{many}' or a step like '{step}'"
    )


def _value(spec: _Field, text: str, token: str) -> int:
    if token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.high:
            where = "is" if token == text else f"has {token}, which is"
            sunday = " (0 and 7 are Sunday)" if spec.name == "day-of-week" else ""
            raise CronError(f"{spec.name} field '{text}' {where} out of range {spec.low}-{spec.high}{sunday}")
        return value
    if not spec.names:
        raise _invalid(spec, text)
    name = token.upper()
    if name not in spec.names:
        raise CronError(
            f"{spec.name} field '{text}' has unknown name '{token}'{did_you_mean(name, spec.names)}; "
            f"use one of {' '.join(spec.names)}"
        )
    return spec.low + spec.names.index(name)


def _runs(values: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs in sorted ``values``: [1, 2, 3, 5] -> (1, 3), (5, 5)."""
    first = previous = values[0]
    for value in values[1:]:
        if value != previous + 1:
            yield first, previous
            first = value
        previous = value
    yield first, previous


def _aps_numbers(values: frozenset[int], spec: _Field) -> str:
    if len(values) == spec.high - spec.low + 1:
        return "*"
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in _runs(sorted(values)))


def _aps_weekdays(values: frozenset[int]) -> str:
    if len(values) == 7:
        return "*"
    days = sorted((value + 6) % 7 for value in values)  # crontab 0 = Sunday -> APScheduler 6 = sun
    names = _APS_WEEKDAYS
    return ",".join(names[a] if a == b else f"{names[a]}-{names[b]}" for a, b in _runs(days))


def _suggest_zone(name: str) -> str | None:
    zones = sorted(zoneinfo.available_timezones() - {"localtime"})
    by_lower = {zone.lower(): zone for zone in zones}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, zones, n=1)
    if close:
        return close[0]
    # a bare city such as 'new york'
    by_city = {zone.rsplit("/", 1)[-1].lower(): zone for zone in zones}
    close = difflib.get_close_matches(name.strip().lower().replace(" ", "_"), by_city, n=1)
    return by_city[close[0]] if close else None


def parse_schedule(cron: str | None, every: timedelta | None, timezone: str = "UTC") -> CronSchedule | IntervalSchedule:
    """The schedule of an ``[[on.schedule]]`` entry: its cron expression, else its interval."""
    if cron is not None:
        return parse_cron(cron, timezone)
    if every is None:
        raise CronError("a schedule needs 'cron' or 'every'")
    return parse_interval(every)
