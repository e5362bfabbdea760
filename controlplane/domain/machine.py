"""The sequence state machine: ``decide(execution, event, now=...) -> Decision``.

Pure and synchronous. The application layer loads an execution, asks this module what
follows from an event, stores the new execution and publishes the commands, all in one
unit of work. Duplicates and late answers are expected in a distributed system, so they
come back as no-op decisions with a ``note`` (and, for answers, a ``rejection`` the HTTP
API turns into 404 or 409), never as exceptions.

The flow of one execution (Keptn v1, reference sections 3 and 4)::

    triggered --slot granted--> started --next task is approval--> waitingForApproval
        started/waitingForApproval --last task done, or a task failed/errored--> finished
        any live state --pause--> paused --resume--> the state before the pause
        any live state --abort--> aborted
        started --a task or the sequence misses its deadline--> timedOut (and chains)

Only ``started`` holds a slot of the execution's concurrency key (Keptn's default: one per
project, stage and service), so a sequence waiting for an approval, paused, or waiting out a
``triggeredAfter`` delay or a retry's backoff lets the next one run. A ``started`` execution
coming back from any of these must win a slot again before its next task goes out
(``awaiting_slot``); the queue (:mod:`controlplane.domain.queueing`) grants it.

Our extensions (:mod:`controlplane.domain.extensions`): a task that failed, errored or timed
out may be triggered again after a backoff (a new ``.triggered`` with a new id and an
``attempt`` number), or pause the sequence for a human after ``pauseAfterErrors`` failures.
A timeout ends the task ``errored``/``fail`` and the sequence then follows the normal rules,
chaining included, where Keptn's timeouts never chained.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from controlplane.domain import eventtypes
from controlplane.domain.durations import format_duration
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import (
    Answer,
    Attempt,
    CurrentTask,
    Execution,
    Result,
    Scope,
    State,
    Status,
    TaskOutcome,
    aggregate,
    derived_id,
)
from controlplane.domain.extensions import Retry
from controlplane.domain.shipyard import Sequence, Task

APPROVAL = "approval"
SOURCE = "shipyard-controller"


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class SlotGranted:
    """The queue gave this execution its (project, stage, service) slot."""


@dataclass(frozen=True, slots=True)
class TaskAnswered:
    """A ``.started``, ``.status.changed`` or ``.finished`` for one of our task events."""

    event_id: str
    triggered_id: str
    phase: Phase
    source: str = ""
    data: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: send tasks that became due, time out tasks nobody answered."""


@dataclass(frozen=True, slots=True)
class Pause:
    pass


@dataclass(frozen=True, slots=True)
class Resume:
    pass


@dataclass(frozen=True, slots=True)
class Abort:
    pass


Input = SlotGranted | TaskAnswered | Tick | Pause | Resume | Abort


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish this event (the application stamps ``time`` and the CloudEvent envelope)."""

    id: str
    type: str
    keptn_context: str
    data: Mapping[str, Any]
    triggered_id: str = ""
    gitcommitid: str = ""
    source: str = SOURCE
    callback: bool = False  # the task wants a one-time callback URL in its data


@dataclass(frozen=True, slots=True)
class Chain:
    """The sequence finished normally: start every sequence whose ``triggeredOn`` fires."""

    execution_id: str
    stage: str
    sequence: str
    result: str
    last_task: str
    data: Mapping[str, Any]


Command = Emit | Chain


class Rejection(enum.StrEnum):
    UNKNOWN_TASK = "unknown-task"  # no task was triggered with that id (HTTP 404)
    TASK_ENDED = "task-ended"  # the task or its sequence has already ended (HTTP 409)


@dataclass(frozen=True, slots=True)
class Decision:
    execution: Execution
    commands: tuple[Command, ...] = ()
    note: str = ""
    rejection: Rejection | None = None


# ----------------------------------------------------------------------------- start


def start(
    *,
    trigger_id: str,
    scope: Scope,
    sequence: Sequence,
    data: Mapping[str, Any],
    now: float,
    task_started_timeout: float,
    paused: bool = False,
    shipyard_version: int = 0,
    gitcommitid: str = "",
    concurrency_key: str = "",
    carried: tuple[TaskOutcome, ...] = (),
    rerun_of: str = "",
) -> Execution:
    """A new execution for a valid trigger; it waits in the queue for its slot.

    ``carried``: outcomes of the first tasks taken over from an earlier run (a re-run
    starting at a later task), so that the next task sees their output.
    """
    state = State.PAUSED if paused else State.TRIGGERED
    limit = sequence.concurrency.limit if sequence.concurrency else 1
    return Execution(
        id=trigger_id,
        scope=scope,
        sequence=sequence,
        input=dict(data),
        triggered_at=now,
        task_started_timeout=task_started_timeout,
        state=state,
        state_before_pause=State.TRIGGERED if paused else None,
        shipyard_version=shipyard_version,
        gitcommitid=gitcommitid,
        concurrency_key=concurrency_key,
        concurrency_limit=limit,
        previous=carried,
        paused_at=now if paused else None,
        rerun_of=rerun_of,
    )


def reject_trigger(
    *,
    trigger_id: str,
    scope: Scope,
    sequence_name: str,
    data: Mapping[str, Any],
    now: float,
    message: str,
) -> Decision:
    """A trigger that cannot run (unknown stage or sequence, bad shipyard, no tasks).

    Keptn answers with an errored/fail ``.finished`` and never chains. We keep a terminal
    execution so that the state view shows the context as ``finished`` with the reason.
    """
    execution = Execution(
        id=trigger_id,
        scope=scope,
        sequence=Sequence(sequence_name),
        input=dict(data),
        triggered_at=now,
        task_started_timeout=0.0,
        state=State.FINISHED,
        status=Status.ERRORED,
        result=Result.FAIL,
        message=message,
        ended_at=now,
    )
    finished = _finished_event(execution, Status.ERRORED, Result.FAIL, message, data)
    return Decision(execution, (finished,))


# ---------------------------------------------------------------------------- decide


def decide(execution: Execution, event: Input, *, now: float) -> Decision:
    """What follows from ``event`` for ``execution`` at time ``now``."""
    if isinstance(event, TaskAnswered):
        return _on_answer(execution, event, now)
    if execution.state.terminal:
        return Decision(execution, note=f"execution already {execution.state}")
    if isinstance(event, SlotGranted):
        return _on_slot(execution, now)
    if isinstance(event, Tick):
        return _on_tick(execution, now)
    if isinstance(event, Pause):
        return _on_pause(execution, now)
    if isinstance(event, Resume):
        return _on_resume(execution, now)
    return _on_abort(execution, now)


def next_wakeup(execution: Execution, now: float) -> float | None:
    """When a :class:`Tick` could change this execution, or None if only events can."""
    if execution.state.terminal:
        return None
    wakes: list[float] = []
    if execution.state != State.PAUSED and execution.deadline is not None:
        wakes.append(execution.deadline)
    current = execution.current
    if current is not None:
        if current.sent_at is None:
            if _may_send(execution) or (execution.awaiting_slot and current.due_at > now):
                wakes.append(current.due_at)
        elif not current.answered:
            wakes.append(current.sent_at + _started_timeout(execution, current))
        else:
            finish_by = _finish_deadline(execution, current)
            if finish_by is not None:
                wakes.append(finish_by)
    return min(wakes) if wakes else None


def _on_slot(execution: Execution, now: float) -> Decision:
    if not execution.wants_slot(now):
        return Decision(execution, note=f"no slot needed in state {execution.state}")
    granted = execution.evolve(state=State.STARTED, awaiting_slot=False)
    if execution.state == State.TRIGGERED:
        return _proceed(granted, now)
    return _send_if_due(granted, now)


def _on_tick(execution: Execution, now: float) -> Decision:
    deadline = execution.deadline
    if execution.state != State.PAUSED and deadline is not None and now >= deadline:
        return _sequence_timed_out(execution, deadline, now)
    current = execution.current
    if current is None:
        return Decision(execution, note="no current task")
    if current.sent_at is None:
        return _send_if_due(execution, now)
    if not current.answered:
        limit = _started_timeout(execution, current)
        if now >= current.sent_at + limit:
            return _task_timed_out(
                execution,
                current,
                now,
                f"no answer within {format_duration(limit)}",
                current.sent_at + limit,
            )
        return Decision(execution, note="nothing due")
    finish_by = _finish_deadline(execution, current)
    if finish_by is not None and now >= finish_by:
        return _task_timed_out(
            execution, current, now, "started but not finished in time", finish_by
        )
    return Decision(execution, note="nothing due")


def _on_pause(execution: Execution, now: float) -> Decision:
    if execution.state == State.PAUSED:
        return Decision(execution, note="already paused")
    paused = execution.evolve(
        state=State.PAUSED,
        state_before_pause=execution.state,
        awaiting_slot=False,
        paused_at=now,
    )
    return Decision(paused)


def _on_resume(execution: Execution, now: float) -> Decision:
    if execution.state != State.PAUSED:
        return Decision(execution, note=f"not paused ({execution.state})")
    before = execution.state_before_pause or State.TRIGGERED
    paused_for = now - execution.paused_at if execution.paused_at is not None else 0.0
    # Another sequence may have taken the slot while this one was paused: win it again.
    resumed = execution.evolve(
        state=before,
        state_before_pause=None,
        awaiting_slot=before == State.STARTED,
        paused_at=None,
        paused_total=execution.paused_total + max(paused_for, 0.0),
    )
    return _send_if_due(resumed, now)


def _on_abort(execution: Execution, now: float) -> Decision:
    aborted = execution.evolve(
        state=State.ABORTED,
        status=Status.ABORTED,
        result=Result.PASS,
        message="sequence aborted",
        ended_at=now,
        awaiting_slot=False,
    )
    event = _finished_event(aborted, Status.ABORTED, Result.PASS, "", _last_data(execution))
    return Decision(aborted, (event,))


def _on_answer(execution: Execution, answer: TaskAnswered, now: float) -> Decision:
    current = execution.current
    if current is None or current.triggered_id != answer.triggered_id:
        if execution.knows_task(answer.triggered_id) or execution.state.terminal:
            return Decision(
                execution, note="the task has already ended", rejection=Rejection.TASK_ENDED
            )
        return Decision(execution, note="no such task", rejection=Rejection.UNKNOWN_TASK)
    if execution.state.terminal:
        return Decision(execution, note="the sequence has ended", rejection=Rejection.TASK_ENDED)
    if any(seen.event_id == answer.event_id for seen in current.answers):
        return Decision(execution, note="duplicate answer")
    beats = _task(execution, current).timeout is not None
    if answer.phase not in (Phase.STARTED, Phase.FINISHED):
        if current.heard_at is not None and not beats:
            return Decision(execution, note=f"{answer.phase} does not change the task")
        # Any event carrying the task's id shows somebody took it: no more "nobody answered";
        # with deadlines configured it is also a heartbeat.
        heard = current.heard_at if current.heard_at is not None else now
        return Decision(execution.evolve(current=replace(current, heard_at=heard, beat_at=now)))
    finished = answer.phase == Phase.FINISHED
    recorded = Answer(
        answer.event_id, finished, answer.source, dict(answer.data or {}) if finished else None
    )
    task = replace(
        current,
        sent_at=current.sent_at if current.sent_at is not None else now,
        answers=(*current.answers, recorded),
        heard_at=current.heard_at if current.heard_at is not None else now,
        beat_at=current.beat_at if finished else now,
    )
    if not task.complete:
        return Decision(execution.evolve(current=task))
    outcome = aggregate(task.name, task.triggered_id, task.answers)
    return _task_ended(execution.evolve(current=task), outcome, now)


# --------------------------------------------------------------------------- helpers


def _proceed(execution: Execution, now: float) -> Decision:
    """Trigger the next task, or finish the sequence (Keptn's ``proceed``)."""
    previous = execution.previous
    if (previous and previous[-1].stops_sequence) or len(previous) == len(execution.sequence.tasks):
        return _complete(execution, now)
    index = len(previous)
    task = execution.sequence.tasks[index]
    current = CurrentTask(
        index, task.name, execution.task_event_id(index), now + task.triggered_after
    )
    return _park(execution, current, now)


def _park(execution: Execution, current: CurrentTask, now: float) -> Decision:
    """Make ``current`` the next task to send, now if it is due and a slot is held."""
    next_state = State.WAITING_FOR_APPROVAL if current.name == APPROVAL else State.STARTED
    if execution.state == State.PAUSED:
        return Decision(execution.evolve(current=current, state_before_pause=next_state))
    # Leaving an approval for a normal task means winning the slot back first, and a task
    # that waits (triggeredAfter, backoff) gives its slot up until it is due.
    regain = next_state == State.STARTED and (not execution.holds_slot or current.due_at > now)
    moved = execution.evolve(current=current, state=next_state, awaiting_slot=regain)
    return _send_if_due(moved, now)


def _may_send(execution: Execution) -> bool:
    if execution.state == State.WAITING_FOR_APPROVAL:
        return True
    return execution.holds_slot


def _send_if_due(execution: Execution, now: float) -> Decision:
    current = execution.current
    if current is None or current.sent_at is not None:
        return Decision(execution)
    if not _may_send(execution) or now < current.due_at:
        return Decision(execution)
    sent = execution.evolve(current=replace(current, sent_at=now))
    event = Emit(
        id=current.triggered_id,
        type=eventtypes.task(current.name, Phase.TRIGGERED),
        keptn_context=execution.scope.keptn_context,
        data=execution.task_payload(current.index, current.attempt),
        gitcommitid=execution.gitcommitid,
        callback=_task(execution, current).callback,
    )
    return Decision(sent, (event,))


def _complete(execution: Execution, now: float) -> Decision:
    last = execution.previous[-1] if execution.previous else None
    status = last.status if last else Status.SUCCEEDED
    result = last.result if last else Result.PASS
    data = last.data if last else execution.input
    message = str(data.get("message") or "")
    done = execution.evolve(
        state=State.TIMED_OUT if last is not None and last.timed_out else State.FINISHED,
        status=status,
        result=result,
        message=message,
        ended_at=now,
        awaiting_slot=False,
    )
    commands: list[Emit | Chain] = [_finished_event(done, status, result, message, data)]
    commands.append(
        Chain(
            execution.id,
            execution.scope.stage,
            execution.name,
            result,
            last.name if last else "",
            execution.next_payload(),
        )
    )
    return Decision(done, tuple(commands))


def _task(execution: Execution, current: CurrentTask) -> Task:
    return execution.sequence.tasks[current.index]


def _started_timeout(execution: Execution, current: CurrentTask) -> float:
    timeout = _task(execution, current).timeout
    if timeout is not None and timeout.started is not None:
        return timeout.started
    return execution.task_started_timeout


def _finish_deadline(execution: Execution, current: CurrentTask) -> float | None:
    """The later of ``started + finished`` and ``last heartbeat + heartbeat``, if either."""
    timeout = _task(execution, current).timeout
    if timeout is None:
        return None
    began = current.heard_at if current.heard_at is not None else current.sent_at
    candidates: list[float] = []
    if timeout.finished is not None and began is not None:
        candidates.append(began + timeout.finished)
    if timeout.heartbeat is not None:
        beat = current.beat_at if current.beat_at is not None else began
        if beat is not None:
            candidates.append(beat + timeout.heartbeat)
    return max(candidates) if candidates else None


def _task_timed_out(
    execution: Execution, current: CurrentTask, now: float, why: str, deadline: float
) -> Decision:
    task_type = eventtypes.task(current.name, Phase.TRIGGERED)
    message = (
        f"task {current.name!r} timed out: {why} (attempt {current.attempt}, {task_type},"
        f" deadline {_timestamp(deadline)})"
    )
    outcome = _timeout_outcome(execution, current, message)
    return _task_ended(execution, outcome, now)


def _sequence_timed_out(execution: Execution, deadline: float, now: float) -> Decision:
    """The whole sequence ran out of time: its current task ends, no retry, and it finishes."""
    timeout = format_duration(execution.sequence.timeout or 0.0)
    where = f" in task {execution.current.name!r}" if execution.current else ""
    message = (
        f"sequence {execution.name!r} timed out{where}: it did not finish within {timeout}"
        f" (deadline {_timestamp(deadline)})"
    )
    if execution.current is None:
        outcome = TaskOutcome(
            "", "", str(Result.FAIL), str(Status.ERRORED), {"message": message}, timed_out=True
        )
    else:
        outcome = _timeout_outcome(execution, execution.current, message)
    done = execution.evolve(
        current=None, previous=(*execution.previous, outcome), awaiting_slot=False
    )
    return _complete(done, now)


def _timeout_outcome(execution: Execution, current: CurrentTask, message: str) -> TaskOutcome:
    # What the executors said so far still counts: merge it, then mark the failure.
    merged = aggregate(current.name, current.triggered_id, current.answers).data
    data = {**merged, "status": str(Status.ERRORED), "result": str(Result.FAIL), "message": message}
    return TaskOutcome(
        current.name,
        current.triggered_id,
        str(Result.FAIL),
        str(Status.ERRORED),
        data,
        timed_out=True,
    )


def _failure_kind(outcome: TaskOutcome) -> str:
    if outcome.timed_out:
        return "timeout"
    if outcome.status in (Status.ERRORED, Status.UNKNOWN):
        return "errored"
    if outcome.result == Result.FAIL:
        return "fail"
    return ""


def _task_ended(execution: Execution, outcome: TaskOutcome, now: float) -> Decision:
    """A task ended: retry it, pause for a human, or move on (Keptn's ``proceed``)."""
    current = execution.current
    assert current is not None
    task = _task(execution, current)
    kind = _failure_kind(outcome)
    policy = task.retry or Retry()
    if kind and kind in policy.on and (task.retry is not None or task.pause_after_errors):
        failures = current.failures + 1
        exhausted = current.attempt >= policy.attempts
        pause = task.pause_after_errors > 0 and (failures >= task.pause_after_errors or exhausted)
        if pause or not exhausted:
            return _try_again(execution, current, outcome, failures, now, pause=pause)
    done = execution.evolve(current=None, previous=(*execution.previous, outcome))
    return _proceed(done, now)


def _try_again(
    execution: Execution,
    current: CurrentTask,
    outcome: TaskOutcome,
    failures: int,
    now: float,
    *,
    pause: bool,
) -> Decision:
    message = str(outcome.data.get("message") or "")
    record = Attempt(
        current.index,
        current.name,
        current.attempt,
        current.triggered_id,
        outcome.result,
        outcome.status,
        message,
        now,
        outcome.timed_out,
    )
    task = _task(execution, current)
    attempt = current.attempt + 1
    delay = (
        0.0
        if pause
        else backoff_delay(task.retry or Retry(), execution.id, current.index, current.attempt)
    )
    retry = CurrentTask(
        current.index,
        current.name,
        execution.task_event_id(current.index, attempt),
        now + delay,
        attempt=attempt,
        failures=0 if pause else failures,
    )
    moved = execution.evolve(attempts=(*execution.attempts, record))
    if not pause:
        return _park(moved, retry, now)
    note = f"paused after {failures} failed attempt(s) of task {current.name!r}" + (
        f": {message}" if message else ""
    )
    if execution.state == State.PAUSED:
        return Decision(moved.evolve(current=retry, state_before_pause=State.STARTED), note=note)
    paused = moved.evolve(
        current=retry,
        state=State.PAUSED,
        state_before_pause=State.STARTED,
        awaiting_slot=False,
        paused_at=now,
        message=note,
    )
    return Decision(paused, note=note)


def backoff_delay(policy: Retry, execution_id: str, index: int, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` before the next one.

    ``min(max, initial * factor**(attempt-1))``, spread by +/- ``jitter`` of itself. The
    spread is drawn from the execution's id, not a random source, so that a decision
    replayed after a crash waits exactly as long.
    """
    backoff = policy.backoff
    base = min(backoff.max, backoff.initial * backoff.factor ** (attempt - 1))
    if not backoff.jitter:
        return base
    draw = uuid.UUID(derived_id(execution_id, "backoff", str(index), str(attempt))).int
    spread = (draw / float(1 << 128)) * 2.0 - 1.0
    return max(0.0, base * (1.0 + backoff.jitter * spread))


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last_data(execution: Execution) -> Mapping[str, Any]:
    return execution.previous[-1].data if execution.previous else execution.input


def _finished_event(
    execution: Execution, status: str, result: str, message: str, source: Mapping[str, Any]
) -> Emit:
    scope = execution.scope
    data: dict[str, Any] = {
        "project": scope.project,
        "stage": scope.stage,
        "service": scope.service,
        "status": str(status),
        "result": str(result),
        "message": message,
    }
    labels = source.get("labels") or execution.input.get("labels")
    if labels:
        data["labels"] = labels
    return Emit(
        id=derived_id(execution.id, "finished"),
        type=eventtypes.sequence(scope.stage, execution.name, Phase.FINISHED),
        keptn_context=scope.keptn_context,
        data=data,
        triggered_id=execution.id,
        gitcommitid=execution.gitcommitid,
    )


def approval_answers(
    triggered: Emit, *, now_source: str = "approval-service"
) -> tuple[TaskAnswered, ...]:
    """The built-in approval service's answers to an ``approval.triggered`` (reference 4.13).

    Always a ``.started``; a ``.finished`` straight away only when the strategy for the
    incoming result is ``automatic`` (a ``warning`` approved automatically yields ``pass``)
    or the result is ``fail``. An unset strategy behaves as ``manual``, as in Keptn's code.
    Otherwise a human answers with ``approval.finished``.
    """
    data = triggered.data
    result = str(data.get("result") or "")
    if not result:
        evaluation = data.get("evaluation")
        if isinstance(evaluation, Mapping):
            result = str(evaluation.get("result") or "")
    strategy_map = data.get(APPROVAL)
    strategies = strategy_map if isinstance(strategy_map, Mapping) else {}
    strategy = str(strategies.get(result) or "manual") if result in ("pass", "warning") else ""
    base = {key: data[key] for key in ("project", "stage", "service", "labels") if key in data}
    started = TaskAnswered(
        event_id=derived_id(triggered.id, "approval", "started"),
        triggered_id=triggered.id,
        phase=Phase.STARTED,
        source=now_source,
        data={
            **base,
            "status": "succeeded",
            "message": f"Approval strategy for result '{result}': {strategy or 'none'}",
        },
    )
    if result == Result.FAIL:
        verdict = Result.FAIL
    elif strategy == "automatic":
        verdict = Result.PASS
    else:
        return (started,)
    finished = TaskAnswered(
        event_id=derived_id(triggered.id, "approval", "finished"),
        triggered_id=triggered.id,
        phase=Phase.FINISHED,
        source=now_source,
        data={**base, "status": "succeeded", "result": str(verdict)},
    )
    return (started, finished)


def task_outcome_summary(outcome: TaskOutcome) -> str:
    return f"{outcome.name}: {outcome.result}/{outcome.status}"
