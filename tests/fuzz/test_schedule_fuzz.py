"""Durations, sizes, cron expressions and time zones under random input.

Parsers answer with a value or their documented error (``ValueError`` for durations and sizes,
``CronError`` for schedules), never another exception; valid values round-trip; and the fire
times of a cron schedule are strictly increasing, each one matches the expression, and in UTC
none is skipped (compared with a brute-force search over the calendar).
"""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given, settings, strategies as st

from tests.fuzz.strategies import TRICKY_TEXT, cron_expressions, examples, json_values, outcome
from weir.schemas.common import format_duration, parse_duration, parse_size
from weir.workflows.cron import ALIASES, CronError, parse_cron, parse_interval, parse_schedule, validate_timezone

UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1)}
UNITS |= {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]
moments = st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC))  # noqa: DTZ001 - naive bounds, aware values


# --- durations and sizes --------------------------------------------------------------------

duration_text = st.lists(
    st.sampled_from(["1", "0", "90", "1.5", ".5", "1.", "ms", "s", "m", "h", "d", "w", " ", "-", "+", "e", "9" * 30])
    | st.sampled_from(TRICKY_TEXT)
    | st.text(max_size=4),
    max_size=8,
).map("".join)


@settings(max_examples=examples(300))
@given(st.one_of(duration_text, json_values(), st.timedeltas()))
@example(float("nan"))
@example(float("inf"))
@example(10**30)
@example("9" * 400 + "w")
@example(True)
def test_parse_duration_gives_a_duration_or_a_value_error(value: Any) -> None:
    parsed = outcome(lambda: parse_duration(value), ValueError)
    if isinstance(parsed, ValueError):
        assert 0 < len(str(parsed)) < 300, str(parsed)
    else:
        assert parsed >= timedelta(0) or isinstance(value, timedelta)


@settings(max_examples=examples(200))
@given(st.integers(0, 10**5 * 86_400_000))  # up to 274 years, in milliseconds (the precision of durations)
def test_format_duration_reads_back_as_the_same_duration(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    text = format_duration(value)
    assert parse_duration(text) == value, text
    assert format_duration(parse_duration(text)) == text


@settings(max_examples=examples(200))
@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1, max_size=5))
def test_number_and_unit_groups_add_up(groups: list[tuple[int, str]]) -> None:
    text = "".join(f"{count}{unit}" for count, unit in groups)
    expected = sum((count * UNITS[unit] for count, unit in groups), timedelta())
    assert abs(parse_duration(text) - expected) <= timedelta(microseconds=1), text
    assert abs(parse_duration(f" {text} ") - expected) <= timedelta(microseconds=1)


@settings(max_examples=examples(200))
@given(st.one_of(duration_text, json_values(), st.sampled_from(["1MiB", "512 KiB", "1.5GiB", "10kb", "7", "9" * 400])))
def test_parse_size_gives_bytes_or_a_value_error(value: Any) -> None:
    size = outcome(lambda: parse_size(value), ValueError)
    if isinstance(size, ValueError):
        assert str(size).startswith(f"'{str(value)[:37]}")
        assert len(str(size)) < 200  # a long value is cut, never repeated whole
    else:
        assert isinstance(size, int)
        assert size >= 0


@settings(max_examples=examples(100))
@given(st.integers(0, 10**6), st.sampled_from(["", "b", "B", "KiB", "kib", "MiB", "GiB", "kb", "MB", "gb"]))
def test_sizes_with_units_are_exact(count: int, unit: str) -> None:
    factor = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
    assert parse_size(f"{count}{unit}") == count * factor[unit.lower()]


# --- cron -----------------------------------------------------------------------------------

cron_text = st.lists(
    st.sampled_from(["*", "/", "-", ",", " ", "0", "5", "7", "12", "23", "31", "59", "60", "99999999999"])
    | st.sampled_from(["MON", "sun", "JAN", "dec", "FRI-SUN", "@", "@daily", "@hourly", "L", "?", "#", "\t"])
    | st.text(max_size=3),
    max_size=14,
).map("".join)
zones = (
    st.sampled_from(ZONES)
    | st.sampled_from(["localtime", "", "UTC+1", "../etc", "Europe", "berlin"])
    | st.text(max_size=20)
)


@settings(max_examples=examples(250))
@given(cron_text, zones)
@example("* * * * *", "\x00")
@example("* * * * *", "a" * 300)
@example("0 0 31 2 *", "UTC")
def test_parse_cron_gives_a_schedule_or_a_cron_error(expression: str, zone: str) -> None:
    schedule = outcome(lambda: parse_cron(expression, zone), CronError)
    if isinstance(schedule, CronError):
        assert str(schedule)
    else:
        assert schedule.timezone.key == zone
        assert schedule.describe() == f"cron '{schedule.expression}' in {zone}"


@settings(max_examples=examples(100))
@given(zones)
def test_validate_timezone_gives_a_zone_or_a_cron_error(name: str) -> None:
    zone = outcome(lambda: validate_timezone(name), CronError)
    if isinstance(zone, CronError):
        assert f"'{name}'" in str(zone)
    else:
        assert isinstance(zone, ZoneInfo)


def _matches(moment: datetime, fields: list[set[int]]) -> bool:
    minute, hour, day, month, weekday = fields
    return (
        moment.minute in minute
        and moment.hour in hour
        and moment.month in month
        and moment.day in day  # weir fires when day-of-month and day-of-week both match (docs/decisions.md)
        and (moment.isoweekday() % 7) in weekday
        and moment.second == 0
        and moment.microsecond == 0
    )


def _next_utc(after: datetime, fields: list[set[int]]) -> datetime | None:
    """The first matching minute strictly after ``after``, by walking the calendar day by day (UTC)."""
    minute, hour, day, month, weekday = fields
    times = [(h, m) for h in sorted(hour) for m in sorted(minute)]
    current = after.date()
    for _ in range(366 * 250):  # Feb 29 on a given weekday can be 40 years apart (2100 is no leap year)
        if current.month in month and current.day in day and (current.isoweekday() % 7) in weekday:
            for h, m in times:
                candidate = datetime(current.year, current.month, current.day, h, m, tzinfo=UTC)
                if candidate > after:
                    return candidate
        current += timedelta(days=1)
    return None


def _possible(fields: list[set[int]]) -> bool:
    lengths = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return any(d <= lengths[m - 1] for m in fields[3] for d in fields[2])


@settings(max_examples=examples(150))
@given(cron_expressions(), moments)
@example(("0 0 29 2 1", [{0}, {0}, {29}, {2}, {1}]), datetime(2024, 3, 1, tzinfo=UTC))
@example(("*/7 */5 * * 0,7", [set(range(0, 60, 7)), set(range(0, 24, 5)), set(range(1, 32)), set(range(1, 13)), {0}]),
         datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC))  # fmt: skip
def test_cron_fire_times_in_utc_are_exactly_the_matching_minutes(
    cron: tuple[str, list[set[int]]], after: datetime
) -> None:
    expression, fields = cron
    if not _possible(fields):
        with pytest.raises(CronError, match="never fires"):
            parse_cron(expression)
        return
    schedule = parse_cron(expression)
    times = schedule.next_fire_times(after, 4)
    expected: list[datetime] = []
    cursor = after
    for _ in range(4):
        found = _next_utc(cursor, fields)
        if found is None:
            break
        expected.append(found)
        cursor = found
    assert times == expected, expression


@settings(max_examples=examples(150))
@given(cron_expressions(one_day_field=True), moments, st.sampled_from(ZONES))
def test_cron_fire_times_in_any_zone_increase_and_match(
    cron: tuple[str, list[set[int]]], after: datetime, zone: str
) -> None:
    expression, fields = cron
    schedule = parse_cron(expression, zone)
    times = schedule.next_fire_times(after, 6)
    assert times, expression  # every generated expression fires at least once a year
    previous = after
    for moment in times:
        assert moment > previous, (expression, zone, times)
        assert moment.utcoffset() is not None
        local = moment.astimezone(ZoneInfo(zone))
        if not _matches(local, fields):
            # A wall time that does not exist (spring forward) fires right after the gap (docs/decisions.md).
            before = local - timedelta(hours=2)
            assert before.utcoffset() != local.utcoffset(), (expression, zone, local)
        previous = moment


@settings(max_examples=examples(50))
@given(st.sampled_from(sorted(ALIASES)), moments)
def test_cron_aliases_fire_like_their_expansion(alias: str, after: datetime) -> None:
    assert parse_cron(alias).next_fire_times(after, 3) == parse_cron(ALIASES[alias]).next_fire_times(after, 3)
    assert parse_cron(alias.upper()).expression == alias


@settings(max_examples=examples(100))
@given(st.timedeltas(min_value=timedelta(seconds=-10), max_value=timedelta(days=400)), moments)
def test_intervals_fire_at_even_spacing_or_are_refused(every: timedelta, after: datetime) -> None:
    schedule = outcome(lambda: parse_interval(every), CronError)
    if isinstance(schedule, CronError):
        assert every < timedelta(seconds=1)
        assert "shorter than 1 second" in str(schedule)
        return
    times = schedule.next_fire_times(after, 4)
    assert after < times[0] <= after + every
    assert [later - earlier for earlier, later in itertools.pairwise(times)] == [every] * 3
    assert parse_schedule(None, every).next_fire_times(after, 1) == times[:1]


def test_every_zone_the_system_knows_is_accepted() -> None:
    known = sorted(zoneinfo.available_timezones() - {"localtime"})
    assert known
    for name in known:
        assert validate_timezone(name).key == name


@settings(max_examples=examples(30))
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)), st.sampled_from(ZONES))
def test_daily_schedules_fire_once_per_day_outside_dst_changes(day: date, zone: str) -> None:
    start = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(zone))
    times = parse_cron("30 9 * * *", zone).next_fire_times(start, 10)
    assume(len({t.utcoffset() for t in times}) == 1)
    assert [(t.date() - times[0].date()).days for t in times] == list(range(10))
    assert {(t.hour, t.minute) for t in times} == {(9, 30)}
