"""The state of one sequence execution: one sequence of one stage, for one keptnContext.

A keptnContext that spans several stages has one execution per stage. Everything here is
frozen; the state machine (:mod:`controlplane.domain.machine`) returns new values.

Result and status aggregation follow Keptn v1 (reference section 4.6):

* result: ``fail`` if any ``.finished`` says anything but ``pass``/``warning``, else
  ``warning`` if any says ``warning``, else ``pass``;
* status: ``errored`` beats ``aborted`` beats ``succeeded``; anything unrecognised makes the
  status ``unknown`` and forces the result to ``fail``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.domain import payload
from controlplane.domain.shipyard import Sequence

JsonMap = Mapping[str, Any]

# A fixed namespace so that the ids of the events an execution emits are a pure function of
# the execution: replaying a decision after a crash yields the same ids, which NATS
# de-duplicates (Nats-Msg-Id) and the event store refuses twice.
_ID_NAMESPACE = uuid.UUID("5b1f4a4e-8f55-4c8e-9a57-7c0d4c7c2f0b")


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


class State(enum.StrEnum):
    TRIGGERED = "triggered"
    STARTED = "started"
    WAITING_FOR_APPROVAL = "waitingForApproval"
    PAUSED = "paused"
    FINISHED = "finished"
    ABORTED = "aborted"
    TIMED_OUT = "timedOut"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = {State.FINISHED, State.ABORTED, State.TIMED_OUT}


class Status(enum.StrEnum):
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


class Result(enum.StrEnum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Scope:
    project: str
    stage: str
    service: str
    keptn_context: str

    @property
    def queue_key(self) -> tuple[str, str, str]:
        """Keptn runs one sequence at a time per (project, stage, service)."""
        return (self.project, self.stage, self.service)


@dataclass(frozen=True, slots=True)
class Answer:
    """One ``.started`` or ``.finished`` received for the current task."""

    event_id: str
    finished: bool
    source: str = ""
    data: JsonMap | None = None  # the .finished event's data

    @property
    def status(self) -> str:
        return str((self.data or {}).get("status") or "")

    @property
    def result(self) -> str:
        return str((self.data or {}).get("result") or "")


@dataclass(frozen=True, slots=True)
class CurrentTask:
    index: int
    name: str
    triggered_id: str
    due_at: float
    sent_at: float | None = None  # None while the .triggered is parked (delay, slot, pause)
    answers: tuple[Answer, ...] = ()
    heard_at: float | None = None  # first event of any kind carrying our triggeredid
    attempt: int = 1
    failures: int = 0  # failed attempts in a row since the last pause (pauseAfterErrors)
    beat_at: float | None = None  # last .started or .status.changed (heartbeat deadlines)

    @property
    def answered(self) -> bool:
        return bool(self.answers) or self.heard_at is not None

    @property
    def started_count(self) -> int:
        return sum(1 for answer in self.answers if not answer.finished)

    @property
    def finished_count(self) -> int:
        return sum(1 for answer in self.answers if answer.finished)

    @property
    def complete(self) -> bool:
        """Keptn's rule: as many ``.finished`` as ``.started``, and at least one."""
        return self.finished_count > 0 and self.finished_count == self.started_count


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """A completed task: its aggregated result and status and its merged output."""

    name: str
    triggered_id: str
    result: str
    status: str
    data: JsonMap = field(default_factory=dict)
    timed_out: bool = False  # ended by a deadline, not by an answer

    @property
    def stops_sequence(self) -> bool:
        return self.result == Result.FAIL or self.status == Status.ERRORED


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed attempt of a task that was then retried or paused (shown in the state view)."""

    index: int
    name: str
    attempt: int
    triggered_id: str
    result: str
    status: str
    message: str
    ended_at: float
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class EventRef:
    type: str
    id: str
    time: float


@dataclass(frozen=True, slots=True)
class StageView:
    """What Keptn's sequence-state view shows for this stage."""

    latest_event: EventRef | None = None
    latest_failed_event: EventRef | None = None
    latest_evaluation: JsonMap | None = None
    image: str = ""
    problem_title: str = ""


@dataclass(frozen=True, slots=True)
class Execution:
    id: str  # the id of the sequence .triggered event that started it
    scope: Scope
    sequence: Sequence  # snapshot: a running execution keeps the definition it started with
    input: JsonMap
    triggered_at: float
    task_started_timeout: float
    state: State = State.TRIGGERED
    state_before_pause: State | None = None
    awaiting_slot: bool = False
    shipyard_version: int = 0
    gitcommitid: str = ""
    previous: tuple[TaskOutcome, ...] = ()
    current: CurrentTask | None = None
    # Set when the execution ends.
    status: str = ""
    result: str = ""
    message: str = ""
    ended_at: float | None = None
    view: StageView = field(default_factory=StageView)
    # Our extensions (all defaults mean Keptn's behaviour).
    concurrency_key: str = ""  # rendered from the sequence's template; "" = the scope's
    concurrency_limit: int = 1
    attempts: tuple[Attempt, ...] = ()
    paused_at: float | None = None
    paused_total: float = 0.0  # seconds spent paused, not counted against the timeout
    rerun_of: str = ""  # the keptnContext this execution re-runs

    @property
    def name(self) -> str:
        return self.sequence.name

    @property
    def slot_key(self) -> str:
        """Executions with the same key share ``concurrency_limit`` slots."""
        if self.concurrency_key:
            return self.concurrency_key
        scope = self.scope
        return f"{scope.project}/{scope.stage}/{scope.service}"

    @property
    def holds_slot(self) -> bool:
        return self.state == State.STARTED and not self.awaiting_slot

    def wants_slot(self, now: float) -> bool:
        """Queued for a slot: a new trigger, or a task that is due and must win one back.

        A task still waiting out ``triggeredAfter`` or a retry's backoff does not ask yet,
        so it holds no slot while it waits.
        """
        if self.state == State.TRIGGERED:
            return True
        if self.state != State.STARTED or not self.awaiting_slot:
            return False
        return self.current is None or self.current.due_at <= now

    @property
    def deadline(self) -> float | None:
        """When the whole sequence times out (paused time does not count), if it can."""
        if self.sequence.timeout is None:
            return None
        return self.triggered_at + self.sequence.timeout + self.paused_total

    def knows_task(self, triggered_id: str) -> bool:
        if self.current is not None and self.current.triggered_id == triggered_id:
            return True
        if any(attempt.triggered_id == triggered_id for attempt in self.attempts):
            return True
        return any(outcome.triggered_id == triggered_id for outcome in self.previous)

    def task_event_id(self, index: int, attempt: int = 1) -> str:
        if attempt == 1:
            return derived_id(self.id, "task", str(index))
        return derived_id(self.id, "task", str(index), "attempt", str(attempt))

    def next_payload(self) -> dict[str, Any]:
        """Keptn's GetNextTriggeredEventData, without the next task's properties.

        The trigger's data, the scope, every previous task's output merged in order, the
        last task's result and status, and ``message`` blanked.
        """
        data = payload.deep_copy(self.input)
        data.update(project=self.scope.project, stage=self.scope.stage, service=self.scope.service)
        for outcome in self.previous:
            data = payload.merge(data, outcome.data)
        if self.previous:
            data["result"] = self.previous[-1].result
            data["status"] = self.previous[-1].status
        if "message" in data:
            data["message"] = ""
        return data

    def task_payload(self, index: int, attempt: int = 1) -> dict[str, Any]:
        data = self.next_payload()
        task = self.sequence.tasks[index]
        if task.properties:
            data[task.name] = payload.merge(data.get(task.name), task.properties)
        if task.retry is not None or task.pause_after_errors:
            data["attempt"] = attempt
        return data

    def evolve(self, **changes: Any) -> Execution:
        return replace(self, **changes)


def aggregate(name: str, triggered_id: str, answers: tuple[Answer, ...]) -> TaskOutcome:
    finished = [answer for answer in answers if answer.finished]
    results = {answer.result for answer in finished}
    statuses = {answer.status for answer in finished}
    if results - {Result.PASS, Result.WARNING}:
        result = Result.FAIL
    elif Result.WARNING in results:
        result = Result.WARNING
    else:
        result = Result.PASS
    if Status.ERRORED in statuses:
        status = Status.ERRORED
    elif Status.ABORTED in statuses:
        status = Status.ABORTED
    elif statuses == {Status.SUCCEEDED}:
        status = Status.SUCCEEDED
    else:
        status, result = Status.UNKNOWN, Result.FAIL
    # Merge in a canonical order (not arrival order) so that the outcome does not depend
    # on how the network interleaved several executors' answers.
    merged: Any = {}
    for answer in sorted(finished, key=lambda item: (item.source, item.event_id)):
        merged = payload.merge(merged, answer.data or {})
    return TaskOutcome(name, triggered_id, str(result), str(status), merged)
