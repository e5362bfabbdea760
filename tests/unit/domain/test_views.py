from __future__ import annotations

import pytest

from controlplane.domain import views
from controlplane.domain.execution import Execution, Scope, StageView, State
from tests.unit.domain.domain_kit import new


def ex(
    trigger_id: str,
    state: State,
    *,
    status: str = "",
    ended_at: float | None = None,
    stage: str = "dev",
) -> Execution:
    execution = new("t", trigger_id=trigger_id)
    return execution.evolve(
        state=state, status=status, ended_at=ended_at, scope=Scope("p", stage, "s", "ctx")
    )


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        (State.TRIGGERED, "", "triggered"),
        (State.STARTED, "", "triggered"),
        (State.WAITING_FOR_APPROVAL, "", "triggered"),
        (State.PAUSED, "", "paused"),
        (State.FINISHED, "succeeded", "succeeded"),
        (State.FINISHED, "errored", "errored"),
        (State.FINISHED, "unknown", "unknown"),
        (State.FINISHED, "", "succeeded"),
        (State.ABORTED, "aborted", "aborted"),
        (State.TIMED_OUT, "errored", "errored"),
    ],
)
def test_stage_state(state: State, status: str, expected: str) -> None:
    assert views.stage_state(ex("a", state, status=status)) == expected


def overall(
    *executions: Execution, paused: bool = False, blocked: frozenset[str] = frozenset()
) -> str:
    return views.overall_state(list(executions), context_paused=paused, blocked=set(blocked))


def test_triggered_then_waiting_when_queued() -> None:
    assert overall(ex("a", State.TRIGGERED)) == "triggered"
    assert overall(ex("a", State.TRIGGERED), blocked=frozenset({"a"})) == "waiting"


def test_started() -> None:
    assert overall(ex("a", State.STARTED)) == "started"
    assert overall(ex("a", State.WAITING_FOR_APPROVAL)) == "started"


def test_finished_even_when_failed() -> None:
    assert overall(ex("a", State.FINISHED, status="succeeded", ended_at=1)) == "finished"
    assert overall(ex("a", State.FINISHED, status="errored", ended_at=1)) == "finished"
    # A waiting flag never overrides finished.
    assert overall(ex("a", State.FINISHED, ended_at=1), blocked=frozenset({"a"})) == "finished"


def test_aborted_and_timed_out() -> None:
    assert overall(ex("a", State.ABORTED, status="aborted", ended_at=1)) == "aborted"
    assert overall(ex("a", State.TIMED_OUT, status="errored", ended_at=1)) == "timedOut"
    # The state of the context is how its last stage ended.
    assert (
        overall(
            ex("a", State.TIMED_OUT, ended_at=1), ex("b", State.FINISHED, ended_at=2, stage="prod")
        )
        == "finished"
    )
    assert (
        overall(
            ex("a", State.FINISHED, ended_at=1), ex("b", State.TIMED_OUT, ended_at=2, stage="prod")
        )
        == "timedOut"
    )


def test_parallel_stages_stay_started_until_the_last_ends() -> None:
    assert (
        overall(ex("a", State.FINISHED, ended_at=1), ex("b", State.STARTED, stage="hardening"))
        == "started"
    )
    assert (
        overall(
            ex("a", State.FINISHED, ended_at=1),
            ex("b", State.FINISHED, ended_at=3, stage="hardening"),
            ex("c", State.FINISHED, ended_at=2, stage="production"),
        )
        == "finished"
    )


def test_paused_context() -> None:
    assert overall(ex("a", State.PAUSED), paused=True) == "paused"
    assert overall(ex("a", State.TRIGGERED), paused=True) == "paused"
    # A paused context that has ended shows how it ended.
    assert overall(ex("a", State.FINISHED, ended_at=1), paused=True) == "finished"


def test_stage_only_pause_leaves_the_overall_state() -> None:
    assert overall(ex("a", State.PAUSED)) == "started"
    assert overall(ex("a", State.FINISHED, ended_at=1), ex("b", State.PAUSED, stage="prod")) == (
        "started"
    )


def test_observe_builds_the_stage_view() -> None:
    view = StageView()
    view = views.observe(
        view,
        type="sh.keptn.event.deployment.triggered",
        id="1",
        time=1.0,
        source="sc",
        data={"configurationChange": {"values": {"image": "x:1"}}},
    )
    assert view.image == "x:1"
    assert view.latest_event is not None
    assert view.latest_failed_event is None
    view = views.observe(
        view,
        type="sh.keptn.event.evaluation.finished",
        id="2",
        time=2.0,
        source="lighthouse-service",
        data={"result": "warning", "evaluation": {"score": 80}},
    )
    assert view.latest_evaluation == {"result": "warning", "score": 80}
    view = views.observe(
        view,
        type="sh.keptn.event.test.finished",
        id="3",
        time=3.0,
        source="x",
        data={"result": "fail", "status": "succeeded"},
    )
    assert view.latest_failed_event is not None
    assert view.latest_failed_event.id == "3"
    view = views.observe(
        view,
        type="sh.keptn.event.prod.remediation.triggered",
        id="4",
        time=4.0,
        source="x",
        data={"problem": {"problemTitle": "cpu"}},
    )
    assert view.problem_title == "cpu"
    assert view.latest_event is not None
    assert view.latest_event.id == "4"
    assert view.image == "x:1"
    assert view.latest_failed_event.id == "3"
    # An unparsable type still counts as the latest event.
    view = views.observe(view, type="sh.keptn.log.error", id="5", time=5.0, source="x", data={})
    assert view.latest_event is not None
    assert view.latest_event.id == "5"
