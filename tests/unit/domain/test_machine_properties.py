"""Properties of the state machine under reordering, duplication and random inputs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import event as observe
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import machine
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import Execution, State
from controlplane.domain.extensions import RETRY_ON, Backoff, Retry, TaskTimeouts
from controlplane.domain.machine import (
    Abort,
    Chain,
    Decision,
    Emit,
    Input,
    Pause,
    Resume,
    SlotGranted,
    TaskAnswered,
    Tick,
)
from controlplane.domain.shipyard import Task
from tests.unit.domain.domain_kit import new

NOW = 5.0
RESULTS = st.sampled_from(["pass", "warning", "fail", "", "garbage"])
STATUSES = st.sampled_from(["succeeded", "errored", "aborted", "unknown", ""])

# One executor's answers: (executor index, finished?).
Event = tuple[int, bool]


def running_execution() -> Execution:
    execution = new(
        "t",
        "next",
        data={"project": "p", "stage": "dev", "service": "s", "shared": {"list": ["input"]}},
    )
    return machine.decide(execution, SlotGranted(), now=NOW).execution


def to_input(execution: Execution, event: Event, outcomes: list[tuple[str, str]]) -> TaskAnswered:
    index, finished = event
    triggered_id = execution.task_event_id(0)
    if not finished:
        return TaskAnswered(
            f"started-{index}", triggered_id, Phase.STARTED, f"svc-{index}", {"project": "p"}
        )
    result, status = outcomes[index]
    data = {
        "project": "p",
        "result": result,
        "status": status,
        f"out-{index}": index,
        "shared": {"list": [index], "winner": index},
        "message": f"from {index}",
    }
    return TaskAnswered(f"finished-{index}", triggered_id, Phase.FINISHED, f"svc-{index}", data)


def deliver(events: list[Event], outcomes: list[tuple[str, str]]) -> tuple[Execution, list[Any]]:
    """Feed the events; check the counting rule at each step; return the end and commands."""
    execution = running_execution()
    commands: list[Any] = []
    started: set[int] = set()
    finished: set[int] = set()
    completed_at: int | None = None
    for step, event in enumerate(events):
        decision = machine.decide(execution, to_input(execution, event, outcomes), now=NOW)
        commands.extend(decision.commands)
        if completed_at is None:
            (finished if event[1] else started).add(event[0])
        now_complete = bool(decision.execution.previous)
        if now_complete and completed_at is None:
            completed_at = step
            # The counting rule, over distinct event ids: as many .finished as .started.
            assert len(finished) == len(started) > 0
            # So no executor that has started is still running, unless a .finished overtook
            # its own .started: Keptn does not look at sources, and neither do we (4.5).
            if finished <= started:
                assert finished == started
        elif completed_at is None:
            assert not (finished and len(finished) == len(started)), (
                "counts match but the task did not complete"
            )
        execution = decision.execution
    return execution, commands


def first_occurrences(events: list[Event]) -> list[Event]:
    seen: set[Event] = set()
    unique: list[Event] = []
    for event in events:
        if event not in seen:
            seen.add(event)
            unique.append(event)
    return unique


@st.composite
def deliveries(
    draw: st.DrawFn, min_executors: int = 1, max_executors: int = 4
) -> tuple[int, list[tuple[str, str]], list[Event]]:
    n = draw(st.integers(min_executors, max_executors))
    outcomes = [(draw(RESULTS), draw(STATUSES)) for _ in range(n)]
    base: list[Event] = [(i, phase) for i in range(n) for phase in (False, True)]
    order = draw(st.permutations(base))
    events = list(order)
    # Redeliver some events (same id) at later positions.
    for _ in range(draw(st.integers(0, 2 * n))):
        original = draw(st.integers(0, len(events) - 1))
        position = draw(st.integers(original + 1, len(events)))
        events.insert(position, events[original])
    return n, outcomes, events


def canonical(n: int) -> list[Event]:
    return [(i, False) for i in range(n)] + [(i, True) for i in range(n)]


@settings(max_examples=400, deadline=None)
@given(deliveries())
def test_duplicates_and_order_of_multiple_executors(
    case: tuple[int, list[tuple[str, str]], list[Event]],
) -> None:
    n, outcomes, events = case
    unique = first_occurrences(events)
    with_duplicates = deliver(events, outcomes)
    without_duplicates = deliver(unique, outcomes)
    # Redelivery never changes anything.
    assert with_duplicates == without_duplicates
    execution, commands = with_duplicates
    # Every executor answered, so the task completed exactly once.
    assert len(execution.previous) == 1
    triggered_next = [
        c for c in commands if isinstance(c, Emit) and c.type == "sh.keptn.event.next.triggered"
    ]
    ended = [
        c
        for c in commands
        if isinstance(c, Emit) and c.type == "sh.keptn.event.dev.delivery.finished"
    ]
    assert len(triggered_next) + len(ended) == 1
    # All .started before all .finished: the outcome does not depend on the order.
    finished_positions = [k for k, (_, phase) in enumerate(unique) if phase]
    started_positions = [k for k, (_, phase) in enumerate(unique) if not phase]
    if max(started_positions) < min(finished_positions):
        assert with_duplicates == deliver(canonical(n), outcomes)
        outcome = execution.previous[0]
        assert outcome == machine.aggregate(
            "t",
            execution.task_event_id(0),
            tuple(
                machine.Answer(
                    f"finished-{i}", True, f"svc-{i}", to_input(execution, (i, True), outcomes).data
                )
                for i in range(n)
            ),
        )


@settings(max_examples=200, deadline=None)
@given(deliveries(1, 1))
def test_single_executor_any_order_completes_once(
    case: tuple[int, list[tuple[str, str]], list[Event]],
) -> None:
    _, outcomes, events = case
    execution, commands = deliver(events, outcomes)
    reference, reference_commands = deliver(canonical(1), outcomes)
    assert len(execution.previous) == 1
    assert execution == reference
    assert commands == reference_commands
    # Exactly one consequence of the completion.
    follow_ups = [c for c in commands if isinstance(c, Emit)]
    assert len(follow_ups) == 1


# ------------------------------------------------------------------ random walks

TIMEOUTS = st.one_of(
    st.none(),
    st.builds(
        TaskTimeouts,
        started=st.sampled_from([None, 5.0, 60.0]),
        finished=st.sampled_from([None, 10.0, 90.0]),
        heartbeat=st.sampled_from([None, 5.0, 30.0]),
    ),
)
RETRIES = st.one_of(
    st.none(),
    st.builds(
        Retry,
        attempts=st.integers(1, 4),
        on=st.sets(st.sampled_from(RETRY_ON), min_size=1).map(frozenset),
        backoff=st.builds(
            Backoff,
            initial=st.sampled_from([0.0, 1.0, 10.0]),
            factor=st.sampled_from([1.0, 2.0]),
            max=st.sampled_from([10.0, 60.0]),
            jitter=st.sampled_from([0.0, 0.5]),
        ),
    ),
)
TASKS = st.lists(
    st.builds(
        Task,
        name=st.sampled_from(["deploy", "test", "approval", "evaluation"]),
        triggered_after=st.sampled_from([0.0, 0.0, 5.0, 30.0]),
        properties=st.sampled_from([None, {"pass": "automatic", "warning": "manual"}]),
        timeout=TIMEOUTS,
        retry=RETRIES,
        pause_after_errors=st.sampled_from([0, 0, 1, 2]),
    ),
    min_size=0,
    max_size=4,
)

# Abort is rare so that most walks also reach the other ends (finished, timedOut).
KINDS = st.sampled_from(
    [
        "started",
        "started",
        "finished",
        "finished",
        "finished",
        "status",
        "old",
        "unknown",
        "tick",
        "tick",
        "tick",
        "pause",
        "resume",
        "resume",
        "grant",
        "grant",
        "grant",
        "approval",
        "approval",
    ]
    * 3
    + ["abort"]
)


def answer_data(draw: st.DrawFn) -> dict[str, Any] | None:
    return draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries({"result": RESULTS, "status": STATUSES}),
            st.fixed_dictionaries(
                {
                    "result": RESULTS,
                    "status": STATUSES,
                    "payload": st.dictionaries(
                        st.sampled_from("abc"), st.integers() | st.lists(st.integers()), max_size=2
                    ),
                }
            ),
        )
    )


def check_wakeup(execution: Execution, now: float) -> None:
    """next_wakeup tells the truth: earlier ticks do nothing, and None means never."""
    wakeup = machine.next_wakeup(execution, now)
    probe = now + 1e6 if wakeup is None else wakeup - 1e-3
    if probe >= now:
        decision = machine.decide(execution, Tick(), now=probe)
        assert decision.commands == ()
        assert decision.execution.state == execution.state
    if wakeup is not None:
        assert wakeup >= 0


@settings(max_examples=300, deadline=None)
@given(st.data(), TASKS)
def test_random_walk(data: st.DataObject, tasks: list[Task]) -> None:
    SENT_IDS.clear()
    execution = new(
        *tasks,
        data={"project": "p", "stage": "dev", "service": "s", "result": data.draw(RESULTS)},
        paused=data.draw(st.booleans()),
    )
    limit = data.draw(st.sampled_from([None, None, 50.0, 2000.0]))
    if limit is not None:
        execution = execution.evolve(sequence=replace(execution.sequence, timeout=limit))
    now = 0.0
    finished_events = 0
    chains = 0
    sent_tasks: list[str] = []
    seen_ids: list[str] = []
    terminal: Execution | None = None
    for step in range(data.draw(st.integers(1, 60))):
        kind = data.draw(KINDS)
        current = execution.current
        event: Input
        if kind in ("started", "finished", "status") and current is not None:
            phase = {
                "started": Phase.STARTED,
                "finished": Phase.FINISHED,
                "status": Phase.STATUS_CHANGED,
            }[kind]
            event_id = data.draw(st.sampled_from([*seen_ids, f"e{step}"]))
            seen_ids.append(event_id)
            event = TaskAnswered(
                event_id, current.triggered_id, phase, "svc", answer_data(data.draw)
            )
        elif kind in ("old", "unknown", "started", "finished", "status"):
            triggered_id = (
                data.draw(
                    st.sampled_from(
                        [
                            execution.task_event_id(i, attempt)
                            for i in range(max(1, len(tasks)))
                            for attempt in (1, 2)
                        ]
                    )
                )
                if kind == "old"
                else "nobody"
            )
            event = TaskAnswered(
                f"x{step}",
                triggered_id,
                data.draw(st.sampled_from(list(Phase))),
                "svc",
                answer_data(data.draw),
            )
        elif kind == "approval":
            approvals = [c for c in sent_tasks if c == "approval"]
            if not approvals or current is None or current.name != "approval":
                continue
            for answer in machine.approval_answers(
                Emit(
                    current.triggered_id,
                    "sh.keptn.event.approval.triggered",
                    "ctx",
                    execution.task_payload(current.index),
                )
            ):
                decision = machine.decide(execution, answer, now=now)
                execution, f, c, s = account(execution, decision, terminal)
                finished_events, chains = finished_events + f, chains + c
                sent_tasks += s
                if execution.state.terminal and terminal is None:
                    terminal = execution
            continue
        elif kind == "tick":
            now += data.draw(st.sampled_from([0.0, 1.0, 5.0, 30.0, 600.0, 1000.0]))
            event = Tick()
        else:
            event = {
                "pause": Pause(),
                "resume": Resume(),
                "abort": Abort(),
                "grant": SlotGranted(),
            }[kind]
        decision = machine.decide(execution, event, now=now)
        execution, f, c, s = account(execution, decision, terminal)
        finished_events, chains = finished_events + f, chains + c
        sent_tasks += s
        if execution.state.terminal and terminal is None:
            terminal = execution
        assert finished_events <= 1
        assert chains <= finished_events
        check_wakeup(execution, now)
    # Each task .triggered goes out at most once (its index is its identity).
    assert len(SENT_IDS) == len(set(SENT_IDS))
    SENT_IDS.clear()
    observe(f"ended {execution.state}" if terminal is not None else f"live {execution.state}")
    if terminal is not None:
        assert finished_events == 1
        assert execution == terminal


SENT_IDS: list[str] = []


def account(
    before: Execution, decision: Decision, terminal: Execution | None
) -> tuple[Execution, int, int, list[str]]:
    after = decision.execution
    if before.state.terminal:
        # Absorbing: nothing changes, nothing is said.
        assert after == before
        assert decision.commands == ()
        assert terminal is not None
        assert after == terminal
    finished = [
        c
        for c in decision.commands
        if isinstance(c, Emit) and c.type == f"sh.keptn.event.dev.{before.name}.finished"
    ]
    chained = [c for c in decision.commands if isinstance(c, Chain)]
    sent = [c for c in decision.commands if isinstance(c, Emit) and c.type.endswith(".triggered")]
    if finished:
        assert after.state.terminal
        assert finished[0].triggered_id == before.id
    if chained:
        assert after.state in (State.FINISHED, State.TIMED_OUT)
    if after.state != State.STARTED:
        assert not after.holds_slot
    if after.current is not None:
        assert 0 <= after.current.index < len(after.sequence.tasks)
    for emit in sent:
        assert after.current is not None
        assert emit.id == after.task_event_id(after.current.index, after.current.attempt)
        retried = after.sequence.tasks[after.current.index]
        if retried.retry is not None or retried.pause_after_errors:
            assert emit.data["attempt"] == after.current.attempt
        if retried.retry is not None:
            assert after.current.attempt <= max(retried.retry.attempts, 1) or (
                retried.pause_after_errors > 0
            )
        SENT_IDS.append(emit.id)
    return after, len(finished), len(chained), [e.type.split(".")[3] for e in sent]
