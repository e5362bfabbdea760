"""Executions and envelopes for the PostgreSQL adapter's tests: plain builders and
hypothesis strategies covering every field the codec stores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from controlplane.application.envelope import Envelope, format_time
from controlplane.domain.execution import (
    Answer,
    Attempt,
    CurrentTask,
    EventRef,
    Execution,
    Scope,
    StageView,
    State,
    TaskOutcome,
)
from controlplane.domain.extensions import RETRY_ON, Backoff, Concurrency, Retry, TaskTimeouts
from controlplane.domain.shipyard import Sequence, Task, Trigger

BASE_TIME = 1_700_000_000.0


def execution(
    id: str,
    *,
    project: str = "sockshop",
    stage: str = "dev",
    service: str = "carts",
    context: str = "ctx-1",
    name: str = "delivery",
    state: State = State.STARTED,
    triggered_at: float = BASE_TIME,
    task_id: str | None = None,
    sent: bool = True,
    ended_at: float | None = None,
) -> Execution:
    """A realistic execution; ``task_id`` gives it a current task (sent unless ``sent=False``)."""
    current = None
    if task_id is not None:
        current = CurrentTask(
            index=0,
            name="deployment",
            triggered_id=task_id,
            due_at=triggered_at,
            sent_at=triggered_at + 0.5 if sent else None,
            answers=(Answer("answer-1", False, "helm-service"),),
        )
    return Execution(
        id=id,
        scope=Scope(project, stage, service, context),
        sequence=Sequence(
            name,
            (Task("deployment", 0.0, {"deploymentstrategy": "blue_green"}), Task("test")),
            (Trigger("dev", "delivery", {"result": "pass"}),),
        ),
        input={"project": project, "stage": stage, "service": service, "labels": {"a": "b"}},
        triggered_at=triggered_at,
        task_started_timeout=600.0,
        state=state,
        current=current,
        gitcommitid="commit-1",
        ended_at=ended_at,
        status="succeeded" if state.terminal else "",
        result="pass" if state.terminal else "",
    )


def envelope(
    id: str,
    *,
    type: str = "sh.keptn.event.deployment.triggered",
    context: str = "ctx-1",
    project: str = "sockshop",
    stage: str = "dev",
    service: str = "carts",
    time: float = BASE_TIME,
    triggered_id: str = "",
    source: str = "shipyard-controller",
    data: Mapping[str, Any] | None = None,
) -> Envelope:
    body: dict[str, Any] = {"project": project, "stage": stage, "service": service}
    body.update(data or {})
    return Envelope(
        id=id,
        source=source,
        type=type,
        time=format_time(time),
        data=body,
        keptn_context=context,
        triggered_id=triggered_id,
    )


# Hypothesis ----------------------------------------------------------------------------------

# PostgreSQL cannot store NUL, and UTF-8 cannot carry lone surrogates: neither reaches the
# store (it refuses them, see test_store_engine).
texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
# Any finite float for the fields the domain types as float.
floats = st.floats(allow_nan=False, allow_infinity=False)
# Inside free-form JSON, jsonb keeps numbers as decimals: 1.5e300 comes back as an integer
# literal, which only the codec's typed fields turn back into a float. Keep free-form
# floats in the range where the decimal form is the float's own repr.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
json_maps = st.dictionaries(texts, json_values, max_size=4)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _tuples(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=3).map(tuple)


tasks = st.builds(
    Task,
    texts,
    floats,
    _optional(json_maps),
    timeout=_optional(
        st.builds(TaskTimeouts, _optional(floats), _optional(floats), _optional(floats))
    ),
    retry=_optional(
        st.builds(
            Retry,
            attempts=st.integers(1, 100),
            on=st.frozensets(st.sampled_from(RETRY_ON), min_size=1),
            backoff=st.builds(Backoff, floats, floats, floats, floats),
        )
    ),
    pause_after_errors=st.integers(0, 100),
    callback=st.booleans(),
)
sequences = st.builds(
    Sequence,
    name=texts,
    tasks=_tuples(tasks),
    triggered_on=_tuples(
        st.builds(Trigger, texts, texts, _optional(st.dictionaries(texts, texts, max_size=2)))
    ),
    timeout=_optional(floats),
    concurrency=_optional(st.builds(Concurrency, texts, st.integers(1, 10_000))),
    loop=st.booleans(),
)
current_tasks = st.builds(
    CurrentTask,
    index=st.integers(min_value=0, max_value=50),
    name=texts,
    triggered_id=texts,
    due_at=floats,
    sent_at=_optional(floats),
    answers=_tuples(st.builds(Answer, texts, st.booleans(), texts, _optional(json_maps))),
    heard_at=_optional(floats),
    attempt=st.integers(1, 100),
    failures=st.integers(0, 100),
    beat_at=_optional(floats),
)
event_refs = st.builds(EventRef, texts, texts, floats)
views = st.builds(
    StageView,
    latest_event=_optional(event_refs),
    latest_failed_event=_optional(event_refs),
    latest_evaluation=_optional(json_maps),
    image=texts,
    problem_title=texts,
)
executions = st.builds(
    Execution,
    id=texts,
    scope=st.builds(Scope, texts, texts, texts, texts),
    sequence=sequences,
    input=json_maps,
    triggered_at=floats,
    task_started_timeout=floats,
    state=st.sampled_from(State),
    state_before_pause=_optional(st.sampled_from(State)),
    awaiting_slot=st.booleans(),
    shipyard_version=st.integers(min_value=0, max_value=2**31),
    gitcommitid=texts,
    previous=_tuples(
        st.builds(TaskOutcome, texts, texts, texts, texts, json_maps, timed_out=st.booleans())
    ),
    current=_optional(current_tasks),
    status=texts,
    result=texts,
    message=texts,
    ended_at=_optional(floats),
    view=views,
    concurrency_key=texts,
    concurrency_limit=st.integers(1, 10_000),
    attempts=_tuples(
        st.builds(
            Attempt,
            st.integers(0, 50),
            texts,
            st.integers(1, 100),
            texts,
            texts,
            texts,
            texts,
            floats,
            st.booleans(),
        )
    ),
    paused_at=_optional(floats),
    paused_total=floats,
    rerun_of=texts,
)
