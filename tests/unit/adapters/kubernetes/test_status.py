from __future__ import annotations

from controlplane.adapters.kubernetes.status import Outcome, Reason, build_status, needs_update

READY = Outcome(True, Reason.RECONCILED, "in the shipyard", "demo", 3)
DOWN = Outcome(False, Reason.CONTROL_PLANE_UNAVAILABLE, "refused", "demo", 3)


def test_a_status_has_the_agreed_fields() -> None:
    status = build_status({}, READY, generation=2, now="2026-01-01T00:00:00Z")
    assert status == {
        "observedGeneration": 2,
        "shipyardVersion": 3,
        "project": "demo",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "in the shipyard",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 2,
            }
        ],
    }


def test_the_transition_time_moves_only_when_ready_flips() -> None:
    first = build_status({}, READY, generation=1, now="T1")
    again = build_status(
        first, Outcome(True, Reason.RECONCILED, "other", "demo", 4), generation=2, now="T2"
    )
    assert again["conditions"][0]["lastTransitionTime"] == "T1"
    flipped = build_status(again, DOWN, generation=2, now="T3")
    assert flipped["conditions"][0]["lastTransitionTime"] == "T3"


def test_writing_the_same_outcome_again_changes_nothing() -> None:
    first = build_status({}, READY, generation=1, now="T1")
    assert not needs_update(first, build_status(first, READY, generation=1, now="T2"))
    assert needs_update(first, build_status(first, READY, generation=2, now="T2"))


def test_fields_without_a_value_are_removed() -> None:
    previous = build_status({}, READY, generation=1, now="T1")
    invalid = Outcome(False, Reason.INVALID, "bad", "", None)
    status = build_status(previous, invalid, generation=None, now="T2")
    assert status["project"] is None
    assert status["shipyardVersion"] is None
    assert "observedGeneration" not in status["conditions"][0]
    assert needs_update(previous, status)
    assert not needs_update({"conditions": status["conditions"]}, status)
