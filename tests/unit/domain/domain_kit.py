"""Builders shared by the domain tests (imported as a plain module: pytest's rootdir mode)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import machine
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import Execution, Scope
from controlplane.domain.machine import Chain, Decision, Emit, Input, TaskAnswered
from controlplane.domain.shipyard import Sequence, Task

SCOPE = Scope("sockshop", "dev", "carts", "ctx-1")
TIMEOUT = 600.0


def sequence(*tasks: str | Task, name: str = "delivery") -> Sequence:
    return Sequence(name, tuple(Task(t) if isinstance(t, str) else t for t in tasks))


def new(
    *tasks: str | Task,
    data: Mapping[str, Any] | None = None,
    now: float = 0.0,
    trigger_id: str = "trigger-1",
    scope: Scope = SCOPE,
    name: str = "delivery",
    paused: bool = False,
) -> Execution:
    return machine.start(
        trigger_id=trigger_id,
        scope=scope,
        sequence=sequence(*tasks, name=name),
        data=dict(
            data
            if data is not None
            else {"project": scope.project, "stage": scope.stage, "service": scope.service}
        ),
        now=now,
        task_started_timeout=TIMEOUT,
        paused=paused,
        gitcommitid="commit-1",
    )


@dataclass
class Run:
    """Feeds inputs to an execution and keeps everything the machine said."""

    execution: Execution
    decisions: list[Decision] = field(default_factory=list)

    def feed(self, event: Input, now: float = 0.0) -> Decision:
        decision = machine.decide(self.execution, event, now=now)
        self.decisions.append(decision)
        self.execution = decision.execution
        return decision

    def grant(self, now: float = 0.0) -> Decision:
        return self.feed(machine.SlotGranted(), now)

    def tick(self, now: float) -> Decision:
        return self.feed(machine.Tick(), now)

    @property
    def current_id(self) -> str:
        assert self.execution.current is not None
        return self.execution.current.triggered_id

    def started(
        self,
        event_id: str,
        *,
        now: float = 0.0,
        triggered_id: str | None = None,
        source: str = "svc",
    ) -> Decision:
        return self.feed(
            TaskAnswered(
                event_id,
                triggered_id or self.current_id,
                Phase.STARTED,
                source,
                {"project": "sockshop", "stage": "dev", "service": "carts"},
            ),
            now,
        )

    def finished(
        self,
        event_id: str,
        result: str = "pass",
        status: str = "succeeded",
        *,
        now: float = 0.0,
        triggered_id: str | None = None,
        source: str = "svc",
        **extra: Any,
    ) -> Decision:
        data = {
            "project": "sockshop",
            "stage": "dev",
            "service": "carts",
            "result": result,
            "status": status,
            **extra,
        }
        return self.feed(
            TaskAnswered(event_id, triggered_id or self.current_id, Phase.FINISHED, source, data),
            now,
        )

    def answer(
        self,
        event_id: str,
        result: str = "pass",
        status: str = "succeeded",
        *,
        now: float = 0.0,
        source: str = "svc",
        **extra: Any,
    ) -> Decision:
        """One executor: ``.started`` then ``.finished`` for the current task."""
        triggered_id = self.current_id
        self.started(f"{event_id}-s", now=now, triggered_id=triggered_id, source=source)
        return self.finished(
            f"{event_id}-f",
            result,
            status,
            now=now,
            triggered_id=triggered_id,
            source=source,
            **extra,
        )

    def commands(self) -> list[Emit | Chain]:
        return [command for decision in self.decisions for command in decision.commands]

    def emits(self) -> list[Emit]:
        return [c for c in self.commands() if isinstance(c, Emit)]

    def emitted_types(self) -> list[str]:
        return [emit.type for emit in self.emits()]


def emits(decision: Decision) -> list[Emit]:
    return [c for c in decision.commands if isinstance(c, Emit)]


def chains(commands: Iterable[Emit | Chain]) -> list[Chain]:
    return [c for c in commands if isinstance(c, Chain)]


def sequence_finished(commands: Iterable[Emit | Chain]) -> list[Emit]:
    return [c for c in commands if isinstance(c, Emit) and c.type.endswith(".finished")]
