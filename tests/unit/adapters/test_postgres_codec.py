from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.adapters.postgres import codec, store
from controlplane.domain.execution import (
    Answer,
    CurrentTask,
    EventRef,
    Execution,
    StageView,
    State,
    TaskOutcome,
)
from tests.unit.adapters import postgres_samples as samples


def through_json(execution: Execution) -> Execution:
    return codec.decode_execution(json.loads(json.dumps(codec.encode_execution(execution))))


@settings(max_examples=300)
@given(samples.executions)
def test_round_trip_is_exact(execution: Execution) -> None:
    assert through_json(execution) == execution


@given(samples.executions)
def test_document_is_plain_json(execution: Execution) -> None:
    doc = codec.encode_execution(execution)
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def rich_execution() -> Execution:
    base = samples.execution("exec-1", task_id="task-1")
    return base.evolve(
        state=State.PAUSED,
        state_before_pause=State.WAITING_FOR_APPROVAL,
        awaiting_slot=True,
        shipyard_version=3,
        previous=(TaskOutcome("deployment", "t0", "pass", "succeeded", {"a": [1, {"b": None}]}),),
        current=CurrentTask(
            1,
            "test",
            "task-1",
            due_at=5.0,
            sent_at=None,
            answers=(Answer("a1", False, "svc"), Answer("a2", True, "svc", {"result": "pass"})),
        ),
        message="waiting",
        ended_at=7.25,
        view=StageView(
            latest_event=EventRef("sh.keptn.event.test.started", "e1", 6.0),
            latest_failed_event=None,
            latest_evaluation={"result": "pass", "score": 100},
            image="docker.io/x:1",
            problem_title="CPU",
        ),
    )


def test_stored_shape_is_spelled_out() -> None:
    doc = codec.encode_execution(rich_execution())
    assert doc["v"] == codec.FORMAT_VERSION
    assert doc["state"] == "paused"
    assert doc["state_before_pause"] == "waitingForApproval"
    assert doc["scope"] == {
        "project": "sockshop",
        "stage": "dev",
        "service": "carts",
        "keptn_context": "ctx-1",
    }
    assert doc["current"]["answers"][1] == {
        "event_id": "a2",
        "finished": True,
        "source": "svc",
        "data": {"result": "pass"},
    }
    assert doc["sequence"]["tasks"][0]["properties"] == {"deploymentstrategy": "blue_green"}
    assert doc["sequence"]["triggered_on"] == [
        {"stage": "dev", "sequence": "delivery", "match": {"result": "pass"}}
    ]
    assert doc["view"]["latest_event"] == {
        "type": "sh.keptn.event.test.started",
        "id": "e1",
        "time": 6.0,
    }
    assert through_json(rich_execution()) == rich_execution()


@pytest.mark.parametrize("value", [1e20, 1.5e300, 2.0, 0.0])
def test_floats_written_as_integer_literals_come_back_as_floats(value: float) -> None:
    # jsonb prints 1e20 as 100000000000000000000; the codec must not turn it into an int.
    doc = codec.encode_execution(rich_execution().evolve(triggered_at=value))
    text = json.dumps(doc).replace(repr(value), str(int(value)))
    decoded = codec.decode_execution(json.loads(text))
    assert type(decoded.triggered_at) is float
    assert decoded.triggered_at == value


def test_unknown_format_is_refused() -> None:
    doc = codec.encode_execution(rich_execution())
    doc["v"] = 99
    with pytest.raises(codec.UnknownFormat):
        codec.decode_execution(doc)


def test_terminal_states_match_the_partial_index_predicate() -> None:
    assert set(store.TERMINAL_STATES) == {state.value for state in State if state.terminal}
    for state in store.TERMINAL_STATES:
        assert f"'{state}'" in store._LIVE


@given(st.sampled_from(State), st.booleans(), st.booleans())
def test_open_task_id(state: State, has_task: bool, sent: bool) -> None:
    execution = samples.execution("x", state=state, task_id="t" if has_task else None, sent=sent)
    expected = "t" if has_task and sent and not state.terminal else None
    assert store.open_task_id(execution) == expected
