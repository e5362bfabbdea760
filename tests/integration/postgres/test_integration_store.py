"""The integration registry's store on real PostgreSQL."""

from __future__ import annotations

import base64

import pytest

from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.registry import Registry
from controlplane.domain.integrations import (
    Integration,
    Metadata,
    Subscription,
    SubscriptionFilter,
    Webhook,
)

pytestmark = pytest.mark.integration

T0 = 1_795_255_200.125
WHSEC = "whsec_" + base64.b64encode(b"sixteen-byte-key").decode()


def integration(
    integration_id: str = "i-1", *, last_seen: float = T0, expires: bool = True
) -> Integration:
    return Integration(
        id=integration_id,
        name=f"svc-{integration_id}",
        metadata=Metadata(
            hostname="laptop",
            integrationversion="1.0.0",
            location="remote-execution-plane",
            namespace="default",
            podname="pod-ü",
        ),
        subscriptions=(
            Subscription(
                "sub-1",
                "sh.keptn.event.checknumber.triggered",
                SubscriptionFilter(("seed",), ("dev", "prod"), ("phone",)),
                Webhook("http://127.0.0.1:9001/events", WHSEC, "binary"),
            ),
            Subscription("sub-2", "sh.keptn.event.>"),
        ),
        last_seen=last_seen,
        expires=expires,
    )


async def stored(store: PostgresStore) -> dict[str, Integration]:
    return {found.id: found for found in await store.load_integrations()}


async def test_an_empty_registry_loads_nothing(pg_store: PostgresStore) -> None:
    assert await pg_store.load_integrations() == []


async def test_save_and_load_round_trip_with_secrets(pg_store: PostgresStore) -> None:
    first = integration("i-1")
    second = integration("i-2", last_seen=T0 + 1, expires=False).evolve(subscriptions=())
    await pg_store.save_integration(first)
    await pg_store.save_integration(second)
    assert await stored(pg_store) == {"i-1": first, "i-2": second}


async def test_save_replaces_an_existing_integration(pg_store: PostgresStore) -> None:
    await pg_store.save_integration(integration())
    changed = integration(last_seen=T0 + 60, expires=False).evolve(
        name="renamed",
        metadata=Metadata(hostname="other"),
        subscriptions=(Subscription("sub-9", "sh.keptn.event.test.triggered"),),
    )
    await pg_store.save_integration(changed)
    assert await pg_store.load_integrations() == [changed]


async def test_save_last_seen_moves_forward_only(pg_store: PostgresStore) -> None:
    await pg_store.save_integration(integration("i-1"))
    await pg_store.save_integration(integration("i-2"))

    await pg_store.save_last_seen({"i-1": T0 + 30, "i-2": T0 - 30, "unknown": T0 + 30})
    found = await stored(pg_store)
    assert found["i-1"].last_seen == T0 + 30
    assert found["i-2"].last_seen == T0
    assert set(found) == {"i-1", "i-2"}  # an unknown id is not created
    assert found["i-1"].subscriptions == integration().subscriptions

    await pg_store.save_last_seen({"i-1": T0 + 10})
    await pg_store.save_last_seen({})
    assert (await stored(pg_store))["i-1"].last_seen == T0 + 30


async def test_delete_integrations(pg_store: PostgresStore) -> None:
    for integration_id in ("i-1", "i-2", "i-3"):
        await pg_store.save_integration(integration(integration_id))
    await pg_store.delete_integrations(["i-1", "i-3", "unknown"])
    assert set(await stored(pg_store)) == {"i-2"}
    await pg_store.delete_integrations([])
    assert set(await stored(pg_store)) == {"i-2"}


async def test_a_registry_survives_a_restart_on_postgres(pg_store: PostgresStore) -> None:
    now = T0

    def clock() -> float:
        return now

    registry = Registry(pg_store, ttl=600.0, clock=clock)
    await registry.load()
    integration_id, created = await registry.register(
        {
            "name": "checknumber-node",
            "metadata": {"hostname": "laptop"},
            "subscriptions": [
                {
                    "event": "checknumber.triggered",
                    "filter": {"projects": ["seed"]},
                    "webhook": {"url": "http://127.0.0.1:9001/events", "secret": WHSEC},
                }
            ],
        }
    )
    assert created
    now += 45
    await registry.ping(integration_id)  # 45 s after the last write: persisted

    restarted = Registry(pg_store, ttl=600.0, clock=clock)
    await restarted.load()
    assert restarted.get(integration_id) == registry.get(integration_id)
    [(_, subscription)] = restarted.webhook_targets(
        "sh.keptn.event.checknumber.triggered", "seed", "dev", "phone"
    )
    assert subscription.webhook is not None
    assert subscription.webhook.secret == WHSEC

    await restarted.unregister(integration_id)
    assert await pg_store.load_integrations() == []
