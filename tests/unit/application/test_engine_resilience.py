"""The engine with our extensions, on in-memory fakes and a hand-driven clock.

Concurrency keys across executions, callback links, re-runs: what the pure core cannot show
alone because it spans several executions or the engine's own bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from controlplane.application.admission import IncomingEvent
from controlplane.application.callbacks import CallbackLinks, task_output
from controlplane.application.definitions import Definitions
from controlplane.application.engine import Engine
from controlplane.application.errors import Conflict, InvalidEvent, NotFound, TaskEnded
from controlplane.application.reruns import Reruns
from tests.unit.application.fakes import MemoryStore, RecordingPublisher
from tests.unit.application.test_engine import Reader, answer, find, wait_for

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: demo}
spec:
  stages:
    - name: dev
      sequences:
        - name: limited
          concurrency: {key: "{project}/{labels.team}", limit: 2}
          tasks:
            - name: hold
        - name: pipeline
          tasks:
            - name: build
            - name: test
            - name: ship
        - name: gated
          tasks:
            - name: signoff
              callback: true
"""


def trigger(sequence: str, service: str = "svc", **data: object) -> IncomingEvent:
    return IncomingEvent(
        {"type": f"dev.{sequence}.triggered", "source": "test", "specversion": "1.0"},
        {"project": "demo", "stage": "dev", "service": service, **data},
    )


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.publisher = RecordingPublisher()
        self.definitions = Definitions(self.store, Reader(), clock=time.time)
        self.links = CallbackLinks(b"k" * 32, "https://cp.example")
        self.engine = Engine(
            store=self.store,
            publisher=self.publisher,
            definitions=self.definitions,
            task_started_timeout=600,
            callback_links=self.links,
        )
        self.reruns = Reruns(self.store, self.definitions, self.engine, clock=time.time)

    async def complete(self, triggered_id: str, task: str, n: str, **data: object) -> None:
        await self.engine.ingest(answer(task, "started", triggered_id, f"{n}-s"))
        fields = {"result": "pass", "status": "succeeded", **data}
        await self.engine.ingest(answer(task, "finished", triggered_id, f"{n}-f", **fields))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    await w.definitions.create("demo", SHIPYARD)
    await w.engine.start()
    yield w
    await w.engine.stop()


async def test_a_concurrency_key_lets_limit_executions_run_per_key(world: World) -> None:
    for n in range(5):
        await world.engine.ingest(trigger("limited", f"svc-{n}", labels={"team": "a"}))
    await world.engine.ingest(trigger("limited", "svc-x", labels={"team": "b"}))
    await wait_for(lambda: len(find(world.publisher, "sh.keptn.event.hold.triggered")) == 3)
    holds = find(world.publisher, "sh.keptn.event.hold.triggered")
    teams = sorted(event.data["labels"]["team"] for event in holds)
    assert teams == ["a", "a", "b"]
    first_a = next(event for event in holds if event.data["labels"]["team"] == "a")
    await world.complete(first_a.id, "hold", "h1")
    await wait_for(lambda: len(find(world.publisher, "sh.keptn.event.hold.triggered")) == 4)


async def test_a_trigger_missing_a_key_field_is_refused_and_not_stored(world: World) -> None:
    before = len(world.store.events)
    with pytest.raises(InvalidEvent, match=r"needs data\.labels\.team"):
        await world.engine.ingest(trigger("limited"))
    assert len(world.store.events) == before


async def test_a_callback_link_finishes_the_task_once(world: World) -> None:
    await world.engine.ingest(trigger("gated"))
    await wait_for(lambda: find(world.publisher, "sh.keptn.event.signoff.triggered"))
    [signoff] = find(world.publisher, "sh.keptn.event.signoff.triggered")
    url = signoff.data["callback"]["url"]
    assert url == f"https://cp.example/callback/{signoff.id}/{world.links.token(signoff.id)}"
    assert world.links.verify(signoff.id, url.rsplit("/", 1)[1])
    assert not world.links.verify("another-task", url.rsplit("/", 1)[1])
    context = await world.engine.complete_by_callback(
        signoff.id, task_output({"approver": "ann", "result": "warning"})
    )
    assert context == signoff.keptn_context
    await wait_for(lambda: find(world.publisher, "sh.keptn.event.dev.gated.finished"))
    [finished] = find(world.publisher, "sh.keptn.event.dev.gated.finished")
    assert finished.data["result"] == "warning"
    [answered] = find(world.publisher, "sh.keptn.event.signoff.finished")
    assert (answered.source, answered.data["approver"]) == ("callback", "ann")
    with pytest.raises(TaskEnded):
        await world.engine.complete_by_callback(signoff.id, task_output({}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (["a"], "JSON object"),
        ({"result": "great"}, "result must be one of"),
        ({"status": "done"}, "status must be one of"),
    ],
)
def test_a_bad_callback_body_is_refused_with_the_reason(body: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        task_output(body)


async def test_a_rerun_carries_the_outputs_of_the_skipped_tasks(world: World) -> None:
    context = await world.engine.ingest(trigger("pipeline", version="1.0"))
    await wait_for(lambda: find(world.publisher, "sh.keptn.event.build.triggered"))
    [build] = find(world.publisher, "sh.keptn.event.build.triggered")
    with pytest.raises(Conflict, match="still running"):
        await world.reruns.rerun("demo", context)
    await world.complete(build.id, "build", "b1", artifact="a.tar")
    await wait_for(lambda: find(world.publisher, "sh.keptn.event.test.triggered"))
    [test] = find(world.publisher, "sh.keptn.event.test.triggered")
    await world.complete(test.id, "test", "t1", result="fail")
    await wait_for(lambda: find(world.publisher, "sh.keptn.event.dev.pipeline.finished"))
    started = await world.reruns.rerun("demo", context)
    assert (started.from_task, started.rerun_of, started.stage) == ("test", context, "dev")
    await wait_for(lambda: len(find(world.publisher, "sh.keptn.event.test.triggered")) == 2)
    retest = find(world.publisher, "sh.keptn.event.test.triggered")[1]
    assert retest.keptn_context == started.keptn_context != context
    assert (retest.data["artifact"], retest.data["version"]) == ("a.tar", "1.0")
    assert retest.data["rerunOf"] == context
    assert len(find(world.publisher, "sh.keptn.event.build.triggered")) == 1
    with pytest.raises(InvalidEvent, match="'deploy' is not a task"):
        await world.reruns.rerun("demo", context, from_task="deploy")
    with pytest.raises(NotFound):
        await world.reruns.rerun("demo", "unknown-context")
    with pytest.raises(NotFound, match="no stage 'prod'"):
        await world.reruns.rerun("demo", context, stage="prod")
