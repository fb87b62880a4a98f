from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from weir.workflows.cron import CronError, parse_cron, parse_interval, validate_timezone

SUNDAY = datetime(2025, 1, 5, tzinfo=UTC)
MONDAY = datetime(2025, 1, 6, tzinfo=UTC)
WEDNESDAY_MORNING = datetime(2025, 1, 15, 10, 20, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def fires(expr: str, after: datetime, count: int, timezone: str = "UTC") -> list[str]:
    return [moment.isoformat() for moment in parse_cron(expr, timezone).next_fire_times(after, count)]


def weekdays(expr: str, after: datetime, count: int) -> list[str]:
    return [moment.strftime("%a %d") for moment in parse_cron(expr).next_fire_times(after, count)]


def cron_error(expr: str, timezone: str = "UTC") -> str:
    with pytest.raises(CronError) as caught:
        parse_cron(expr, timezone)
    return str(caught.value)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", ["2025-01-15T11:00:00+00:00", "2025-01-15T12:00:00+00:00"]),
        ("@daily", ["2025-01-16T00:00:00+00:00", "2025-01-17T00:00:00+00:00"]),
        ("@midnight", ["2025-01-16T00:00:00+00:00", "2025-01-17T00:00:00+00:00"]),
        ("@weekly", ["2025-01-19T00:00:00+00:00", "2025-01-26T00:00:00+00:00"]),
        ("@monthly", ["2025-02-01T00:00:00+00:00", "2025-03-01T00:00:00+00:00"]),
        ("@yearly", ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
        ("@annually", ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
    ],
)
def test_parse_cron_alias_fires_like_its_expansion(alias: str, expected: list[str]) -> None:
    assert fires(alias, WEDNESDAY_MORNING, 2) == expected


def test_parse_cron_alias_is_case_insensitive_and_normalised() -> None:
    schedule = parse_cron("@Daily")

    assert schedule.expression == "@daily"
    assert schedule == parse_cron("@daily")


def test_parse_cron_weekday_range_is_monday_to_friday() -> None:
    assert weekdays("0 9 * * 1-5", SUNDAY, 6) == ["Mon 06", "Tue 07", "Wed 08", "Thu 09", "Fri 10", "Mon 13"]


def test_parse_cron_weekday_range_hands_apscheduler_day_names() -> None:
    schedule = parse_cron("0 9 * * 1-5")

    assert str(schedule.trigger) == "cron[month='*', day='*', day_of_week='mon-fri', hour='9', minute='0']"


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sun"])
def test_parse_cron_weekday_sunday_is_0_and_7(sunday: str) -> None:
    assert weekdays(f"0 9 * * {sunday}", MONDAY, 2) == ["Sun 12", "Sun 19"]


def test_parse_cron_weekday_1_is_monday() -> None:
    assert weekdays("0 9 * * 1", SUNDAY, 2) == ["Mon 06", "Mon 13"]


def test_parse_cron_weekday_star_step_counts_from_sunday() -> None:
    assert weekdays("0 9 * * */2", SUNDAY, 5) == ["Sun 05", "Tue 07", "Thu 09", "Sat 11", "Sun 12"]


def test_parse_cron_weekday_range_step() -> None:
    assert weekdays("0 9 * * 1-5/2", SUNDAY, 4) == ["Mon 06", "Wed 08", "Fri 10", "Mon 13"]


def test_parse_cron_weekday_list() -> None:
    assert weekdays("0 9 * * 1,3,5", SUNDAY, 4) == ["Mon 06", "Wed 08", "Fri 10", "Mon 13"]


def test_parse_cron_weekday_range_across_sunday_as_list() -> None:
    assert weekdays("0 9 * * 5-7,0-1", MONDAY, 5) == ["Mon 06", "Fri 10", "Sat 11", "Sun 12", "Mon 13"]


@pytest.mark.parametrize("names", ["MON-FRI", "mon-fri", "Mon-Fri", "1-FRI"])
def test_parse_cron_weekday_names_are_case_insensitive(names: str) -> None:
    assert weekdays(f"0 9 * * {names}", SUNDAY, 6) == ["Mon 06", "Tue 07", "Wed 08", "Thu 09", "Fri 10", "Mon 13"]


def test_parse_cron_weekday_name_range_may_end_on_sunday() -> None:
    assert weekdays("0 9 * * FRI-SUN", MONDAY, 4) == ["Fri 10", "Sat 11", "Sun 12", "Fri 17"]


def test_parse_cron_weekday_name_list() -> None:
    assert weekdays("0 9 * * SAT,sun", MONDAY, 3) == ["Sat 11", "Sun 12", "Sat 18"]


def test_parse_cron_month_names() -> None:
    assert fires("0 0 1 JAN,jul *", WEDNESDAY_MORNING, 2) == ["2025-07-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]


def test_parse_cron_month_name_range_with_step() -> None:
    assert fires("0 0 1 FEB-DEC/5 *", WEDNESDAY_MORNING, 3) == [
        "2025-02-01T00:00:00+00:00",
        "2025-07-01T00:00:00+00:00",
        "2025-12-01T00:00:00+00:00",
    ]


def test_parse_cron_numeric_fields_with_steps_ranges_and_lists() -> None:
    assert fires("*/20 9-10,17 * * *", WEDNESDAY_MORNING, 5) == [
        "2025-01-15T10:40:00+00:00",
        "2025-01-15T17:00:00+00:00",
        "2025-01-15T17:20:00+00:00",
        "2025-01-15T17:40:00+00:00",
        "2025-01-16T09:00:00+00:00",
    ]


def test_parse_cron_normalises_whitespace() -> None:
    schedule = parse_cron("  0   2 * *\t* ")

    assert schedule.expression == "0 2 * * *"
    assert schedule == parse_cron("0 2 * * *")
    assert hash(schedule) == hash(parse_cron("0 2 * * *"))


def test_parse_cron_repr_leaves_out_the_trigger() -> None:
    assert repr(parse_cron("0 2 * * *", "Europe/Berlin")) == (
        "CronSchedule(expression='0 2 * * *', timezone=zoneinfo.ZoneInfo(key='Europe/Berlin'), "
        "both_days_restricted=False)"
    )


def test_parse_cron_schedules_in_other_zones_differ() -> None:
    assert parse_cron("0 2 * * *", "Europe/Berlin") != parse_cron("0 2 * * *")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "*/5 * * *",
            "cron expression '*/5 * * *' has 4 fields; write 5: minute hour day-of-month month day-of-week "
            "(e.g. '*/5 * * * *')",
        ),
        (
            "5",
            "cron expression '5' has 1 field; write 5: minute hour day-of-month month day-of-week (e.g. '5 * * * *')",
        ),
        (
            "0 0 1 1 * 2025 x",
            "cron expression '0 0 1 1 * 2025 x' has 7 fields; write 5: minute hour day-of-month month day-of-week "
            "(e.g. '*/5 * * * *')",
        ),
        (
            "   ",
            "cron expression is empty; write 5 fields: minute hour day-of-month month day-of-week (e.g. '*/5 * * * *')",
        ),
    ],
    ids=["4 fields", "1 field", "7 fields", "empty"],
)
def test_parse_cron_rejects_wrong_field_count(expr: str, message: str) -> None:
    assert cron_error(expr) == message


def test_parse_cron_rejects_seconds_field() -> None:
    assert cron_error("0 */5 * * * *") == (
        "cron expression '0 */5 * * * *' has 6 fields; weir uses 5 fields (minute hour day-of-month month "
        "day-of-week) and cannot schedule seconds, so drop the seconds field (e.g. '*/5 * * * *')"
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("0,61 * * * *", "minute field '0,61' has 61, which is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* 9-24 * * *", "hour field '9-24' has 24, which is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0' is out of range 1-31"),
        ("* * 32 * *", "day-of-month field '32' is out of range 1-31"),
        ("* * * 0 *", "month field '0' is out of range 1-12"),
        ("* * * 13 *", "month field '13' is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8' is out of range 0-7 (0 and 7 are Sunday)"),
    ],
)
def test_parse_cron_rejects_out_of_range_values(expr: str, message: str) -> None:
    assert cron_error(expr) == message


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "x * * * *",
            "minute field 'x' is not valid; write '*', a number 0-59, a range like '0-30', a list like '0,30' "
            "or a step like '*/15'",
        ),
        (
            "0 9am * * *",
            "hour field '9am' is not valid; write '*', a number 0-23, a range like '9-17', a list like '9,17' "
            "or a step like '*/2'",
        ),
        (
            "0 0 L * *",
            "day-of-month field 'L' is not valid; write '*', a number 1-31, a range like '1-15', a list like '1,15' "
            "or a step like '*/2'",
        ),
        (
            "0 0 ? * MON",
            "day-of-month field '?' is not valid; write '*', a number 1-31, a range like '1-15', a list like '1,15' "
            "or a step like '*/2'",
        ),
        (
            "0 0 1 1, *",
            "month field '1,' is not valid; write '*', a number 1-12 or a name JAN-DEC, a range like 'JAN-JUN', "
            "a list like '1,7' or a step like '*/3'",
        ),
        (
            "0 0 * * 1#2",
            "day-of-week field '1#2' is not valid; write '*', a number 0-7 or a name SUN-SAT, a range like "
            "'MON-FRI', a list like '1,3,5' or a step like '*/2'",
        ),
        (
            "*-5 * * * *",
            "minute field '*-5' is not valid; write '*', a number 0-59, a range like '0-30', a list like '0,30' "
            "or a step like '*/15'",
        ),
        (
            "0 0 * * MOM",
            "day-of-week field 'MOM' has unknown name 'MOM' (did you mean 'MON'?); "
            "use one of SUN MON TUE WED THU FRI SAT",
        ),
        (
            "0 0 1 Febr *",
            "month field 'Febr' has unknown name 'Febr' (did you mean 'FEB'?); "
            "use one of JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC",
        ),
    ],
)
def test_parse_cron_rejects_garbage(expr: str, message: str) -> None:
    assert cron_error(expr) == message


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("*/0 * * * *", "minute field '*/0' has step 0; a step must be at least 1"),
        (
            "*/90 * * * *",
            "minute field '*/90' has step 90, larger than the range 0-59 it steps through; "
            "use a smaller step, or every = '1h30m' for a fixed interval",
        ),
        (
            "0 */36 * * *",
            "hour field '*/36' has step 36, larger than the range 0-23 it steps through; "
            "use a smaller step, or every = '1d12h' for a fixed interval",
        ),
        (
            "0 0 1-10/20 * *",
            "day-of-month field '1-10/20' has step 20, larger than the range 1-10 it steps through; use a smaller step",
        ),
        (
            "5/15 * * * *",
            "minute field '5/15' has a step on a single value ('5/15'); write a range before the step, "
            "e.g. '5-59/15', or '*/15'",
        ),
        (
            "0 22-2 * * *",
            "hour field '22-2' has a backwards range '22-2'; ranges do not wrap around, so write it low to high "
            "or as two ranges, e.g. '22-23,0-2'",
        ),
        (
            "0 0 * * FRI-MON",
            "day-of-week field 'FRI-MON' has a backwards range 'FRI-MON'; ranges do not wrap around, so write it "
            "low to high or as two ranges, e.g. 'FRI-SAT,SUN-MON'",
        ),
        (
            "0 0 30 2 *",
            "cron expression '0 0 30 2 *' never fires: day-of-month '30' does not occur in month '2'; "
            "choose days that exist in those months",
        ),
        (
            "@dayly",
            "unknown cron alias '@dayly' (did you mean '@daily'?); use one of @hourly @daily @midnight @weekly "
            "@monthly @yearly @annually or 5 fields: minute hour day-of-month month day-of-week",
        ),
    ],
)
def test_parse_cron_rejects_unusable_steps_ranges_and_aliases(expr: str, message: str) -> None:
    assert cron_error(expr) == message


def test_parse_cron_accepts_february_29() -> None:
    assert fires("0 0 29 2 *", WEDNESDAY_MORNING, 1) == ["2028-02-29T00:00:00+00:00"]


def test_parse_cron_rejects_unknown_time_zone_with_suggestion() -> None:
    assert cron_error("0 2 * * *", "Europe/Berln") == "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("Europe/Berln", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"), ("New York", "America/New_York")],
)
def test_validate_timezone_suggests_the_closest_name(name: str, suggestion: str) -> None:
    with pytest.raises(CronError) as caught:
        validate_timezone(name)

    assert str(caught.value) == f"unknown time zone '{name}' (did you mean '{suggestion}'?)"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_validate_timezone_without_suggestion_names_the_format(name: str) -> None:
    with pytest.raises(CronError) as caught:
        validate_timezone(name)

    assert str(caught.value) == f"unknown time zone '{name}'; write an IANA name such as 'Europe/Berlin' or 'UTC'"


def test_validate_timezone_refuses_the_servers_local_zone() -> None:
    with pytest.raises(CronError) as caught:
        validate_timezone("localtime")

    assert str(caught.value) == (
        "time zone 'localtime' depends on the server's settings; write an IANA name such as 'UTC'"
    )


def test_validate_timezone_returns_the_zone() -> None:
    assert validate_timezone("Europe/Berlin") == BERLIN


def test_cron_schedule_next_fire_times_in_schedule_zone() -> None:
    after = datetime(2025, 6, 30, 23, 0, tzinfo=UTC)

    times = parse_cron("0 2 * * *", "Europe/Berlin").next_fire_times(after, 2)

    assert [moment.isoformat() for moment in times] == ["2025-07-01T02:00:00+02:00", "2025-07-02T02:00:00+02:00"]
    assert all(moment.tzinfo is BERLIN for moment in times)


def test_cron_schedule_next_fire_times_are_strictly_after() -> None:
    assert fires("0 * * * *", datetime(2025, 1, 15, 10, 0, tzinfo=UTC), 1) == ["2025-01-15T11:00:00+00:00"]


def test_cron_schedule_next_fire_times_reads_after_in_any_zone() -> None:
    after = datetime(2025, 1, 15, 2, 30, tzinfo=BERLIN)

    assert fires("0 * * * *", after, 2, "Asia/Tokyo") == ["2025-01-15T11:00:00+09:00", "2025-01-15T12:00:00+09:00"]


def test_cron_schedule_next_fire_times_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        parse_cron("0 * * * *").next_fire_times(datetime(2025, 1, 15), 1)  # noqa: DTZ001


def test_cron_schedule_next_fire_times_count_zero_is_empty() -> None:
    assert fires("0 * * * *", WEDNESDAY_MORNING, 0) == []


def test_cron_schedule_spring_forward_fires_missing_time_one_hour_later() -> None:
    # 2025-03-30 Europe/Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist.
    # APScheduler keeps the pre-transition offset (02:30+01:00), which is the instant 03:30 CEST.
    after = datetime(2025, 3, 28, 12, 0, tzinfo=BERLIN)

    assert fires("30 2 * * *", after, 3, "Europe/Berlin") == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:30:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]


def test_cron_schedule_spring_forward_fires_several_missing_times_once() -> None:
    # 02:00, 02:20 and 02:40 do not exist that day: like cron after the clocks go forward, one fire, for the first.
    after = datetime(2025, 3, 29, 12, 0, tzinfo=BERLIN)

    assert fires("*/20 2 * * *", after, 4, "Europe/Berlin") == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:00:00+02:00",
        "2025-03-31T02:20:00+02:00",
        "2025-03-31T02:40:00+02:00",
    ]


def test_cron_schedule_fall_back_fires_once_a_day_after_the_repeated_hour() -> None:
    # 2025-11-02 America/New_York: 02:00 EDT falls back to 01:00 EST; 02:00 happens once.
    after = datetime(2025, 11, 1, 12, 0, tzinfo=NEW_YORK)
    times = parse_cron("0 2 * * *", "America/New_York").next_fire_times(after, 3)

    assert [moment.isoformat() for moment in times] == [
        "2025-11-02T02:00:00-05:00",
        "2025-11-03T02:00:00-05:00",
        "2025-11-04T02:00:00-05:00",
    ]
    assert len([moment for moment in times if moment < after + timedelta(days=2)]) == 2


def test_cron_schedule_fall_back_fires_repeated_time_twice() -> None:
    # APScheduler fires a wall time in the repeated hour in both offsets; Vixie cron fires it once.
    after = datetime(2025, 11, 1, 12, 0, tzinfo=NEW_YORK)

    assert fires("30 1 * * *", after, 3, "America/New_York") == [
        "2025-11-02T01:30:00-04:00",
        "2025-11-02T01:30:00-05:00",
        "2025-11-03T01:30:00-05:00",
    ]


def test_cron_schedule_both_days_restricted_needs_both_to_match() -> None:
    schedule = parse_cron("0 0 13 * 5")

    assert schedule.both_days_restricted is True
    assert [moment.date().isoformat() for moment in schedule.next_fire_times(WEDNESDAY_MORNING, 2)] == [
        "2025-06-13",
        "2026-02-13",
    ]


@pytest.mark.parametrize("expr", ["0 0 13 * *", "0 0 * * 5", "0 0 */2 * 5", "* * * * *", "@weekly", "@monthly"])
def test_cron_schedule_both_days_restricted_false_when_a_day_field_starts_with_star(expr: str) -> None:
    assert parse_cron(expr).both_days_restricted is False


def test_cron_schedule_describe() -> None:
    assert parse_cron("0 2 * * *", "Europe/Berlin").describe() == "cron '0 2 * * *' in Europe/Berlin"
    assert parse_cron("@daily").describe() == "cron '@daily' in UTC"


def test_an_interval_fires_on_its_grid_since_the_epoch_whatever_the_moment_asked() -> None:
    after = datetime(2025, 1, 15, 10, 20, 5, tzinfo=BERLIN)  # 09:20:05 UTC

    times = parse_interval(timedelta(minutes=15)).next_fire_times(after, 3)

    assert [moment.isoformat() for moment in times] == [
        "2025-01-15T09:30:00+00:00",
        "2025-01-15T09:45:00+00:00",
        "2025-01-15T10:00:00+00:00",
    ]
    assert all(moment.tzinfo is UTC for moment in times)
    # A replica asking seconds later, or exactly on a fire time, gets the same grid.
    later = parse_interval(timedelta(minutes=15)).next_fire_times(after + timedelta(seconds=4), 1)
    assert later == times[:1]
    on_point = parse_interval(timedelta(minutes=15)).next_fire_times(times[0], 1)
    assert on_point == times[1:2]
    odd = parse_interval(timedelta(seconds=7)).next_fire_times(datetime(1970, 1, 1, 0, 0, 20, tzinfo=UTC), 2)
    assert [t.second for t in odd] == [21, 28]


def test_parse_interval_describe() -> None:
    assert parse_interval(timedelta(minutes=15)).describe() == "every 15m"
    assert parse_interval(timedelta(hours=1, minutes=30)).describe() == "every 1h30m"


def test_parse_interval_accepts_one_second() -> None:
    assert parse_interval(timedelta(seconds=1)).every == timedelta(seconds=1)


@pytest.mark.parametrize(
    ("every", "shown"),
    [(timedelta(milliseconds=999), "999ms"), (timedelta(0), "0s"), (timedelta(seconds=-5), "-5s")],
)
def test_parse_interval_refuses_under_one_second(every: timedelta, shown: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_interval(every)

    assert str(caught.value) == f"every = '{shown}' is shorter than 1 second; use at least '1s'"


def test_cron_import_does_not_load_apscheduler() -> None:
    code = "import sys, weir.workflows.cron; print('apscheduler' in sys.modules)"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout == "False\n"
