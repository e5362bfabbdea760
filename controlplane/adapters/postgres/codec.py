"""An :class:`~controlplane.domain.execution.Execution` as a JSON document, and back.

Rows outlive the code that wrote them: an engine upgraded mid-sequence must read what its
predecessor stored. So the stored shape is spelled out here, field by field, instead of being
whatever ``dataclasses.asdict`` makes of the current classes, and it carries a format number
(``"v"``) for the day it has to change. Enums are stored as their string values, tuples as
lists, and every number that the domain keeps as a float is read back as one (PostgreSQL's
jsonb keeps numbers as decimals, so ``1e20`` comes back as an integer literal).

``decode_execution(encode_execution(x)) == x`` for every execution: the unit tests check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from controlplane.domain.extensions import Backoff, Concurrency, Retry, TaskTimeouts
from controlplane.domain.shipyard import Sequence, Task, Trigger

# 2 added our extensions (deadlines, retries, concurrency keys, re-runs); 1 is still read.
FORMAT_VERSION = 2
_READABLE = (1, 2)

Doc = dict[str, Any]


class UnknownFormat(ValueError):
    """The stored execution was written in a format this version cannot read."""


def encode_execution(execution: Execution) -> Doc:
    return {
        "v": FORMAT_VERSION,
        "id": execution.id,
        "scope": _encode_scope(execution.scope),
        "sequence": _encode_sequence(execution.sequence),
        "input": plain(execution.input),
        "triggered_at": execution.triggered_at,
        "task_started_timeout": execution.task_started_timeout,
        "state": execution.state.value,
        "state_before_pause": (
            execution.state_before_pause.value if execution.state_before_pause else None
        ),
        "awaiting_slot": execution.awaiting_slot,
        "shipyard_version": execution.shipyard_version,
        "gitcommitid": execution.gitcommitid,
        "previous": [_encode_outcome(outcome) for outcome in execution.previous],
        "current": _encode_current(execution.current) if execution.current else None,
        "status": execution.status,
        "result": execution.result,
        "message": execution.message,
        "ended_at": execution.ended_at,
        "view": _encode_view(execution.view),
        "concurrency_key": execution.concurrency_key,
        "concurrency_limit": execution.concurrency_limit,
        "attempts": [_encode_attempt(attempt) for attempt in execution.attempts],
        "paused_at": execution.paused_at,
        "paused_total": execution.paused_total,
        "rerun_of": execution.rerun_of,
    }


def decode_execution(doc: Mapping[str, Any]) -> Execution:
    if doc.get("v") not in _READABLE:
        raise UnknownFormat(f"execution {doc.get('id')!r} has format {doc.get('v')!r}")
    before_pause = doc["state_before_pause"]
    current = doc["current"]
    return Execution(
        id=doc["id"],
        scope=_decode_scope(doc["scope"]),
        sequence=_decode_sequence(doc["sequence"]),
        input=doc["input"],
        triggered_at=float(doc["triggered_at"]),
        task_started_timeout=float(doc["task_started_timeout"]),
        state=State(doc["state"]),
        state_before_pause=State(before_pause) if before_pause is not None else None,
        awaiting_slot=doc["awaiting_slot"],
        shipyard_version=doc["shipyard_version"],
        gitcommitid=doc["gitcommitid"],
        previous=tuple(_decode_outcome(item) for item in doc["previous"]),
        current=_decode_current(current) if current is not None else None,
        status=doc["status"],
        result=doc["result"],
        message=doc["message"],
        ended_at=_optional_float(doc["ended_at"]),
        view=_decode_view(doc["view"]),
        concurrency_key=doc.get("concurrency_key", ""),
        concurrency_limit=doc.get("concurrency_limit", 1),
        attempts=tuple(_decode_attempt(item) for item in doc.get("attempts", ())),
        paused_at=_optional_float(doc.get("paused_at")),
        paused_total=float(doc.get("paused_total", 0.0)),
        rerun_of=doc.get("rerun_of", ""),
    )


def plain(value: Any) -> Any:
    """A deep copy made of dicts and lists only, which ``json.dumps`` accepts."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_map(value: Mapping[str, Any] | None) -> Doc | None:
    return None if value is None else plain(value)


def _encode_scope(scope: Scope) -> Doc:
    return {
        "project": scope.project,
        "stage": scope.stage,
        "service": scope.service,
        "keptn_context": scope.keptn_context,
    }


def _decode_scope(doc: Mapping[str, Any]) -> Scope:
    return Scope(doc["project"], doc["stage"], doc["service"], doc["keptn_context"])


def _encode_sequence(sequence: Sequence) -> Doc:
    return {
        "name": sequence.name,
        "tasks": [_encode_task(task) for task in sequence.tasks],
        "triggered_on": [
            {
                "stage": trigger.stage,
                "sequence": trigger.sequence,
                "match": _optional_map(trigger.match),
            }
            for trigger in sequence.triggered_on
        ],
        "timeout": sequence.timeout,
        "concurrency": (
            {"key": sequence.concurrency.key, "limit": sequence.concurrency.limit}
            if sequence.concurrency
            else None
        ),
        "loop": sequence.loop,
    }


def _encode_task(task: Task) -> Doc:
    doc: Doc = {
        "name": task.name,
        "triggered_after": task.triggered_after,
        "properties": _optional_map(task.properties),
    }
    if task.timeout is not None:
        doc["timeout"] = {
            "started": task.timeout.started,
            "finished": task.timeout.finished,
            "heartbeat": task.timeout.heartbeat,
        }
    if task.retry is not None:
        backoff = task.retry.backoff
        doc["retry"] = {
            "attempts": task.retry.attempts,
            "on": sorted(task.retry.on),
            "backoff": {
                "initial": backoff.initial,
                "factor": backoff.factor,
                "max": backoff.max,
                "jitter": backoff.jitter,
            },
        }
    if task.pause_after_errors:
        doc["pause_after_errors"] = task.pause_after_errors
    if task.callback:
        doc["callback"] = True
    return doc


def _decode_task(doc: Mapping[str, Any]) -> Task:
    timeout = doc.get("timeout")
    retry = doc.get("retry")
    return Task(
        doc["name"],
        float(doc["triggered_after"]),
        doc["properties"],
        timeout=(
            TaskTimeouts(
                _optional_float(timeout["started"]),
                _optional_float(timeout["finished"]),
                _optional_float(timeout["heartbeat"]),
            )
            if timeout is not None
            else None
        ),
        retry=(
            Retry(
                attempts=retry["attempts"],
                on=frozenset(retry["on"]),
                backoff=Backoff(
                    float(retry["backoff"]["initial"]),
                    float(retry["backoff"]["factor"]),
                    float(retry["backoff"]["max"]),
                    float(retry["backoff"]["jitter"]),
                ),
            )
            if retry is not None
            else None
        ),
        pause_after_errors=doc.get("pause_after_errors", 0),
        callback=doc.get("callback", False),
    )


def _decode_sequence(doc: Mapping[str, Any]) -> Sequence:
    tasks = tuple(_decode_task(item) for item in doc["tasks"])
    triggers = tuple(
        Trigger(item["stage"], item["sequence"], item["match"]) for item in doc["triggered_on"]
    )
    concurrency = doc.get("concurrency")
    return Sequence(
        doc["name"],
        tasks,
        triggers,
        timeout=_optional_float(doc.get("timeout")),
        concurrency=(
            Concurrency(concurrency["key"], concurrency["limit"]) if concurrency else None
        ),
        loop=doc.get("loop", False),
    )


def _encode_outcome(outcome: TaskOutcome) -> Doc:
    return {
        "name": outcome.name,
        "triggered_id": outcome.triggered_id,
        "result": outcome.result,
        "status": outcome.status,
        "data": plain(outcome.data),
        "timed_out": outcome.timed_out,
    }


def _decode_outcome(doc: Mapping[str, Any]) -> TaskOutcome:
    return TaskOutcome(
        doc["name"],
        doc["triggered_id"],
        doc["result"],
        doc["status"],
        doc["data"],
        timed_out=doc.get("timed_out", False),
    )


def _encode_attempt(attempt: Attempt) -> Doc:
    return {
        "index": attempt.index,
        "name": attempt.name,
        "attempt": attempt.attempt,
        "triggered_id": attempt.triggered_id,
        "result": attempt.result,
        "status": attempt.status,
        "message": attempt.message,
        "ended_at": attempt.ended_at,
        "timed_out": attempt.timed_out,
    }


def _decode_attempt(doc: Mapping[str, Any]) -> Attempt:
    return Attempt(
        doc["index"],
        doc["name"],
        doc["attempt"],
        doc["triggered_id"],
        doc["result"],
        doc["status"],
        doc["message"],
        float(doc["ended_at"]),
        doc["timed_out"],
    )


def _encode_current(current: CurrentTask) -> Doc:
    return {
        "index": current.index,
        "name": current.name,
        "triggered_id": current.triggered_id,
        "due_at": current.due_at,
        "sent_at": current.sent_at,
        "heard_at": current.heard_at,
        "attempt": current.attempt,
        "failures": current.failures,
        "beat_at": current.beat_at,
        "answers": [
            {
                "event_id": answer.event_id,
                "finished": answer.finished,
                "source": answer.source,
                "data": _optional_map(answer.data),
            }
            for answer in current.answers
        ],
    }


def _decode_current(doc: Mapping[str, Any]) -> CurrentTask:
    answers = tuple(
        Answer(item["event_id"], item["finished"], item["source"], item["data"])
        for item in doc["answers"]
    )
    return CurrentTask(
        index=doc["index"],
        name=doc["name"],
        triggered_id=doc["triggered_id"],
        due_at=float(doc["due_at"]),
        sent_at=_optional_float(doc["sent_at"]),
        answers=answers,
        heard_at=_optional_float(doc.get("heard_at")),
        attempt=doc.get("attempt", 1),
        failures=doc.get("failures", 0),
        beat_at=_optional_float(doc.get("beat_at")),
    )


def _encode_ref(ref: EventRef | None) -> Doc | None:
    return None if ref is None else {"type": ref.type, "id": ref.id, "time": ref.time}


def _decode_ref(doc: Mapping[str, Any] | None) -> EventRef | None:
    return None if doc is None else EventRef(doc["type"], doc["id"], float(doc["time"]))


def _encode_view(view: StageView) -> Doc:
    return {
        "latest_event": _encode_ref(view.latest_event),
        "latest_failed_event": _encode_ref(view.latest_failed_event),
        "latest_evaluation": _optional_map(view.latest_evaluation),
        "image": view.image,
        "problem_title": view.problem_title,
    }


def _decode_view(doc: Mapping[str, Any]) -> StageView:
    return StageView(
        latest_event=_decode_ref(doc["latest_event"]),
        latest_failed_event=_decode_ref(doc["latest_failed_event"]),
        latest_evaluation=doc["latest_evaluation"],
        image=doc["image"],
        problem_title=doc["problem_title"],
    )
