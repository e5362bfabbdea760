"""Keptn's sequence-state view: one entry per keptnContext, one stage entry per execution.

The overall state follows reference 4.12: ``waiting`` while queued behind another sequence,
``paused`` when the whole context is paused (a stage-only pause leaves it ``started``),
``aborted`` and ``timedOut`` when that is how the context ended, and ``finished`` once no
stage is still running. A failed sequence is ``finished``: failure is in the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.domain import eventtypes
from controlplane.domain.execution import EventRef, Execution, StageView, State

_FAILED_RESULTS = {"fail"}
# Keptn's task name, and the alias the built-in quality gate also answers.
_EVALUATION_TASKS = {"evaluation", "evaluate"}
_FAILED_STATUSES = {"errored"}


def observe(
    view: StageView, *, type: str, id: str, time: float, data: Mapping[str, Any], source: str
) -> StageView:
    """Fold one event of this stage into its view."""
    ref = EventRef(type, id, time)
    latest_failed = view.latest_failed_event
    if data.get("result") in _FAILED_RESULTS or data.get("status") in _FAILED_STATUSES:
        latest_failed = ref
    evaluation = view.latest_evaluation
    image = view.image
    problem = view.problem_title
    try:
        parsed = eventtypes.parse(type)
    except eventtypes.EventTypeError:
        parsed = None
    if isinstance(parsed, eventtypes.TaskEventType):
        evaluation_data = data.get("evaluation")
        if (
            parsed.task in _EVALUATION_TASKS
            and parsed.phase == eventtypes.Phase.FINISHED
            and isinstance(evaluation_data, Mapping)
            and "score" in evaluation_data
        ):
            evaluation = {"result": data.get("result", ""), "score": evaluation_data["score"]}
        if parsed.task == "deployment" and parsed.phase == eventtypes.Phase.TRIGGERED:
            image = _image(data) or image
    if isinstance(parsed, eventtypes.SequenceEventType):
        title = data.get("problem")
        if isinstance(title, Mapping) and title.get("problemTitle"):
            problem = str(title["problemTitle"])
    return StageView(ref, latest_failed, evaluation, image, problem)


def _image(data: Mapping[str, Any]) -> str:
    change = data.get("configurationChange")
    values = change.get("values") if isinstance(change, Mapping) else None
    image = values.get("image") if isinstance(values, Mapping) else None
    return str(image) if image else ""


def stage_state(execution: Execution) -> str:
    if execution.state == State.PAUSED:
        return "paused"
    if execution.state in (State.FINISHED, State.ABORTED, State.TIMED_OUT):
        return execution.status or "succeeded"
    return "triggered"


def overall_state(
    executions: Sequence[Execution], *, context_paused: bool, blocked: set[str]
) -> str:
    """The context's state from its stage executions (oldest first)."""
    live = [execution for execution in executions if not execution.state.terminal]
    if context_paused and live:
        return "paused"
    if not live:
        last = max(executions, key=lambda execution: execution.ended_at or 0.0)
        if last.state == State.TIMED_OUT:
            return "timedOut"
        if last.state == State.ABORTED:
            return "aborted"
        return "finished"
    if all(execution.state == State.TRIGGERED for execution in live):
        return "waiting" if any(execution.id in blocked for execution in live) else "triggered"
    # A stage-only pause shows in that stage's state, not in the overall one (reference 4.11).
    return "started"
