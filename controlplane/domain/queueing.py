"""Who may run: one ``started`` execution per (project, stage, service), first come first served.

Keptn's dispatcher blocks a trigger while another execution of the same project, stage and
service is ``started``, and starts waiting ones oldest first. Executions waiting for an
approval or paused hold no slot. An execution that comes back from an approval or a pause
queues again, keeping its original trigger time, so it goes ahead of newer triggers.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.domain.execution import Execution


def grant(executions: Iterable[Execution]) -> Execution | None:
    """The execution that should get the slot now, or None if it is taken or nobody waits."""
    waiting: list[Execution] = []
    for execution in executions:
        if execution.holds_slot:
            return None
        if execution.wants_slot:
            waiting.append(execution)
    if not waiting:
        return None
    return min(waiting, key=lambda execution: (execution.triggered_at, execution.id))


def is_blocked(execution: Execution, others: Iterable[Execution]) -> bool:
    """True when ``execution`` wants the slot but must wait for another one."""
    if not execution.wants_slot:
        return False
    chosen = grant([execution, *(other for other in others if other.id != execution.id)])
    return chosen is None or chosen.id != execution.id
