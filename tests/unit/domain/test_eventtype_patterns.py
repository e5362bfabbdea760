"""Subscription patterns: NATS-style wildcards over Keptn event types."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.domain import eventtypes
from controlplane.domain.eventtypes import PatternError

# ------------------------------------------------------------------------------ check_pattern


@pytest.mark.parametrize(
    ("raw", "full"),
    [
        ("checknumber.triggered", "sh.keptn.event.checknumber.triggered"),
        ("sh.keptn.event.checknumber.triggered", "sh.keptn.event.checknumber.triggered"),
        ("dev.delivery.finished", "sh.keptn.event.dev.delivery.finished"),
        ("*.triggered", "sh.keptn.event.*.triggered"),
        ("sh.keptn.event.*.*.triggered", "sh.keptn.event.*.*.triggered"),
        (">", "sh.keptn.event.>"),
        ("sh.keptn.>", "sh.keptn.>"),
        ("deployment.*", "sh.keptn.event.deployment.*"),
        ("sh.keptn.log.error", "sh.keptn.log.error"),
        ("  checknumber.triggered ", "sh.keptn.event.checknumber.triggered"),
    ],
)
def test_check_pattern_returns_the_full_form(raw: str, full: str) -> None:
    assert eventtypes.check_pattern(raw) == full


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "empty segment"),
        ("a..triggered", "empty segment"),
        ("checknumber.triggered.", "empty segment"),
        (".checknumber.triggered", "empty segment"),
        ("sh.keptn.event.>.triggered", "'>' may only be the last segment"),
        ("check*.triggered", "'check*'"),
        ("checknumber.trig>", "'trig>'"),
        ("check number.triggered", "whitespace"),
        ("check\tnumber.triggered", "whitespace"),
    ],
)
def test_check_pattern_refuses_what_nats_would(raw: str, says: str) -> None:
    with pytest.raises(PatternError) as caught:
        eventtypes.check_pattern(raw)
    assert says in str(caught.value)
    assert repr(raw) in str(caught.value)


def test_pattern_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        eventtypes.check_pattern("a..b")


# ------------------------------------------------------------------------------ pattern_matches


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("sh.keptn.event.checknumber.triggered", "sh.keptn.event.checknumber.triggered", True),
        ("sh.keptn.event.checknumber.triggered", "sh.keptn.event.checknumber.finished", False),
        ("sh.keptn.event.checknumber.triggered", "sh.keptn.event.dev.checknumber.triggered", False),
        ("sh.keptn.event.*.triggered", "sh.keptn.event.checknumber.triggered", True),
        # One '*' is one token: a task pattern does not reach sequence events.
        ("sh.keptn.event.*.triggered", "sh.keptn.event.dev.delivery.triggered", False),
        ("sh.keptn.event.*.*.triggered", "sh.keptn.event.dev.delivery.triggered", True),
        ("sh.keptn.event.*.*.triggered", "sh.keptn.event.checknumber.triggered", False),
        ("sh.keptn.event.>", "sh.keptn.event.checknumber.triggered", True),
        ("sh.keptn.event.>", "sh.keptn.event.dev.delivery.finished", True),
        ("sh.keptn.event.>", "sh.keptn.event.deployment.status.changed", True),
        # '>' needs at least one token.
        ("sh.keptn.event.>", "sh.keptn.event", False),
        ("sh.keptn.event.deployment.*", "sh.keptn.event.deployment.started", True),
        ("sh.keptn.event.deployment.*", "sh.keptn.event.deployment.status.changed", False),
        ("sh.keptn.event.deployment.>", "sh.keptn.event.deployment.status.changed", True),
        ("sh.keptn.event.deployment.*", "sh.keptn.event.test.started", False),
    ],
)
def test_pattern_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert eventtypes.pattern_matches(pattern, event_type) is expected


TOKENS = st.sampled_from(["sh", "keptn", "event", "dev", "delivery", "triggered", "finished"])
EVENT_TYPES = st.lists(TOKENS, min_size=1, max_size=6).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.one_of(TOKENS, st.just("*")), min_size=0, max_size=6))
    if not tokens or draw(st.booleans()):
        tokens.append(draw(st.sampled_from([">", "*", "triggered"])))
    return ".".join(tokens)


def reference(pattern: str) -> re.Pattern[str]:
    """NATS subject matching, written independently as a regular expression."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


@given(patterns(), EVENT_TYPES)
def test_pattern_matches_agrees_with_a_reference_regex(pattern: str, event_type: str) -> None:
    expected = reference(pattern).fullmatch(event_type) is not None
    assert eventtypes.pattern_matches(pattern, event_type) is expected


@given(EVENT_TYPES)
def test_a_concrete_type_matches_itself_and_the_catch_all(event_type: str) -> None:
    assert eventtypes.pattern_matches(event_type, event_type)
    assert eventtypes.pattern_matches(">", event_type)


@given(patterns())
def test_check_pattern_accepts_its_own_output(pattern: str) -> None:
    full = eventtypes.check_pattern(pattern)
    assert eventtypes.check_pattern(full) == full


# ------------------------------------------------------------------------ is_triggered_pattern


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("sh.keptn.event.checknumber.triggered", True),
        ("sh.keptn.event.*.triggered", True),
        ("sh.keptn.event.*.*.triggered", True),
        ("sh.keptn.event.dev.delivery.triggered", True),
        ("sh.keptn.event.checknumber.finished", False),
        ("sh.keptn.event.checknumber.*", False),
        ("sh.keptn.event.>", False),
        ("sh.keptn.>", False),
    ],
)
def test_is_triggered_pattern(pattern: str, expected: bool) -> None:
    assert eventtypes.is_triggered_pattern(pattern) is expected


@given(patterns(), EVENT_TYPES)
def test_a_triggered_pattern_only_matches_triggered_types(pattern: str, event_type: str) -> None:
    if eventtypes.is_triggered_pattern(pattern) and eventtypes.pattern_matches(pattern, event_type):
        assert event_type.endswith(".triggered")
