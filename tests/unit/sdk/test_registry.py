"""Registration as an integration, heartbeats, and following the subscriptions."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import tasksdk
from tasksdk import RegistrationError, Subscription, TaskApp, TaskContext, TransportError, contract
from tasksdk.registry import (
    Integration,
    IntegrationRegistration,
    Webhook,
    parse_subscriptions,
    subscription_for,
)
from tasksdk.testing import TaskEnvironment
from tests.unit.sdk.fake_control_plane import FakeControlPlane, eventually

CHECKNUMBER = "sh.keptn.event.checknumber.triggered"
GEOLOOKUP = "sh.keptn.event.geolookup.triggered"
PING = 0.02
FAST = {"poll_interval": 0.01, "ping_interval": PING}


def two_task_app(calls: list[tuple[str, str]], **filters: Any) -> TaskApp:
    app = TaskApp("phone-service")

    @app.task("checknumber", **filters)
    async def check(ctx: TaskContext) -> None:
        calls.append((ctx.task, ctx.event.id))

    @app.task("geolookup")
    async def locate(ctx: TaskContext) -> None:
        calls.append((ctx.task, ctx.event.id))

    return app


def triggered(task: str = "checknumber", project: str = "seed") -> dict[str, Any]:
    return contract.triggered_event(task, project=project, stage="dev", service="phone")


def subscription_id(fake: FakeControlPlane, event: str) -> str:
    ids = [s["id"] for s in fake.only_integration()["subscriptions"] if s["event"] == event]
    assert len(ids) == 1
    return str(ids[0])


def pings_after(fake: FakeControlPlane, count: int) -> int:
    return len(fake.pings) + count


# -- what is registered ----------------------------------------------------------------------


async def test_the_app_registers_one_subscription_per_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "tasks")
    monkeypatch.setenv("HOSTNAME", "phone-service-7d4b9")
    fake = FakeControlPlane()

    app = two_task_app([], project="seed", stage=["dev", "prod"])
    async with fake.api() as api, app.connect_pull(api, **FAST):
        pass

    [(status, body)] = fake.registrations
    assert status == 201
    assert body == {
        "name": "phone-service",
        "metadata": {
            "hostname": socket.gethostname(),
            "integrationversion": tasksdk.__version__,
            "distributorversion": "",
            "location": "remote-execution-plane",
            "kubernetesmetadata": {
                "namespace": "tasks",
                "podname": "phone-service-7d4b9",
                "deploymentname": "",
            },
        },
        "subscriptions": [
            {
                "event": CHECKNUMBER,
                "filter": {"projects": ["seed"], "stages": ["dev", "prod"], "services": []},
            },
            {"event": GEOLOOKUP, "filter": {"projects": [], "stages": [], "services": []}},
        ],
        "expires": True,
    }


def test_the_namespace_falls_back_to_namespace_then_default() -> None:
    def namespace(environ: dict[str, str]) -> str:
        return IntegrationRegistration.of_this_process(
            "svc", [], location="control-plane", environ=environ
        ).namespace

    assert namespace({"NAMESPACE": "ops"}) == "ops"
    assert namespace({"POD_NAMESPACE": "tasks", "NAMESPACE": "ops"}) == "tasks"
    assert namespace({}) == "default"


def test_services_without_stages_are_left_to_the_local_filter() -> None:
    app = TaskApp("svc")
    app.task("checknumber", service="phone")(lambda ctx: None)
    app.task("geolookup", stage="dev", service="phone")(lambda ctx: None)

    without_stages = subscription_for(app.registrations["checknumber"])
    with_stages = subscription_for(app.registrations["geolookup"])

    assert without_stages.to_json()["filter"] == {"projects": [], "stages": [], "services": []}
    assert with_stages.to_json()["filter"] == {
        "projects": [],
        "stages": ["dev"],
        "services": ["phone"],
    }


def test_subscriptions_read_from_the_api() -> None:
    read = parse_subscriptions(
        [
            {
                "id": "s1",
                "event": "checknumber.triggered",
                "filter": {"projects": ["seed"], "stages": [], "services": []},
            },
            {
                "id": "s2",
                "event": "sh.keptn.event.*.triggered",
                "webhook": {"url": "http://svc/events", "mode": "binary"},
            },
            {"id": "broken"},
            "not an object",
        ]
    )

    assert read == (
        Subscription(event=CHECKNUMBER, projects=("seed",), id="s1"),
        Subscription(
            event="sh.keptn.event.*.triggered",
            webhook=Webhook(url="http://svc/events", mode="binary"),
            id="s2",
        ),
    )
    assert read[1].covers(GEOLOOKUP)
    assert not read[0].covers(GEOLOOKUP)


# -- following the subscriptions -------------------------------------------------------------


async def test_a_deleted_subscription_stops_the_task_and_a_new_one_restarts_it() -> None:
    fake = FakeControlPlane()
    calls: list[tuple[str, str]] = []

    async with fake.api() as api, two_task_app(calls).connect_pull(api, **FAST) as transport:
        assert transport.subjects == {CHECKNUMBER, GEOLOOKUP}
        integration_id = fake.only_integration()["id"]

        fake.delete_subscription(integration_id, subscription_id(fake, CHECKNUMBER))
        await eventually(lambda: transport.subjects == {GEOLOOKUP}, timeout=10 * PING)
        unserved = triggered("checknumber")
        fake.add_open(unserved)
        served = triggered("geolookup")
        fake.add_open(served)
        await eventually(lambda: fake.answers_to(served["id"]) == ["started", "finished"])
        assert fake.answers_to(unserved["id"]) == []

        fake.add_subscription(integration_id, {"event": "checknumber.triggered"})
        await eventually(lambda: fake.answers_to(unserved["id"]) == ["started", "finished"])
        assert transport.subjects == {CHECKNUMBER, GEOLOOKUP}

    assert sorted(calls) == sorted([("geolookup", served["id"]), ("checknumber", unserved["id"])])


async def test_a_subscription_filter_narrows_what_is_accepted() -> None:
    fake = FakeControlPlane()
    calls: list[tuple[str, str]] = []

    async with fake.api() as api, two_task_app(calls).connect_pull(api, **FAST):
        integration_id = fake.only_integration()["id"]
        fake.delete_subscription(integration_id, subscription_id(fake, CHECKNUMBER))
        fake.add_subscription(
            integration_id,
            {
                "event": CHECKNUMBER,
                "filter": {"projects": ["seed"], "stages": [], "services": []},
            },
        )
        seen = pings_after(fake, 2)
        await eventually(lambda: len(fake.pings) >= seen)
        other = triggered(project="other")
        seed = triggered(project="seed")
        fake.add_open(other)
        fake.add_open(seed)
        await eventually(lambda: fake.answers_to(seed["id"]) == ["started", "finished"])
        polls = len(fake.polls)
        await eventually(lambda: len(fake.polls) >= polls + 4)

    assert calls == [("checknumber", seed["id"])]
    assert fake.answers_to(other["id"]) == []


async def test_webhook_subscriptions_do_not_count_for_pull() -> None:
    fake = FakeControlPlane()

    async with fake.api() as api, two_task_app([]).connect_pull(api, **FAST) as transport:
        integration_id = fake.only_integration()["id"]
        fake.delete_subscription(integration_id, subscription_id(fake, CHECKNUMBER))
        fake.add_subscription(
            integration_id,
            {
                "event": CHECKNUMBER,
                "webhook": {"url": "http://elsewhere/", "mode": "structured", "secret": "x" * 16},
            },
        )
        await eventually(lambda: transport.subjects == {GEOLOOKUP})


async def test_a_wildcard_subscription_serves_every_task() -> None:
    fake = FakeControlPlane()

    async with fake.api() as api, two_task_app([]).connect_pull(api, **FAST) as transport:
        integration = fake.only_integration()
        for subscription in list(integration["subscriptions"]):
            fake.delete_subscription(integration["id"], subscription["id"])
        await eventually(lambda: transport.subjects == frozenset())
        fake.add_subscription(integration["id"], {"event": "sh.keptn.event.*.triggered"})
        await eventually(lambda: transport.subjects == {CHECKNUMBER, GEOLOOKUP})


# -- registering again, retrying, failing ----------------------------------------------------


async def test_a_404_ping_registers_again() -> None:
    fake = FakeControlPlane()

    async with fake.api() as api, two_task_app([]).connect_pull(api, **FAST) as transport:
        integration_id = fake.only_integration()["id"]
        fake.integrations.clear()  # deleted, or expired by TTL

        await eventually(lambda: len(fake.registrations) == 2)
        await eventually(lambda: integration_id in fake.integrations)
        assert transport.subjects == {CHECKNUMBER, GEOLOOKUP}

    assert [status for status, _ in fake.registrations] == [201, 201]
    assert fake.only_integration()["id"] == integration_id


async def test_registration_is_retried_while_the_api_is_down() -> None:
    fake = FakeControlPlane()
    fake.down = True

    async with fake.api() as api:
        connection = two_task_app([]).connect_pull(api, **FAST)
        starting = asyncio.create_task(connection.__aenter__())
        await eventually(lambda: fake.unreachable_attempts >= 3)
        assert not starting.done()
        fake.down = False
        transport = await asyncio.wait_for(starting, timeout=5)
        assert transport.subjects == {CHECKNUMBER, GEOLOOKUP}
        await connection.__aexit__(None, None, None)

    assert [status for status, _ in fake.registrations] == [201]


async def test_registration_gives_up_after_ten_attempts() -> None:
    fake = FakeControlPlane()
    fake.down = True

    async with fake.api() as api:
        with pytest.raises(TransportError, match="cannot reach the control plane API"):
            async with two_task_app([]).connect_pull(api, **FAST):
                pass

    assert fake.unreachable_registrations == 10


async def test_a_refused_registration_fails_at_once_with_the_server_message() -> None:
    fake = FakeControlPlane(token="right")

    async with fake.api(token="wrong") as api:
        with pytest.raises(RegistrationError, match="missing or incorrect API token"):
            async with two_task_app([]).connect_pull(api, **FAST):
                pass

    assert fake.registrations == []


async def test_re_registration_keeps_the_stored_subscriptions_and_warns_about_gaps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeControlPlane()
    old = TaskApp("phone-service")  # an earlier version of the service, with one task
    old.task("geolookup")(lambda ctx: None)
    async with fake.api() as api:
        async with old.connect_pull(api, **FAST):
            pass

        calls: list[tuple[str, str]] = []
        event = triggered("checknumber")
        fake.add_open(event)
        with caplog.at_level(logging.WARNING, logger="tasksdk.registry"):
            async with two_task_app(calls).connect_pull(api, **FAST) as transport:
                assert transport.subjects == {GEOLOOKUP}
                polls = len(fake.polls)
                await eventually(lambda: len(fake.polls) >= polls + 3)

    assert [status for status, _ in fake.registrations] == [201, 200]
    assert calls == []
    [warning] = [r for r in caplog.records if "task_without_subscription" in r.getMessage()]
    message = warning.getMessage()
    assert CHECKNUMBER in message
    assert f"/api/controlPlane/v1/uniform/registration/{fake.only_integration()['id']}" in message
    assert "/subscription" in message


async def test_failing_pings_keep_the_last_subscriptions_and_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeControlPlane()
    event = triggered("checknumber")

    with caplog.at_level(logging.INFO, logger="tasksdk.registry"):
        async with fake.api() as api, two_task_app([]).connect_pull(api, **FAST) as transport:
            fake.down = True
            await eventually(
                lambda: any("ping_failing 10 times" in r.getMessage() for r in caplog.records)
            )
            assert transport.subjects == {CHECKNUMBER, GEOLOOKUP}
            fake.down = False
            fake.add_open(event)
            await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])
            await eventually(
                lambda: any("ping_recovered" in r.getMessage() for r in caplog.records)
            )

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1


async def test_the_registration_is_left_to_expire_on_shutdown() -> None:
    fake = FakeControlPlane()

    async with fake.api() as api, two_task_app([]).connect_pull(api, **FAST):
        pass
    pings = len(fake.pings)

    assert len(fake.integrations) == 1
    assert pings >= 1  # the first ping, right after registering, fetched the subscriptions


# -- the Integration on its own --------------------------------------------------------------


async def test_the_listener_hears_each_change_once() -> None:
    fake = FakeControlPlane()
    heard: list[tuple[Subscription, ...]] = []

    async def listen(subscriptions: tuple[Subscription, ...]) -> None:
        heard.append(subscriptions)

    registration = IntegrationRegistration.of_this_process(
        "svc", [Subscription.for_task("checknumber")], location="control-plane"
    )
    async with fake.api() as api:
        integration = Integration(api, registration, ping_interval=PING, on_subscriptions=listen)
        await integration.start()
        try:
            assert integration.id == fake.only_integration()["id"]
            seen = pings_after(fake, 3)
            await eventually(lambda: len(fake.pings) >= seen)
            assert [[s.event for s in change] for change in heard] == [[CHECKNUMBER]]
            fake.add_subscription(integration.id, {"event": GEOLOOKUP})
            await eventually(lambda: len(heard) == 2)
        finally:
            await integration.stop()

    assert [s.event for s in heard[1]] == [CHECKNUMBER, GEOLOOKUP]
    assert integration.subscriptions == heard[1]


async def test_a_failing_listener_is_tried_again_on_the_next_ping() -> None:
    fake = FakeControlPlane()
    attempts: list[int] = []

    async def flaky(subscriptions: tuple[Subscription, ...]) -> None:
        attempts.append(len(subscriptions))
        if len(attempts) == 2:
            raise TransportError("NATS is briefly away")

    registration = IntegrationRegistration.of_this_process(
        "svc", [Subscription.for_task("checknumber")], location="control-plane"
    )
    async with fake.api() as api:
        integration = Integration(api, registration, ping_interval=PING, on_subscriptions=flaky)
        await integration.start()
        try:
            assert integration.id is not None
            fake.add_subscription(integration.id, {"event": GEOLOOKUP})
            await eventually(lambda: len(attempts) == 3)
        finally:
            await integration.stop()

    assert attempts == [1, 2, 2]


# -- the test harness ------------------------------------------------------------------------


async def test_task_environment_follows_given_subscriptions() -> None:
    calls: list[tuple[str, str]] = []
    seed_only = Subscription.for_task("checknumber", projects=["seed"])
    env = TaskEnvironment(two_task_app(calls), subscriptions=[seed_only])

    assert env.served == {"checknumber"}
    assert await env.trigger("checknumber", project="other") == []
    assert len(await env.trigger("checknumber", project="seed")) == 2
    assert await env.trigger("geolookup", project="seed") == []

    await env.follow([Subscription.for_task("geolookup")])

    assert env.served == {"geolookup"}
    assert len(await env.trigger("geolookup")) == 2
    assert await env.trigger("checknumber", project="seed") == []
    assert [task for task, _ in calls] == ["checknumber", "geolookup"]
