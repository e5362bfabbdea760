"""HTTP push: the ASGI webhook receiver, driven through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tasksdk import (
    ControlPlaneApi,
    RegistrationError,
    TaskApp,
    TaskContext,
    TaskSdkError,
    Webhook,
    contract,
)
from tasksdk.webhooks import MAX_BODY_BYTES, WebhookReceiver, signature_headers
from tests.unit.sdk.fake_control_plane import FakeControlPlane, eventually

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
PUBLIC_URL = "http://phone-service.test/events"
PING = 0.02


def push_app(calls: list[dict[str, Any]]) -> TaskApp:
    app = TaskApp("phone-service")

    @app.task("checknumber", project="seed")
    async def check(ctx: TaskContext) -> dict[str, Any]:
        calls.append({"id": ctx.event.id, "context": ctx.keptn_context, "data": dict(ctx.data)})
        return {"checknumber": {"digits": len(str(ctx.properties.get("number", "")))}}

    return app


def triggered(project: str = "seed", task: str = "checknumber") -> dict[str, Any]:
    return contract.triggered_event(
        task,
        project=project,
        stage="dev",
        service="phone",
        data={task: {"number": 12345}},
    )


def now() -> int:
    return int(time.time())


def signed(body: bytes, event_id: str, **options: Any) -> dict[str, str]:
    secret = options.pop("secret", SECRET)
    timestamp = options.pop("timestamp", None) or now()
    return signature_headers(secret, f"{event_id}.sub-1", body, timestamp=timestamp)


def structured(event: dict[str, Any], **options: Any) -> tuple[dict[str, str], bytes]:
    body = json.dumps(event).encode()
    headers = {
        "content-type": "application/cloudevents+json",
        **signed(body, event["id"], **options),
    }
    return headers, body


def binary(event: dict[str, Any], **options: Any) -> tuple[dict[str, str], bytes]:
    body = json.dumps(event["data"]).encode()
    attributes = {f"ce-{name}": value for name, value in event.items() if name != "data"}
    attributes.pop("ce-datacontenttype", None)
    headers = {
        "content-type": "application/json",
        **attributes,
        **signed(body, event["id"], **options),
    }
    return headers, body


@contextlib.asynccontextmanager
async def serving(
    fake: FakeControlPlane, app: TaskApp, **options: Any
) -> AsyncIterator[tuple[WebhookReceiver, httpx.AsyncClient]]:
    async with fake.api() as api:
        receiver = app.asgi_push(api, SECRET, public_url=PUBLIC_URL, ping_interval=PING, **options)
        async with (
            receiver.running(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=receiver), base_url="http://phone-service.test"
            ) as client,
        ):
            yield receiver, client


async def push(
    client: httpx.AsyncClient, message: tuple[dict[str, str], bytes], path: str = "/events"
) -> httpx.Response:
    headers, body = message
    return await client.post(path, content=body, headers=headers)


# -- registration ----------------------------------------------------------------------------


async def test_it_registers_a_webhook_subscription_per_handler() -> None:
    fake = FakeControlPlane()

    async with serving(fake, push_app([]), mode="binary"):
        integration = fake.only_integration()

    [(status, body)] = fake.registrations
    assert status == 201
    assert body["metadata"]["location"] == "remote-execution-plane"
    assert body["subscriptions"] == [
        {
            "event": "sh.keptn.event.checknumber.triggered",
            "filter": {"projects": ["seed"], "stages": [], "services": []},
            "webhook": {"url": PUBLIC_URL, "mode": "binary", "secret": SECRET},
        }
    ]
    assert integration["subscriptions"][0]["webhook"]["url"] == PUBLIC_URL


@pytest.mark.parametrize(
    ("secret", "public_url", "mode", "problem"),
    [
        ("too-short", PUBLIC_URL, "structured", "16 characters"),
        (SECRET, "phone-service:9000", "structured", "http"),
        (SECRET, "ftp://phone-service/", "structured", "http"),
        (SECRET, PUBLIC_URL, "json", "mode"),
    ],
)
def test_unusable_webhook_settings_are_refused(
    secret: str, public_url: str, mode: str, problem: str
) -> None:
    with pytest.raises(RegistrationError, match=problem):
        push_app([]).asgi_push("http://cp", secret, public_url=public_url, mode=mode)


async def test_a_kept_subscription_pushing_elsewhere_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeControlPlane()
    async with serving(fake, push_app([])):
        pass
    integration = fake.only_integration()
    integration["subscriptions"][0]["webhook"]["url"] = "http://old-host:9000/events"

    with caplog.at_level(logging.WARNING, logger="tasksdk.registry"):
        async with serving(fake, push_app([])):
            pass

    [warning] = [r for r in caplog.records if "webhook_elsewhere" in r.getMessage()]
    assert "http://old-host:9000/events" in warning.getMessage()
    assert PUBLIC_URL in warning.getMessage()


# -- receiving -------------------------------------------------------------------------------


async def test_a_structured_push_is_accepted_at_once_and_answered_over_the_api() -> None:
    fake = FakeControlPlane()
    calls: list[dict[str, Any]] = []
    event = triggered()
    fake.add_open(event)

    async with serving(fake, push_app(calls)) as (_, client):
        response = await push(client, structured(event))
        assert response.status_code == 202
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    assert [call["id"] for call in calls] == [event["id"]]
    finished = fake.events[-1]
    assert finished["source"] == "phone-service"
    assert finished["shkeptncontext"] == event["shkeptncontext"]
    assert finished["data"]["checknumber"] == {"digits": 5}


async def test_a_binary_push_is_rebuilt_into_the_same_event() -> None:
    fake = FakeControlPlane()
    calls: list[dict[str, Any]] = []
    event = triggered()
    fake.add_open(event)

    async with serving(fake, push_app(calls)) as (_, client):
        response = await push(client, binary(event), path="/any/path")
        assert response.status_code == 202
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    [call] = calls
    assert call["context"] == event["shkeptncontext"]
    assert call["data"] == event["data"]
    assert fake.events[-1]["triggeredid"] == event["id"]


async def test_a_redelivered_event_is_handled_once() -> None:
    fake = FakeControlPlane()
    calls: list[dict[str, Any]] = []
    event = triggered()
    fake.add_open(event)

    async with serving(fake, push_app(calls)) as (_, client):
        first = await push(client, structured(event))
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])
        retry = await push(client, binary(event, timestamp=now() + 1))
        again = await push(client, structured(event))

    assert (first.status_code, retry.status_code, again.status_code) == (202, 202, 202)
    assert len(calls) == 1
    assert fake.answers_to(event["id"]) == ["started", "finished"]


async def test_the_handler_filters_still_apply() -> None:
    fake = FakeControlPlane()
    calls: list[dict[str, Any]] = []
    event = triggered(project="other")
    fake.add_open(event)

    async with serving(fake, push_app(calls)) as (receiver, client):
        response = await push(client, structured(event))
        await asyncio.wait_for(receiver.transport.stop_receiving(), timeout=5)

    assert response.status_code == 202
    assert calls == []
    assert fake.events == []


@pytest.mark.parametrize(
    "options",
    [
        {"secret": "whsec_" + base64.b64encode(b"not the key at all").decode()},
        {"timestamp": 1_000_000_000},
    ],
    ids=["wrong secret", "stale timestamp"],
)
async def test_badly_signed_pushes_get_401(options: dict[str, Any]) -> None:
    fake = FakeControlPlane()
    event = triggered()
    fake.add_open(event)

    async with serving(fake, push_app([])) as (_, client):
        response = await push(client, structured(event, **options))

    assert response.status_code == 401
    assert response.json()["code"] == 401
    assert fake.events == []


async def test_unsigned_and_tampered_pushes_get_401() -> None:
    fake = FakeControlPlane()
    event = triggered()

    async with serving(fake, push_app([])) as (_, client):
        unsigned = await client.post("/events", content=json.dumps(event).encode())
        headers, body = structured(event)
        tampered = await client.post(
            "/events", content=body.replace(b"12345", b"99999"), headers=headers
        )

    assert unsigned.status_code == tampered.status_code == 401


async def test_bodies_over_one_mebibyte_get_413() -> None:
    fake = FakeControlPlane()
    event = triggered()
    event["data"]["padding"] = "x" * MAX_BODY_BYTES

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with serving(fake, push_app([])) as (_, client):
        declared = await push(client, structured(event))
        headers, body = structured(event)
        streamed = await client.post("/events", content=chunks(body), headers=headers)

    assert declared.status_code == streamed.status_code == 413


async def test_pushes_for_other_tasks_get_404_and_non_events_400() -> None:
    fake = FakeControlPlane()
    other_task = triggered(task="geolookup")
    not_triggered = {**triggered(), "type": "sh.keptn.event.checknumber.finished"}
    garbage = b"{not json"

    async with serving(fake, push_app([])) as (_, client):
        unknown = await push(client, structured(other_task))
        finished = await push(client, structured(not_triggered))
        broken = await client.post("/events", content=garbage, headers=signed(garbage, "e1"))

    assert unknown.status_code == 404
    assert "geolookup" in unknown.json()["message"]
    assert finished.status_code == broken.status_code == 400


async def test_pushes_outside_serving_get_503_and_health_follows() -> None:
    fake = FakeControlPlane()
    event = triggered()
    async with fake.api() as api:
        receiver = push_app([]).asgi_push(api, SECRET, public_url=PUBLIC_URL, ping_interval=PING)
        transport = httpx.ASGITransport(app=receiver)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            before = await push(client, structured(event))
            health_before = await client.get("/health")
            async with receiver.running():
                health = await client.get("/health")
            after = await push(client, structured(event))
            other_method = await client.put("/events")

    assert (before.status_code, after.status_code) == (503, 503)
    assert before.headers["retry-after"] == "1"
    assert (health_before.status_code, health.status_code) == (503, 200)
    assert other_method.status_code == 405


async def test_push_does_not_follow_subscriptions_the_control_plane_decides() -> None:
    fake = FakeControlPlane()
    event = triggered()
    fake.add_open(event)

    async with serving(fake, push_app([])) as (_, client):
        integration = fake.only_integration()
        fake.delete_subscription(integration["id"], integration["subscriptions"][0]["id"])
        seen = len(fake.pings) + 2
        await eventually(lambda: len(fake.pings) >= seen)
        response = await push(client, structured(event))
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    assert response.status_code == 202


# -- the ASGI lifespan -----------------------------------------------------------------------


class Lifespan:
    """Plays an ASGI server's part of the lifespan protocol."""

    def __init__(self, app: WebhookReceiver) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            return await self.inbox.get()

        async def send(message: Any) -> None:
            await self.outbox.put(dict(message))

        self.task = asyncio.create_task(app({"type": "lifespan"}, receive, send))

    async def say(self, message_type: str) -> str:
        await self.inbox.put({"type": message_type})
        answer = await asyncio.wait_for(self.outbox.get(), timeout=5)
        return str(answer["type"]) + (f": {answer['message']}" if "message" in answer else "")


async def test_the_lifespan_registers_on_startup_and_drains_on_shutdown() -> None:
    fake = FakeControlPlane()
    async with fake.api() as api:
        receiver = push_app([]).asgi_push(api, SECRET, public_url=PUBLIC_URL, ping_interval=PING)
        lifespan = Lifespan(receiver)

        assert await lifespan.say("lifespan.startup") == "lifespan.startup.complete"
        assert len(fake.registrations) == 1
        assert receiver.transport.receiving
        assert await lifespan.say("lifespan.shutdown") == "lifespan.shutdown.complete"
        await asyncio.wait_for(lifespan.task, timeout=5)

    assert not receiver.transport.receiving
    assert len(fake.integrations) == 1  # left to expire


async def test_a_refused_registration_fails_the_startup() -> None:
    fake = FakeControlPlane(token="right")
    async with fake.api(token="wrong") as api:
        receiver = push_app([]).asgi_push(api, SECRET, public_url=PUBLIC_URL)
        lifespan = Lifespan(receiver)

        answer = await lifespan.say("lifespan.startup")
        await asyncio.wait_for(lifespan.task, timeout=5)

    assert answer.startswith("lifespan.startup.failed: the control plane refused the registration")
    assert receiver.startup_error is not None


async def test_a_given_api_client_is_left_open() -> None:
    fake = FakeControlPlane()
    api = fake.api()
    receiver = push_app([]).asgi_push(api, SECRET, public_url=PUBLIC_URL)
    async with receiver.running():
        pass

    assert isinstance(api, ControlPlaneApi)
    await api.ping(fake.only_integration()["id"])  # still usable
    await api.aclose()


async def test_serving_push_without_uvicorn_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail

    with pytest.raises(TaskSdkError, match=r"controlplane-task-sdk\[push\]"):
        await push_app([]).serve_push("http://cp", SECRET, public_url=PUBLIC_URL)


async def test_listening_on_all_addresses_needs_a_public_url() -> None:
    with pytest.raises(RegistrationError, match="public_url"):
        await push_app([]).serve_push("http://cp", SECRET, host="0.0.0.0", port=9001)


async def test_logs_never_carry_the_webhook_secret(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeControlPlane()
    old = TaskApp("phone-service")  # an earlier version, without the checknumber task
    old.task("geolookup")(lambda ctx: None)
    async with serving(fake, old):
        pass

    with caplog.at_level(logging.DEBUG, logger="tasksdk"):
        async with serving(fake, push_app([])) as (receiver, _):
            assert receiver.transport.receiving

    warnings = [
        r.getMessage() for r in caplog.records if "task_without_subscription" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "<the webhook secret>" in warnings[0]
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert SECRET not in repr(Webhook(url=PUBLIC_URL, secret=SECRET))
