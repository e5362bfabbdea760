"""Deadlines, retries with backoff, pausing after errors and sequence timeouts, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import machine
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import State, TaskOutcome
from controlplane.domain.extensions import Backoff, Retry, TaskTimeouts
from controlplane.domain.machine import Rejection, TaskAnswered
from controlplane.domain.shipyard import Task
from tests.unit.domain.domain_kit import SCOPE, TIMEOUT, Run, chains, emits, new


def running(*tasks: str | Task, now: float = 0.0, timeout: float | None = None) -> Run:
    execution = new(*tasks, now=now)
    if timeout is not None:
        execution = execution.evolve(sequence=replace(execution.sequence, timeout=timeout))
    run = Run(execution)
    run.grant(now=now)
    return run


def beat(run: Run, event_id: str, now: float) -> None:
    run.feed(TaskAnswered(event_id, run.current_id, Phase.STATUS_CHANGED, "svc", {}), now=now)


# ------------------------------------------------------------------ task deadlines


def test_a_task_started_deadline_overrides_the_default() -> None:
    run = running(Task("deploy", timeout=TaskTimeouts(started=30.0)))
    assert machine.next_wakeup(run.execution, 0.0) == 30.0
    assert run.tick(29.0).commands == ()
    decision = run.tick(30.0)
    assert run.execution.state == State.TIMED_OUT
    assert "no answer within 30s" in emits(decision)[0].data["message"]


def test_a_started_task_that_never_finishes_times_out() -> None:
    run = running(Task("deploy", timeout=TaskTimeouts(finished=60.0)), "test")
    run.started("s1", now=10.0)
    assert machine.next_wakeup(run.execution, 10.0) == 70.0
    assert run.tick(69.0).commands == ()
    decision = run.tick(70.0)
    [finished] = emits(decision)
    assert (finished.data["status"], finished.data["result"]) == ("errored", "fail")
    assert "started but not finished in time" in finished.data["message"]
    assert "deadline 1970-01-01T00:01:10Z" in finished.data["message"]
    # The timed-out task's late .finished is refused, and "test" never ran.
    late = run.finished("late", now=71.0, triggered_id=run.execution.task_event_id(0))
    assert late.rejection == Rejection.TASK_ENDED
    assert [e.type for e in run.emits()].count("sh.keptn.event.test.triggered") == 0


def test_heartbeats_keep_a_long_task_alive() -> None:
    run = running(Task("deploy", timeout=TaskTimeouts(finished=20.0, heartbeat=15.0)))
    run.started("s1", now=0.0)
    for second in range(10, 100, 10):
        assert run.tick(float(second)).commands == ()
        beat(run, f"beat-{second}", float(second))
    assert machine.next_wakeup(run.execution, 90.0) == 105.0
    run.finished("f1", now=100.0)
    assert run.execution.state == State.FINISHED
    assert run.execution.result == "pass"


def test_a_silent_task_with_a_heartbeat_deadline_times_out() -> None:
    run = running(Task("deploy", timeout=TaskTimeouts(heartbeat=15.0)))
    run.started("s1", now=0.0)
    beat(run, "b1", 10.0)
    assert run.tick(24.0).commands == ()
    run.tick(25.0)
    assert run.execution.state == State.TIMED_OUT


def test_without_a_finished_deadline_a_started_task_may_run_for_ever() -> None:
    run = running("deploy")
    run.started("s1", now=1.0)
    assert machine.next_wakeup(run.execution, 1.0) is None
    assert run.tick(1e9).commands == ()


# ------------------------------------------------------------------ retries


def retrying(attempts: int = 3, on: frozenset[str] = frozenset({"errored", "timeout"})) -> Task:
    return Task(
        "deploy",
        retry=Retry(attempts=attempts, on=on, backoff=Backoff(initial=10.0, factor=2.0, max=15.0)),
    )


def test_an_errored_task_is_triggered_again_after_its_backoff() -> None:
    run = running(retrying(), "test")
    first_id = run.current_id
    [first] = run.emits()
    assert first.data["attempt"] == 1
    run.answer("a1", result="fail", status="errored", now=5.0)
    assert run.execution.state == State.STARTED
    assert run.execution.current is not None
    assert run.execution.current.attempt == 2
    assert run.execution.current.due_at == 15.0  # 10 s backoff
    assert not run.execution.holds_slot  # backing off frees the slot
    assert [a.attempt for a in run.execution.attempts] == [1]
    assert run.execution.attempts[0].status == "errored"
    assert run.tick(15.0).commands == ()
    [second] = emits(run.grant(15.0))
    assert second.type == "sh.keptn.event.deploy.triggered"
    assert second.id != first_id
    assert second.data["attempt"] == 2
    # A late answer to the first attempt is refused, not mixed into the second.
    late = run.finished("late", "pass", triggered_id=first_id, now=16.0)
    assert late.rejection == Rejection.TASK_ENDED
    run.answer("a2", now=20.0)
    assert run.execution.current is not None
    assert run.execution.current.name == "test"


def test_backoff_grows_by_its_factor_up_to_its_ceiling() -> None:
    run = running(retrying(attempts=4), "test")
    dues = []
    now = 0.0
    for attempt in range(1, 4):
        run.answer(f"a{attempt}", result="fail", status="errored", now=now)
        assert run.execution.current is not None
        dues.append(run.execution.current.due_at - now)
        now = run.execution.current.due_at
        run.grant(now)
    assert dues == [10.0, 15.0, 15.0]  # 10, 20 capped at 15, 40 capped at 15
    run.answer("a4", result="fail", status="errored", now=now)
    # Out of attempts: the sequence fails and chains on fail.
    assert run.execution.state == State.FINISHED
    assert (run.execution.status, run.execution.result) == ("errored", "fail")
    assert len(run.execution.attempts) == 3


def test_a_fail_result_is_retried_only_when_asked() -> None:
    run = running(retrying(), "test")
    run.answer("a1", result="fail", status="succeeded")
    assert run.execution.state == State.FINISHED  # a verdict, not an error: no retry
    run = running(retrying(on=frozenset({"fail"})), "test")
    run.answer("a1", result="fail", status="succeeded")
    assert run.execution.current is not None
    assert run.execution.current.attempt == 2


def test_a_timed_out_attempt_is_retried() -> None:
    task = replace(retrying(), timeout=TaskTimeouts(started=5.0))
    run = running(task)
    run.tick(5.0)
    assert run.execution.state == State.STARTED
    assert run.execution.attempts[0].timed_out
    assert "timed out" in run.execution.attempts[0].message
    assert run.execution.current is not None
    assert run.execution.current.attempt == 2


@settings(max_examples=200)
@given(
    initial=st.floats(0.0, 100.0),
    factor=st.floats(1.0, 5.0),
    ceiling=st.floats(0.0, 1000.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(1, 20),
    execution_id=st.text(min_size=1, max_size=10),
)
def test_backoff_stays_within_its_bounds(
    initial: float, factor: float, ceiling: float, jitter: float, attempt: int, execution_id: str
) -> None:
    ceiling = max(ceiling, initial)
    policy = Retry(attempts=20, backoff=Backoff(initial, factor, ceiling, jitter))
    delay = machine.backoff_delay(policy, execution_id, 0, attempt)
    base = min(ceiling, initial * factor ** (attempt - 1))
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    # Deterministic: a decision replayed after a crash waits exactly as long.
    assert delay == machine.backoff_delay(policy, execution_id, 0, attempt)


# ------------------------------------------------------------------ pause after errors


def test_pause_after_errors_hands_the_sequence_to_a_human() -> None:
    task = replace(retrying(attempts=5), pause_after_errors=2)
    run = running(task, "test")
    run.answer("a1", result="fail", status="errored", now=1.0)
    run.grant(11.0)
    decision = run.answer("a2", result="fail", status="errored", now=12.0)
    assert run.execution.state == State.PAUSED
    assert "paused after 2 failed attempt(s) of task 'deploy'" in decision.note
    assert not run.execution.holds_slot
    assert machine.next_wakeup(run.execution, 12.0) is None
    # A human resumes: the next attempt goes out as soon as a slot is won, without backoff.
    run.feed(machine.Resume(), now=100.0)
    [third] = emits(run.grant(100.0))
    assert third.data["attempt"] == 3
    run.answer("a3", now=101.0)
    assert run.execution.current is not None
    assert run.execution.current.name == "test"


def test_pause_after_errors_pauses_instead_of_failing_when_attempts_run_out() -> None:
    run = running(Task("deploy", pause_after_errors=3), "test")
    run.answer("a1", result="fail", status="errored")
    assert run.execution.state == State.PAUSED
    run.feed(machine.Abort(), now=5.0)
    assert run.execution.state == State.ABORTED


# ------------------------------------------------------------------ sequence timeout


def test_a_sequence_timeout_ends_the_current_task_and_chains_on_fail() -> None:
    run = running("deploy", "test", timeout=100.0)
    run.answer("a1", now=10.0)
    assert machine.next_wakeup(run.execution, 10.0) == 100.0
    decision = run.tick(100.0)
    assert run.execution.state == State.TIMED_OUT
    [finished] = emits(decision)
    assert "sequence 'delivery' timed out in task 'test'" in finished.data["message"]
    assert "within 1m40s" in finished.data["message"]
    [chain] = chains(decision.commands)
    assert chain.result == "fail"


def test_paused_time_does_not_count_against_the_sequence_timeout() -> None:
    run = running("deploy", timeout=100.0)
    run.started("s1", now=1.0)
    run.feed(machine.Pause(), now=50.0)
    assert machine.next_wakeup(run.execution, 50.0) is None
    assert run.tick(500.0).execution.state == State.PAUSED
    run.feed(machine.Resume(), now=1000.0)
    assert run.execution.deadline == 1050.0
    assert run.tick(1049.0).execution.state == State.STARTED
    run.tick(1050.0)
    assert run.execution.state == State.TIMED_OUT


def test_a_sequence_can_time_out_while_it_waits_in_the_queue() -> None:
    execution = new("deploy")
    execution = execution.evolve(sequence=replace(execution.sequence, timeout=30.0))
    run = Run(execution)  # never granted: another sequence holds the slot
    decision = run.tick(30.0)
    assert run.execution.state == State.TIMED_OUT
    assert "timed out: it did not finish" in emits(decision)[0].data["message"]


# ------------------------------------------------------------------ re-runs


def test_a_rerun_starts_at_the_task_after_the_carried_ones() -> None:
    carried = (TaskOutcome("deploy", "old-id", "pass", "succeeded", {"url": "http://x"}),)
    execution = machine.start(
        trigger_id="rerun-1",
        scope=SCOPE,
        sequence=new("deploy", "test").sequence,
        data={"project": "sockshop", "stage": "dev", "service": "carts"},
        now=0.0,
        task_started_timeout=TIMEOUT,
        carried=carried,
        rerun_of="old-context",
    )
    run = Run(execution)
    [sent] = emits(run.grant())
    assert sent.type == "sh.keptn.event.test.triggered"
    assert sent.data["url"] == "http://x"  # the carried task's output is there
    assert run.execution.rerun_of == "old-context"


@pytest.mark.parametrize("attempt", [1, 2, 7])
def test_every_attempt_has_its_own_stable_id(attempt: int) -> None:
    execution = new("deploy")
    ids = {execution.task_event_id(0, n) for n in range(1, 9)}
    assert len(ids) == 8
    assert execution.task_event_id(0, attempt) == execution.task_event_id(0, attempt)
