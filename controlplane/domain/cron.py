"""Cron expressions, evaluated in a time zone's wall-clock time.

The grammar is the classic one (Vixie cron), with an optional leading seconds field::

    [second] minute hour day-of-month month day-of-week

Each field is ``*`` or a comma-separated list of ``n``, ``a-b``, ``*/step``, ``a-b/step``
and ``a/step`` (``a`` up to the field's maximum). Months may be written ``jan``..``dec``
and days ``sun``..``sat`` (any case); day-of-week 7 is Sunday, like 0. The macros
``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and
``@hourly`` stand for their usual expressions.

Day-of-month and day-of-week follow the classic rule: when both are restricted, a day
matches if *either* matches (``0 9 1 * mon`` runs on the 1st and on every Monday). A field
that starts with ``*`` counts as unrestricted, as in Vixie cron, so ``0 9 */2 * mon`` runs on
odd days that are Mondays.

Why our own parser: the rules above, the time-zone behaviour below and the error messages
(naming the field and saying what is wrong with it) are part of the contract with users, and
they fit in one small, pure module.

Time zones: a slot is a local wall-clock time. When clocks spring forward, a local time that
does not exist that day is skipped (``30 2 * * *`` does not run in Berlin on the last Sunday
of March). When clocks fall back, a local time that happens twice fires once, the first time
(fold 0). The search walks the fields (month, then day, hour, minute, second), never the
clock second by second, and the parser refuses expressions that can never match (``0 0 30 2
*``), so :meth:`Cron.next_after` only returns None at the end of the calendar.
"""

from __future__ import annotations

import bisect
import calendar
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["MACROS", "Cron", "InvalidCron", "parse_cron"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Every expression that passes the parser matches within one Gregorian cycle (400 years, in
# which every date falls on every weekday); searching further would only find nothing.
_SEARCH_YEARS = 400
_SECOND = timedelta(seconds=1)
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February in a leap year


class InvalidCron(ValueError):
    """The text is not a cron expression; the message names the field and the reason."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i
    wrap: tuple[int, int] | None = None  # (value, means): 7 means Sunday (0)


_SECONDS = _Field("second", 0, 59)
_MINUTES = _Field("minute", 0, 59)
_HOURS = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day-of-week", 0, 6, _DAYS, wrap=(7, 0))
_FIVE = (_MINUTES, _HOURS, _DOM, _MONTH, _DOW)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the allowed values of each field, sorted."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    any_day: bool  # the day-of-month field starts with '*'
    any_weekday: bool  # the day-of-week field starts with '*'

    # ------------------------------------------------------------------ wall-clock rules

    def day_matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date is a day of this expression (the month is not checked)."""
        weekday = (calendar.weekday(year, month, day) + 1) % 7
        in_month = day in self.days
        in_week = weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, moment: datetime) -> bool:
        """Whether a wall-clock time (its fields, not its zone) is a slot."""
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self.day_matches(moment.year, moment.month, moment.day)
        )

    # ------------------------------------------------------------------ instants

    def next_after(self, instant: float, zone: ZoneInfo) -> float | None:
        """The first slot strictly after the epoch ``instant``, as an epoch; None: none left."""
        start = _local(instant, zone)
        if start is None:
            return None
        naive = start.replace(tzinfo=None, fold=0)
        cursor = naive + _SECOND
        limit = min(naive.year + _SEARCH_YEARS, datetime.max.year - 1)
        while True:
            found = self._next_wall(cursor, limit)
            if found is None:
                return None
            kind, epoch, gap = _resolve(found, zone)
            if kind == _MISSING:
                # Spring forward: this wall time does not exist; go on after the gap.
                cursor = _boundary(found, found + gap, lambda t: _resolve(t, zone)[0] != _MISSING)
                continue
            if epoch <= instant:
                # Fall back, and ``instant`` lies in the repeated hour: the wall times up to
                # the end of that hour already fired in its first pass.
                cursor = _boundary(found, found + gap, lambda t: _resolve(t, zone)[0] == _REGULAR)
                continue
            return epoch

    def previous_at_or_before(self, instant: float, zone: ZoneInfo) -> float | None:
        """The last slot at or before the epoch ``instant``; None: none in 400 years."""
        moment = _local(instant, zone)
        if moment is None:
            return None
        naive = moment.replace(tzinfo=None, fold=0)
        cursor = naive
        if moment.fold:
            # In the second pass of a repeated hour, the first pass of the wall times after
            # this one (up to the hour's end) is already in the past.
            cursor = naive + _overlap(naive, zone)
        limit = max(naive.year - _SEARCH_YEARS, datetime.min.year + 1)
        while True:
            found = self._previous_wall(cursor, limit)
            if found is None:
                return None
            kind, epoch, gap = _resolve(found, zone)
            if kind == _MISSING:
                first_missing = _boundary(
                    found - gap, found, lambda t: _resolve(t, zone)[0] == _MISSING
                )
                cursor = first_missing - _SECOND
                continue
            if epoch > instant:
                # A wall time after the repeated hour: step back into the hour.
                end = _boundary(naive, found, lambda t: _resolve(t, zone)[0] == _REGULAR)
                cursor = min(end, found) - _SECOND
                continue
            return epoch

    def slots_between(self, after: float, until: float, zone: ZoneInfo) -> Iterator[float]:
        """Every slot in ``(after, until]``, in order."""
        current = self.next_after(after, zone)
        while current is not None and current <= until:
            yield current
            current = self.next_after(current, zone)

    # ------------------------------------------------------------------ field search

    def _next_wall(self, t: datetime, limit: int) -> datetime | None:
        """The first matching wall time at or after ``t`` (naive, whole seconds)."""
        while t.year <= limit:
            if t.month not in self.months:
                month = _at_or_after(self.months, t.month)
                if month is None:
                    t = datetime(t.year + 1, self.months[0], 1)
                else:
                    t = datetime(t.year, month, 1)
                continue
            if not self.day_matches(t.year, t.month, t.day):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                hour = _at_or_after(self.hours, t.hour)
                if hour is None:
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = t.replace(hour=hour, minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                minute = _at_or_after(self.minutes, t.minute)
                if minute is None:
                    t = t.replace(minute=0, second=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=minute, second=0)
                continue
            if t.second not in self.seconds:
                second = _at_or_after(self.seconds, t.second)
                if second is None:
                    t = t.replace(second=0) + timedelta(minutes=1)
                else:
                    t = t.replace(second=second)
                continue
            return t
        return None

    def _previous_wall(self, t: datetime, limit: int) -> datetime | None:
        """The last matching wall time at or before ``t`` (naive, whole seconds)."""
        while t.year >= limit:
            if t.month not in self.months:
                month = _at_or_before(self.months, t.month)
                year = t.year if month is not None else t.year - 1
                month = month if month is not None else self.months[-1]
                t = _last_second_of_month(year, month)
                continue
            if not self.day_matches(t.year, t.month, t.day):
                t = datetime(t.year, t.month, t.day) - _SECOND
                continue
            if t.hour not in self.hours:
                hour = _at_or_before(self.hours, t.hour)
                if hour is None:
                    t = datetime(t.year, t.month, t.day) - _SECOND
                else:
                    t = t.replace(hour=hour, minute=59, second=59)
                continue
            if t.minute not in self.minutes:
                minute = _at_or_before(self.minutes, t.minute)
                if minute is None:
                    t = t.replace(minute=0, second=0) - _SECOND
                else:
                    t = t.replace(minute=minute, second=59)
                continue
            if t.second not in self.seconds:
                second = _at_or_before(self.seconds, t.second)
                t = t.replace(second=0) - _SECOND if second is None else t.replace(second=second)
                continue
            return t
        return None


# --------------------------------------------------------------------------- parsing


def parse_cron(text: str) -> Cron:
    """Parse a cron expression (5 fields, 6 with seconds first, or a macro).

    Raises:
        InvalidCron: naming the field that is wrong and why, or saying that the expression
            never matches (``0 0 30 2 *``).
    """
    if not isinstance(text, str):
        raise InvalidCron(f"a cron expression is a string, got {type(text).__name__}")
    source = text.strip()
    if source.startswith("@"):
        expansion = MACROS.get(source.lower())
        if expansion is None:
            known = ", ".join(MACROS)
            raise InvalidCron(f"unknown macro {source!r}; known: {known}")
        fields = expansion.split()
    else:
        fields = source.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise InvalidCron(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a seconds"
            f" field first), got {len(fields)} in {source!r}"
        )
    seconds = _parse_field(fields[0], _SECONDS)
    minutes, hours, days, months, weekdays = (
        _parse_field(raw, spec) for raw, spec in zip(fields[1:], _FIVE, strict=True)
    )
    cron = Cron(
        text=source,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        any_day=fields[3].startswith("*"),
        any_weekday=fields[5].startswith("*"),
    )
    _check_reachable(cron, fields[3])
    return cron


def _parse_field(raw: str, spec: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for item in raw.split(","):
        values.update(_parse_item(item, raw, spec))
    return tuple(sorted(values))


def _parse_item(item: str, raw: str, spec: _Field) -> set[int]:
    def fail(why: str) -> InvalidCron:
        return InvalidCron(f"{spec.name} field {raw!r}: {why}", spec.name)

    if not item:
        raise fail("an empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise fail(f"the step {step_text!r} must be a whole number of at least 1")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec, fail), _value(last, spec, fail)
        if high < low:
            raise fail(f"the range {base!r} runs backwards (ranges do not wrap around)")
    else:
        low = _value(base, spec, fail)
        high = max(low, spec.high) if slash else low  # 'a/n': from a to the field's end
    if spec.wrap is None:
        return set(range(low, high + 1, step))
    alias, means = spec.wrap
    return {means if value == alias else value for value in range(low, high + 1, step)}


def _value(text: str, spec: _Field, fail: Callable[[str], InvalidCron]) -> int:
    if not text:
        raise fail("a range needs a value on both sides of '-'")
    if text.isdigit():
        value = int(text)
        top = spec.wrap[0] if spec.wrap else spec.high
        if not spec.low <= value <= top:
            raise fail(f"{value} is out of range {spec.low}-{top}")
        return value
    lowered = text.lower()
    if spec.names and lowered in spec.names:
        return spec.low + spec.names.index(lowered)
    if spec.names:
        hint = f"{spec.names[0]}..{spec.names[-1]}"
        raise fail(f"{text!r} is neither a number nor a name ({hint})")
    raise fail(f"{text!r} is not a number")


def _check_reachable(cron: Cron, day_field: str) -> None:
    """Refuse a day-of-month that none of the months has (``30 2``, ``31 4,6,9,11``).

    Only when the days must match on their own: with both day fields restricted, the
    weekdays alone give matches.
    """
    if not (cron.any_day or cron.any_weekday):
        return
    if any(day <= _MAX_DAYS[month - 1] for month in cron.months for day in cron.days):
        return
    months = ",".join(_MONTHS[m - 1] for m in cron.months)
    raise InvalidCron(
        f"day-of-month field {day_field!r}: never matches, no such day in month(s) {months}",
        "day-of-month",
    )


# --------------------------------------------------------------------------- helpers

_REGULAR, _MISSING, _REPEATED = "regular", "missing", "repeated"


def _resolve(t: datetime, zone: ZoneInfo) -> tuple[str, float, timedelta]:
    """What a wall time is in ``zone``: regular, missing (spring forward) or repeated.

    Returns the kind, the epoch of its first occurrence (meaningless when missing), and the
    size of the clock change around it (zero when regular).
    """
    first = t.replace(tzinfo=zone, fold=0)
    second = t.replace(tzinfo=zone, fold=1)
    before, after = first.utcoffset(), second.utcoffset()
    epoch = first.timestamp()
    if before == after or before is None or after is None:
        return _REGULAR, epoch, timedelta(0)
    gap = abs(before - after)
    if datetime.fromtimestamp(epoch, zone).replace(tzinfo=None) != t:
        return _MISSING, epoch, gap
    return _REPEATED, epoch, gap


def _local(instant: float, zone: ZoneInfo) -> datetime | None:
    """The wall time of a whole-second epoch; None outside the calendar (or for NaN)."""
    try:
        return datetime.fromtimestamp(math.floor(instant), zone)
    except (OverflowError, ValueError, OSError):
        return None


def _overlap(t: datetime, zone: ZoneInfo) -> timedelta:
    before = t.replace(tzinfo=zone, fold=0).utcoffset()
    after = t.replace(tzinfo=zone, fold=1).utcoffset()
    if before is None or after is None:
        return timedelta(0)
    return max(before - after, timedelta(0))


def _boundary(low: datetime, high: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first whole second in ``(low, high]`` where ``reached`` holds (``high`` if none).

    ``reached`` must be false at ``low`` and switch to true once: a clock change is found
    in about a dozen steps instead of walking the hour.
    """
    lo, hi = 0, int((high - low).total_seconds())
    if hi <= 0:
        return low + _SECOND
    if not reached(high):
        return high
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if reached(low + timedelta(seconds=middle)):
            hi = middle
        else:
            lo = middle
    return low + timedelta(seconds=hi)


def _at_or_after(values: tuple[int, ...], value: int) -> int | None:
    index = bisect.bisect_left(values, value)
    return values[index] if index < len(values) else None


def _at_or_before(values: tuple[int, ...], value: int) -> int | None:
    index = bisect.bisect_right(values, value)
    return values[index - 1] if index else None


def _last_second_of_month(year: int, month: int) -> datetime:
    return datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59)
