"""Cron expressions: the grammar, the day rule, time zones and DST, and the errors."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controlplane.domain.cron import Cron, InvalidCron, parse_cron

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def local(epoch: float | None, zone: ZoneInfo) -> str:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, zone).isoformat()


def following(text: str, start: float, zone: ZoneInfo, count: int) -> list[str]:
    cron = parse_cron(text)
    found: list[str] = []
    current: float | None = start
    for _ in range(count):
        assert current is not None
        current = cron.next_after(current, zone)
        found.append(local(current, zone))
    return found


# --------------------------------------------------------------------------- grammar


def test_five_fields_get_a_zero_seconds_field() -> None:
    cron = parse_cron("*/15 9-17 * * mon-fri")
    assert cron.seconds == (0,)
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == tuple(range(9, 18))
    assert cron.weekdays == (1, 2, 3, 4, 5)
    assert cron.days == tuple(range(1, 32))


def test_six_fields_start_with_seconds() -> None:
    cron = parse_cron("*/20 0 12 * * *")
    assert cron.seconds == (0, 20, 40)
    assert following("*/2 * * * * *", at(UTC_ZONE, 2024, 1, 1, 0, 0, 5), UTC_ZONE, 3) == [
        "2024-01-01T00:00:06+00:00",
        "2024-01-01T00:00:08+00:00",
        "2024-01-01T00:00:10+00:00",
    ]


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("0 0 * jan,JUL *", "months", (1, 7)),
        ("0 0 * Mar-may *", "months", (3, 4, 5)),
        ("0 0 * * SUN", "weekdays", (0,)),
        ("0 0 * * 7", "weekdays", (0,)),
        ("0 0 * * 5-7", "weekdays", (0, 5, 6)),
        ("0 0 * * 0-7", "weekdays", (0, 1, 2, 3, 4, 5, 6)),
        ("0 0 * * */2", "weekdays", (0, 2, 4, 6)),
        ("0 0 * * tue/2", "weekdays", (2, 4, 6)),
        ("0 0 1-10/3 * *", "days", (1, 4, 7, 10)),
        ("0 0 25/3 * *", "days", (25, 28, 31)),
        ("5,1,3,1 * * * *", "minutes", (1, 3, 5)),
        ("0 */7 * * *", "hours", (0, 7, 14, 21)),
    ],
)
def test_lists_ranges_steps_and_names(text: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_cron(text), field) == values


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    parsed, expected = parse_cron(macro), parse_cron(same_as)
    assert parsed.text == macro
    for part in ("seconds", "minutes", "hours", "days", "months", "weekdays", "any_day"):
        assert getattr(parsed, part) == getattr(expected, part), part


# --------------------------------------------------------------------------- slots in UTC


def test_next_slot_is_strictly_after_the_instant() -> None:
    cron = parse_cron("*/15 * * * *")
    assert local(cron.next_after(at(UTC_ZONE, 2024, 1, 1, 0, 7), UTC_ZONE), UTC_ZONE) == (
        "2024-01-01T00:15:00+00:00"
    )
    on_slot = at(UTC_ZONE, 2024, 1, 1, 0, 15)
    assert cron.next_after(on_slot, UTC_ZONE) == on_slot + 900
    assert cron.next_after(on_slot - 0.5, UTC_ZONE) == on_slot
    assert cron.previous_at_or_before(on_slot, UTC_ZONE) == on_slot
    assert cron.previous_at_or_before(on_slot + 899.9, UTC_ZONE) == on_slot


def test_rolls_over_hours_days_months_and_years() -> None:
    assert following("59 23 31 12 *", at(UTC_ZONE, 2023, 6, 1), UTC_ZONE, 2) == [
        "2023-12-31T23:59:00+00:00",
        "2024-12-31T23:59:00+00:00",
    ]


def test_leap_day_only_in_leap_years() -> None:
    assert following("0 0 29 2 *", at(UTC_ZONE, 2024, 3, 1), UTC_ZONE, 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]
    # 2100 is not a leap year: eight years between two leap days.
    assert following("0 0 29 2 *", at(UTC_ZONE, 2096, 3, 1), UTC_ZONE, 1) == [
        "2104-02-29T00:00:00+00:00"
    ]
    cron = parse_cron("0 0 29 2 *")
    assert local(cron.previous_at_or_before(at(UTC_ZONE, 2027, 1, 1), UTC_ZONE), UTC_ZONE) == (
        "2024-02-29T00:00:00+00:00"
    )


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # September 2024: Fridays are 6, 13, 20, 27; the 13th is also a Friday.
    assert following("0 9 13 * fri", at(UTC_ZONE, 2024, 9, 1), UTC_ZONE, 5) == [
        "2024-09-06T09:00:00+00:00",
        "2024-09-13T09:00:00+00:00",
        "2024-09-20T09:00:00+00:00",
        "2024-09-27T09:00:00+00:00",
        "2024-10-04T09:00:00+00:00",
    ]
    # Only the weekday restricted: Fridays only; only the day restricted: the 13th only.
    assert following("0 9 * * fri", at(UTC_ZONE, 2024, 9, 7), UTC_ZONE, 1) == [
        "2024-09-13T09:00:00+00:00"
    ]
    assert following("0 9 13 * *", at(UTC_ZONE, 2024, 9, 14), UTC_ZONE, 1) == [
        "2024-10-13T09:00:00+00:00"
    ]


def test_a_day_field_starting_with_a_star_is_unrestricted_so_both_must_match() -> None:
    # Mondays of January 2024: 1, 8, 15, 22, 29; the odd ones are 1, 15 and 29.
    assert following("0 9 */2 * mon", at(UTC_ZONE, 2023, 12, 31), UTC_ZONE, 3) == [
        "2024-01-01T09:00:00+00:00",
        "2024-01-15T09:00:00+00:00",
        "2024-01-29T09:00:00+00:00",
    ]


# --------------------------------------------------------------------------- time zones


def test_berlin_spring_forward_skips_the_missing_local_time() -> None:
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    assert following("30 2 * * *", at(BERLIN, 2024, 3, 30, 12), BERLIN, 2) == [
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]
    # The hours around the gap are unaffected.
    assert following("0 * * * *", at(BERLIN, 2024, 3, 31, 0, 30), BERLIN, 3) == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
    ]


def test_berlin_fall_back_fires_a_repeated_local_time_once() -> None:
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, fires once.
    assert following("30 2 * * *", at(BERLIN, 2024, 10, 26, 12), BERLIN, 2) == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    assert following("*/20 * * * *", at(BERLIN, 2024, 10, 27, 1, 50), BERLIN, 5) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:20:00+02:00",
        "2024-10-27T02:40:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T03:20:00+01:00",
    ]


def test_new_york_transitions() -> None:
    # 2024-03-10: 02:00 EST jumps to 03:00 EDT.
    assert following("30 2 * * *", at(NEW_YORK, 2024, 3, 9, 12), NEW_YORK, 2) == [
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
    ]
    # 2024-11-03: 02:00 EDT falls back to 01:00 EST; 01:30 fires in EDT only.
    assert following("0,30 * * * *", at(NEW_YORK, 2024, 11, 3, 0, 45), NEW_YORK, 3) == [
        "2024-11-03T01:00:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T02:00:00-05:00",
    ]


def test_from_inside_the_repeated_hour() -> None:
    cron = parse_cron("*/20 * * * *")
    second_pass = at(NEW_YORK, 2024, 11, 3, 1, 10, fold=1)  # 01:10 EST
    assert local(cron.next_after(second_pass, NEW_YORK), NEW_YORK) == "2024-11-03T02:00:00-05:00"
    # The latest slot before it is the first pass's 01:40 EDT (earlier in real time).
    assert local(cron.previous_at_or_before(second_pass, NEW_YORK), NEW_YORK) == (
        "2024-11-03T01:40:00-04:00"
    )
    first_pass = at(NEW_YORK, 2024, 11, 3, 1, 10)  # 01:10 EDT
    assert local(cron.next_after(first_pass, NEW_YORK), NEW_YORK) == "2024-11-03T01:20:00-04:00"


def test_every_second_across_a_gap_and_an_overlap_is_found_quickly() -> None:
    cron = parse_cron("* * 2 * * *")  # every second of 02:xx local
    spring = cron.next_after(at(BERLIN, 2024, 3, 31, 1, 59, 59), BERLIN)
    assert local(spring, BERLIN) == "2024-04-01T02:00:00+02:00"
    autumn_end = at(BERLIN, 2024, 10, 27, 2, 59, 59)  # last second of the first pass
    assert local(cron.next_after(autumn_end, BERLIN), BERLIN) == "2024-10-28T02:00:00+01:00"
    in_second_pass = at(BERLIN, 2024, 10, 27, 2, 30, fold=1)
    assert cron.previous_at_or_before(in_second_pass, BERLIN) == autumn_end


def test_slots_between() -> None:
    cron = parse_cron("0 */6 * * *")
    slots = list(cron.slots_between(at(UTC_ZONE, 2024, 1, 1), at(UTC_ZONE, 2024, 1, 2), UTC_ZONE))
    assert [local(s, UTC_ZONE)[11:16] for s in slots] == ["06:00", "12:00", "18:00", "00:00"]


def test_the_end_of_the_calendar_gives_none() -> None:
    cron = parse_cron("0 0 1 1 *")
    assert cron.next_after(at(UTC_ZONE, 9999, 6, 1), UTC_ZONE) is None
    assert cron.next_after(float("nan"), UTC_ZONE) is None
    assert cron.previous_at_or_before(at(UTC_ZONE, 1, 6, 1), UTC_ZONE) is None


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"expected 5 fields .* or 6 .* got 0"),
        ("* * * *", r"got 4 in '\* \* \* \*'"),
        ("* * * * * * *", r"got 7"),
        ("61 * * * *", r"minute field '61': 61 is out of range 0-59"),
        ("60 * * * * *", r"second field '60': 60 is out of range 0-59"),
        ("* 24 * * *", r"hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", r"day-of-month field '0': 0 is out of range 1-31"),
        ("* * 32 * *", r"day-of-month field '32': 32 is out of range 1-31"),
        ("* * * 13 *", r"month field '13': 13 is out of range 1-12"),
        ("* * * * 8", r"day-of-week field '8': 8 is out of range 0-7"),
        ("* * * foo *", r"month field 'foo': 'foo' is neither a number nor a name \(jan..dec\)"),
        ("* * * * mon-fry", r"day-of-week field 'mon-fry': 'fry' is neither .* \(sun..sat\)"),
        ("* * * * monday", r"day-of-week field 'monday'"),
        ("x * * * *", r"minute field 'x': 'x' is not a number"),
        ("1.5 * * * *", r"minute field '1.5': '1.5' is not a number"),
        ("*/0 * * * *", r"minute field '\*/0': the step '0' must be a whole number of at least 1"),
        ("*/x * * * *", r"the step 'x' must be"),
        ("*/ * * * *", r"the step '' must be"),
        ("5-1 * * * *", r"minute field '5-1': the range '5-1' runs backwards"),
        ("* * * * sat-sun", r"day-of-week field 'sat-sun': the range 'sat-sun' runs backwards"),
        ("1,,2 * * * *", r"minute field '1,,2': an empty list item"),
        ("-5 * * * *", r"minute field '-5': a range needs a value on both sides"),
        ("@reboot", r"unknown macro '@reboot'; known: @yearly"),
        ("0 0 30 2 *", r"day-of-month field '30': never matches, no such day in month\(s\) feb"),
        ("0 0 31 4,6,9,11 *", r"never matches, no such day in month\(s\) apr,jun,sep,nov"),
        ("0 0 31 2 */2", r"day-of-month field '31': never matches"),
    ],
)
def test_bad_expressions_name_the_field_and_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidCron, match=message):
        parse_cron(text)


def test_the_error_is_a_value_error_naming_its_field() -> None:
    with pytest.raises(ValueError, match="hour") as caught:
        parse_cron("0 25 * * *")
    assert isinstance(caught.value, InvalidCron)
    assert caught.value.field == "hour"
    with pytest.raises(InvalidCron, match="a cron expression is a string, got int"):
        parse_cron(5)  # type: ignore[arg-type]


def test_days_that_only_some_months_have_are_fine() -> None:
    parse_cron("0 0 31 * *")
    parse_cron("0 0 29 2 *")
    parse_cron("0 0 30 2 mon")  # both restricted: every Monday of February matches


# --------------------------------------------------------------------------- properties

ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",  # a 30-minute DST shift
        "Asia/Kathmandu",  # a +05:45 offset
        "America/Santiago",  # DST in the southern summer, changes at midnight
    )
]
# Instants near clock changes (and one ordinary day), 2024.
BASES = [
    datetime(2024, 3, 31, 0, 0, tzinfo=UTC).timestamp(),
    datetime(2024, 10, 27, 0, 0, tzinfo=UTC).timestamp(),
    datetime(2024, 3, 10, 6, 0, tzinfo=UTC).timestamp(),
    datetime(2024, 11, 3, 4, 0, tzinfo=UTC).timestamp(),
    datetime(2024, 4, 6, 14, 0, tzinfo=UTC).timestamp(),  # Lord Howe, Santiago fall back
    datetime(2024, 10, 5, 15, 0, tzinfo=UTC).timestamp(),  # Lord Howe spring forward
    datetime(2024, 9, 8, 3, 0, tzinfo=UTC).timestamp(),  # Santiago spring forward
    datetime(2024, 6, 15, 12, 0, tzinfo=UTC).timestamp(),
]
WINDOW = 2 * 86400


@st.composite
def fields(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...] = ()
) -> tuple[str, set[int]]:
    """A field as text together with the values it allows (the test's own oracle)."""

    def show(value: int) -> str:
        if names and draw(st.booleans()):
            return names[value - low]
        return str(value)

    kind = draw(st.sampled_from(["star", "value", "range", "step", "range-step", "list"]))
    if kind == "star":
        return "*", set(range(low, high + 1))
    if kind == "value":
        value = draw(st.integers(low, high))
        return show(value), {value}
    if kind == "step":
        step = draw(st.integers(1, high - low + 1))
        return f"*/{step}", set(range(low, high + 1, step))
    first = draw(st.integers(low, high))
    last = draw(st.integers(first, high))
    if kind == "range":
        return f"{show(first)}-{show(last)}", set(range(first, last + 1))
    if kind == "range-step":
        step = draw(st.integers(1, 10))
        return f"{show(first)}-{show(last)}/{step}", set(range(first, last + 1, step))
    values = draw(st.lists(st.integers(low, high), min_size=2, max_size=4))
    return ",".join(show(value) for value in values), set(values)


MONTHS = tuple(calendar.month_abbr[m].lower() for m in range(1, 13))
MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@st.composite
def expressions(draw: st.DrawFn) -> tuple[Cron, object]:
    minute = draw(fields(0, 59))
    hour = draw(st.one_of(st.just(("*", set(range(24)))), fields(0, 23)))
    dom = draw(st.one_of(st.just(("*", set(range(1, 32)))), fields(1, 31)))
    month = draw(st.one_of(st.just(("*", set(range(1, 13)))), fields(1, 12, MONTHS)))
    dow = draw(st.one_of(st.just(("*", set(range(7)))), fields(0, 6, DAYS)))
    text = " ".join(part[0] for part in (minute, hour, dom, month, dow))
    star_day, star_week = dom[0].startswith("*"), dow[0].startswith("*")
    possible = any(d <= MAX_DAYS[m - 1] for d in dom[1] for m in month[1])
    if (star_day or star_week) and not possible:
        with pytest.raises(InvalidCron, match="never matches"):
            parse_cron(text)
        assume(False)
    cron = parse_cron(text)

    def oracle(moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7
        in_month, in_week = moment.day in dom[1], weekday in dow[1]
        day = (in_month and in_week) if (star_day or star_week) else (in_month or in_week)
        return (
            moment.second == 0
            and moment.minute in minute[1]
            and moment.hour in hour[1]
            and moment.month in month[1]
            and day
        )

    return cron, oracle


def brute_force(oracle: object, start: float, end: float, zone: ZoneInfo) -> list[float]:
    """Every slot in ``[start, end]``, minute by minute: a wall time that matches, first pass."""
    assert callable(oracle)
    found = []
    minute = (int(start) // 60) * 60
    while minute <= end:
        moment = datetime.fromtimestamp(minute, zone)
        if minute >= start and moment.fold == 0 and oracle(moment):
            found.append(float(minute))
        minute += 60
    return found


@settings(max_examples=150, deadline=None)
@given(
    expression=expressions(),
    zone=st.sampled_from(ZONES),
    base=st.sampled_from(BASES),
    offset=st.floats(-WINDOW, WINDOW / 2),
)
def test_next_and_previous_agree_with_a_brute_force_search(
    expression: tuple[Cron, object], zone: ZoneInfo, base: float, offset: float
) -> None:
    cron, oracle = expression
    instant = base + offset
    window_end = instant + WINDOW
    expected = brute_force(oracle, instant + 1e-6, window_end, zone)
    found = cron.next_after(instant, zone)
    if expected:
        assert found == expected[0], (cron.text, local(found, zone) if found else None)
    else:
        assert found is None or found > window_end
    if found is not None:
        assert found > instant
        moment = datetime.fromtimestamp(found, zone)
        assert cron.matches(moment)
        assert moment.fold == 0
    # The other way: the last slot at or before the instant.
    earlier = brute_force(oracle, instant - WINDOW, instant, zone)
    previous = cron.previous_at_or_before(instant, zone)
    if earlier:
        assert previous == earlier[-1], (cron.text, local(previous, zone) if previous else None)
    else:
        assert previous is None or previous < instant - WINDOW


@settings(max_examples=100, deadline=None)
@given(expression=expressions(), zone=st.sampled_from(ZONES), base=st.sampled_from(BASES))
def test_slots_are_increasing_and_match(
    expression: tuple[Cron, object], zone: ZoneInfo, base: float
) -> None:
    cron, _ = expression
    slots = list(cron.slots_between(base, base + 86400, zone))
    assert slots == sorted(set(slots))
    for slot in slots:
        assert cron.previous_at_or_before(slot, zone) == slot
        assert cron.next_after(slot - 1, zone) == slot
        assert cron.matches(datetime.fromtimestamp(slot, zone))


def test_a_search_walks_fields_not_seconds() -> None:
    # Feb 29 on a Sunday: 2088, then not until 2128 (2100 is no leap year). Found at once.
    cron = parse_cron("0 0 0 29 2 */7")
    started = time.perf_counter()
    found = cron.next_after(at(UTC_ZONE, 2088, 3, 1), UTC_ZONE)
    assert local(found, UTC_ZONE) == "2128-02-29T00:00:00+00:00"
    assert cron.previous_at_or_before(at(UTC_ZONE, 2128, 2, 28), UTC_ZONE) == at(
        UTC_ZONE, 2088, 2, 29
    )
    assert time.perf_counter() - started < 0.5


# Clock changes, to the second: Berlin and New York spring forward and fall back, Lord Howe's
# half hour.
CHANGES = [
    (ZoneInfo("Europe/Berlin"), datetime(2024, 3, 31, 1, 0, tzinfo=UTC).timestamp()),
    (ZoneInfo("Europe/Berlin"), datetime(2024, 10, 27, 1, 0, tzinfo=UTC).timestamp()),
    (ZoneInfo("America/New_York"), datetime(2024, 3, 10, 7, 0, tzinfo=UTC).timestamp()),
    (ZoneInfo("America/New_York"), datetime(2024, 11, 3, 6, 0, tzinfo=UTC).timestamp()),
    (ZoneInfo("Australia/Lord_Howe"), datetime(2024, 4, 6, 14, 30, tzinfo=UTC).timestamp()),
    (ZoneInfo("Australia/Lord_Howe"), datetime(2024, 10, 5, 15, 30, tzinfo=UTC).timestamp()),
]


@settings(max_examples=60, deadline=None)
@given(
    second=fields(0, 59),
    minute=st.one_of(st.just(("*", set(range(60)))), fields(0, 59)),
    change=st.sampled_from(CHANGES),
    offset=st.integers(-5400, 1800),
)
def test_seconds_around_clock_changes_agree_with_a_brute_force_search(
    second: tuple[str, set[int]],
    minute: tuple[str, set[int]],
    change: tuple[ZoneInfo, float],
    offset: int,
) -> None:
    zone, moment_of_change = change
    cron = parse_cron(f"{second[0]} {minute[0]} * * * *")
    instant = moment_of_change + offset + 0.5
    expected = None
    for epoch in range(int(instant) + 1, int(instant) + 7200):
        wall = datetime.fromtimestamp(epoch, zone)
        if wall.fold == 0 and wall.second in second[1] and wall.minute in minute[1]:
            expected = float(epoch)
            break
    found = cron.next_after(instant, zone)
    assert found == expected or (expected is None and found is not None and found > instant)
    previous = None
    for epoch in range(int(instant), int(instant) - 7200, -1):
        wall = datetime.fromtimestamp(epoch, zone)
        if wall.fold == 0 and wall.second in second[1] and wall.minute in minute[1]:
            previous = float(epoch)
            break
    if previous is not None:
        assert cron.previous_at_or_before(instant, zone) == previous
