"""The integration registry over the in-memory store, with a hand-driven clock."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from controlplane.application.errors import NotFound, Rejected
from controlplane.application.registry import Registry, integration_json
from controlplane.domain.integrations import Integration
from controlplane.testing import InMemoryIntegrationStore

T0 = 1_795_000_000.0  # 2026-11-18
TTL = 600.0
SECRET = "a-long-enough-secret"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ids:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"sub-{self.count}"


def webhook_subscription(
    event: str = "checknumber.triggered", url: str = "http://127.0.0.1:9001/events", **filter: Any
) -> dict[str, Any]:
    return {"event": event, "filter": filter, "webhook": {"url": url, "secret": SECRET}}


def registration(
    name: str = "checknumber-node",
    *,
    hostname: str = "laptop",
    namespace: str = "default",
    subscriptions: Sequence[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "metadata": {
            "hostname": hostname,
            "integrationversion": "1.0.0",
            "kubernetesmetadata": {"namespace": namespace},
        },
        "subscriptions": list(subscriptions),
        **extra,
    }


class Setup:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = InMemoryIntegrationStore()
        self.registry = Registry(self.store, ttl=TTL, clock=self.clock, new_id=Ids())

    async def reloaded(self) -> Registry:
        """A registry of a restarted control plane over the same store."""
        registry = Registry(self.store, ttl=TTL, clock=self.clock)
        await registry.load()
        return registry


@pytest.fixture
def setup() -> Setup:
    return Setup()


# ------------------------------------------------------------------------------ register


async def test_register_creates_under_keptns_id(setup: Setup) -> None:
    body = registration(subscriptions=[webhook_subscription(projects=["seed"])])
    integration_id, created = await setup.registry.register(body)
    assert created is True
    assert integration_id == hashlib.sha1(b"checknumber-node-default-laptop").hexdigest()
    integration = setup.registry.get(integration_id)
    assert integration.name == "checknumber-node"
    assert integration.metadata.integrationversion == "1.0.0"
    assert integration.last_seen == T0
    assert integration.expires is True
    [subscription] = integration.subscriptions
    assert subscription.id == "sub-1"
    assert subscription.event == "sh.keptn.event.checknumber.triggered"
    assert setup.store.integrations[integration_id] == integration


async def test_reregistration_keeps_the_subscriptions_and_updates_the_rest(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription()])
    )
    added = await setup.registry.add_subscription(integration_id, {"event": "test.triggered"})
    before = setup.registry.get(integration_id).subscriptions

    setup.clock.now += 60
    body = registration(subscriptions=[{"event": "other.triggered"}], expires=False)
    body["metadata"]["integrationversion"] = "2.0.0"
    again, created = await setup.registry.register(body)

    assert (again, created) == (integration_id, False)
    integration = setup.registry.get(integration_id)
    assert integration.subscriptions == before
    assert [s.id for s in integration.subscriptions] == ["sub-1", added]
    assert integration.metadata.integrationversion == "2.0.0"
    assert integration.last_seen == T0 + 60
    assert integration.expires is False
    assert setup.store.integrations[integration_id] == integration


async def test_another_host_is_another_integration(setup: Setup) -> None:
    first, _ = await setup.registry.register(registration(hostname="a"))
    second, created = await setup.registry.register(registration(hostname="b"))
    assert created is True
    assert first != second
    assert [i.id for i in setup.registry.search(name="checknumber-node")] == sorted([first, second])


async def test_an_expired_registration_registers_anew_with_the_given_subscriptions(
    setup: Setup,
) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription()])
    )
    setup.clock.now += TTL + 1
    again, created = await setup.registry.register(
        registration(subscriptions=[{"event": "test.triggered"}])
    )
    assert (again, created) == (integration_id, True)
    [subscription] = setup.registry.get(integration_id).subscriptions
    assert subscription.event == "sh.keptn.event.test.triggered"


async def test_an_invalid_registration_is_rejected_with_the_field_path(setup: Setup) -> None:
    body = registration(
        subscriptions=[{"event": "a.triggered", "webhook": {"url": "http://h", "secret": "short"}}]
    )
    with pytest.raises(Rejected) as caught:
        await setup.registry.register(body)
    assert caught.value.status == 400
    assert "subscriptions[0].webhook.secret" in caught.value.message
    assert setup.store.integrations == {}


async def test_registrations_survive_a_restart(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription(projects=["seed"])])
    )
    reloaded = await setup.reloaded()
    assert reloaded.get(integration_id) == setup.registry.get(integration_id)
    assert reloaded.webhook_targets("sh.keptn.event.checknumber.triggered", "seed", "dev", "x")


# ------------------------------------------------------------------------------ ping and expiry


async def test_ping_refreshes_last_seen_and_answers_with_the_subscriptions(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription()])
    )
    setup.clock.now += 5
    pinged = await setup.registry.ping(integration_id)
    assert pinged.last_seen == T0 + 5
    assert [s.id for s in pinged.subscriptions] == ["sub-1"]
    assert setup.registry.get(integration_id).last_seen == T0 + 5


async def test_pings_persist_last_seen_at_most_every_quarter_ttl(setup: Setup) -> None:
    # ttl 600 s: a ping is written at most every min(30 s, ttl / 4) = 30 s.
    integration_id, _ = await setup.registry.register(registration())
    for _ in range(5):
        setup.clock.now += 5
        await setup.registry.ping(integration_id)
    assert setup.store.last_seen_writes == 0
    assert setup.store.integrations[integration_id].last_seen == T0

    setup.clock.now = T0 + 30
    await setup.registry.ping(integration_id)
    assert setup.store.last_seen_writes == 1
    assert setup.store.integrations[integration_id].last_seen == T0 + 30

    setup.clock.now = T0 + 59
    await setup.registry.ping(integration_id)
    assert setup.store.last_seen_writes == 1
    assert (await setup.reloaded()).get(integration_id).last_seen == T0 + 30


async def test_pings_keep_an_integration_alive_past_the_ttl(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(registration())
    for _ in range(4):
        setup.clock.now += TTL - 1
        await setup.registry.ping(integration_id)
    assert await setup.registry.expire() == []
    assert setup.registry.get(integration_id).last_seen == setup.clock.now


async def test_ping_of_an_unknown_or_expired_integration_is_not_found(setup: Setup) -> None:
    with pytest.raises(NotFound, match="register again"):
        await setup.registry.ping("nope")
    integration_id, _ = await setup.registry.register(registration())
    setup.clock.now += TTL + 1
    with pytest.raises(NotFound) as caught:
        await setup.registry.ping(integration_id)
    assert caught.value.status == 404


async def test_expiry_deletes_silent_registrations_but_not_those_that_never_expire(
    setup: Setup,
) -> None:
    silent, _ = await setup.registry.register(
        registration("silent", subscriptions=[webhook_subscription()])
    )
    forever, _ = await setup.registry.register(
        registration("third-party", subscriptions=[webhook_subscription()], expires=False)
    )
    alive, _ = await setup.registry.register(registration("alive"))

    setup.clock.now += TTL
    assert await setup.registry.expire() == []  # exactly the ttl is not yet expired
    await setup.registry.ping(alive)

    setup.clock.now += 1
    # Invisible before expire() runs: to the API and to webhook matching.
    assert [i.name for i in setup.registry.search()] == ["alive", "third-party"]
    with pytest.raises(NotFound):
        setup.registry.get(silent)
    targets = setup.registry.webhook_targets("sh.keptn.event.checknumber.triggered", "p", "s", "")
    assert [integration.id for integration, _ in targets] == [forever]
    assert setup.registry.find_subscription("sub-1") is None

    assert await setup.registry.expire() == [silent]
    assert set(setup.store.integrations) == {forever, alive}
    assert await setup.registry.expire() == []

    # A silent service that comes back starts afresh.
    _, created = await setup.registry.register(registration("silent"))
    assert created is True


class SignallingStore(InMemoryIntegrationStore):
    def __init__(self) -> None:
        super().__init__()
        self.deleted = asyncio.Event()

    async def delete_integrations(self, ids: Sequence[str]) -> None:
        await super().delete_integrations(ids)
        self.deleted.set()


async def test_run_expiry_expires_in_the_background_until_stopped() -> None:
    clock = Clock()
    store = SignallingStore()
    registry = Registry(store, ttl=0.4, clock=clock)  # checks every 0.1 s
    integration_id, _ = await registry.register(registration())
    clock.now += 1
    stop = asyncio.Event()
    runner = asyncio.create_task(registry.run_expiry(stop))
    try:
        await asyncio.wait_for(store.deleted.wait(), timeout=5)
        assert integration_id not in store.integrations
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=5)
    assert runner.done()


# ------------------------------------------------------------------------------ unregister


async def test_unregister_deletes_the_integration_and_its_subscriptions(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription()])
    )
    await setup.registry.unregister(integration_id)
    assert setup.store.integrations == {}
    assert setup.registry.search() == []
    assert setup.registry.find_subscription("sub-1") is None
    with pytest.raises(NotFound):
        await setup.registry.unregister(integration_id)


# ------------------------------------------------------------------------------ subscriptions


async def test_subscription_crud(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(registration())
    added = await setup.registry.add_subscription(
        integration_id, webhook_subscription(projects=["seed"])
    )
    assert setup.registry.subscription(integration_id, added).filter.projects == ("seed",)

    await setup.registry.replace_subscription(
        integration_id, added, webhook_subscription("test.triggered", url="https://new/hook")
    )
    replaced = setup.registry.subscription(integration_id, added)
    assert replaced.id == added
    assert replaced.event == "sh.keptn.event.test.triggered"
    assert replaced.webhook is not None
    assert replaced.webhook.url == "https://new/hook"
    assert replaced.filter.projects == ()
    assert (await setup.reloaded()).subscription(integration_id, added) == replaced

    await setup.registry.delete_subscription(integration_id, added)
    assert setup.registry.get(integration_id).subscriptions == ()
    assert setup.store.integrations[integration_id].subscriptions == ()
    with pytest.raises(NotFound, match=added):
        setup.registry.subscription(integration_id, added)


async def test_subscription_changes_keep_other_subscriptions_in_order(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[{"event": "a.triggered"}, {"event": "b.triggered"}])
    )
    third = await setup.registry.add_subscription(integration_id, {"event": "c.triggered"})
    await setup.registry.replace_subscription(integration_id, "sub-1", {"event": "z.triggered"})
    await setup.registry.delete_subscription(integration_id, "sub-2")
    assert [(s.id, s.event) for s in setup.registry.get(integration_id).subscriptions] == [
        ("sub-1", "sh.keptn.event.z.triggered"),
        (third, "sh.keptn.event.c.triggered"),
    ]


async def test_subscription_calls_on_unknown_ids_are_not_found(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(registration())
    with pytest.raises(NotFound):
        await setup.registry.add_subscription("nope", {"event": "a.triggered"})
    with pytest.raises(NotFound):
        setup.registry.subscription(integration_id, "nope")
    with pytest.raises(NotFound):
        await setup.registry.replace_subscription(integration_id, "nope", {"event": "a.triggered"})
    with pytest.raises(NotFound):
        await setup.registry.delete_subscription(integration_id, "nope")
    with pytest.raises(NotFound):
        await setup.registry.delete_subscription("nope", "sub-1")
    assert setup.registry.get(integration_id).subscriptions == ()


async def test_an_invalid_subscription_is_rejected_with_the_field_path(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(registration())
    with pytest.raises(Rejected) as caught:
        await setup.registry.add_subscription(
            integration_id, {"event": "a.triggered", "filter": {"services": ["carts"]}}
        )
    assert caught.value.status == 400
    assert "filter.services" in caught.value.message
    with pytest.raises(Rejected, match=r"only \.triggered event types can be pushed"):
        await setup.registry.add_subscription(integration_id, webhook_subscription("a.finished"))
    assert setup.registry.get(integration_id).subscriptions == ()


# ------------------------------------------------------------------------------ reading


async def test_webhook_targets_are_the_matching_webhook_subscriptions(setup: Setup) -> None:
    await setup.registry.register(
        registration(
            "a",
            subscriptions=[
                webhook_subscription(projects=["seed"]),
                {"event": "checknumber.triggered"},  # NATS subscriber: no webhook
                webhook_subscription("*.triggered", url="http://any/"),
                webhook_subscription("test.triggered"),
            ],
        )
    )
    await setup.registry.register(
        registration("b", subscriptions=[webhook_subscription(projects=["other"])])
    )
    targets = setup.registry.webhook_targets(
        "sh.keptn.event.checknumber.triggered", "seed", "dev", "phone"
    )
    assert sorted((i.name, s.id) for i, s in targets) == [("a", "sub-1"), ("a", "sub-3")]
    assert setup.registry.webhook_targets("sh.keptn.event.dev.seq.triggered", "seed", "", "") == []


async def test_find_subscription_looks_across_integrations(setup: Setup) -> None:
    await setup.registry.register(registration("a", subscriptions=[webhook_subscription()]))
    second, _ = await setup.registry.register(
        registration("b", subscriptions=[webhook_subscription()])
    )
    found = setup.registry.find_subscription("sub-2")
    assert found is not None
    integration, subscription = found
    assert (integration.id, subscription.id) == (second, "sub-2")
    assert setup.registry.find_subscription("sub-9") is None


async def test_search_filters(setup: Setup) -> None:
    seed, _ = await setup.registry.register(
        registration(
            "zeta",
            subscriptions=[
                {
                    "event": "a.triggered",
                    "filter": {"projects": ["seed"], "stages": ["dev"], "services": ["phone"]},
                }
            ],
        )
    )
    anything, _ = await setup.registry.register(
        registration("alpha", subscriptions=[{"event": "b.triggered"}])
    )
    bare, _ = await setup.registry.register(registration("mid"))

    def names(**query: str) -> list[str]:
        return [integration.name for integration in setup.registry.search(**query)]

    assert names() == ["alpha", "mid", "zeta"]
    assert names(id=seed) == ["zeta"]
    assert names(id="nope") == []
    assert names(name="mid") == ["mid"]
    assert names(project="seed") == ["alpha", "zeta"]
    assert names(project="other") == ["alpha"]
    assert names(project="seed", stage="dev", service="phone") == ["alpha", "zeta"]
    assert names(stage="prod") == ["alpha"]
    assert names(service="carts") == ["alpha"]
    assert names(name="zeta", project="other") == []
    assert {anything, bare} <= {i.id for i in setup.registry.search()}


async def test_integration_json_is_keptns_shape_without_secrets(setup: Setup) -> None:
    setup.clock.now = 1_795_255_200.0  # 2026-11-21T10:00:00Z
    integration_id, _ = await setup.registry.register(
        registration(subscriptions=[webhook_subscription(projects=["seed"])])
    )
    shown = integration_json(setup.registry.get(integration_id))
    assert shown == {
        "id": integration_id,
        "name": "checknumber-node",
        "metadata": {
            "hostname": "laptop",
            "integrationversion": "1.0.0",
            "distributorversion": "",
            "location": "",
            "kubernetesmetadata": {"namespace": "default", "podname": "", "deploymentname": ""},
            "lastseen": "2026-11-21T10:00:00.000Z",
        },
        "subscriptions": [
            {
                "id": "sub-1",
                "event": "sh.keptn.event.checknumber.triggered",
                "filter": {"projects": ["seed"], "stages": [], "services": []},
                "webhook": {"url": "http://127.0.0.1:9001/events", "mode": "structured"},
            }
        ],
        "expires": True,
    }
    assert SECRET not in str(shown)


async def test_the_store_gets_every_change(setup: Setup) -> None:
    integration_id, _ = await setup.registry.register(registration())
    added = await setup.registry.add_subscription(integration_id, webhook_subscription())
    stored: Integration = setup.store.integrations[integration_id]
    assert [s.id for s in stored.subscriptions] == [added]
    assert stored.subscriptions[0].webhook is not None
    assert stored.subscriptions[0].webhook.secret == SECRET


async def test_a_reregistration_refreshes_the_webhook_target_but_keeps_the_filter() -> None:
    clock = [1_000.0]
    registry = Registry(InMemoryIntegrationStore(), ttl=60.0, clock=lambda: clock[0])
    first = {
        "name": "pusher",
        "subscriptions": [
            {
                "event": "work.triggered",
                "webhook": {"url": "http://127.0.0.1:9001/a", "secret": "0123456789abcdef"},
            }
        ],
    }
    integration_id, _ = await registry.register(first)
    [stored] = registry.get(integration_id).subscriptions
    await registry.replace_subscription(
        integration_id,
        stored.id,
        {
            "event": "work.triggered",
            "filter": {"projects": ["seed"]},
            "webhook": {"url": "http://127.0.0.1:9001/a", "secret": "0123456789abcdef"},
        },
    )
    restarted = {
        "name": "pusher",
        "subscriptions": [
            {
                "event": "work.triggered",
                "webhook": {"url": "http://127.0.0.1:9002/b", "secret": "fedcba9876543210"},
            }
        ],
    }
    assert await registry.register(restarted) == (integration_id, False)
    [kept] = registry.get(integration_id).subscriptions
    assert kept.id == stored.id
    assert kept.filter.projects == ("seed",)
    assert kept.webhook is not None
    assert kept.webhook.url == "http://127.0.0.1:9002/b"
    assert kept.webhook.secret == "fedcba9876543210"
