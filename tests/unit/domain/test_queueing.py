from __future__ import annotations

from controlplane.domain import queueing
from controlplane.domain.execution import Execution, State
from controlplane.domain.queueing import is_blocked as blocked_at
from controlplane.domain.shipyard import Task
from tests.unit.domain.domain_kit import Run, new


def grant(executions: list[Execution]) -> Execution | None:
    """The first execution granted at time 0 (the default limit is one)."""
    chosen = queueing.grant(executions, 0.0)
    return chosen[0] if chosen else None


def is_blocked(execution: Execution, others: list[Execution]) -> bool:
    return blocked_at(execution, others, 0.0)


def queued(trigger_id: str, at: float) -> Execution:
    return new("t", trigger_id=trigger_id, now=at)


def in_state(trigger_id: str, at: float, state: State, **changes: object) -> Execution:
    return queued(trigger_id, at).evolve(state=state, **changes)


def test_nobody_waiting() -> None:
    assert grant([]) is None
    assert grant([in_state("a", 0, State.FINISHED), in_state("b", 1, State.ABORTED)]) is None


def test_fifo_by_trigger_time() -> None:
    executions = [queued("c", 3.0), queued("a", 1.0), queued("b", 2.0)]
    chosen = grant(executions)
    assert chosen is not None
    assert chosen.id == "a"
    assert not is_blocked(executions[1], executions)
    assert is_blocked(executions[0], executions)
    assert is_blocked(executions[2], executions)


def test_ties_are_broken_by_id() -> None:
    chosen = grant([queued("b", 1.0), queued("a", 1.0)])
    assert chosen is not None
    assert chosen.id == "a"


def test_a_started_execution_blocks_everyone() -> None:
    running = in_state("r", 5.0, State.STARTED)
    waiting = queued("w", 1.0)  # older, but the slot is taken
    assert grant([waiting, running]) is None
    assert is_blocked(waiting, [running])
    assert not is_blocked(running, [waiting])  # it does not want the slot


def test_waiting_for_approval_and_paused_do_not_block() -> None:
    approval = in_state("a", 0.0, State.WAITING_FOR_APPROVAL)
    paused = in_state("p", 0.0, State.PAUSED, state_before_pause=State.STARTED)
    newer = queued("n", 9.0)
    chosen = grant([approval, paused, newer])
    assert chosen is not None
    assert chosen.id == "n"
    assert not is_blocked(newer, [approval, paused])


def test_execution_back_from_approval_queues_by_original_trigger_time() -> None:
    back = in_state("old", 1.0, State.STARTED, awaiting_slot=True)
    assert back.wants_slot(0.0)
    assert not back.holds_slot
    newer = queued("new", 5.0)
    chosen = grant([newer, back])
    assert chosen is not None
    assert chosen.id == "old"
    # ...but it waits like anyone else while the slot is taken.
    holder = in_state("h", 9.0, State.STARTED)
    assert grant([back, newer, holder]) is None
    assert is_blocked(back, [newer, holder])


def test_terminal_executions_neither_block_nor_wait() -> None:
    done = [
        in_state(s, 0.0, st)
        for s, st in (("f", State.FINISHED), ("x", State.ABORTED), ("t", State.TIMED_OUT))
    ]
    w = queued("w", 3.0)
    chosen = grant([*done, w])
    assert chosen is not None
    assert chosen.id == "w"


def test_queue_handover_with_the_machine() -> None:
    """Two sequences for one service: the second runs once the first no longer holds the slot."""
    first, second = (
        Run(new("approval", "t", trigger_id="first", now=1.0, data={"result": "pass"})),
        Run(new("t", trigger_id="second", now=2.0)),
    )
    chosen = grant([first.execution, second.execution])
    assert chosen is not None
    assert chosen.id == "first"
    first.grant()
    assert first.execution.state == State.WAITING_FOR_APPROVAL
    chosen = grant([first.execution, second.execution])
    assert chosen is not None
    assert chosen.id == "second"
    second.grant()
    first.answer("human")  # approved: first now needs the slot back
    assert first.execution.awaiting_slot
    assert grant([first.execution, second.execution]) is None
    second.answer("done")
    chosen = grant([first.execution, second.execution])
    assert chosen is not None
    assert chosen.id == "first"


# ------------------------------------------------------------------ concurrency keys


def keyed(trigger_id: str, at: float, limit: int, state: State = State.TRIGGERED) -> Execution:
    return queued(trigger_id, at).evolve(
        concurrency_key="shared", concurrency_limit=limit, state=state
    )


def test_a_limit_above_one_grants_that_many_oldest_first() -> None:
    executions = [keyed(f"e{i}", float(10 - i), limit=3) for i in range(6)]
    chosen = queueing.grant(executions, 0.0)
    assert [e.id for e in chosen] == ["e5", "e4", "e3"]
    running = [e.evolve(state=State.STARTED) if e in chosen else e for e in executions]
    assert queueing.grant(running, 0.0) == []
    assert blocked_at(running[0], running, 0.0)


def test_a_younger_execution_never_overtakes_an_older_one_with_a_lower_limit() -> None:
    holder = keyed("h", 0.0, limit=1, state=State.STARTED)
    older = keyed("o", 1.0, limit=1)  # its sequence allows one: it must wait
    younger = keyed("y", 2.0, limit=5)  # its sequence would allow more, but it queues behind
    assert queueing.grant([holder, older, younger], 0.0) == []


def test_a_task_waiting_out_a_delay_holds_no_slot_and_asks_only_when_due() -> None:
    run = Run(new(Task("t", triggered_after=10.0), now=0.0))
    run.grant(now=0.0)
    assert run.execution.awaiting_slot
    assert not run.execution.holds_slot
    assert not run.execution.wants_slot(5.0)
    assert run.execution.wants_slot(10.0)
    other = queued("other", 3.0)
    assert [e.id for e in queueing.grant([run.execution, other], 5.0)] == ["other"]
