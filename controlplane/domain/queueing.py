"""Who may run: at most ``limit`` started executions per concurrency key, oldest first.

Keptn's dispatcher blocks a trigger while another execution of the same project, stage and
service is ``started``, and starts waiting ones oldest first. That is our default key and
limit; a sequence may name another key (a template over its trigger's data) and a larger
limit. Executions waiting for an approval, paused, or waiting out a delay or a retry's
backoff hold no slot. An execution that comes back from any of these queues again, keeping
its original trigger time, so it goes ahead of newer triggers.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.domain.execution import Execution


def grant(executions: Iterable[Execution], now: float) -> list[Execution]:
    """The executions of one key that should get a slot now, oldest first.

    First come, first served: the oldest waiting execution goes first, and a younger one
    never overtakes it, even if its own sequence allows a higher limit.
    """
    holders = 0
    waiting: list[Execution] = []
    for execution in executions:
        if execution.holds_slot:
            holders += 1
        elif execution.wants_slot(now):
            waiting.append(execution)
    chosen: list[Execution] = []
    for execution in sorted(waiting, key=lambda item: (item.triggered_at, item.id)):
        if holders >= execution.concurrency_limit:
            break
        chosen.append(execution)
        holders += 1
    return chosen


def is_blocked(execution: Execution, others: Iterable[Execution], now: float) -> bool:
    """True when ``execution`` wants a slot but must wait for others."""
    if not execution.wants_slot(now):
        return False
    chosen = grant([execution, *(other for other in others if other.id != execution.id)], now)
    return all(item.id != execution.id for item in chosen)
