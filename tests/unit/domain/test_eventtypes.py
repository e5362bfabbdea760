from __future__ import annotations

import pytest

from controlplane.domain import eventtypes
from controlplane.domain.eventtypes import (
    EventTypeError,
    Phase,
    SequenceEventType,
    TaskEventType,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "sh.keptn.event.dev.delivery.triggered",
            SequenceEventType("dev", "delivery", Phase.TRIGGERED),
        ),
        (
            "sh.keptn.event.dev.delivery.finished",
            SequenceEventType("dev", "delivery", Phase.FINISHED),
        ),
        ("dev.sequence-one.triggered", SequenceEventType("dev", "sequence-one", Phase.TRIGGERED)),
        ("sh.keptn.event.deployment.triggered", TaskEventType("deployment", Phase.TRIGGERED)),
        ("sh.keptn.event.deployment.started", TaskEventType("deployment", Phase.STARTED)),
        ("sh.keptn.event.deployment.finished", TaskEventType("deployment", Phase.FINISHED)),
        ("sh.keptn.event.evaluation.invalidated", TaskEventType("evaluation", Phase.INVALIDATED)),
        ("checknumber.started", TaskEventType("checknumber", Phase.STARTED)),
        (
            "sh.keptn.event.deployment.status.changed",
            TaskEventType("deployment", Phase.STATUS_CHANGED),
        ),
        ("get-sli.status.changed", TaskEventType("get-sli", Phase.STATUS_CHANGED)),
    ],
)
def test_parse_full_and_short_forms(raw: str, expected: object) -> None:
    assert eventtypes.parse(raw) == expected


def test_short_and_full_forms_parse_alike() -> None:
    assert eventtypes.parse("dev.delivery.finished") == eventtypes.parse(
        "sh.keptn.event.dev.delivery.finished"
    )
    assert eventtypes.parse("test.finished") == eventtypes.parse("sh.keptn.event.test.finished")


def test_normalize() -> None:
    assert eventtypes.normalize("dev.a.triggered") == "sh.keptn.event.dev.a.triggered"
    assert eventtypes.normalize("sh.keptn.event.x.started") == "sh.keptn.event.x.started"
    # Other Keptn types are left alone.
    assert eventtypes.normalize(eventtypes.LOG_ERROR) == "sh.keptn.log.error"


@pytest.mark.parametrize(
    "value",
    [
        SequenceEventType("dev", "delivery", Phase.TRIGGERED),
        SequenceEventType("prod", "rollback", Phase.FINISHED),
        TaskEventType("deployment", Phase.STARTED),
        TaskEventType("test", Phase.STATUS_CHANGED),
    ],
)
def test_render_round_trips(value: SequenceEventType | TaskEventType) -> None:
    assert str(value).startswith("sh.keptn.event.")
    assert eventtypes.parse(str(value)) == value


def test_builders() -> None:
    assert eventtypes.task("checknumber", Phase.TRIGGERED) == "sh.keptn.event.checknumber.triggered"
    assert (
        eventtypes.sequence("dev", "sequence-one", Phase.FINISHED)
        == "sh.keptn.event.dev.sequence-one.finished"
    )
    assert eventtypes.task("x", Phase.STATUS_CHANGED) == "sh.keptn.event.x.status.changed"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        # Not a task or sequence event at all.
        ("sh.keptn.log.error", "is not a Keptn task or sequence event"),
        ("sh.keptn.events.problem", "is not a Keptn task or sequence event"),
        # Wrong number of segments.
        ("sh.keptn.event.deployment", "must be sh.keptn.event.<task>.<phase>"),
        ("sh.keptn.event.a.b.c.triggered", "must be sh.keptn.event.<task>.<phase>"),
        ("deployment", "must be sh.keptn.event.<task>.<phase>"),
        # Empty segments.
        ("sh.keptn.event..triggered", "empty segment"),
        ("sh.keptn.event.dev..triggered", "empty segment"),
        ("sh.keptn.event.deployment.", "empty segment"),
        ("", "empty segment"),
        # Unknown phase.
        ("sh.keptn.event.deployment.done", "unknown phase 'done'"),
        ("dev.delivery.waiting", "unknown phase 'waiting'"),
        # Sequences only have triggered and finished.
        ("sh.keptn.event.dev.delivery.started", "ends in .triggered or .finished, not .started"),
        ("dev.delivery.invalidated", "not .invalidated"),
    ],
)
def test_invalid_types_have_clear_messages(raw: str, fragment: str) -> None:
    with pytest.raises(EventTypeError) as caught:
        eventtypes.parse(raw)
    message = str(caught.value)
    assert fragment in message
    # The message quotes what the user sent.
    assert repr(raw) in message


def test_event_type_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be"):
        eventtypes.parse("x.y.z.w")  # four segments: neither grammar
