"""Schedulers racing over real PostgreSQL and JetStream: each slot fires once, crashes recover.

Two replicas share one database and one stream, each with its own pool and NATS connection,
as two processes would. Their clock is the test's, so the race covers many slots quickly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client

from controlplane.adapters import files
from controlplane.adapters.nats import jetstream
from controlplane.adapters.postgres.store import PostgresScheduleStore, PostgresStore
from controlplane.application.ports import ProjectRecord, SlotClaim
from controlplane.application.scheduler import Scheduler, StoredShipyards, trigger_event

pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC).timestamp()
SCHEDULES = 8


def shipyard() -> str:
    entries = "".join(
        f"""
    - name: every-{n}
      cron: "*/{n + 2} * * * * *"
      stage: dev
      sequence: delivery
      service: svc-{n}
      missed: {"skip" if n == 0 else "runOnce"}"""
        for n in range(SCHEDULES)
    )
    return f"""\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{{name: deployment}}]
  schedules:{entries}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Replica:
    """One scheduler process: its own pool and NATS connection."""

    def __init__(self, pool: asyncpg.Pool[Any], nats: Client, scheduler: Scheduler) -> None:
        self.pool = pool
        self.nats = nats
        self.scheduler = scheduler

    @classmethod
    async def start(
        cls, database_url: str, nats_url: str, name: str, clock: Clock, **options: Any
    ) -> Replica:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        nats = await jetstream.connect(nats_url, name=name)
        shipyards = StoredShipyards(PostgresStore(pool), files.YamlShipyardReader())
        scheduler = Scheduler(
            PostgresScheduleStore(pool),
            jetstream.JetStreamPublisher(nats, stream="keptn"),
            shipyards,
            replica=name,
            reload=shipyards.load,
            clock=clock,
            **options,
        )
        return cls(pool, nats, scheduler)

    async def close(self) -> None:
        await self.nats.close()
        await self.pool.close()


@pytest.fixture
async def world(pg_store: PostgresStore, nats_client: Client) -> Client:
    await pg_store.create_project(ProjectRecord("shop", shipyard()))
    await jetstream.ensure_stream(nats_client.jetstream(), stream="keptn")
    return nats_client


async def stored_messages(nats: Client) -> list[dict[str, Any]]:
    js = nats.jetstream()
    count = (await js.stream_info("keptn")).state.messages
    found = []
    for seq in range(1, count + 1):
        message = await js.get_msg("keptn", seq)
        assert message.headers is not None
        body = json.loads(message.data or b"")
        assert message.headers["Nats-Msg-Id"] == body["id"]
        found.append(body)
    return found


async def test_two_replicas_fire_every_slot_exactly_once(
    world: Client, database_url: str, nats_url: str, pg_store: PostgresStore
) -> None:
    clock = Clock()
    replicas = [
        await Replica.start(database_url, nats_url, name, clock, grace=30.0) for name in "ab"
    ]
    try:
        for step in range(60):
            clock.now = T0 + step * 0.7
            await asyncio.gather(*(replica.scheduler.tick() for replica in replicas))
    finally:
        for replica in replicas:
            await replica.close()

    rows = await pg_store.pool.fetch(
        "SELECT schedule, slot, claimed_by, published, keptn_context FROM schedule_slots"
    )
    expected = {
        (f"every-{n}", float(slot))
        for n in range(SCHEDULES)
        for slot in range(int(T0) + 1, int(clock.now) + 1)
        if slot % 60 % (n + 2) == 0  # seconds 0, n+2, ... of each minute
    }
    assert {(row["schedule"], row["slot"]) for row in rows} == expected
    assert len(rows) == len(expected)  # the primary key: one claim per slot
    assert all(row["published"] for row in rows)
    messages = await stored_messages(world)
    labels = [
        (m["data"]["labels"]["schedule"], m["data"]["labels"]["scheduledFor"]) for m in messages
    ]
    assert len(labels) == len(set(labels)) == len(expected)
    assert {m["shkeptncontext"] for m in messages} == {row["keptn_context"] for row in rows}
    assert {row["claimed_by"] for row in rows} <= {"a", "b"}


async def test_a_claim_left_by_a_crashed_replica_is_published_once_with_its_id(
    world: Client, database_url: str, nats_url: str, pg_store: PostgresStore
) -> None:
    clock = Clock()
    clock.now = time.time()
    survivor = await Replica.start(database_url, nats_url, "b", clock, republish_after=0.3)
    try:
        shipyards = StoredShipyards(pg_store, files.YamlShipyardReader())
        await shipyards.load()
        schedule = shipyards.shipyard("shop").schedules[0]  # type: ignore[union-attr]
        slot = float(int(clock.now) // 2 * 2)
        event = trigger_event("shop", schedule, slot, clock.now)
        # The replica that made this claim died before it published the trigger.
        store = PostgresScheduleStore(pg_store.pool)
        assert await store.claim_slots([SlotClaim("shop", schedule.name, slot, event)], "dead")

        async def republished() -> list[dict[str, Any]]:
            clock.now = time.time()
            await survivor.scheduler.tick()
            return [m for m in await stored_messages(world) if m["id"] == event.id]

        deadline = time.monotonic() + 15
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            found = await republished()
            await asyncio.sleep(0.1)
        assert len(found) == 1
        assert found[0]["shkeptncontext"] == event.keptn_context
        assert found[0]["data"]["labels"]["scheduledFor"] == event.data["labels"]["scheduledFor"]
        assert await pg_store.pool.fetchval(
            "SELECT published FROM schedule_slots WHERE claimed_by = 'dead'"
        )
        # The crashed replica comes back and publishes what it had claimed: dropped as a repeat.
        await jetstream.JetStreamPublisher(world, stream="keptn").publish([event])
        assert len([m for m in await stored_messages(world) if m["id"] == event.id]) == 1
    finally:
        await survivor.close()


async def test_after_a_restart_missed_slots_follow_the_policy(
    world: Client, database_url: str, nats_url: str, pg_store: PostgresStore
) -> None:
    clock = Clock()
    before = await Replica.start(database_url, nats_url, "before", clock, grace=30.0)
    try:
        for step in range(11):
            clock.now = T0 + step
            await before.scheduler.tick()
    finally:
        await before.close()  # the only replica goes away for an hour
    clock.now = T0 + 3605
    after = await Replica.start(database_url, nats_url, "after", clock, grace=30.0)
    try:
        await after.scheduler.tick()
    finally:
        await after.close()

    rows = await pg_store.pool.fetch("SELECT schedule, slot FROM schedule_slots ORDER BY slot")
    cutoff = T0 + 3605 - 30
    for n in range(SCHEDULES):
        period = n + 2
        mine = [row["slot"] - T0 for row in rows if row["schedule"] == f"every-{n}"]
        assert mine[0] == period  # fired from the first slot after it was first seen
        missed = [slot for slot in mine if 10 < slot <= cutoff - T0]
        latest_missed = max(s for s in range(11, 3576) if s % 60 % period == 0)
        assert missed == ([] if n == 0 else [latest_missed]), (n, missed)
        on_time = [slot for slot in mine if slot > cutoff - T0]
        assert on_time == [s for s in range(3576, 3606) if s % 60 % period == 0], n
