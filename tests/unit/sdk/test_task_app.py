from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from tasksdk import (
    AlreadyFinished,
    RegistrationError,
    Result,
    Status,
    TaskApp,
    TaskContext,
    TaskErrored,
    TaskFailed,
    contract,
)
from tasksdk.testing import TaskEnvironment, finished_data
from tasksdk.transports.memory import MemoryTransport

STARTED = "sh.keptn.event.checknumber.started"
STATUS_CHANGED = "sh.keptn.event.checknumber.status.changed"
FINISHED = "sh.keptn.event.checknumber.finished"


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def app_with(handler: Any, **options: Any) -> TaskApp:
    app = TaskApp("checknumber-service")
    app.task("checknumber", **options)(handler)
    return app


async def count_digits(ctx: TaskContext) -> dict[str, Any]:
    return {"checknumber": {"digits": len(str(ctx.properties["number"]))}}


async def test_answers_started_then_finished_with_the_handler_data_merged() -> None:
    env = TaskEnvironment(app_with(count_digits))

    events = await env.trigger(
        "checknumber",
        data={"checknumber": {"number": 12345}},
        labels={"owner": "team-a"},
        event_id="T1",
        shkeptncontext="C1",
        gitcommitid="abc",
    )

    assert types(events) == [STARTED, FINISHED]
    for event in events:
        assert event["source"] == "checknumber-service"
        assert event["triggeredid"] == "T1"
        assert event["shkeptncontext"] == "C1"
        assert event["gitcommitid"] == "abc"
        assert event["specversion"] == "1.0"
        assert event["shkeptnspecversion"] == "0.2.4"
        assert event["datacontenttype"] == "application/json"
    assert events[0]["data"] == {
        "project": "project",
        "stage": "dev",
        "service": "service",
        "labels": {"owner": "team-a"},
    }
    assert finished_data(events) == {
        "project": "project",
        "stage": "dev",
        "service": "service",
        "labels": {"owner": "team-a"},
        "checknumber": {"digits": 5},
        "status": "succeeded",
        "result": "pass",
    }
    assert env.events == events


async def test_a_handler_returning_none_finishes_with_succeeded_and_pass() -> None:
    async def nothing(ctx: TaskContext) -> None:
        return None

    data = finished_data(await TaskEnvironment(app_with(nothing)).trigger("checknumber"))

    assert (data["status"], data["result"]) == ("succeeded", "pass")
    assert "message" not in data


async def test_returned_status_result_and_message_override_the_defaults() -> None:
    async def warn(ctx: TaskContext) -> dict[str, Any]:
        return {"status": Status.SUCCEEDED, "result": Result.WARNING, "message": "slow"}

    data = finished_data(await TaskEnvironment(app_with(warn)).trigger("checknumber"))

    assert (data["status"], data["result"], data["message"]) == ("succeeded", "warning", "slow")


async def test_sync_handlers_run_in_a_worker_thread() -> None:
    threads: list[threading.Thread] = []

    def blocking(ctx: TaskContext) -> Mapping[str, Any]:
        threads.append(threading.current_thread())
        return {"checknumber": {"project": ctx.project}}

    events = await TaskEnvironment(app_with(blocking)).trigger("checknumber", project="p")

    assert finished_data(events)["checknumber"] == {"project": "p"}
    assert threads
    assert threads[0] is not threading.main_thread()


async def test_async_callable_objects_are_awaited() -> None:
    class Handler:
        async def __call__(self, ctx: TaskContext) -> dict[str, Any]:
            return {"checknumber": {"thread": threading.current_thread().name}}

    events = await TaskEnvironment(app_with(Handler())).trigger("checknumber")

    assert finished_data(events)["checknumber"] == {"thread": threading.main_thread().name}


async def test_context_exposes_the_triggered_event() -> None:
    seen: list[TaskContext] = []

    async def remember(ctx: TaskContext) -> None:
        seen.append(ctx)

    await TaskEnvironment(app_with(remember)).trigger(
        "checknumber",
        data={"checknumber": {"number": 7}, "deployment": {"image": "x:1"}},
        project="sockshop",
        stage="prod",
        service="carts",
        event_id="T9",
        shkeptncontext="C9",
    )

    (ctx,) = seen
    assert ctx.task == "checknumber"
    assert ctx.properties == {"number": 7}
    assert ctx.data["deployment"] == {"image": "x:1"}
    assert (ctx.project, ctx.stage, ctx.service) == ("sockshop", "prod", "carts")
    assert ctx.keptn_context == "C9"
    assert ctx.event.id == "T9"
    assert ctx.finished


async def test_properties_are_empty_when_the_task_slot_is_not_an_object() -> None:
    seen: list[Mapping[str, Any]] = []

    async def remember(ctx: TaskContext) -> None:
        seen.append(ctx.properties)

    await TaskEnvironment(app_with(remember)).trigger("checknumber", data={"checknumber": 3})

    assert seen == [{}]


async def test_task_failed_finishes_succeeded_with_result_fail() -> None:
    async def fail(ctx: TaskContext) -> None:
        raise TaskFailed("number too small", data={"checknumber": {"digits": 1}})

    data = finished_data(await TaskEnvironment(app_with(fail)).trigger("checknumber"))

    assert data["status"] == "succeeded"
    assert data["result"] == "fail"
    assert data["message"] == "number too small"
    assert data["checknumber"] == {"digits": 1}


async def test_task_errored_finishes_errored_with_result_fail() -> None:
    async def error(ctx: TaskContext) -> None:
        raise TaskErrored("backend unreachable")

    data = finished_data(await TaskEnvironment(app_with(error)).trigger("checknumber"))

    assert (data["status"], data["result"], data["message"]) == (
        "errored",
        "fail",
        "backend unreachable",
    )


async def test_outcome_exceptions_default_to_their_docstring() -> None:
    async def fail(ctx: TaskContext) -> None:
        raise TaskFailed()

    data = finished_data(await TaskEnvironment(app_with(fail)).trigger("checknumber"))

    assert data["message"] == "The task ran and its outcome is a failure."


async def test_any_other_exception_finishes_errored_with_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash(ctx: TaskContext) -> None:
        raise KeyError("number")

    async def bare(ctx: TaskContext) -> None:
        raise RuntimeError

    crashed = finished_data(await TaskEnvironment(app_with(crash)).trigger("checknumber"))
    bared = finished_data(await TaskEnvironment(app_with(bare)).trigger("checknumber"))

    assert (crashed["status"], crashed["result"], crashed["message"]) == (
        "errored",
        "fail",
        "'number'",
    )
    assert bared["message"] == "RuntimeError"
    assert any(r.name == "tasksdk.runner" and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        ({"result": "failed"}, "invalid answer: invalid result 'failed'"),
        ({"status": "done"}, "invalid answer: invalid status 'done'"),
        ({"checknumber": {1, 2}}, "invalid answer: Object of type set"),
        ({"score": float("inf")}, "invalid answer: Out of range float"),
        ([1, 2], "the handler returned list, expected a mapping or None"),
    ],
)
async def test_answers_that_break_the_contract_finish_errored(
    returned: object, reason: str
) -> None:
    async def bad(ctx: TaskContext) -> object:
        return returned

    events = await TaskEnvironment(app_with(bad)).trigger("checknumber")

    data = finished_data(events)
    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["message"].startswith(reason)


@pytest.mark.parametrize(
    ("filters", "scope", "handled"),
    [
        ({"project": "sockshop"}, {"project": "sockshop"}, True),
        ({"project": "sockshop"}, {"project": "other"}, False),
        ({"stage": ["dev", "staging"]}, {"stage": "staging"}, True),
        ({"stage": ("dev", "staging")}, {"stage": "prod"}, False),
        ({"service": {"carts"}}, {"service": "carts"}, True),
        ({"project": "p", "service": "carts"}, {"project": "p", "service": "orders"}, False),
        ({"project": None}, {"project": "anything"}, True),
    ],
)
async def test_filters_on_project_stage_and_service(
    filters: dict[str, Any], scope: dict[str, Any], handled: bool
) -> None:
    calls: list[str] = []

    async def handler(ctx: TaskContext) -> None:
        calls.append(ctx.event.id)

    events = await TaskEnvironment(app_with(handler, **filters)).trigger("checknumber", **scope)

    assert bool(calls) is handled
    assert types(events) == ([STARTED, FINISHED] if handled else [])


async def test_a_repeated_triggered_id_is_handled_once() -> None:
    calls: list[str] = []

    async def handler(ctx: TaskContext) -> None:
        calls.append(ctx.event.id)

    env = TaskEnvironment(app_with(handler))

    first = await env.trigger("checknumber", event_id="T1")
    again = await env.trigger("checknumber", event_id="T1")
    other = await env.trigger("checknumber", event_id="T2")

    assert types(first) == types(other) == [STARTED, FINISHED]
    assert again == []
    assert calls == ["T1", "T2"]


async def test_the_memory_of_seen_ids_is_bounded() -> None:
    calls: list[str] = []

    async def handler(ctx: TaskContext) -> None:
        calls.append(ctx.event.id)

    app = TaskApp("svc", dedupe_size=2)
    app.task("checknumber")(handler)
    env = TaskEnvironment(app)

    for event_id in ["A", "B", "A", "C", "B", "A"]:
        await env.trigger("checknumber", event_id=event_id)

    # "A" was seen recently when "C" arrived, so "B" was forgotten first; "A" was next.
    assert calls == ["A", "B", "C", "B", "A"]


async def test_a_repeat_arriving_while_the_first_still_runs_is_ignored() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(ctx: TaskContext) -> None:
        calls.append(ctx.event.id)
        await release.wait()

    app = app_with(slow)
    transport = MemoryTransport()
    event = contract.triggered_event("checknumber", project="p", stage="s", service="v")
    async with app.attach(transport) as runner:
        await transport.publish(event["type"], contract.encode(event))
        await transport.publish(event["type"], contract.encode(event))
        assert runner.inflight == 1
        release.set()

    assert calls == [event["id"]]
    assert [m.subject for m in transport.published[2:]] == [STARTED, FINISHED]


async def test_auto_finish_false_sends_started_and_waits_for_ctx_finish() -> None:
    pending: list[TaskContext] = []

    async def later(ctx: TaskContext) -> None:
        pending.append(ctx)

    env = TaskEnvironment(app_with(later, auto_finish=False))

    events = await env.trigger("checknumber", event_id="T1")
    assert types(events) == [STARTED]

    (ctx,) = pending
    assert not ctx.finished
    await ctx.finish(result=Result.WARNING, message="done later", checknumber={"digits": 3})

    assert ctx.finished
    assert types(env.events) == [STARTED, FINISHED]
    data = finished_data(env.events)
    assert env.events[-1]["triggeredid"] == "T1"
    assert (data["status"], data["result"], data["message"]) == (
        "succeeded",
        "warning",
        "done later",
    )
    assert data["checknumber"] == {"digits": 3}


async def test_auto_finish_false_ignores_returned_data(caplog: pytest.LogCaptureFixture) -> None:
    async def returns(ctx: TaskContext) -> dict[str, Any]:
        return {"checknumber": {}}

    events = await TaskEnvironment(app_with(returns, auto_finish=False)).trigger("checknumber")

    assert types(events) == [STARTED]
    assert "task.output_ignored" in caplog.text


async def test_auto_finish_false_still_answers_a_raising_handler() -> None:
    async def crash(ctx: TaskContext) -> None:
        raise TaskErrored("no backend")

    events = await TaskEnvironment(app_with(crash, auto_finish=False)).trigger("checknumber")

    assert types(events) == [STARTED, FINISHED]
    assert finished_data(events)["status"] == "errored"


async def test_finish_accepts_a_mapping_for_names_that_are_not_identifiers() -> None:
    async def early(ctx: TaskContext) -> dict[str, Any]:
        await ctx.finish({"get-sli": {"indicatorValues": []}}, status="succeeded")
        return {"ignored": True}

    events = await TaskEnvironment(app_with(early)).trigger("checknumber")

    assert types(events) == [STARTED, FINISHED]
    data = finished_data(events)
    assert data["get-sli"] == {"indicatorValues": []}
    assert "ignored" not in data


async def test_finishing_twice_is_refused() -> None:
    outcomes: list[BaseException] = []

    async def twice(ctx: TaskContext) -> None:
        await ctx.finish()
        try:
            await ctx.finish()
        except AlreadyFinished as exc:
            outcomes.append(exc)
        try:
            await ctx.progress("too late")
        except AlreadyFinished as exc:
            outcomes.append(exc)

    events = await TaskEnvironment(app_with(twice)).trigger("checknumber")

    assert types(events) == [STARTED, FINISHED]
    assert len(outcomes) == 2


async def test_progress_sends_status_changed_between_started_and_finished() -> None:
    async def reporting(ctx: TaskContext) -> None:
        await ctx.progress("half way", percent=50)

    events = await TaskEnvironment(app_with(reporting)).trigger("checknumber", event_id="T1")

    assert types(events) == [STARTED, STATUS_CHANGED, FINISHED]
    progress = events[1]
    assert progress["triggeredid"] == "T1"
    assert progress["data"]["message"] == "half way"
    assert progress["data"]["percent"] == 50
    assert progress["data"]["project"] == "project"


async def test_shutdown_cancels_late_handlers_and_answers_errored() -> None:
    started = asyncio.Event()

    async def forever(ctx: TaskContext) -> None:
        started.set()
        await asyncio.Event().wait()

    app = app_with(forever)
    app.shutdown_grace = 0
    transport = MemoryTransport()
    event = contract.triggered_event("checknumber", project="p", stage="s", service="v")
    async with app.attach(transport):
        await transport.publish(event["type"], contract.encode(event))
        await started.wait()

    finished = contract.decode(transport.published[-1].payload)
    assert finished["type"] == FINISHED
    assert finished["data"]["status"] == "errored"
    assert finished["data"]["message"] == "the task service stopped before the task finished"


async def test_environment_as_context_manager_waits_for_running_handlers() -> None:
    async def quick(ctx: TaskContext) -> None:
        await asyncio.sleep(0)

    async with TaskEnvironment(app_with(quick)) as env:
        await env.trigger("checknumber")
    assert types(env.events) == [STARTED, FINISHED]


async def test_malformed_messages_and_other_tasks_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def handler(ctx: TaskContext) -> None:
        calls.append(ctx.task)

    env = TaskEnvironment(app_with(handler))

    assert await env.deliver({"type": "sh.keptn.event.checknumber.triggered"}) == []
    await env.transport.publish("sh.keptn.event.checknumber.triggered", b"{not json")
    assert await env.trigger("othertask") == []

    assert calls == []
    assert caplog.text.count("runner.invalid_event") == 2


async def test_handler_logger_carries_the_scope(caplog: pytest.LogCaptureFixture) -> None:
    async def logs(ctx: TaskContext) -> None:
        ctx.logger.info("checking", extra={"number": 7})

    caplog.set_level(logging.INFO)
    await TaskEnvironment(app_with(logs)).trigger(
        "checknumber", project="sockshop", event_id="T1", shkeptncontext="C1"
    )

    (record,) = [r for r in caplog.records if r.getMessage() == "checking"]
    assert record.name == "tasksdk.tasks.checknumber"
    assert record.__dict__["project"] == "sockshop"
    assert record.__dict__["keptn_context"] == "C1"
    assert record.__dict__["triggered_id"] == "T1"
    assert record.__dict__["task"] == "checknumber"
    assert record.__dict__["number"] == 7


def test_the_sdk_does_not_configure_logging() -> None:
    assert logging.getLogger("tasksdk").handlers == []


@pytest.mark.parametrize("name", ["", "a.b", "with space", "wild*"])
def test_unusable_task_names_are_refused(name: str) -> None:
    with pytest.raises(RegistrationError, match="invalid task name"):
        TaskApp("svc").task(name)


def test_a_task_can_only_have_one_handler() -> None:
    app = app_with(count_digits)
    with pytest.raises(RegistrationError, match="already has a handler"):
        app.task("checknumber")


@pytest.mark.parametrize("name", ["", "my service", "svc.*"])
def test_unusable_app_names_are_refused(name: str) -> None:
    with pytest.raises(RegistrationError, match="invalid app name"):
        TaskApp(name)


def test_empty_filters_are_refused() -> None:
    with pytest.raises(RegistrationError, match="project filter"):
        TaskApp("svc").task("checknumber", project=[])


async def test_an_app_without_tasks_cannot_be_served() -> None:
    with pytest.raises(RegistrationError, match="no task is registered"):
        async with TaskApp("svc").attach(MemoryTransport()):
            pass


def test_the_decorator_returns_the_handler_unchanged() -> None:
    app = TaskApp("svc")
    assert app.task("checknumber")(count_digits) is count_digits
    assert app.registrations["checknumber"].handler is count_digits


async def test_shutdown_is_bounded_even_when_all_slots_are_busy() -> None:
    handled: list[str] = []

    async def forever(ctx: TaskContext) -> None:
        handled.append(ctx.event.id)
        await asyncio.Event().wait()

    app = TaskApp("svc", max_concurrency=1, shutdown_grace=0)
    app.task("checknumber")(forever)
    transport = MemoryTransport()
    first, second = (
        contract.triggered_event("checknumber", project="p", stage="s", service="v")
        for _ in range(2)
    )
    async with app.attach(transport) as runner:
        await transport.publish(first["type"], contract.encode(first))
        # The second delivery waits for a free slot, as a NATS callback would.
        waiting = asyncio.create_task(transport.publish(second["type"], contract.encode(second)))
        await asyncio.sleep(0)
        assert runner.inflight == 1
        assert not waiting.done()
    await waiting

    answers = [contract.decode(m.payload) for m in transport.published]
    for event in (first, second):
        answered = [a for a in answers if a.get("triggeredid") == event["id"]]
        assert [a["type"] for a in answered] == [STARTED, FINISHED]
        assert answered[1]["data"]["status"] == "errored"


async def test_the_read_only_trigger_data_can_be_returned_as_is() -> None:
    async def echo(ctx: TaskContext) -> dict[str, Any]:
        return {"checknumber": {"seen": ctx.data, "properties": ctx.properties}}

    events = await TaskEnvironment(app_with(echo)).trigger("checknumber", project="p")

    data = finished_data(events)
    assert data["status"] == "succeeded"
    assert data["checknumber"]["seen"]["project"] == "p"
    assert data["checknumber"]["properties"] == {}
