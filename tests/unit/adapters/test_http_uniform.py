"""The integration registry's HTTP API (Keptn's uniform), through httpx.ASGITransport."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controlplane.adapters.http import create_app
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
)

BASE = "/api/controlPlane/v1/uniform/registration"
NOW = 1_795_255_200.0  # 2026-11-21T10:00:00Z
TTL = 600.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "another-secret-of-enough-length"


def registration(
    name: str = "checknumber-node", hostname: str = "laptop", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "metadata": {
            "hostname": hostname,
            "integrationversion": "1.0.0",
            "distributorversion": "",
            "location": "remote-execution-plane",
            "kubernetesmetadata": {"namespace": "default", "podname": "", "deploymentname": ""},
        },
        "subscriptions": [
            {
                "event": "sh.keptn.event.checknumber.triggered",
                "filter": {"projects": ["seed"], "stages": [], "services": []},
                "webhook": {
                    "url": "http://127.0.0.1:9001/events",
                    "mode": "structured",
                    "secret": SECRET,
                },
            }
        ],
        "expires": True,
    }
    body.update(extra)
    return body


class Setup:
    def __init__(self) -> None:
        self.now = NOW
        self.store = InMemoryIntegrationStore()
        self.registry = Registry(self.store, ttl=TTL, clock=lambda: self.now)
        self.app: FastAPI = create_app(
            engine=FakeEngine(),
            definitions=FakeDefinitions(),
            queries=Queries(InMemoryQueryStore()),
            registry=self.registry,
            api_token=None,
        )


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    message: str = body["message"]
    assert message
    return message


def no_secrets(response: httpx.Response) -> None:
    assert SECRET not in response.text
    assert OTHER_SECRET not in response.text
    assert "secret" not in response.text


async def register(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    response = await client.post(BASE, json=body or registration())
    assert response.status_code in (200, 201), response.text
    integration_id: str = response.json()["id"]
    return integration_id


# ------------------------------------------------------------------------------ registration


async def test_register_answers_201_then_200_and_keeps_subscriptions(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    first = await client.post(BASE, json=registration())
    assert first.status_code == 201, first.text
    integration_id = first.json()["id"]
    assert first.json() == {"id": integration_id}
    assert integration_id == hashlib.sha1(b"checknumber-node-default-laptop").hexdigest()

    added = await client.post(
        f"{BASE}/{integration_id}/subscription", json={"event": "test.triggered"}
    )
    assert added.status_code == 201, added.text
    before = (await client.get(f"{BASE}/{integration_id}/subscription")).json()
    assert len(before) == 2

    setup.now += 60
    restarted = registration(subscriptions=[], expires=False)
    restarted["metadata"]["integrationversion"] = "1.1.0"
    again = await client.post(BASE, json=restarted)
    assert again.status_code == 200, again.text
    assert again.json() == {"id": integration_id}

    [shown] = (await client.get(BASE)).json()
    assert shown["subscriptions"] == before
    assert shown["metadata"]["integrationversion"] == "1.1.0"
    assert shown["metadata"]["lastseen"] == "2026-11-21T10:01:00.000Z"
    assert shown["expires"] is False


async def test_the_listing_is_keptns_shape_and_never_holds_the_secret(
    client: httpx.AsyncClient,
) -> None:
    integration_id = await register(client)
    response = await client.get(BASE)
    assert response.status_code == 200
    [shown] = response.json()
    subscription_id = shown["subscriptions"][0]["id"]
    assert shown == {
        "id": integration_id,
        "name": "checknumber-node",
        "metadata": {
            "hostname": "laptop",
            "integrationversion": "1.0.0",
            "distributorversion": "",
            "location": "remote-execution-plane",
            "kubernetesmetadata": {"namespace": "default", "podname": "", "deploymentname": ""},
            "lastseen": "2026-11-21T10:00:00.000Z",
        },
        "subscriptions": [
            {
                "id": subscription_id,
                "event": "sh.keptn.event.checknumber.triggered",
                "filter": {"projects": ["seed"], "stages": [], "services": []},
                "webhook": {"url": "http://127.0.0.1:9001/events", "mode": "structured"},
            }
        ],
        "expires": True,
    }
    no_secrets(response)


async def test_a_minimal_registration(client: httpx.AsyncClient) -> None:
    response = await client.post(BASE, json={"name": "bare"})
    assert response.status_code == 201, response.text
    [shown] = (await client.get(BASE)).json()
    assert shown["id"] == hashlib.sha1(b"bare--").hexdigest()
    assert shown["subscriptions"] == []
    assert shown["expires"] is True


async def test_list_filters(client: httpx.AsyncClient) -> None:
    seed = await register(client, registration("seed-checker"))
    anywhere = await register(
        client, registration("anywhere", subscriptions=[{"event": "test.triggered"}])
    )
    scoped = await register(
        client,
        registration(
            "scoped",
            subscriptions=[
                {
                    "event": "deployment.triggered",
                    "filter": {"projects": ["shop"], "stages": ["prod"], "services": ["carts"]},
                }
            ],
        ),
    )

    async def ids(**query: str) -> list[str]:
        response = await client.get(BASE, params=query)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()]

    assert await ids() == [anywhere, scoped, seed]  # by name
    assert await ids(id=scoped) == [scoped]
    assert await ids(id="unknown") == []
    assert await ids(name="seed-checker") == [seed]
    assert await ids(project="seed") == [anywhere, seed]
    assert await ids(project="shop") == [anywhere, scoped]
    assert await ids(project="shop", stage="dev") == [anywhere]
    assert await ids(stage="prod", service="carts") == [anywhere, scoped, seed]
    assert await ids(service="orders") == [anywhere, seed]
    assert await ids(name="scoped", project="seed") == []


# ------------------------------------------------------------------------------ ping, delete


async def test_ping_refreshes_lastseen_and_returns_the_subscriptions(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    integration_id = await register(client)
    setup.now += 90.5
    response = await client.put(f"{BASE}/{integration_id}/ping")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == integration_id
    assert body["metadata"]["lastseen"] == "2026-11-21T10:01:30.500Z"
    assert [s["event"] for s in body["subscriptions"]] == ["sh.keptn.event.checknumber.triggered"]
    assert body["subscriptions"][0]["webhook"] == {
        "url": "http://127.0.0.1:9001/events",
        "mode": "structured",
    }
    no_secrets(response)


async def test_ping_of_an_unknown_integration_is_404(client: httpx.AsyncClient) -> None:
    message = problem(await client.put(f"{BASE}/nope/ping"), 404)
    assert "register again" in message


async def test_an_expired_integration_is_gone(client: httpx.AsyncClient, setup: Setup) -> None:
    integration_id = await register(client)
    forever = await register(client, registration("third-party", expires=False))
    setup.now += TTL + 1
    problem(await client.put(f"{BASE}/{integration_id}/ping"), 404)
    assert [item["id"] for item in (await client.get(BASE)).json()] == [forever]
    assert (await client.put(f"{BASE}/{forever}/ping")).status_code == 200
    problem(await client.get(f"{BASE}/{integration_id}/subscription"), 404)

    again = await client.post(BASE, json=registration())
    assert again.status_code == 201
    assert again.json() == {"id": integration_id}


async def test_delete_removes_the_integration(client: httpx.AsyncClient, setup: Setup) -> None:
    integration_id = await register(client)
    response = await client.delete(f"{BASE}/{integration_id}")
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert (await client.get(BASE)).json() == []
    assert setup.store.integrations == {}
    problem(await client.delete(f"{BASE}/{integration_id}"), 404)
    problem(await client.put(f"{BASE}/{integration_id}/ping"), 404)


# ------------------------------------------------------------------------------ subscriptions


async def test_subscription_crud(client: httpx.AsyncClient) -> None:
    integration_id = await register(client, registration(subscriptions=[]))
    path = f"{BASE}/{integration_id}/subscription"
    assert (await client.get(path)).json() == []

    created = await client.post(
        path,
        json={
            "event": "checknumber.triggered",
            "filter": {"projects": ["seed"], "stages": ["dev"], "services": ["phone"]},
            "webhook": {"url": "https://hooks.example/x", "mode": "binary", "secret": OTHER_SECRET},
        },
    )
    assert created.status_code == 201, created.text
    subscription_id = created.json()["id"]
    assert created.json() == {"id": subscription_id}

    one = await client.get(f"{path}/{subscription_id}")
    assert one.status_code == 200
    assert one.json() == {
        "id": subscription_id,
        "event": "sh.keptn.event.checknumber.triggered",
        "filter": {"projects": ["seed"], "stages": ["dev"], "services": ["phone"]},
        "webhook": {"url": "https://hooks.example/x", "mode": "binary"},
    }
    no_secrets(one)
    listed = await client.get(path)
    assert listed.json() == [one.json()]
    no_secrets(listed)

    replaced = await client.put(f"{path}/{subscription_id}", json={"event": "*.finished"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {}
    assert (await client.get(f"{path}/{subscription_id}")).json() == {
        "id": subscription_id,
        "event": "sh.keptn.event.*.finished",
        "filter": {"projects": [], "stages": [], "services": []},
    }

    # A ping shows the change: that is how SDK services follow their subscriptions.
    pinged = (await client.put(f"{BASE}/{integration_id}/ping")).json()
    assert [s["event"] for s in pinged["subscriptions"]] == ["sh.keptn.event.*.finished"]

    deleted = await client.delete(f"{path}/{subscription_id}")
    assert deleted.status_code == 200
    assert deleted.json() == {}
    assert (await client.get(path)).json() == []
    problem(await client.get(f"{path}/{subscription_id}"), 404)


async def test_subscription_calls_answer_404_for_unknown_ids(client: httpx.AsyncClient) -> None:
    integration_id = await register(client)
    known = f"{BASE}/{integration_id}/subscription"
    unknown = f"{BASE}/nope/subscription"
    body = {"event": "test.triggered"}
    problem(await client.get(unknown), 404)
    problem(await client.post(unknown, json=body), 404)
    problem(await client.get(f"{unknown}/x"), 404)
    message = problem(await client.get(f"{known}/x"), 404)
    assert "'x'" in message
    problem(await client.put(f"{known}/x", json=body), 404)
    problem(await client.delete(f"{known}/x"), 404)
    assert len((await client.get(known)).json()) == 1


# ------------------------------------------------------------------------------ 400s


def bad_webhook_registration() -> dict[str, Any]:
    body = registration()
    del body["subscriptions"][0]["webhook"]["secret"]
    return body


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (bad_webhook_registration(), "subscriptions[0].webhook.secret"),
        (registration(name="has space"), "name"),
        ({"metadata": {}}, "name"),
        (registration(expires="sometimes"), "expires"),
        (
            registration(subscriptions=[{"event": "a.triggered"}, {"event": "a..b"}]),
            "subscriptions[1].event",
        ),
        (
            registration(
                subscriptions=[{"event": "a.triggered", "filter": {"services": ["carts"]}}]
            ),
            "subscriptions[0].filter.services",
        ),
        (
            registration(
                subscriptions=[
                    {"event": "a.finished", "webhook": {"url": "http://h", "secret": OTHER_SECRET}}
                ]
            ),
            "subscriptions[0].event",
        ),
        (
            registration(
                subscriptions=[
                    {"event": "a.triggered", "webhook": {"url": "http://[::1", "secret": SECRET}}
                ]
            ),
            "subscriptions[0].webhook.url",
        ),
    ],
)
async def test_an_invalid_registration_is_400_naming_the_field(
    client: httpx.AsyncClient, setup: Setup, body: dict[str, Any], path: str
) -> None:
    message = problem(await client.post(BASE, json=body), 400)
    assert f"{path}: " in message
    assert setup.store.integrations == {}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"event": "a.triggered", "filter": {"services": ["carts"]}}, "filter.services: "),
        (
            {"event": "a.finished", "webhook": {"url": "http://h", "secret": OTHER_SECRET}},
            "only .triggered event types can be pushed",
        ),
        (
            {"event": ">", "webhook": {"url": "http://h", "secret": OTHER_SECRET}},
            "only .triggered event types can be pushed",
        ),
        ({"event": "a.triggered", "webhook": {"url": "http://h", "secret": "short"}}, "secret"),
        ({"filter": {}}, "event: is required"),
        ([{"event": "a.triggered"}], "must be an object"),
    ],
)
async def test_an_invalid_subscription_is_400(
    client: httpx.AsyncClient, body: object, says: str
) -> None:
    integration_id = await register(client)
    path = f"{BASE}/{integration_id}/subscription"
    subscription_id = (await client.get(path)).json()[0]["id"]
    assert says in problem(await client.post(path, json=body), 400)
    assert says in problem(await client.put(f"{path}/{subscription_id}", json=body), 400)
    [kept] = (await client.get(path)).json()
    assert kept["event"] == "sh.keptn.event.checknumber.triggered"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (json.dumps([registration()]).encode(), "the body must be a JSON object"),
        (b'"checknumber-node"', "the body must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    client: httpx.AsyncClient, content: bytes, says: str
) -> None:
    response = await client.post(
        BASE, content=content, headers={"content-type": "application/json"}
    )
    assert says in problem(response, 400)


async def test_a_subscription_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    integration_id = await register(client)
    response = await client.post(
        f"{BASE}/{integration_id}/subscription",
        content=b"event=a.triggered",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "not JSON" in problem(response, 400)


async def test_an_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    body = registration()
    body["metadata"]["location"] = "x" * 70_000
    problem(await client.post(BASE, json=body), 413)
    assert (await client.get(BASE)).json() == []


async def test_the_secret_is_never_in_any_answer(client: httpx.AsyncClient) -> None:
    integration_id = await register(client)
    path = f"{BASE}/{integration_id}/subscription"
    subscription_id = (await client.get(path)).json()[0]["id"]
    responses = [
        await client.post(BASE, json=registration()),
        await client.get(BASE),
        await client.get(BASE, params={"id": integration_id}),
        await client.put(f"{BASE}/{integration_id}/ping"),
        await client.get(path),
        await client.get(f"{path}/{subscription_id}"),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        no_secrets(response)
