"""Re-running a sequence that ended: from its failed task, or from a task the user names.

Keptn could not do this (KEP 68); a failed delivery had to be triggered again from scratch,
repeating every task that had already worked. A re-run here is a new keptnContext (so the
old run's history stays as it was) that starts with the original input, takes over the
outputs of the tasks before the chosen one, and records which context it repeats.

The re-run uses the sequence as the shipyard defines it now, since fixing the shipyard is a
common reason to re-run; the tasks it skips must still be the ones the old run completed,
otherwise their outputs would mean something else and the re-run is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.application import admission
from controlplane.application.definitions import Definitions
from controlplane.application.engine import RerunPlan
from controlplane.application.envelope import Envelope, format_time
from controlplane.application.errors import Conflict, InvalidEvent, NotFound, UnknownProject
from controlplane.application.ports import QueryStore
from controlplane.domain import eventtypes
from controlplane.domain.errors import UnknownSequence
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import Execution, State

SOURCE = "controlplane-rerun"


class RerunEngine(Protocol):
    async def start_rerun(self, envelope: Envelope, plan: RerunPlan) -> str: ...


@dataclass(frozen=True, slots=True)
class RerunStarted:
    keptn_context: str
    rerun_of: str
    stage: str
    sequence: str
    from_task: str


class Reruns:
    def __init__(
        self,
        store: QueryStore,
        definitions: Definitions,
        engine: RerunEngine,
        *,
        clock: Callable[[], float],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._store = store
        self._definitions = definitions
        self._engine = engine
        self._clock = clock
        self._new_id = new_id

    async def rerun(
        self, project: str, keptn_context: str, *, from_task: str = "", stage: str = ""
    ) -> RerunStarted:
        """Start the re-run; returns once its trigger is stored.

        Raises:
            UnknownProject, NotFound: no such project, context or stage.
            Conflict: the context is still running, or the sequence changed under it.
            InvalidEvent: ``from_task`` names no task of the sequence.
        """
        if self._definitions.record(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")
        groups = await self._store.contexts(project, keptn_contexts=[keptn_context], name="")
        executions = groups[0] if groups else []
        if not executions:
            raise NotFound(
                f"no sequence with keptnContext {keptn_context!r} in project {project!r}"
            )
        if any(not execution.state.terminal for execution in executions):
            raise Conflict(
                f"the sequence {keptn_context!r} is still running; abort it or wait for its end"
            )
        old = _chosen(executions, stage)
        shipyard = self._definitions.shipyard(project)
        if shipyard is None:
            raise Conflict(f"the shipyard of project {project!r} is invalid; fix it first")
        try:
            sequence = shipyard.sequence(old.scope.stage, old.name)
        except UnknownSequence as exc:
            raise Conflict(f"cannot re-run: {exc}") from exc
        names = [task.name for task in sequence.tasks]
        index = _start_index(old, names, from_task)
        done = [outcome.name for outcome in old.previous[:index]]
        if len(done) < index or done != names[:index]:
            raise Conflict(
                f"cannot re-run from task {names[index]!r}: the old run did not complete"
                f" {', '.join(names[:index])} as the sequence defines them now"
            )
        context = admission.keptn_context(self._new_id())
        data: dict[str, Any] = dict(old.input)
        data.update(
            project=project,
            stage=old.scope.stage,
            service=old.scope.service,
            rerunOf=keptn_context,
        )
        envelope = Envelope(
            id=self._new_id(),
            source=SOURCE,
            type=eventtypes.sequence(old.scope.stage, old.name, Phase.TRIGGERED),
            time=format_time(self._clock()),
            data=data,
            keptn_context=context,
            gitcommitid=old.gitcommitid,
        )
        plan = RerunPlan(keptn_context, tuple(old.previous[:index]))
        started = await self._engine.start_rerun(envelope, plan)
        return RerunStarted(started, keptn_context, old.scope.stage, old.name, names[index])


def _chosen(executions: list[Execution], stage: str) -> Execution:
    """The stage asked for, else the last one that failed, else the last one to end."""
    if stage:
        matching = [execution for execution in executions if execution.scope.stage == stage]
        if not matching:
            raise NotFound(f"the sequence ran no stage {stage!r}")
        return matching[-1]
    ended = sorted(executions, key=lambda execution: execution.ended_at or 0.0)
    failed = [execution for execution in ended if _failed(execution)]
    return (failed or ended)[-1]


def _failed(execution: Execution) -> bool:
    return execution.result == "fail" or execution.status in ("errored", "aborted")


def _start_index(old: Execution, names: list[str], from_task: str) -> int:
    if from_task:
        if from_task not in names:
            raise InvalidEvent(
                f"fromTask {from_task!r} is not a task of sequence {old.name!r}"
                f" (its tasks: {', '.join(names)})"
            )
        return names.index(from_task)
    for position, outcome in enumerate(old.previous):
        if outcome.stops_sequence:
            return min(position, len(names) - 1)
    if old.status == "aborted" or old.state != State.FINISHED:
        # Aborted or timed out in a task that never finished: start there.
        return min(len(old.previous), len(names) - 1)
    return 0
