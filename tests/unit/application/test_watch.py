"""ContextWatch: waiters and subscribers of a keptnContext, alone and fed by the real engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from controlplane.application.definitions import Definitions
from controlplane.application.engine import Engine
from controlplane.application.envelope import Envelope
from controlplane.application.watch import ContextWatch, summarize
from controlplane.domain.execution import Execution
from controlplane.testing import InMemoryQueryStore
from tests.unit.application.fakes import MemoryStore, RecordingPublisher
from tests.unit.application.test_engine import SHIPYARD, Reader, answer, find, trigger, wait_for

CTX = "ctx-1"
OTHER = "ctx-2"


def event(context: str, n: int, type_: str = "sh.keptn.event.work.started") -> Envelope:
    return Envelope(
        id=f"{context}-{n}",
        source="test",
        type=type_,
        time="2024-01-31T10:00:00.000Z",
        data={"project": "demo", "stage": "dev", "service": "svc"},
        keptn_context=context,
    )


class Running:
    """The engine's ``running`` as a set the test controls."""

    def __init__(self, *contexts: str) -> None:
        self.contexts = set(contexts)

    def __call__(self, context: str) -> bool:
        return context in self.contexts


def watch_over(running: Running, queue_size: int = 16) -> ContextWatch:
    watch = ContextWatch(InMemoryQueryStore(), queue_size=queue_size)
    watch.attach(running)
    return watch


async def started(task: asyncio.Task[object]) -> None:
    """Let ``task`` run up to its first real wait."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()


# ---------------------------------------------------------------------- waiting


async def test_a_context_that_is_not_running_has_ended_already() -> None:
    watch = watch_over(Running())
    assert await watch.wait_ended(CTX, 10.0) is True
    assert watch.watched == 0


async def test_waiters_resolve_when_their_context_ends_and_only_then() -> None:
    running = Running(CTX, OTHER)
    watch = watch_over(running)
    mine = asyncio.create_task(watch.wait_ended(CTX, 10.0))
    theirs = asyncio.create_task(watch.wait_ended(OTHER, 10.0))
    await started(mine)
    watch.committed([event(CTX, 1)], [])
    await started(mine)
    running.contexts.discard(CTX)
    watch.committed([event(CTX, 2)], [CTX])
    assert await mine is True
    assert not theirs.done()
    theirs.cancel()
    with pytest.raises(asyncio.CancelledError):
        await theirs
    assert watch.watched == 0


async def test_a_wait_that_runs_out_says_so_and_leaves_nothing_behind() -> None:
    watch = watch_over(Running(CTX))
    assert await watch.wait_ended(CTX, 0.01) is False
    assert await watch.wait_ended(CTX, 0) is False
    assert watch.watched == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    watch = watch_over(Running(CTX))
    waiters = [asyncio.create_task(watch.wait_ended(CTX, 10.0)) for _ in range(3)]
    await started(waiters[0])
    assert watch.watched == 1
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert watch.watched == 0
    watch.committed([event(CTX, 1)], [CTX])  # nobody left to tell: no error


async def test_close_ends_every_wait_as_not_ended_and_refuses_new_ones() -> None:
    watch = watch_over(Running(CTX))
    waiter = asyncio.create_task(watch.wait_ended(CTX, 10.0))
    subscription = watch.subscribe(CTX)
    await started(waiter)
    watch.close()
    assert await waiter is False
    assert await subscription.next() is None
    assert subscription.end_reason == "closed"
    assert await watch.wait_ended(CTX, 10.0) is False
    assert watch.subscribe(CTX).end_reason == "closed"
    assert watch.watched == 0


async def test_an_unattached_watch_is_a_wiring_bug() -> None:
    watch = ContextWatch(InMemoryQueryStore())
    with pytest.raises(RuntimeError, match="attach"):
        await watch.wait_ended(CTX, 1.0)


# ---------------------------------------------------------------------- subscribing


async def test_a_subscriber_gets_its_contexts_events_in_order_then_the_end() -> None:
    running = Running(CTX, OTHER)
    watch = watch_over(running)
    with watch.subscribe(CTX) as subscription:
        watch.committed([event(CTX, 1), event(OTHER, 1), event(CTX, 2)], [])
        running.contexts.discard(CTX)
        watch.committed([event(CTX, 3)], [CTX])
        watch.committed([event(CTX, 4)], [])  # after the end: not for this stream
        received = [envelope.id async for envelope in subscription]
    assert received == [f"{CTX}-1", f"{CTX}-2", f"{CTX}-3"]
    assert subscription.end_reason == "ended"
    assert watch.watched == 0


async def test_subscribing_to_a_context_that_is_not_running_ends_at_once() -> None:
    watch = watch_over(Running())
    subscription = watch.subscribe(CTX)
    assert subscription.end_reason == "ended"
    assert await subscription.next() is None
    assert watch.watched == 0


async def test_a_subscriber_that_falls_behind_is_cut_off_without_blocking_the_engine() -> None:
    watch = watch_over(Running(CTX), queue_size=2)
    slow = watch.subscribe(CTX)
    fast = watch.subscribe(CTX)
    watch.committed([event(CTX, 1), event(CTX, 2)], [])
    assert (await fast.next()) is not None
    assert (await fast.next()) is not None
    watch.committed([event(CTX, 3)], [])  # slow's queue is full: it is cut off
    assert slow.end_reason == "overflow"
    # What it had queued still arrives, then the stream ends with the reason.
    assert [envelope.id async for envelope in slow] == [f"{CTX}-1", f"{CTX}-2"]
    assert fast.end_reason is None
    assert (await fast.next()) == event(CTX, 3)
    fast.close()
    assert watch.watched == 0


async def test_next_can_be_cancelled_for_a_keep_alive_without_losing_an_event() -> None:
    watch = watch_over(Running(CTX))
    with watch.subscribe(CTX) as subscription:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await subscription.next()
        watch.committed([event(CTX, 1)], [])
        assert await subscription.next() == event(CTX, 1)


async def test_a_reader_cancelled_mid_stream_leaves_nothing_behind() -> None:
    watch = watch_over(Running(CTX))

    async def read() -> None:
        with watch.subscribe(CTX) as subscription:
            async for _ in subscription:
                pass

    reader = asyncio.create_task(read())
    await started(reader)
    assert watch.watched == 1
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert watch.watched == 0


async def test_committed_without_watchers_is_a_no_op() -> None:
    watch = watch_over(Running(CTX))
    watch.committed([event(CTX, n) for n in range(10_000)], [CTX, OTHER])
    assert watch.watched == 0


# ---------------------------------------------------------------------- with the real engine


class ExecutionsOf:
    """The one QueryStore method the watch reads, over the engine's fake store."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def contexts(
        self, project: str, *, keptn_contexts: Sequence[str], name: str
    ) -> list[list[Execution]]:
        group = sorted(
            (
                execution
                for execution in self._store.executions.values()
                if execution.scope.project == project
                and execution.scope.keptn_context in keptn_contexts
            ),
            key=lambda execution: execution.triggered_at,
        )
        return [group] if group else []


@pytest.fixture
async def engine_and_watch() -> AsyncIterator[tuple[Engine, ContextWatch, RecordingPublisher]]:
    store = MemoryStore()
    publisher = RecordingPublisher()
    definitions = Definitions(store, Reader())
    await definitions.create("demo", SHIPYARD)
    watch = ContextWatch(ExecutionsOf(store))  # type: ignore[arg-type]
    engine = Engine(
        store=store,
        publisher=publisher,
        definitions=definitions,
        task_started_timeout=600,
        watcher=watch,
    )
    watch.attach(engine.running)
    await engine.start()
    yield engine, watch, publisher
    await engine.stop()


async def test_the_engine_tells_the_watch_when_a_chained_context_really_ends(
    engine_and_watch: tuple[Engine, ContextWatch, RecordingPublisher],
) -> None:
    engine, watch, publisher = engine_and_watch
    context = await engine.ingest(trigger("dev", "delivery", image="x:1"))
    subscription = watch.subscribe(context)
    waiter = asyncio.create_task(watch.wait_ended(context, 30.0))
    for n, task in enumerate(("deployment", "test", "deployment")):
        await wait_for(
            lambda task=task, n=n: (
                len(find(publisher, f"sh.keptn.event.{task}.triggered")) > (1 if n == 2 else 0)
            )
        )
        triggered = find(publisher, f"sh.keptn.event.{task}.triggered")[-1]
        assert not waiter.done()  # dev's end chains into staging: still running
        await engine.ingest(answer(task, "started", triggered.id, f"s{n}"))
        await engine.ingest(
            answer(
                task,
                "finished",
                triggered.id,
                f"f{n}",
                status="succeeded",
                result="pass",
                **{task: {"step": n}},
            )
        )
    assert await waiter is True
    types = [envelope.type async for envelope in subscription]
    assert subscription.end_reason == "ended"
    assert types[-1] == "sh.keptn.event.staging.delivery.finished"
    assert "sh.keptn.event.dev.delivery.finished" in types
    assert "sh.keptn.event.staging.delivery.triggered" in types
    outcome = await watch.outcome("demo", context)
    assert outcome is not None
    assert (outcome.state, outcome.result, outcome.status) == ("finished", "pass", "succeeded")
    # The last stage's merged output: dev's task outputs travelled into staging's input.
    assert outcome.data["image"] == "x:1"
    assert outcome.data["test"] == {"step": 1}
    assert outcome.data["deployment"]["step"] == 2
    assert outcome.data["stage"] == "staging"
    assert watch.watched == 0


async def test_an_immediate_failure_has_ended_by_the_time_ingest_returns(
    engine_and_watch: tuple[Engine, ContextWatch, RecordingPublisher],
) -> None:
    engine, watch, _ = engine_and_watch
    context = await engine.ingest(trigger("dev", "no-such-sequence"))
    assert await watch.wait_ended(context, 0) is True
    outcome = await watch.outcome("demo", context)
    assert outcome is not None
    assert (outcome.state, outcome.result, outcome.status) == ("finished", "fail", "errored")
    assert "no-such-sequence" in outcome.message


async def test_outcome_of_an_unknown_context_is_none(
    engine_and_watch: tuple[Engine, ContextWatch, RecordingPublisher],
) -> None:
    _, watch, _ = engine_and_watch
    assert await watch.outcome("demo", "nope") is None


def test_summarize_a_live_context_gives_its_state_only() -> None:
    from controlplane.domain.execution import Scope
    from controlplane.domain.shipyard import Sequence as Seq
    from controlplane.domain.shipyard import Task

    execution = Execution(
        id="t-1",
        scope=Scope("demo", "dev", "svc", CTX),
        sequence=Seq(name="delivery", tasks=(Task(name="deployment"),)),
        input={},
        triggered_at=1.0,
        task_started_timeout=600.0,
    )
    outcome = summarize([execution])
    assert (outcome.state, outcome.result, outcome.data) == ("triggered", "", {})
