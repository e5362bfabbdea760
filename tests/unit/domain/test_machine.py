from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain import machine
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import State, derived_id
from controlplane.domain.machine import (
    Abort,
    Chain,
    Emit,
    Pause,
    Rejection,
    Resume,
    TaskAnswered,
)
from controlplane.domain.shipyard import Task
from tests.unit.domain.domain_kit import (
    SCOPE,
    TIMEOUT,
    Run,
    chains,
    emits,
    new,
    sequence_finished,
)

TRIGGER_DATA = {
    "project": "sockshop",
    "stage": "dev",
    "service": "carts",
    "labels": {"build": "7"},
    "configurationChange": {"values": {"image": "x:1"}},
}


def running(*tasks: str | Task, data: dict[str, Any] | None = None, now: float = 0.0) -> Run:
    run = Run(new(*tasks, data=data if data is not None else TRIGGER_DATA, now=now))
    run.grant(now)
    return run


# ------------------------------------------------------------------ the happy path


def test_a_new_execution_waits_for_its_slot() -> None:
    execution = new("checknumber")
    assert execution.state == State.TRIGGERED
    assert execution.wants_slot(0.0)
    assert not execution.holds_slot
    assert execution.current is None
    assert machine.next_wakeup(execution, 0.0) is None
    # Time alone does nothing before the slot is granted.
    decision = machine.decide(execution, machine.Tick(), now=100.0)
    assert decision.execution == execution
    assert decision.commands == ()


def test_single_task_flow() -> None:
    run = Run(new("checknumber", data=TRIGGER_DATA))
    granted = run.grant(now=1.0)
    assert run.execution.state == State.STARTED
    assert run.execution.holds_slot
    [triggered] = emits(granted)
    assert triggered.type == "sh.keptn.event.checknumber.triggered"
    assert triggered.id == run.execution.task_event_id(0) == run.current_id
    assert triggered.keptn_context == SCOPE.keptn_context
    assert triggered.triggered_id == ""  # task .triggered events have no triggeredid
    assert triggered.gitcommitid == "commit-1"
    assert triggered.source == "shipyard-controller"
    assert triggered.data == TRIGGER_DATA
    assert run.execution.current is not None
    assert run.execution.current.sent_at == 1.0

    assert run.started("s1", now=2.0).commands == ()
    assert run.execution.state == State.STARTED
    done = run.finished("f1", "pass", "succeeded", now=3.0, message="the number is fine")
    assert run.execution.state == State.FINISHED
    assert (run.execution.result, run.execution.status) == ("pass", "succeeded")
    assert run.execution.ended_at == 3.0
    assert not run.execution.holds_slot
    assert not run.execution.wants_slot(0.0)
    [finished] = sequence_finished(done.commands)
    assert finished.type == "sh.keptn.event.dev.delivery.finished"
    assert finished.triggered_id == "trigger-1"
    assert finished.keptn_context == SCOPE.keptn_context
    assert finished.data == {
        "project": "sockshop",
        "stage": "dev",
        "service": "carts",
        "status": "succeeded",
        "result": "pass",
        "message": "the number is fine",
        "labels": {"build": "7"},
    }
    [chain] = chains(done.commands)
    assert chain == Chain("trigger-1", "dev", "delivery", "pass", "checknumber", chain.data)
    assert machine.next_wakeup(run.execution, 0.0) is None


def test_finished_event_without_labels_has_no_labels_key() -> None:
    run = running("t", data={"project": "sockshop", "stage": "dev", "service": "carts"})
    done = run.answer("e")
    [finished] = sequence_finished(done.commands)
    assert set(finished.data) == {"project", "stage", "service", "status", "result", "message"}


def test_several_tasks_merge_data_into_the_next() -> None:
    run = running(
        Task("deployment", properties={"deploymentstrategy": "direct"}),
        Task("test", properties={"teststrategy": "functional"}),
        "release",
    )
    [first] = run.emits()
    assert first.data["deployment"] == {"deploymentstrategy": "direct"}
    assert "result" not in first.data
    decision = run.answer("d", deployment={"deploymentURIsLocal": ["http://a"]}, message="deployed")
    [second] = emits(decision)
    assert second.type == "sh.keptn.event.test.triggered"
    assert second.id == run.execution.task_event_id(1)
    # A task's shipyard properties go to that task only; its output flows on.
    assert second.data["deployment"] == {"deploymentURIsLocal": ["http://a"]}
    assert second.data["test"] == {"teststrategy": "functional"}
    assert (second.data["result"], second.data["status"]) == ("pass", "succeeded")
    assert second.data["message"] == ""
    assert second.data["configurationChange"] == {"values": {"image": "x:1"}}
    decision = run.answer("t", "warning", test={"start": "1", "end": "2"})
    [third] = emits(decision)
    assert third.type == "sh.keptn.event.release.triggered"
    assert third.data["result"] == "warning"
    assert third.data["test"] == {"start": "1", "end": "2"}
    done = run.answer("r", "pass")
    # The sequence ends with the LAST task's result, not the worst one.
    assert (run.execution.result, run.execution.status) == ("pass", "succeeded")
    [chain] = chains(done.commands)
    assert chain.result == "pass"
    assert chain.last_task == "release"
    # Chaining carries everything merged, blanked message, no next-task properties.
    assert chain.data["deployment"]["deploymentURIsLocal"] == ["http://a"]
    assert chain.data["test"] == {"start": "1", "end": "2"}
    assert chain.data["labels"] == {"build": "7"}
    assert chain.data["message"] == ""
    assert [o.name for o in run.execution.previous] == ["deployment", "test", "release"]


@pytest.mark.parametrize(
    ("result", "status", "final_result", "final_status"),
    [
        ("fail", "succeeded", "fail", "succeeded"),
        ("pass", "errored", "pass", "errored"),
        ("fail", "errored", "fail", "errored"),
        ("pass", "whatever", "fail", "unknown"),
        ("", "succeeded", "fail", "succeeded"),
    ],
)
def test_fail_errored_or_unknown_stop_the_sequence(
    result: str, status: str, final_result: str, final_status: str
) -> None:
    run = running("deployment", "test")
    done = run.answer("d", result, status)
    assert run.execution.state == State.FINISHED
    assert (run.execution.result, run.execution.status) == (final_result, final_status)
    assert "sh.keptn.event.test.triggered" not in run.emitted_types()
    [finished] = sequence_finished(done.commands)
    assert (finished.data["result"], finished.data["status"]) == (final_result, final_status)
    # A normal end chains even when it failed: selectors decide (e.g. rollback on fail).
    [chain] = chains(done.commands)
    assert (chain.result, chain.last_task) == (final_result, "deployment")


@pytest.mark.parametrize(("result", "status"), [("warning", "succeeded"), ("pass", "aborted")])
def test_warning_and_aborted_status_continue(result: str, status: str) -> None:
    run = running("evaluation", "release")
    decision = run.answer("e", result, status)
    assert [e.type for e in emits(decision)] == ["sh.keptn.event.release.triggered"]
    assert run.execution.state == State.STARTED


def test_last_task_result_is_the_sequence_result() -> None:
    run = running("a", "b")
    run.answer("a", "pass")
    done = run.answer("b", "fail")
    assert run.execution.result == "fail"
    assert chains(done.commands)[0].last_task == "b"


# -------------------------------------------------------- counting the answers


def test_finished_before_started_waits_for_the_started() -> None:
    run = running("t")
    assert run.finished("f1").commands == ()
    assert run.execution.state == State.STARTED
    assert run.execution.current is not None
    assert not run.execution.current.complete
    done = run.started("s1")
    assert run.execution.state == State.FINISHED
    assert len(sequence_finished(done.commands)) == 1


def test_two_started_one_finished_is_not_complete() -> None:
    run = running("t", "next")
    run.started("s1")
    run.started("s2")
    assert run.finished("f1").commands == ()
    assert run.execution.current is not None
    assert run.execution.current.name == "t"
    decision = run.finished("f2", "warning")
    assert [e.type for e in emits(decision)] == ["sh.keptn.event.next.triggered"]
    assert run.execution.previous[-1].result == "warning"


def test_only_started_never_completes() -> None:
    run = running("t")
    run.started("s1")
    run.started("s2")
    assert run.execution.state == State.STARTED
    # ...and an answered task never times out.
    assert machine.next_wakeup(run.execution, 0.0) is None
    assert run.tick(10 * TIMEOUT).commands == ()
    assert run.execution.state == State.STARTED


def test_duplicate_answers_are_no_ops() -> None:
    run = running("t")
    run.started("s1")
    before = run.execution
    decision = run.started("s1")
    assert decision.execution == before
    assert decision.commands == ()
    assert decision.note == "duplicate answer"
    assert decision.rejection is None
    run.started("s2")
    run.finished("f1")
    before = run.execution
    # A repeated .finished does not count twice (it would complete the task).
    decision = run.finished("f1")
    assert decision.execution == before
    assert decision.commands == ()
    assert run.execution.state == State.STARTED


def test_status_changed_only_marks_the_task_as_answered() -> None:
    run = running("t")
    before = run.execution
    decision = run.feed(TaskAnswered("c1", run.current_id, Phase.STATUS_CHANGED, "svc", {}))
    assert decision.commands == ()
    assert decision.rejection is None
    assert decision.execution.current is not None
    assert decision.execution.current.answers == ()
    assert decision.execution.current.heard_at is not None
    # Keptn's rule: any event carrying the task's id means somebody answered, so the
    # "nobody answered" timeout no longer applies (reference 4.10).
    assert machine.next_wakeup(before, 0.0) is not None
    assert machine.next_wakeup(decision.execution, 0.0) is None


def test_answers_to_an_ended_task_are_rejected() -> None:
    run = running("a", "b")
    first = run.current_id
    run.answer("a")
    late = run.started("late", triggered_id=first)
    assert late.rejection == Rejection.TASK_ENDED
    assert late.commands == ()
    run.answer("b")
    assert run.execution.state == State.FINISHED
    for triggered_id in (first, run.execution.task_event_id(1)):
        decision = run.finished("late-f", triggered_id=triggered_id)
        assert decision.rejection == Rejection.TASK_ENDED
        assert decision.commands == ()


def test_answers_to_an_unknown_task_are_rejected() -> None:
    run = running("a", "b")
    decision = run.started("x", triggered_id="no-such-task")
    assert decision.rejection == Rejection.UNKNOWN_TASK
    assert decision.execution == run.decisions[0].execution
    # The id of a task that has not been triggered yet is unknown too.
    decision = run.started("y", triggered_id=run.execution.task_event_id(1))
    assert decision.rejection == Rejection.UNKNOWN_TASK
    # Before the slot: no task at all.
    waiting = Run(new("a"))
    assert waiting.started("z", triggered_id="anything").rejection == Rejection.UNKNOWN_TASK


# ---------------------------------------------------------------- triggeredAfter


def test_triggered_after_delays_the_task_and_frees_the_slot_meanwhile() -> None:
    run = running(Task("t", triggered_after=10.0), now=100.0)
    assert run.emits() == []
    assert run.execution.current is not None
    assert run.execution.current.due_at == 110.0
    assert run.execution.current.sent_at is None
    # Waiting out the delay holds no slot: another sequence of the service may run.
    assert not run.execution.holds_slot
    assert not run.execution.wants_slot(105.0)
    assert machine.next_wakeup(run.execution, 100.0) == 110.0
    assert run.tick(105.0).commands == ()
    # Due: it asks for a slot again, and the task goes out once the queue grants one.
    assert run.tick(110.0).commands == ()
    assert run.execution.wants_slot(110.0)
    assert machine.next_wakeup(run.execution, 110.0) is None  # the queue decides now
    [sent] = emits(run.grant(now=110.0))
    assert sent.type == "sh.keptn.event.t.triggered"
    assert run.execution.current is not None
    assert run.execution.current.sent_at == 110.0
    assert run.execution.holds_slot
    # Now the task-started timeout runs, from the time it was sent.
    assert machine.next_wakeup(run.execution, 110.0) == 110.0 + TIMEOUT
    assert run.tick(111.0).commands == ()


def test_a_late_grant_sends_once() -> None:
    run = running(Task("t", triggered_after=10.0))
    assert len(emits(run.grant(50.0))) == 1
    assert run.tick(60.0).commands == ()
    assert run.grant(61.0).commands == ()
    assert len(run.emits()) == 1


def test_delay_of_a_later_task_counts_from_the_previous_task_end() -> None:
    run = running("a", Task("b", triggered_after=30.0))
    run.answer("a", now=20.0)
    assert run.execution.current is not None
    assert run.execution.current.due_at == 50.0
    assert machine.next_wakeup(run.execution, 20.0) == 50.0
    assert run.tick(49.0).commands == ()
    assert [e.type for e in emits(run.grant(50.0))] == ["sh.keptn.event.b.triggered"]


# ---------------------------------------------------------------------- timeouts


def test_unanswered_task_times_out_and_the_sequence_chains_on_fail() -> None:
    run = running("deployment", "test", now=0.0)
    assert machine.next_wakeup(run.execution, 0.0) == TIMEOUT
    assert run.tick(TIMEOUT - 1).commands == ()
    decision = run.tick(TIMEOUT)
    assert run.execution.state == State.TIMED_OUT
    assert (run.execution.status, run.execution.result) == ("errored", "fail")
    # Unlike Keptn, a timeout follows the normal rules: sequences triggered on fail run.
    [chain] = chains(decision.commands)
    assert (chain.result, chain.last_task) == ("fail", "deployment")
    [finished] = emits(decision)
    assert finished.type == "sh.keptn.event.dev.delivery.finished"
    assert finished.triggered_id == "trigger-1"
    assert (finished.data["status"], finished.data["result"]) == ("errored", "fail")
    message = finished.data["message"]
    assert "task 'deployment' timed out" in message
    assert "sh.keptn.event.deployment.triggered" in message
    assert "within 10m" in message
    assert "deadline 1970-01-01T00:10:00Z" in message
    # Terminal: later answers are refused, ticks do nothing.
    late = run.started("late", triggered_id=run.execution.task_event_id(0))
    assert late.rejection == Rejection.TASK_ENDED
    assert run.tick(10 * TIMEOUT).commands == ()
    assert machine.next_wakeup(run.execution, 0.0) is None
    assert not run.execution.holds_slot


def test_timeout_counts_from_when_the_task_was_sent() -> None:
    run = running(Task("t", triggered_after=100.0))
    run.grant(250.0)  # sent late
    assert machine.next_wakeup(run.execution, 250.0) == 250.0 + TIMEOUT
    assert run.tick(100.0 + TIMEOUT).commands == ()
    assert run.execution.state == State.STARTED
    assert emits(run.tick(250.0 + TIMEOUT))[0].data["result"] == "fail"
    assert run.execution.state == State.TIMED_OUT


@pytest.mark.parametrize("phase", ["started", "finished"])
def test_any_answer_stops_the_timeout(phase: str) -> None:
    run = running("t")
    if phase == "started":
        run.started("s1", now=5.0)
    else:
        run.finished("f1", now=5.0)  # a lone .finished: the task cannot complete, yet answered
    assert machine.next_wakeup(run.execution, 0.0) is None
    assert run.tick(100 * TIMEOUT).commands == ()
    assert run.execution.state == State.STARTED


def test_status_changed_alone_stops_the_timeout() -> None:
    # Keptn timed out only if NOTHING carrying the task's id arrived (reference 4.10).
    run = running("t")
    run.feed(TaskAnswered("c", run.current_id, Phase.STATUS_CHANGED, "svc", {}))
    assert run.tick(TIMEOUT).execution.state == State.STARTED


# ---------------------------------------------------------------------- approval


def approval_task(pass_: str = "automatic", warning: str = "manual") -> Task:
    return Task("approval", properties={"pass": pass_, "warning": warning})


def test_approval_waits_without_holding_the_slot() -> None:
    run = running("evaluation", approval_task(), "release")
    decision = run.answer("e", "warning")
    assert run.execution.state == State.WAITING_FOR_APPROVAL
    assert not run.execution.holds_slot
    assert not run.execution.wants_slot(0.0)
    [triggered] = emits(decision)
    assert triggered.type == "sh.keptn.event.approval.triggered"
    assert triggered.data["approval"] == {"pass": "automatic", "warning": "manual"}
    assert triggered.data["result"] == "warning"
    answers = machine.approval_answers(triggered)
    assert [a.phase for a in answers] == [Phase.STARTED]  # warning is manual here
    for answer in answers:
        run.feed(answer)
    assert run.execution.state == State.WAITING_FOR_APPROVAL
    # A human approves.
    decision = run.finished("human", "pass", "succeeded", source="user")
    # The next normal task needs the slot again.
    assert decision.commands == ()
    assert run.execution.state == State.STARTED
    assert run.execution.awaiting_slot
    assert run.execution.wants_slot(0.0)
    assert not run.execution.holds_slot
    assert machine.next_wakeup(run.execution, 0.0) is None
    granted = run.grant(now=5.0)
    assert [e.type for e in emits(granted)] == ["sh.keptn.event.release.triggered"]
    assert run.execution.holds_slot
    assert not run.execution.awaiting_slot
    assert emits(granted)[0].data["result"] == "pass"


def test_automatic_approval_flows_through() -> None:
    run = running("evaluation", approval_task(), "release")
    decision = run.answer("e", "pass")
    [triggered] = emits(decision)
    for answer in machine.approval_answers(triggered):
        run.feed(answer)
    assert run.execution.previous[-1].name == "approval"
    assert run.execution.previous[-1].result == "pass"
    assert run.execution.awaiting_slot


def test_declined_approval_fails_the_sequence() -> None:
    run = running(approval_task(), "release", data={"result": "pass"})
    assert run.execution.state == State.WAITING_FOR_APPROVAL
    run.started("s")
    done = run.finished("human", "fail", "succeeded")
    assert run.execution.state == State.FINISHED
    assert run.execution.result == "fail"
    assert "sh.keptn.event.release.triggered" not in run.emitted_types()
    assert chains(done.commands)[0].last_task == "approval"


def test_approval_as_last_task_finishes_the_sequence() -> None:
    run = running("evaluation", approval_task())
    [triggered] = emits(run.answer("e", "pass"))
    for answer in machine.approval_answers(triggered):
        run.feed(answer)
    assert run.execution.state == State.FINISHED
    assert len(sequence_finished(run.commands())) == 1


def test_two_approvals_in_a_row_do_not_need_the_slot() -> None:
    run = running(approval_task(), approval_task(), data={"result": "pass"})
    [first] = run.emits()
    for answer in machine.approval_answers(first):
        run.feed(answer)
    assert run.execution.state == State.WAITING_FOR_APPROVAL
    assert run.emitted_types()[-1] == "sh.keptn.event.approval.triggered"
    assert len(run.emits()) == 2


def approval_emit(data: dict[str, Any]) -> Emit:
    return Emit(
        id="approval-1",
        type="sh.keptn.event.approval.triggered",
        keptn_context="c",
        data={"project": "p", "stage": "s", "service": "v", **data},
    )


@pytest.mark.parametrize(
    ("pass_", "warning", "result", "verdict"),
    [
        ("automatic", "automatic", "pass", "pass"),
        ("automatic", "automatic", "warning", "pass"),
        ("automatic", "automatic", "fail", "fail"),
        ("manual", "automatic", "pass", None),
        ("manual", "automatic", "warning", "pass"),
        ("manual", "automatic", "fail", "fail"),
        ("automatic", "manual", "pass", "pass"),
        ("automatic", "manual", "warning", None),
        ("automatic", "manual", "fail", "fail"),
        ("manual", "manual", "pass", None),
        ("manual", "manual", "warning", None),
        ("manual", "manual", "fail", "fail"),
    ],
)
def test_approval_answers_table(pass_: str, warning: str, result: str, verdict: str | None) -> None:
    triggered = approval_emit({"result": result, "approval": {"pass": pass_, "warning": warning}})
    answers = machine.approval_answers(triggered)
    started = answers[0]
    assert started.phase == Phase.STARTED
    assert started.triggered_id == "approval-1"
    assert started.source == "approval-service"
    assert started.data is not None
    assert started.data["status"] == "succeeded"
    assert started.data["message"].startswith(f"Approval strategy for result '{result}'")
    if verdict is None:
        assert len(answers) == 1
        return
    assert len(answers) == 2
    finished = answers[1]
    assert finished.phase == Phase.FINISHED
    assert finished.triggered_id == "approval-1"
    assert finished.event_id != started.event_id
    assert finished.data is not None
    assert (finished.data["result"], finished.data["status"]) == (verdict, "succeeded")
    assert (finished.data["project"], finished.data["stage"]) == ("p", "s")


@pytest.mark.parametrize("data", [{}, {"result": ""}, {"evaluation": {"score": 3}}])
def test_approval_without_result_only_starts(data: dict[str, Any]) -> None:
    triggered = approval_emit({**data, "approval": {"pass": "automatic", "warning": "automatic"}})
    answers = machine.approval_answers(triggered)
    assert [a.phase for a in answers] == [Phase.STARTED]


def test_approval_falls_back_to_the_evaluation_result() -> None:
    triggered = approval_emit(
        {"evaluation": {"result": "pass"}, "approval": {"pass": "automatic", "warning": "manual"}}
    )
    answers = machine.approval_answers(triggered)
    assert answers[-1].data is not None
    assert answers[-1].data["result"] == "pass"


def test_approval_unset_strategy_is_manual() -> None:
    assert len(machine.approval_answers(approval_emit({"result": "pass"}))) == 1
    assert (
        len(
            machine.approval_answers(
                approval_emit({"result": "warning", "approval": {"pass": "automatic"}})
            )
        )
        == 1
    )


def test_approval_answers_are_deterministic() -> None:
    triggered = approval_emit({"result": "pass", "approval": {"pass": "automatic"}})
    assert machine.approval_answers(triggered) == machine.approval_answers(triggered)


# ------------------------------------------------------------ pause/resume/abort


def test_pause_and_resume_a_queued_execution() -> None:
    run = Run(new("t"))
    run.feed(Pause())
    assert run.execution.state == State.PAUSED
    assert run.execution.state_before_pause == State.TRIGGERED
    assert not run.execution.wants_slot(0.0)
    assert not run.execution.holds_slot
    assert run.grant().commands == ()
    assert run.execution.state == State.PAUSED
    assert run.feed(Pause()).note == "already paused"
    run.feed(Resume())
    assert run.execution.state == State.TRIGGERED
    assert run.execution.wants_slot(0.0)
    assert emits(run.grant())[0].type == "sh.keptn.event.t.triggered"


def test_an_execution_can_start_paused() -> None:
    execution = new("t", paused=True)
    assert execution.state == State.PAUSED
    assert execution.state_before_pause == State.TRIGGERED
    run = Run(execution)
    run.feed(Resume())
    assert run.execution.state == State.TRIGGERED


def test_pause_lets_the_running_task_finish_but_parks_the_next() -> None:
    run = running("task1", "task2")
    run.started("s1")
    run.feed(Pause())
    assert run.execution.state == State.PAUSED
    assert run.execution.state_before_pause == State.STARTED
    assert not run.execution.holds_slot
    decision = run.finished("f1")
    assert decision.commands == ()  # no task2.triggered while paused
    assert run.execution.state == State.PAUSED
    assert run.execution.current is not None
    assert run.execution.current.name == "task2"
    assert machine.next_wakeup(run.execution, 0.0) is None
    assert run.tick(1000.0).commands == ()
    # Resume: it must win the slot back before task2 goes out.
    assert run.feed(Resume(), now=1000.0).commands == ()
    assert run.execution.state == State.STARTED
    assert run.execution.awaiting_slot
    assert [e.type for e in emits(run.grant(1001.0))] == ["sh.keptn.event.task2.triggered"]


def test_pause_and_resume_in_waiting_for_approval() -> None:
    run = running("approval", data={"result": "pass"})
    run.feed(Pause())
    assert run.execution.state_before_pause == State.WAITING_FOR_APPROVAL
    run.feed(Resume())
    assert run.execution.state == State.WAITING_FOR_APPROVAL
    assert not run.execution.awaiting_slot


def test_pause_before_a_delayed_task_is_sent_parks_it() -> None:
    run = running(Task("t", triggered_after=10.0))
    run.feed(Pause(), now=1.0)
    assert run.tick(20.0).commands == ()
    assert machine.next_wakeup(run.execution, 0.0) is None
    run.feed(Resume(), now=21.0)
    assert [e.type for e in emits(run.grant(22.0))] == ["sh.keptn.event.t.triggered"]


def test_resume_when_not_paused_is_a_no_op() -> None:
    run = running("t")
    before = run.execution
    decision = run.feed(Resume())
    assert decision.execution == before
    assert decision.commands == ()


@pytest.mark.parametrize("where", ["triggered", "started", "approval", "paused", "delayed"])
def test_abort_ends_live_executions(where: str) -> None:
    if where == "triggered":
        run = Run(new("t", data=TRIGGER_DATA))
    elif where == "approval":
        run = running("approval", data={**TRIGGER_DATA, "result": "pass"})
    elif where == "delayed":
        run = running(Task("t", triggered_after=50.0))
    else:
        run = running("t", "u")
        run.started("s1")
        if where == "paused":
            run.feed(Pause())
    decision = run.feed(Abort(), now=9.0)
    assert run.execution.state == State.ABORTED
    assert run.execution.ended_at == 9.0
    assert not run.execution.holds_slot
    assert not run.execution.wants_slot(0.0)
    [finished] = emits(decision)
    assert chains(decision.commands) == []
    assert finished.type == "sh.keptn.event.dev.delivery.finished"
    assert finished.triggered_id == "trigger-1"
    assert (finished.data["status"], finished.data["result"]) == ("aborted", "pass")
    # Absorbing: no more events, ever.
    assert run.feed(Abort()).commands == ()
    assert run.tick(10_000.0).commands == ()
    assert run.grant().commands == ()
    assert run.feed(Resume()).commands == ()
    assert run.execution.state == State.ABORTED
    if run.execution.current is not None:
        late = run.finished("late", triggered_id=run.execution.current.triggered_id)
        assert late.rejection == Rejection.TASK_ENDED
    assert len(sequence_finished(run.commands())) == 1


def test_abort_does_not_touch_a_finished_execution() -> None:
    run = running("t")
    run.answer("e")
    finished = run.execution
    decision = run.feed(Abort())
    assert decision.execution == finished
    assert decision.commands == ()
    assert finished.state == State.FINISHED


def test_pause_of_an_ended_execution_is_a_no_op() -> None:
    run = running("t")
    run.answer("e")
    assert run.feed(Pause()).execution.state == State.FINISHED


def test_the_last_answer_while_paused_still_finishes_the_sequence() -> None:
    run = running("t")
    run.started("s")
    run.feed(Pause())
    done = run.finished("f")
    assert run.execution.state == State.FINISHED
    assert len(sequence_finished(done.commands)) == 1


# ---------------------------------------------------------------- reject_trigger


def test_reject_trigger_emits_errored_fail() -> None:
    decision = machine.reject_trigger(
        trigger_id="t-1",
        scope=SCOPE,
        sequence_name="nosuch",
        now=4.0,
        data={"project": "sockshop", "stage": "dev", "service": "carts", "labels": {"a": "b"}},
        message="sequence 'nosuch' is not defined in stage 'dev'",
    )
    execution = decision.execution
    assert execution.state == State.FINISHED
    assert execution.state.terminal
    assert (execution.status, execution.result) == ("errored", "fail")
    assert execution.ended_at == 4.0
    [finished] = decision.commands
    assert isinstance(finished, Emit)
    assert finished.type == "sh.keptn.event.dev.nosuch.finished"
    assert finished.triggered_id == "t-1"
    assert finished.data == {
        "project": "sockshop",
        "stage": "dev",
        "service": "carts",
        "status": "errored",
        "result": "fail",
        "message": "sequence 'nosuch' is not defined in stage 'dev'",
        "labels": {"a": "b"},
    }
    assert machine.decide(execution, Abort(), now=5.0).commands == ()


# ---------------------------------------------------------------- determinism


def test_emitted_ids_are_a_function_of_the_execution() -> None:
    first, second = running("a", "b"), running("a", "b")
    first.answer("x")
    second.answer("x")
    first.answer("y")
    second.answer("y")
    assert [e.id for e in first.emits()] == [e.id for e in second.emits()]
    assert sequence_finished(first.commands())[0].id == derived_id("trigger-1", "finished")
    assert len({e.id for e in first.emits()}) == 3


def test_sequence_snapshot_is_kept() -> None:
    run = running("a", "b")
    assert [t.name for t in run.execution.sequence.tasks] == ["a", "b"]
    assert run.execution.name == "delivery"
    assert machine.task_outcome_summary(machine.aggregate("a", "i", ())) == "a: fail/unknown"


def test_counting_ignores_sources_like_keptn() -> None:
    # Executor A's .finished overtakes its .started, and B's .started arrives: 1 == 1, so the
    # task completes although B is still working (reference 4.5: the source is not
    # considered). B's later answers are refused as late.
    run = running("t", "next")
    run.finished("a-f", source="a")
    decision = run.started("b-s", source="b")
    assert [e.type for e in emits(decision)] == ["sh.keptn.event.next.triggered"]
    late = run.started("a-s", source="a", triggered_id=run.execution.task_event_id(0))
    assert late.rejection == Rejection.TASK_ENDED
