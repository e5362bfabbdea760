"""The engine wired to in-memory ports: the flows a user sees, without servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import yaml

from controlplane.application.admission import IncomingEvent
from controlplane.application.definitions import Definitions
from controlplane.application.engine import Engine
from controlplane.application.errors import (
    InvalidEvent,
    TaskEnded,
    Unavailable,
    UnknownProject,
    UnknownTask,
)
from controlplane.domain.shipyard import Shipyard, parse_shipyard
from tests.unit.application.fakes import MemoryStore, RecordingPublisher

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: demo}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks:
            - name: deployment
              properties: {strategy: direct}
            - name: test
        - name: gated
          tasks:
            - name: approval
              properties: {pass: automatic, warning: manual}
            - name: release
    - name: staging
      sequences:
        - name: delivery
          triggeredOn:
            - event: dev.delivery.finished
          tasks:
            - name: deployment
        - name: rollback
          triggeredOn:
            - event: dev.delivery.finished
              selector: {match: {result: fail}}
          tasks:
            - name: rollback
"""


class Reader:
    def read(self, text: str, source: str) -> Shipyard:
        return parse_shipyard(yaml.safe_load(text), source=source)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def world() -> AsyncIterator[tuple[Engine, MemoryStore, RecordingPublisher, Clock]]:
    store = MemoryStore()
    publisher = RecordingPublisher()
    clock = Clock()
    definitions = Definitions(store, Reader(), clock=clock)
    await definitions.create("demo", SHIPYARD)
    engine = Engine(
        store=store,
        publisher=publisher,
        definitions=definitions,
        task_started_timeout=600,
        clock=clock,
    )
    await engine.start()
    yield engine, store, publisher, clock
    await engine.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def trigger(stage: str, sequence: str, **data: object) -> IncomingEvent:
    return IncomingEvent(
        {"type": f"{stage}.{sequence}.triggered", "source": "test", "specversion": "1.0"},
        {"project": "demo", "stage": stage, "service": "svc", **data},
    )


def answer(
    task: str, phase: str, triggered_id: str, event_id: str, **data: object
) -> IncomingEvent:
    return IncomingEvent(
        {
            "type": f"sh.keptn.event.{task}.{phase}",
            "source": "executor",
            "specversion": "1.0",
            "id": event_id,
            "triggeredid": triggered_id,
        },
        {"project": "demo", "stage": "dev", "service": "svc", **data},
    )


def find(publisher: RecordingPublisher, type_: str) -> list:
    return [e for e in publisher.published if e.type == type_]


async def test_trigger_runs_tasks_in_order_and_chains(world) -> None:
    engine, store, publisher, _ = world
    context = await engine.ingest(trigger("dev", "delivery", configurationChange={"image": "x:1"}))
    await wait_for(lambda: find(publisher, "sh.keptn.event.deployment.triggered"))
    deployment = find(publisher, "sh.keptn.event.deployment.triggered")[0]
    assert deployment.keptn_context == context
    assert deployment.data["deployment"] == {"strategy": "direct"}
    assert deployment.data["configurationChange"] == {"image": "x:1"}
    await engine.ingest(answer("deployment", "started", deployment.id, "s1"))
    await engine.ingest(
        answer(
            "deployment",
            "finished",
            deployment.id,
            "f1",
            status="succeeded",
            result="pass",
            deployment={"uri": "http://x"},
        )
    )
    await wait_for(lambda: find(publisher, "sh.keptn.event.test.triggered"))
    test_event = find(publisher, "sh.keptn.event.test.triggered")[0]
    assert test_event.data["deployment"]["uri"] == "http://x"
    assert test_event.data["result"] == "pass"
    await engine.ingest(answer("test", "started", test_event.id, "s2"))
    await engine.ingest(
        answer("test", "finished", test_event.id, "f2", status="succeeded", result="warning")
    )
    await wait_for(lambda: find(publisher, "sh.keptn.event.staging.delivery.triggered"))
    finished = find(publisher, "sh.keptn.event.dev.delivery.finished")[0]
    assert finished.data["result"] == "warning"
    assert finished.triggered_id == store.events[finished.triggered_id].id
    assert not find(publisher, "sh.keptn.event.staging.rollback.triggered")
    await wait_for(lambda: len(find(publisher, "sh.keptn.event.deployment.triggered")) == 2)
    staging = find(publisher, "sh.keptn.event.deployment.triggered")[1]
    assert staging.data["stage"] == "staging"


async def test_bad_answers_are_refused_with_the_right_error(world) -> None:
    engine, _, publisher, _ = world
    with pytest.raises(UnknownTask):
        await engine.ingest(answer("deployment", "started", "nope", "x1"))
    with pytest.raises(UnknownProject):
        await engine.ingest(
            IncomingEvent(
                {"type": "dev.delivery.triggered", "source": "t"},
                {"project": "ghost", "stage": "dev", "service": "s"},
            )
        )
    with pytest.raises(InvalidEvent):
        await engine.ingest(
            IncomingEvent(
                {"type": "sh.keptn.event.deployment.triggered", "source": "t"},
                {"project": "demo", "stage": "dev", "service": "s"},
            )
        )
    await engine.ingest(trigger("dev", "delivery"))
    await wait_for(lambda: find(publisher, "sh.keptn.event.deployment.triggered"))
    deployment = find(publisher, "sh.keptn.event.deployment.triggered")[0]
    await engine.control("demo", deployment.keptn_context, "abort")
    with pytest.raises(TaskEnded):
        await engine.ingest(answer("deployment", "started", deployment.id, "late"))
    aborted = find(publisher, "sh.keptn.event.dev.delivery.finished")[0]
    assert (aborted.data["status"], aborted.data["result"]) == ("aborted", "pass")


async def test_second_sequence_waits_for_the_first(world) -> None:
    engine, _, publisher, _ = world
    await engine.ingest(trigger("dev", "delivery"))
    await engine.ingest(trigger("dev", "delivery"))
    await wait_for(lambda: find(publisher, "sh.keptn.event.deployment.triggered"))
    await asyncio.sleep(0.05)
    assert len(find(publisher, "sh.keptn.event.deployment.triggered")) == 1
    first = find(publisher, "sh.keptn.event.deployment.triggered")[0]
    await engine.ingest(
        answer("deployment", "finished", first.id, "f1", status="succeeded", result="fail")
    )
    # A lone .finished never completes a task (0 started): the second still waits.
    await asyncio.sleep(0.05)
    assert len(find(publisher, "sh.keptn.event.deployment.triggered")) == 1
    await engine.ingest(answer("deployment", "started", first.id, "s1"))
    await wait_for(lambda: len(find(publisher, "sh.keptn.event.deployment.triggered")) == 2)
    assert find(publisher, "sh.keptn.event.staging.rollback.triggered")


async def test_automatic_approval_runs_inside(world) -> None:
    engine, _, publisher, _ = world
    await engine.ingest(trigger("dev", "gated", result="pass"))
    await wait_for(lambda: find(publisher, "sh.keptn.event.release.triggered"))
    assert [e.source for e in find(publisher, "sh.keptn.event.approval.finished")] == [
        "approval-service"
    ]


async def test_repeated_event_id_is_the_same_event(world) -> None:
    engine, store, _, _ = world
    event = IncomingEvent(
        {"type": "dev.delivery.triggered", "source": "ci", "id": "abc"},
        {"project": "demo", "stage": "dev", "service": "svc"},
    )
    first = await engine.ingest(event)
    second = await engine.ingest(event)
    assert first == second
    assert sum(1 for e in store.events.values() if e.type.endswith("dev.delivery.triggered")) == 1


async def test_a_failed_commit_is_reported_and_nothing_half_applied(world) -> None:
    engine, store, publisher, _ = world
    store.fail_next_commit = True
    with pytest.raises(Unavailable):
        await engine.ingest(trigger("dev", "delivery"))
    assert store.executions == {}
    assert not find(publisher, "sh.keptn.event.deployment.triggered")
    await wait_for(lambda: engine.ready)
    context = await engine.ingest(trigger("dev", "delivery"))
    await wait_for(lambda: find(publisher, "sh.keptn.event.deployment.triggered"))
    assert find(publisher, "sh.keptn.event.deployment.triggered")[0].keptn_context == context


async def test_an_unstorable_event_is_refused_and_its_batch_mates_go_through(world) -> None:
    engine, _store, publisher, _ = world
    bad = asyncio.ensure_future(engine.ingest(trigger("dev", "delivery", note="a\x00b")))
    good = asyncio.ensure_future(engine.ingest(trigger("dev", "delivery", service="other")))
    with pytest.raises(InvalidEvent, match="cannot be stored"):
        await bad
    context = await good
    await wait_for(lambda: find(publisher, "sh.keptn.event.deployment.triggered"))
    assert [e.keptn_context for e in find(publisher, "sh.keptn.event.deployment.triggered")] == [
        context
    ]
