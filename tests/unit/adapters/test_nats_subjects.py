from __future__ import annotations

import itertools

import pytest

from controlplane.adapters.nats.jetstream import DEFAULT_FILTER_SUBJECTS, subject_covers


@pytest.mark.parametrize(
    ("pattern", "subject", "covered"),
    [
        ("sh.keptn.>", "sh.keptn.event.a.started", True),
        ("sh.keptn.>", "sh.keptn.event.>", True),
        ("sh.keptn.>", "sh.keptn.>", True),
        ("sh.keptn.>", "sh.keptn", False),
        ("sh.keptn.*", "sh.keptn.>", False),
        ("sh.keptn.event.>", "sh.keptn.>", False),
        ("sh.keptn.event.*.started", "sh.keptn.event.x.started", True),
        ("sh.keptn.event.*.started", "sh.keptn.event.*.started", True),
        ("sh.keptn.event.x.started", "sh.keptn.event.*.started", False),
        ("sh.keptn.event.*.started", "sh.keptn.event.x.y.started", False),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
    ],
)
def test_subject_covers(pattern: str, subject: str, covered: bool) -> None:
    assert subject_covers(pattern, subject) is covered


def _reads(event_type: str) -> bool:
    return any(subject_covers(f, event_type) for f in DEFAULT_FILTER_SUBJECTS)


@pytest.mark.parametrize(
    ("event_type", "read"),
    [
        ("sh.keptn.event.dev.delivery.triggered", True),  # sequence triggered (clients)
        ("sh.keptn.event.deployment.started", True),
        ("sh.keptn.event.deployment.finished", True),
        ("sh.keptn.event.deployment.status.changed", True),
        ("sh.keptn.event.evaluation.invalidated", True),
        ("sh.keptn.log.error", True),
        ("sh.keptn.events.problem", True),
        ("sh.keptn.event.deployment.triggered", False),  # the engine's own task trigger
        ("sh.keptn.event.dev.delivery.finished", False),  # the engine's own sequence end
    ],
)
def test_engine_filter_reads_what_it_needs(event_type: str, read: bool) -> None:
    assert _reads(event_type) is read


def test_engine_filters_do_not_overlap() -> None:
    # The server refuses overlapping filters; two filters overlap when some subject
    # matches both. With these shapes, that happens iff they agree token by token.
    def overlap(a: str, b: str) -> bool:
        x, y = a.split("."), b.split(".")
        for i in range(max(len(x), len(y))):
            if i >= len(x) or i >= len(y):
                return False
            if ">" in (x[i], y[i]):
                return True
            if "*" not in (x[i], y[i]) and x[i] != y[i]:
                return False
        return True

    for a, b in itertools.combinations(DEFAULT_FILTER_SUBJECTS, 2):
        assert not overlap(a, b), (a, b)
