"""The scheduler over in-memory ports: claims, publishing, missed slots, restarts, reloads."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest

from controlplane.application import admission
from controlplane.application.ports import ProjectRecord, SlotClaim
from controlplane.application.scheduler import Scheduler, StoredShipyards, trigger_event
from controlplane.domain.execution import derived_id
from controlplane.domain.schedules import parse_schedule
from controlplane.testing import FakeDefinitions
from tests.unit.application.fakes import MemoryStore
from tests.unit.application.schedule_fakes import FlakyPublisher, InMemoryScheduleStore

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def shipyard(cron: str = "*/10 * * * * *", missed: str = "skip", name: str = "tick") -> str:
    return f"""\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {{name: shop}}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{{name: deployment}}]
  schedules:
    - name: {name}
      cron: "{cron}"
      stage: dev
      sequence: delivery
      service: carts
      missed: {missed}
      data:
        configurationChange: {{values: {{image: "carts:nightly"}}}}
        labels: {{team: shop}}
"""


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class World:
    """One project, one store, a clock; schedulers made on demand (replicas)."""

    def __init__(self, text: str | None = None) -> None:
        self.clock = Clock()
        self.definitions = FakeDefinitions()
        self.definitions.add("shop", text or shipyard())
        self.store = InMemoryScheduleStore(lambda: set(self.definitions.records), self.clock)

    def scheduler(self, publisher: FlakyPublisher, replica: str = "a") -> Scheduler:
        return Scheduler(
            self.store,
            publisher,
            self.definitions,
            replica=replica,
            clock=self.clock,
            grace=60.0,
        )


def slots(world: World) -> list[float]:
    return [slot - T0 for _, _, slot in world.store.fired()]


async def test_a_slot_fires_on_time_with_its_trigger() -> None:
    world = World()
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    assert await scheduler.tick() == T0 + 10  # first seen now: no back-fill
    assert publisher.published == []
    world.clock.now = T0 + 10.2
    assert await scheduler.tick() == T0 + 20
    [event] = publisher.published
    assert event.type == "sh.keptn.event.dev.delivery.triggered"
    assert event.source == "scheduler"
    assert event.id == derived_id("schedule", "shop", "tick", "2024-05-01T12:00:10Z")
    assert admission.keptn_context(event.keptn_context) == event.keptn_context
    assert event.data["project"] == "shop"
    assert (event.data["stage"], event.data["service"]) == ("dev", "carts")
    assert event.data["configurationChange"] == {"values": {"image": "carts:nightly"}}
    assert event.data["labels"] == {
        "team": "shop",
        "schedule": "tick",
        "scheduledFor": "2024-05-01T12:00:10Z",
    }
    claim = world.store.claims[("shop", "tick", T0 + 10)]
    assert claim.published
    assert claim.claimed_by == "a"


def test_the_trigger_depends_only_on_the_slot() -> None:
    schedule, _ = parse_schedule(
        {"name": "n", "cron": "@daily", "stage": "dev", "sequence": "s", "service": "x"}
    )
    assert schedule is not None
    first = trigger_event("p", schedule, T0, now=T0 + 1)
    again = trigger_event("p", schedule, T0, now=T0 + 99)
    assert (first.id, first.keptn_context) == (again.id, again.keptn_context)
    other = trigger_event("q", schedule, T0, now=T0 + 1)
    assert {first.id, first.keptn_context}.isdisjoint({other.id, other.keptn_context})


async def test_two_replicas_fire_each_slot_once() -> None:
    world = World()
    one, two = FlakyPublisher(), FlakyPublisher()
    replicas = [world.scheduler(one, "a"), world.scheduler(two, "b")]
    await asyncio.gather(*(replica.tick() for replica in replicas))
    for step in range(1, 40):
        world.clock.now = T0 + step * 2.5
        await asyncio.gather(*(replica.tick() for replica in replicas))
    ids = [event.id for event in one.published + two.published]
    assert len(ids) == len(set(ids)) == 9  # slots 10, 20, ..., 90
    assert slots(world) == [10.0 * n for n in range(1, 10)]


async def test_catch_up_within_the_grace_fires_every_slot_in_order() -> None:
    world = World()
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    await scheduler.tick()
    world.clock.now = T0 + 45  # a busy process: 10, 20, 30 and 40 are late but on time
    await scheduler.tick()
    assert slots(world) == [10, 20, 30, 40]
    assert [event.data["labels"]["scheduledFor"][-3:-1] for event in publisher.published] == [
        "10",
        "20",
        "30",
        "40",
    ]


@pytest.mark.parametrize(("missed", "fired"), [("skip", []), ("runOnce", [3540.0])])
async def test_slots_missed_while_down_follow_the_policy(missed: str, fired: list[float]) -> None:
    world = World(shipyard(cron="0 * * * * *", missed=missed))  # every minute
    publisher = FlakyPublisher()
    await world.scheduler(publisher).tick()
    # Down for an hour; a new process starts (state from the store only).
    world.clock.now = T0 + 3600 + 30
    restarted = world.scheduler(publisher, "b")
    await restarted.tick()
    assert slots(world) == [*fired, 3600.0]  # 12:59 (late) with runOnce, 13:00 on time
    world.clock.now = T0 + 3700
    await restarted.tick()
    assert slots(world)[-1] == 3660.0


async def test_a_restart_does_not_fire_again_what_fired() -> None:
    world = World(shipyard(missed="runOnce"))
    publisher = FlakyPublisher()
    first = world.scheduler(publisher)
    await first.tick()
    world.clock.now = T0 + 20
    await first.tick()
    world.clock.now = T0 + 25
    await world.scheduler(publisher, "b").tick()
    assert slots(world) == [10, 20]
    assert len(publisher.published) == 2


async def test_a_failed_publish_is_retried_on_the_next_pass() -> None:
    world = World()
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    await scheduler.tick()
    world.clock.now = T0 + 10
    publisher.down = True
    wake = await scheduler.tick()
    assert wake <= world.clock.now + 2.0
    assert slots(world) == [10]
    assert not world.store.claims[("shop", "tick", T0 + 10)].published
    publisher.down = False
    world.clock.now = T0 + 12
    await scheduler.tick()
    assert [event.data["labels"]["scheduledFor"] for event in publisher.published] == [
        "2024-05-01T12:00:10Z"
    ]
    assert world.store.claims[("shop", "tick", T0 + 10)].published


async def test_a_claim_left_unpublished_by_a_dead_replica_is_republished() -> None:
    world = World()
    schedule = world.definitions.shipyard("shop").schedules[0]  # type: ignore[union-attr]
    event = trigger_event("shop", schedule, T0 + 10, T0 + 10)
    # The dead replica claimed the slot, then died before publishing it.
    assert await world.store.claim_slots([SlotClaim("shop", "tick", T0 + 10, event)], "dead")
    publisher = FlakyPublisher()
    survivor = world.scheduler(publisher, "b")
    world.clock.now = T0 + 15
    await survivor.tick()
    assert publisher.published == []  # too fresh: the claimer may still be publishing
    world.clock.now = T0 + 15 + 31
    await survivor.tick()
    republished = [e for e in publisher.published if e.id == event.id]
    assert len(republished) == 1
    assert republished[0].keptn_context == event.keptn_context
    assert world.store.claims[("shop", "tick", T0 + 10)].published


async def test_a_failing_store_does_not_lose_the_slot() -> None:
    world = World()
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    await scheduler.tick()
    world.clock.now = T0 + 10
    world.store.fail_claims = True
    assert await scheduler.tick() <= T0 + 12
    world.store.fail_claims = False
    world.clock.now = T0 + 12
    await scheduler.tick()
    assert slots(world) == [10]


async def test_a_changed_expression_starts_anew_and_a_removed_schedule_is_forgotten() -> None:
    world = World(shipyard(cron="0 0 * * * *", missed="runOnce"))  # hourly
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    await scheduler.tick()
    world.clock.now = T0 + 1800
    await world.definitions.replace("shop", shipyard(cron="0 */5 * * * *", missed="runOnce"))
    scheduler.changed()
    await scheduler.tick()
    # No "missed" 12:25 fired for the new expression: it was first seen at 12:30.
    assert slots(world) == []
    assert world.store.states[("shop", "tick")] == ("0 */5 * * * *|UTC", T0 + 1800)
    world.clock.now = T0 + 2100
    await scheduler.tick()
    assert slots(world) == [2100.0]
    await world.definitions.replace("shop", shipyard(name="other"))
    scheduler.changed()
    await scheduler.tick()
    assert ("shop", "tick") not in world.store.states
    assert ("shop", "other") in scheduler.next_slots()


async def test_an_api_schedule_fires_and_one_whose_stage_is_gone_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from controlplane.application.ports import StoredSchedule

    world = World()
    document = {
        "cron": "*/15 * * * * *",
        "stage": "dev",
        "sequence": "delivery",
        "service": "api-svc",
        "missed": "skip",
    }
    await world.store.put_api_schedule(StoredSchedule("shop", "api-one", document))
    await world.store.put_api_schedule(
        StoredSchedule("shop", "broken", {**document, "stage": "prod"})
    )
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    with caplog.at_level(logging.WARNING, logger="controlplane.application.scheduler"):
        await scheduler.tick()
    assert any(record.msg == "schedule.invalid" for record in caplog.records)
    world.clock.now = T0 + 15
    await scheduler.tick()
    assert sorted({name for _, name, _ in world.store.fired()}) == ["api-one", "tick"]
    assert {e.data["service"] for e in publisher.published} == {"api-svc", "carts"}


async def test_stored_shipyards_parse_only_what_changed() -> None:
    store = MemoryStore()
    store.projects["shop"] = ProjectRecord("shop", shipyard())
    store.projects["bad"] = ProjectRecord("bad", "spec: {}", error="invalid")
    reads: list[str] = []

    class CountingReader:
        def read(self, text: str, source: str) -> object:
            reads.append(source)
            from controlplane.testing import _read

            return _read(text, source)

    shipyards = StoredShipyards(store, CountingReader())  # type: ignore[arg-type]
    await shipyards.load()
    await shipyards.load()
    assert reads == ["shop"]
    assert shipyards.shipyard("bad") is None
    assert [s.name for s in shipyards.shipyard("shop").schedules] == ["tick"]  # type: ignore[union-attr]
    store.projects["shop"] = ProjectRecord("shop", shipyard(name="renamed"), version=2)
    await shipyards.load()
    assert reads == ["shop", "shop"]
    assert [s.name for s in shipyards.shipyard("shop").schedules] == ["renamed"]  # type: ignore[union-attr]
    del store.projects["shop"]
    await shipyards.load()
    assert shipyards.shipyard("shop") is None
    assert await shipyards.get("shop") is None


async def test_run_sleeps_until_the_slot_and_stops_when_asked() -> None:
    definitions = FakeDefinitions()
    definitions.add("shop", shipyard(cron="* * * * * *"))  # every second
    store = InMemoryScheduleStore(lambda: set(definitions.records), time.time)
    publisher = FlakyPublisher()
    scheduler = Scheduler(store, publisher, definitions, replica="a")
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.wait_for(publisher.wait_for(2), 10)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(publisher.published) >= 2
    seconds = [event.data["labels"]["scheduledFor"] for event in publisher.published]
    assert seconds == sorted(set(seconds))


async def test_a_failed_refresh_is_tried_again_at_the_next_pass() -> None:
    world = World()
    publisher = FlakyPublisher()
    scheduler = world.scheduler(publisher)
    listing = world.store.list_api_schedules

    async def broken(project: str | None = None) -> list[object]:
        raise ConnectionError("database went away")

    world.store.list_api_schedules = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(ConnectionError):
        await scheduler.tick()
    world.store.list_api_schedules = listing  # type: ignore[method-assign]
    world.clock.now = T0 + 2
    await scheduler.tick()
    assert ("shop", "tick") in scheduler.next_slots()
