"""The schedule store on real PostgreSQL: exclusive claims, first sightings, API schedules."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from controlplane.adapters.postgres.store import PostgresScheduleStore, PostgresStore
from controlplane.application.envelope import Envelope
from controlplane.application.ports import NoSuchProject, ProjectRecord, SlotClaim, StoredSchedule

pytestmark = pytest.mark.integration

YAML = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n"


@pytest.fixture
async def store(pg_store: PostgresStore) -> PostgresScheduleStore:
    await pg_store.create_project(ProjectRecord("shop", YAML))
    await pg_store.create_project(ProjectRecord("other", YAML))
    return PostgresScheduleStore(pg_store.pool)


def claim(slot: float, schedule: str = "nightly", project: str = "shop") -> SlotClaim:
    event = Envelope(
        id=f"id-{project}-{schedule}-{slot}",
        source="scheduler",
        type="sh.keptn.event.dev.delivery.triggered",
        time="2024-01-01T00:00:00.000Z",
        data={"project": project, "stage": "dev", "service": "carts"},
        keptn_context=f"ctx-{slot}",
    )
    return SlotClaim(project, schedule, slot, event)


async def test_a_slot_is_claimed_once_even_by_concurrent_replicas(
    store: PostgresScheduleStore, database_url: str
) -> None:
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(4)]
    try:
        replicas = [PostgresScheduleStore(pool) for pool in pools]
        slots = [claim(float(n)) for n in range(200)]
        results = await asyncio.gather(
            *(replica.claim_slots(slots, f"r{i}") for i, replica in enumerate(replicas))
        )
    finally:
        for pool in pools:
            await pool.close()
    won = [c.slot for result in results for c in result]
    assert sorted(won) == [float(n) for n in range(200)]  # each once, across all replicas
    assert await store.claim_slots(slots[:3], "late") == []


async def test_states_remember_the_first_sighting_until_the_fingerprint_changes(
    store: PostgresScheduleStore,
) -> None:
    [state] = await store.schedule_states([("shop", "nightly", "0 2 * * *|UTC")], now=100.0)
    assert (state.first_seen, state.last_slot, state.last_context) == (100.0, None, "")
    await store.claim_slots([claim(150.0), claim(250.0)], "a")
    [state] = await store.schedule_states([("shop", "nightly", "0 2 * * *|UTC")], now=300.0)
    assert (state.first_seen, state.last_slot, state.last_context) == (100.0, 250.0, "ctx-250.0")
    [state] = await store.schedule_states([("shop", "nightly", "@hourly|UTC")], now=400.0)
    assert (state.first_seen, state.last_slot) == (400.0, 250.0)
    await store.forget_schedule_states([("shop", "nightly")])
    [state] = await store.schedule_states([("shop", "nightly", "@hourly|UTC")], now=500.0)
    assert state.first_seen == 500.0


async def test_schedules_of_missing_projects_are_left_out(store: PostgresScheduleStore) -> None:
    states = await store.schedule_states(
        [("shop", "a", "x"), ("gone", "b", "x"), ("other", "c", "x")], now=1.0
    )
    assert sorted((s.project, s.schedule) for s in states) == [("other", "c"), ("shop", "a")]
    assert await store.claim_slots([claim(1.0, project="gone")], "a") == []


async def test_unpublished_claims_come_back_until_marked(store: PostgresScheduleStore) -> None:
    first, second = claim(1.0), claim(2.0)
    await store.claim_slots([first, second], "a")
    assert await store.unpublished_claims(older_than=60.0, limit=10) == []  # too fresh
    stale = await store.unpublished_claims(older_than=0.0, limit=10)
    assert [(c.slot, c.event) for c in stale] == [(1.0, first.event), (2.0, second.event)]
    await store.mark_published([first])
    assert [c.slot for c in await store.unpublished_claims(0.0, 10)] == [2.0]


async def test_last_slots_and_pruning(
    store: PostgresScheduleStore, pg_store: PostgresStore
) -> None:
    await store.claim_slots([claim(float(n)) for n in range(5)], "a")
    await store.claim_slots([claim(9.0, schedule="weekly")], "a")
    await store.mark_published([claim(float(n)) for n in range(5)] + [claim(9.0, "weekly")])
    assert await store.last_slots("shop") == {
        "nightly": (4.0, "ctx-4.0"),
        "weekly": (9.0, "ctx-9.0"),
    }
    await pg_store.pool.execute("UPDATE schedule_slots SET claimed_at = now() - interval '2 days'")
    assert await store.prune_claims(older_than=86400.0) == 4  # every schedule keeps its latest
    assert await store.last_slots("shop") == {
        "nightly": (4.0, "ctx-4.0"),
        "weekly": (9.0, "ctx-9.0"),
    }
    assert await store.last_slots("other") == {}


async def test_api_schedules(store: PostgresScheduleStore, pg_store: PostgresStore) -> None:
    document = {"cron": "@daily", "stage": "dev", "sequence": "delivery", "service": "x"}
    assert await store.put_api_schedule(StoredSchedule("shop", "a", document, 1.0)) is True
    changed = {**document, "cron": "@hourly"}
    assert await store.put_api_schedule(StoredSchedule("shop", "a", changed, 2.0)) is False
    await store.put_api_schedule(StoredSchedule("other", "b", document, 3.0))
    assert await store.list_api_schedules("shop") == [StoredSchedule("shop", "a", changed, 2.0)]
    assert [(s.project, s.name) for s in await store.list_api_schedules()] == [
        ("other", "b"),
        ("shop", "a"),
    ]
    with pytest.raises(NoSuchProject):
        await store.put_api_schedule(StoredSchedule("gone", "a", document, 1.0))
    assert await store.delete_api_schedule("shop", "a") is True
    assert await store.delete_api_schedule("shop", "a") is False


async def test_everything_goes_with_its_project(
    store: PostgresScheduleStore, pg_store: PostgresStore
) -> None:
    document = {"cron": "@daily", "stage": "dev", "sequence": "delivery", "service": "x"}
    await store.put_api_schedule(StoredSchedule("shop", "a", document, 1.0))
    await store.schedule_states([("shop", "a", "f")], now=1.0)
    await store.claim_slots([claim(1.0, "a")], "r")
    await pg_store.delete_project("shop")
    for table in ("schedules", "schedule_state", "schedule_slots"):
        assert await pg_store.pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
