from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.sli import Timeframe
from controlplane.domain.timeframes import (
    NO_TIMEFRAME,
    InvalidTimeframe,
    event_window,
    parse_timestamp,
    requested_window,
)

# 2006-01-02T15:04:05Z: Go's reference time (15:04:05 MST = 22:04:05 UTC = 1136239445) - 7h
T0 = 1136214245.0
NOW = 1_700_000_000.0


# --- parse_timestamp --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2006-01-02T15:04:05", T0),
        ("2006-01-02T15:04:05Z", T0),
        ("2006-01-02T15:04:05.000Z", T0),
        ("2006-01-02T15:04:05.000", T0),
        ("2006-01-02T15:04:05.5Z", T0 + 0.5),
        ("2006-01-02T15:04:05.250", T0 + 0.25),
        ("2006-01-02T17:04:05+02:00", T0),
        ("2006-01-02T08:04:05-07:00", T0),
        ("2006-01-02T15:34:05+00:30", T0),
        ("2006-01-02T15:04:05.5+00:00", T0 + 0.5),
        (" 2006-01-02T15:04:05Z ", T0),
        ("1970-01-01T00:00:00Z", 0.0),
        ("2024-02-29T00:00:00Z", 1709164800.0),
    ],
)
def test_parse_timestamp(text: str, seconds: float) -> None:
    assert parse_timestamp(text) == pytest.approx(seconds)


def test_nanosecond_fractions() -> None:
    assert parse_timestamp("2006-01-02T15:04:05.123456789Z") == pytest.approx(T0 + 0.123456789)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2006-01-02",
        "2006-01-02 15:04:05",
        "2006-01-02T15:04",
        "2006-1-2T15:04:05",
        "2006-01-02T15:04:05+0200",
        "2006-01-02T15:04:05 UTC",
        "2006-01-02T15:04:05.Z",
        "1136214245",
    ],
)
def test_rejects_other_forms(text: str) -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        parse_timestamp(text)
    assert str(caught.value) == (
        f"{text!r} is not a timestamp; use '2006-01-02T15:04:05' with an optional fraction"
        " ('.000') and an optional 'Z' or offset ('+02:00')"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2006-13-02T15:04:05", "is not a valid date and time"),
        ("2006-02-30T15:04:05", "is not a valid date and time"),
        ("2006-01-02T24:00:00", "is not a valid date and time"),
        ("2006-01-02T15:04:60", "is not a valid date and time"),
        ("2006-01-02T15:04:05+24:00", "impossible zone offset '+24:00'"),
        ("2006-01-02T15:04:05+02:60", "impossible zone offset '+02:60'"),
    ],
)
def test_rejects_impossible_times(text: str, reason: str) -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        parse_timestamp(text)
    assert str(caught.value).startswith(repr(text))
    assert reason in str(caught.value)


# --- requested_window -------------------------------------------------------------------

START = "2006-01-02T15:04:05"


def test_default_is_five_minutes_ending_now() -> None:
    assert requested_window("", "", "", NOW) == Timeframe(NOW - 300, NOW)


def test_timeframe_alone_ends_now() -> None:
    assert requested_window("", "", "1h", NOW) == Timeframe(NOW - 3600, NOW)
    assert requested_window("", "", "1h30m", NOW) == Timeframe(NOW - 5400, NOW)


def test_start_and_timeframe() -> None:
    assert requested_window(START, "", "10m", NOW) == Timeframe(T0, T0 + 600)


def test_start_and_end() -> None:
    assert requested_window(START, "2006-01-02T16:04:05Z", "", NOW) == Timeframe(T0, T0 + 3600)


def test_exactly_one_minute_is_enough() -> None:
    assert requested_window(START, "2006-01-02T15:05:05", "", NOW) == Timeframe(T0, T0 + 60)
    assert requested_window("", "", "1m", NOW) == Timeframe(NOW - 60, NOW)


@pytest.mark.parametrize(
    ("start", "end", "timeframe", "message"),
    [
        (START, "", "", "start: needs end or timeframe"),
        ("", "2006-01-02T16:04:05", "", "end: needs start"),
        ("", "2006-01-02T16:04:05", "5m", "end: cannot be combined with timeframe;"),
        (START, "2006-01-02T16:04:05", "5m", "end: cannot be combined with timeframe;"),
        (START, "2006-01-02T15:00:00", "", "end: must be after start"),
        (START, START, "", "end: must be after start"),
        (
            START,
            "2006-01-02T15:05:04",
            "",
            "end: must be at least 1 minute after start (got 59s)",
        ),
        ("", "", "30s", "timeframe: must be at least 1 minute, got '30s'"),
        (START, "", "59s", "timeframe: must be at least 1 minute, got '59s'"),
        ("", "", "0s", "timeframe: must be positive, got '0s'"),
        ("", "", "0", "timeframe: must be positive, got '0'"),
        ("", "", "-5m", "timeframe: '-5m' is not a duration"),
        ("", "", "5 minutes", "timeframe: '5 minutes' is not a duration"),
        ("yesterday", "", "5m", "start: 'yesterday' is not a timestamp"),
        (START, "soon", "", "end: 'soon' is not a timestamp"),
    ],
)
def test_requested_window_errors(start: str, end: str, timeframe: str, message: str) -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        requested_window(start, end, timeframe, NOW)
    assert str(caught.value).startswith(message), str(caught.value)


def test_end_with_timeframe_message_in_full() -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        requested_window("", "2006-01-02T16:04:05", "5m", NOW)
    assert str(caught.value) == (
        "end: cannot be combined with timeframe; give start with end, or timeframe"
        " (with or without start)"
    )


# --- event_window -----------------------------------------------------------------------


def window(data: dict[str, Any], **kwargs: Any) -> Timeframe:
    return event_window(data, NOW, **kwargs)


def test_evaluation_start_and_end() -> None:
    data = {"evaluation": {"start": START, "end": "2006-01-02T15:14:05Z"}}
    assert window(data) == Timeframe(T0, T0 + 600)


def test_evaluation_timeframe_alone_ends_now() -> None:
    assert window({"evaluation": {"timeframe": "15m"}}) == Timeframe(NOW - 900, NOW)


def test_evaluation_start_and_timeframe() -> None:
    assert window({"evaluation": {"start": START, "timeframe": "2m"}}) == Timeframe(T0, T0 + 120)


def test_evaluation_wins_over_test() -> None:
    data = {
        "evaluation": {"timeframe": "15m"},
        "test": {"start": START, "end": "2006-01-02T15:14:05"},
    }
    assert window(data) == Timeframe(NOW - 900, NOW)


def test_test_window() -> None:
    data = {"test": {"start": START, "end": "2006-01-02T15:04:15Z"}}
    assert window(data) == Timeframe(T0, T0 + 10)  # tests may be short: no minimum


def test_half_an_evaluation_window_falls_back_to_the_test_window() -> None:
    data = {"evaluation": {"start": START}, "test": {"start": START, "end": "2006-01-02T15:14:05"}}
    assert window(data) == Timeframe(T0, T0 + 600)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"evaluation": None},
        {"evaluation": {}},
        {"evaluation": {"start": "", "end": "", "timeframe": ""}},
        {"test": {"start": START}},
        {"test": {"end": START}},
        {"test": None},
    ],
)
def test_no_window_uses_the_default(data: dict[str, Any]) -> None:
    assert window(data) == Timeframe(NOW - 300, NOW)
    assert window(data, default_timeframe=60.0) == Timeframe(NOW - 60, NOW)


@pytest.mark.parametrize(
    "data",
    [{}, {"evaluation": {"start": START}}, {"evaluation": {"end": START}}, {"test": {}}],
)
def test_no_window_without_default_is_keptns_error(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        window(data, default_timeframe=None)
    assert str(caught.value) == NO_TIMEFRAME
    assert NO_TIMEFRAME == "evaluation.triggered event does not contain evaluation timeframe"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"evaluation": {"start": START}},
            "evaluation.start: needs evaluation.end or evaluation.timeframe",
        ),
        ({"evaluation": {"end": START}}, "evaluation.end: needs evaluation.start"),
        (
            {"evaluation": {"start": START, "end": "2006-01-02T15:14:05", "timeframe": "5m"}},
            "evaluation.end: cannot be combined with evaluation.timeframe; give evaluation.start"
            " with evaluation.end, or evaluation.timeframe (with or without evaluation.start)",
        ),
        (
            {"evaluation": {"end": START, "timeframe": "5m"}},
            "evaluation.end: cannot be combined with evaluation.timeframe;",
        ),
        (
            {"evaluation": {"start": START, "end": "2006-01-02T15:04:35"}},
            "evaluation.end: must be at least 1 minute after evaluation.start (got 30s)",
        ),
        (
            {"evaluation": {"start": "2006-01-02T16:04:05", "end": START}},
            "evaluation.end: must be after evaluation.start",
        ),
        (
            {"evaluation": {"timeframe": "forever"}},
            "evaluation.timeframe: 'forever' is not a duration",
        ),
        ({"evaluation": {"timeframe": "0m"}}, "evaluation.timeframe: must be positive"),
        (
            {"evaluation": {"start": "now", "end": START}},
            "evaluation.start: 'now' is not a timestamp",
        ),
        ({"evaluation": {"timeframe": 5}}, "evaluation.timeframe: must be a string, got 5"),
        ({"evaluation": {"start": 1136214245}}, "evaluation.start: must be a string"),
        ({"evaluation": "5m"}, "evaluation: must be a mapping with start, end, timeframe"),
        ({"test": ["x"]}, "test: must be a mapping with start, end"),
        ({"test": {"start": START, "end": 7}}, "test.end: must be a string, got 7"),
        (
            {"test": {"start": START, "end": "2006-01-02T15:00:00"}},
            "test.end: must be after test.start",
        ),
        ({"test": {"start": START, "end": START}}, "test.end: must be after test.start"),
        ({"test": {"start": "then", "end": START}}, "test.start: 'then' is not a timestamp"),
    ],
)
def test_event_window_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTimeframe) as caught:
        window(data)
    assert str(caught.value).startswith(message), str(caught.value)
