"""The window an evaluation measures, from what a client or an event asked for.

Two entry points follow Keptn's two places for these rules. :func:`requested_window` is the
trigger endpoint (Keptn's CLI and API): a timeframe defaults to 5 minutes ending now,
``start`` + ``timeframe`` ends at start + timeframe, ``start`` + ``end`` is taken as given,
and every other combination is refused. :func:`event_window` reads an
``evaluation.triggered`` event the way the lighthouse did: ``evaluation.{start,end,timeframe}``
first, then ``test.{start,end}`` (the window of a preceding test task), then a default.

Either way a window must end after it starts and, when computed from ``evaluation`` or a
request, last at least a minute. Timestamps are ``2006-01-02T15:04:05`` with an optional
fraction and an optional ``Z`` or offset (RFC 3339); a timestamp without a zone is UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.domain import durations
from controlplane.domain.errors import DomainError
from controlplane.domain.sli import Timeframe

DEFAULT_TIMEFRAME = 300.0  # seconds: Keptn's "5m"
MINIMUM_WINDOW = 60.0  # seconds
NO_TIMEFRAME = "evaluation.triggered event does not contain evaluation timeframe"
ACCEPTED = (
    "use '2006-01-02T15:04:05' with an optional fraction ('.000') and an optional 'Z'"
    " or offset ('+02:00')"
)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?"
)


class InvalidTimeframe(DomainError):
    """The evaluation window is invalid."""


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp; without a zone it is UTC.

    Raises:
        InvalidTimeframe: naming the text and the accepted forms.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise InvalidTimeframe(f"{text!r} is not a timestamp; {ACCEPTED}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise InvalidTimeframe(f"{text!r} is not a valid date and time ({exc})") from exc
    seconds = moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
    return seconds - _offset(zone, text)


def _offset(zone: str | None, text: str) -> float:
    if zone is None or zone == "Z":
        return 0.0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        raise InvalidTimeframe(f"{text!r} has an impossible zone offset {zone!r}")
    offset = hours * 3600.0 + minutes * 60.0
    return -offset if zone[0] == "-" else offset


def requested_window(start: str, end: str, timeframe: str, now: float) -> Timeframe:
    """The window of an evaluation triggered through the API; empty strings mean "not given".

    Raises:
        InvalidTimeframe: naming the field and the rule broken.
    """
    return _window(start, end, timeframe, now, prefix="")


def event_window(
    data: Mapping[str, Any], now: float, *, default_timeframe: float | None = DEFAULT_TIMEFRAME
) -> Timeframe:
    """The window an ``evaluation.triggered`` event asks for.

    Args:
        data: the event's ``data``.
        now: epoch seconds, the end of a window given only as a timeframe.
        default_timeframe: seconds before ``now`` to measure when the event names no window
            at all. Keptn had no default and failed the evaluation (pass None for that); ours
            lets a gate over values carried in the event run without one.

    Raises:
        InvalidTimeframe: naming the field and the problem, or Keptn's message when the
            event has no window and there is no default.
    """
    start, end, timeframe = _fields(data, "evaluation", ("start", "end", "timeframe"))
    if (start and end) or timeframe:
        return _window(start, end, timeframe, now, prefix="evaluation.")
    test_start, test_end = _fields(data, "test", ("start", "end"))
    if test_start and test_end:
        return _test_window(test_start, test_end)
    if default_timeframe is None:
        raise InvalidTimeframe(NO_TIMEFRAME)
    # A half-given window is a mistake; measuring the default instead would hide it.
    if start:
        raise InvalidTimeframe("evaluation.start: needs evaluation.end or evaluation.timeframe")
    if end:
        raise InvalidTimeframe("evaluation.end: needs evaluation.start")
    return Timeframe(now - default_timeframe, now)


def _fields(data: Mapping[str, Any], block: str, names: tuple[str, ...]) -> list[str]:
    raw = data.get(block)
    if raw is None:
        return ["" for _ in names]
    if not isinstance(raw, Mapping):
        raise InvalidTimeframe(f"{block}: must be a mapping with {', '.join(names)}")
    found: list[str] = []
    for name in names:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidTimeframe(f"{block}.{name}: must be a string, got {value!r}")
        found.append(value or "")
    return found


def _window(start: str, end: str, timeframe: str, now: float, *, prefix: str) -> Timeframe:
    if end and timeframe:
        raise InvalidTimeframe(
            f"{prefix}end: cannot be combined with {prefix}timeframe; give {prefix}start with"
            f" {prefix}end, or {prefix}timeframe (with or without {prefix}start)"
        )
    if end and not start:
        raise InvalidTimeframe(f"{prefix}end: needs {prefix}start")
    if start and not (end or timeframe):
        raise InvalidTimeframe(f"{prefix}start: needs {prefix}end or {prefix}timeframe")
    length = _timeframe(timeframe, prefix) if timeframe else DEFAULT_TIMEFRAME
    if start:
        begin = _timestamp(start, f"{prefix}start")
        finish = _timestamp(end, f"{prefix}end") if end else begin + length
    else:
        begin, finish = now - length, now
    if finish <= begin:
        raise InvalidTimeframe(f"{prefix}end: must be after {prefix}start ({end!r} <= {start!r})")
    if finish - begin < MINIMUM_WINDOW:
        lasting = durations.format_duration(finish - begin)
        if end:
            raise InvalidTimeframe(
                f"{prefix}end: must be at least 1 minute after {prefix}start (got {lasting})"
            )
        raise InvalidTimeframe(f"{prefix}timeframe: must be at least 1 minute, got {timeframe!r}")
    return Timeframe(begin, finish)


def _test_window(start: str, end: str) -> Timeframe:
    begin, finish = _timestamp(start, "test.start"), _timestamp(end, "test.end")
    if finish <= begin:
        raise InvalidTimeframe(f"test.end: must be after test.start ({end!r} <= {start!r})")
    return Timeframe(begin, finish)


def _timeframe(text: str, prefix: str) -> float:
    try:
        seconds = durations.parse_duration(text)
    except ValueError as exc:
        raise InvalidTimeframe(f"{prefix}timeframe: {exc}") from exc
    if seconds <= 0:
        raise InvalidTimeframe(f"{prefix}timeframe: must be positive, got {text!r}")
    return seconds


def _timestamp(text: str, path: str) -> float:
    try:
        return parse_timestamp(text)
    except InvalidTimeframe as exc:
        raise InvalidTimeframe(f"{path}: {exc}") from exc
