"""Integrations and push delivery, end to end: a real control plane, NATS, PostgreSQL and a
real HTTP receiver in the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SHIPYARDS
from tests.e2e.harness import (
    ControlPlane,
    TaskService,
    WebhookReceiver,
    eventually,
    free_port,
    trigger,
    wait_state,
)

pytestmark = pytest.mark.e2e

SECRET = "a-shared-secret-of-the-test"
REGISTRATION = "/api/controlPlane/v1/uniform/registration"
PASS = {"status": "succeeded", "result": "pass", "work": {"done": True}}


def plane(e2e_nats: str, database_url: str, tmp_path: Path, *extra: str) -> ControlPlane:
    return ControlPlane(
        nats_url=e2e_nats,
        database_url=database_url,
        sequences=SHIPYARDS,
        workdir=tmp_path,
        extra=("--webhook-backoff", "200ms", "--webhook-backoff-max", "1s", *extra),
    )


@pytest.fixture
async def webhook_plane(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    control_plane = plane(e2e_nats, database_url, tmp_path, "--webhook-attempts", "3")
    await control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


async def register(
    client: httpx.AsyncClient,
    url: str,
    *,
    name: str = "pusher",
    event: str = "sh.keptn.event.work.triggered",
    mode: str = "structured",
    stages: list[str] | None = None,
) -> str:
    body = {
        "name": name,
        "metadata": {"hostname": "test-host", "kubernetesmetadata": {"namespace": "e2e"}},
        "subscriptions": [
            {
                "event": event,
                "filter": {"projects": ["e2e"], "stages": stages or []},
                "webhook": {"url": url, "mode": mode, "secret": SECRET},
            }
        ],
    }
    response = await client.post(REGISTRATION, json=body)
    assert response.status_code == 201, response.text
    integration_id: str = response.json()["id"]
    return integration_id


def signature_ok(headers: dict[str, str], body: bytes) -> bool:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest())
    return hmac.compare_digest(headers["webhook-signature"], "v1," + expected.decode())


async def test_a_push_service_completes_a_sequence_from_a_signed_webhook(
    webhook_plane: ControlPlane,
) -> None:
    async with webhook_plane.client() as client:
        async with WebhookReceiver(answer_with=PASS, api=client) as receiver:
            await register(client, receiver.url)
            context = await trigger(client, "e2e", "dev", "single")
            state = await wait_state(client, "e2e", context, "finished")

        assert state["stages"][0]["latestEvent"]["type"] == "sh.keptn.event.dev.single.finished"
        [(headers, body)] = receiver.requests
        assert headers["content-type"] == "application/cloudevents+json"
        assert signature_ok(headers, body)
        [event] = receiver.events()
        assert event["type"] == "sh.keptn.event.work.triggered"
        assert event["shkeptncontext"] == context
        assert headers["webhook-id"].startswith(event["id"] + ".")
        subscription_id = headers["webhook-id"].split(".", 1)[1]
        assert event["data"]["temporaryData"]["distributor"]["subscriptionID"] == subscription_id
        finished = await client.get(
            "/api/mongodb-datastore/event",
            params={"keptnContext": context, "type": "sh.keptn.event.work.finished"},
        )
        [answer] = finished.json()["events"]
        assert answer["data"]["work"] == {"done": True}


async def test_binary_mode_sends_the_attributes_as_headers(webhook_plane: ControlPlane) -> None:
    async with (
        webhook_plane.client() as client,
        WebhookReceiver(answer_with=PASS, api=client) as receiver,
    ):
        await register(client, receiver.url, mode="binary")
        context = await trigger(client, "e2e", "dev", "single", note="grüezi")
        await wait_state(client, "e2e", context, "finished")

    [(headers, body)] = receiver.requests
    assert headers["content-type"] == "application/json"
    assert headers["ce-type"] == "sh.keptn.event.work.triggered"
    assert headers["ce-shkeptncontext"] == context
    assert headers["ce-specversion"] == "1.0"
    assert signature_ok(headers, body)
    assert receiver.events()[0]["data"]["note"] == "grüezi"


async def test_failed_deliveries_are_retried_until_the_receiver_takes_the_event(
    webhook_plane: ControlPlane,
) -> None:
    async with (
        webhook_plane.client() as client,
        WebhookReceiver(statuses=[503, 500], answer_with=PASS, api=client) as receiver,
    ):
        await register(client, receiver.url)
        context = await trigger(client, "e2e", "dev", "single")
        state = await wait_state(client, "e2e", context, "finished")

    assert state["stages"][0]["latestEvent"]["type"] == "sh.keptn.event.dev.single.finished"
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 3
    assert len(ids) == 1  # one delivery, three attempts, each verifiable
    assert all(signature_ok(headers, body) for headers, body in receiver.requests)


async def test_a_receiver_that_keeps_failing_ends_the_task_errored_not_stuck(
    webhook_plane: ControlPlane,
) -> None:
    async with webhook_plane.client() as client:
        async with WebhookReceiver(default_status=503) as receiver:
            await register(client, receiver.url)
            context = await trigger(client, "e2e", "dev", "single")
            state = await wait_state(client, "e2e", context, "finished", timeout=20.0)

        assert len(receiver.requests) == 3
        assert state["state"] == "finished"
        sequence_end = await client.get(
            "/api/mongodb-datastore/event",
            params={"keptnContext": context, "type": "sh.keptn.event.dev.single.finished"},
        )
        assert sequence_end.json()["events"][0]["data"]["result"] == "fail"
        finished = await client.get(
            "/api/mongodb-datastore/event",
            params={"keptnContext": context, "type": "sh.keptn.event.work.finished"},
        )
        [answer] = finished.json()["events"]
    assert answer["source"] == "controlplane/webhook"
    assert answer["data"]["status"] == "errored"
    assert answer["data"]["result"] == "fail"
    assert receiver.url in answer["data"]["message"]
    assert "3 attempts" in answer["data"]["message"]
    assert "HTTP 503" in answer["data"]["message"]


async def test_a_refused_event_is_not_retried(webhook_plane: ControlPlane) -> None:
    async with webhook_plane.client() as client, WebhookReceiver(default_status=401) as receiver:
        await register(client, receiver.url)
        context = await trigger(client, "e2e", "dev", "single")
        await wait_state(client, "e2e", context, "finished")
    assert len(receiver.requests) == 1


async def test_subscription_filters_by_stage_are_honoured(webhook_plane: ControlPlane) -> None:
    async with (
        webhook_plane.client() as client,
        WebhookReceiver(answer_with=PASS, api=client) as dev,
        WebhookReceiver(answer_with=PASS, api=client) as staging,
    ):
        await register(client, dev.url, name="dev-pusher", stages=["dev"])
        await register(client, staging.url, name="staging-pusher", stages=["staging"])
        context = await trigger(client, "e2e", "dev", "single")
        await wait_state(client, "e2e", context, "finished")

    assert len(dev.requests) == 1
    assert staging.requests == []


async def test_a_push_delivery_survives_a_control_plane_restart(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> None:
    first = plane(e2e_nats, database_url, tmp_path, "--webhook-attempts", "50")
    await first.start()
    receiver_port = free_port()
    try:
        async with first.client() as client:
            # Nothing listens on the receiver's port yet: every attempt fails.
            await register(client, f"http://127.0.0.1:{receiver_port}/events")
            context = await trigger(client, "e2e", "dev", "single")

            async def open_task() -> list[dict[str, Any]]:
                response = await client.get(
                    "/api/controlPlane/v1/event/triggered/sh.keptn.event.work.triggered",
                    params={"project": "e2e"},
                )
                found: list[dict[str, Any]] = response.json()["events"]
                return found

            await eventually(open_task, what="the task to be triggered")
    finally:
        first.kill()

    second = plane(e2e_nats, database_url, tmp_path, "--webhook-attempts", "50")
    await second.start()
    try:
        async with (
            second.client() as client,
            WebhookReceiver(port=receiver_port, answer_with=PASS, api=client) as rcv,
        ):
            state = await wait_state(client, "e2e", context, "finished", timeout=30.0)
        assert state["stages"][0]["latestEvent"]["type"] == "sh.keptn.event.dev.single.finished"
        assert {headers["webhook-id"] for headers, _ in rcv.requests} == {
            rcv.requests[0][0]["webhook-id"]
        }
    finally:
        second.stop()


async def test_registrations_that_stop_pinging_expire(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> None:
    control_plane = plane(e2e_nats, database_url, tmp_path, "--integration-ttl", "1s")
    await control_plane.start()
    try:
        async with control_plane.client() as client:
            integration_id = await register(client, "http://127.0.0.1:9/unused")
            listed = await client.get(REGISTRATION)
            assert [i["id"] for i in listed.json()] == [integration_id]

            async def gone() -> bool:
                # Listing does not ping, so it does not keep the registration alive.
                return (await client.get(REGISTRATION)).json() == []

            await eventually(gone, timeout=5.0, what="the registration to expire")
            response = await client.put(f"{REGISTRATION}/{integration_id}/ping")
            assert response.status_code == 404
    finally:
        control_plane.stop()


async def test_nats_executors_and_webhooks_share_a_task(
    webhook_plane: ControlPlane, e2e_nats: str
) -> None:
    """A NATS executor and a webhook on the same task: both answers count (Keptn's rule)."""
    async with (
        webhook_plane.client() as client,
        TaskService(e2e_nats) as nats_service,
        WebhookReceiver(answer_with=PASS, api=client) as receiver,
    ):
        await register(client, receiver.url)
        context = await trigger(client, "e2e", "dev", "single")
        triggered = await nats_service.wait_triggered("work", context)
        await nats_service.complete(triggered)
        await wait_state(client, "e2e", context, "finished")
    assert len(receiver.requests) == 1
