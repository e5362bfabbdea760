"""The Python task SDK against a real control plane: NATS replicas, HTTP pull, HTTP push,
and swapping the provider of a task without the user noticing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from controlplane.application.envelope import parse_time
from controlplane.examples import services
from tasksdk import TaskApp, TaskContext
from tests.e2e.harness import (
    ControlPlane,
    events,
    eventually,
    free_port,
    trigger,
    wait_state,
)
from tests.e2e.test_task_services_e2e import CHECKNUMBER_KEYS, SECRET, SEED, node_service

pytestmark = pytest.mark.e2e

REGISTRATION = "/api/controlPlane/v1/uniform/registration"


def work_app(name: str, handled: list[str] | None = None) -> TaskApp:
    app = TaskApp(name)

    @app.task("work")
    async def work(ctx: TaskContext) -> dict[str, Any]:
        if handled is not None:
            handled.append(ctx.keptn_context)
        return {"work": {"by": name, "words": len(str(ctx.data.get("text", "")).split())}}

    return app


async def test_replicas_in_one_queue_group_start_each_task_once(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    first: list[str] = []
    second: list[str] = []
    async with (
        work_app("replicated", first).connect(e2e_nats, api_url=control_plane.url),
        work_app("replicated", second).connect(e2e_nats, api_url=control_plane.url),
        control_plane.client() as client,
    ):
        contexts = [await trigger(client, "e2e", "dev", "single") for _ in range(20)]
        for context in contexts:
            await wait_state(client, "e2e", context, "finished")
        started = [
            len(await events(client, context, type="sh.keptn.event.work.started"))
            for context in contexts
        ]
        registered = (await client.get(REGISTRATION)).json()

    assert started == [1] * 20
    assert sorted(first + second) == sorted(contexts)
    # Two replicas of one service on one host are one integration.
    assert [integration["name"] for integration in registered] == ["replicated"]


async def test_an_sdk_service_over_http_pull_completes_a_sequence(
    control_plane: ControlPlane,
) -> None:
    app = work_app("pulling")
    async with (
        app.connect_pull(control_plane.url, poll_interval=0.1),
        control_plane.client() as client,
    ):
        context = await trigger(client, "e2e", "dev", "single", text="one two three")
        await wait_state(client, "e2e", context, "finished")
        [finished] = await events(client, context, type="sh.keptn.event.work.finished")
    assert finished["source"] == "pulling"
    assert finished["data"]["work"] == {"by": "pulling", "words": 3}


@contextlib.asynccontextmanager
async def served(app: Any, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, interface="asgi3"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await eventually(started, what="the push receiver to listen")
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def test_an_sdk_service_over_http_push_completes_a_sequence(
    control_plane: ControlPlane,
) -> None:
    port = free_port()
    receiver = work_app("pushed").asgi_push(
        control_plane.url, SECRET, public_url=f"http://127.0.0.1:{port}/", mode="binary"
    )
    async with served(receiver, port), control_plane.client() as client:
        context = await trigger(client, "e2e", "dev", "single", text="a b")
        await wait_state(client, "e2e", context, "finished")
        [finished] = await events(client, context, type="sh.keptn.event.work.finished")
        [integration] = (await client.get(REGISTRATION)).json()
    assert finished["source"] == "pushed"
    assert finished["data"]["work"] == {"by": "pushed", "words": 2}
    assert integration["subscriptions"][0]["webhook"]["mode"] == "binary"


@pytest.fixture
async def seed_plane(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        nats_url=e2e_nats, database_url=database_url, sequences=SEED, workdir=tmp_path
    )
    await plane.start()
    try:
        yield plane
    finally:
        plane.stop()


async def integration_named(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for integration in (await client.get(REGISTRATION)).json():
            if integration["name"] == name:
                found: dict[str, Any] = integration
                return found
        return None

    result: dict[str, Any] = await eventually(probe, what=f"integration {name} to register")
    return result


async def pinged_twice_since(client: httpx.AsyncClient, integration_id: str, moment: float) -> None:
    """Wait until the SDK has pinged twice after ``moment``: it has applied the first answer."""
    seen: set[str] = set()

    async def probe() -> bool:
        [integration] = (await client.get(REGISTRATION, params={"id": integration_id})).json()
        stamp = integration["metadata"]["lastseen"]
        if parse_time(stamp) > moment:
            seen.add(stamp)
        return len(seen) >= 2

    await eventually(probe, what="two pings after the subscription change")


async def check_number(client: httpx.AsyncClient) -> dict[str, Any]:
    context = await trigger(
        client, "seed", "dev", "sequence-one", "phone", checknumber={"number": "+41 44 668 18 00"}
    )
    state = await wait_state(client, "seed", context, "finished")
    [answer] = await events(client, context, type="sh.keptn.event.checknumber.finished")
    return {"state": state, "answer": answer}


async def test_swapping_the_checknumber_provider_keeps_what_the_user_sees(
    seed_plane: ControlPlane, e2e_nats: str, tmp_path: Path
) -> None:
    python_app = services.build_app()
    async with (
        python_app.connect(e2e_nats, api_url=seed_plane.url, ping_interval=0.2),
        seed_plane.client() as client,
    ):
        python = await integration_named(client, services.APP_NAME)
        async with node_service(seed_plane, tmp_path) as node_process:
            node = await integration_named(client, "checknumber-node")
            node_url = node["subscriptions"][0]["webhook"]["url"]
            # Start with the Python provider only: take the Node service's subscription away.
            [node_subscription] = node["subscriptions"]
            response = await client.delete(
                f"{REGISTRATION}/{node['id']}/subscription/{node_subscription['id']}"
            )
            assert response.status_code == 200, response.text
            before = await check_number(client)

            # The swap, through the API only: unsubscribe one provider, subscribe the other.
            [python_subscription] = [
                s
                for s in python["subscriptions"]
                if s["event"] == "sh.keptn.event.checknumber.triggered"
            ]
            moment = time.time()
            response = await client.delete(
                f"{REGISTRATION}/{python['id']}/subscription/{python_subscription['id']}"
            )
            assert response.status_code == 200, response.text
            response = await client.post(
                f"{REGISTRATION}/{node['id']}/subscription",
                json={
                    "event": "checknumber.triggered",
                    "webhook": {"url": node_url, "secret": SECRET},
                },
            )
            assert response.status_code == 201, response.text
            await pinged_twice_since(client, python["id"], moment)
            after = await check_number(client)
            assert node_process.process is not None

    assert before["answer"]["source"] == services.APP_NAME
    assert after["answer"]["source"] == "checknumber-node"
    old, new = before["answer"]["data"], after["answer"]["data"]
    assert set(old) == set(new)
    assert set(old["checknumber"]) == set(new["checknumber"]) == CHECKNUMBER_KEYS
    assert old["checknumber"] == new["checknumber"]
    assert (old["status"], old["result"]) == (new["status"], new["result"]) == ("succeeded", "pass")
    assert before["state"]["state"] == after["state"]["state"] == "finished"
    assert [s["state"] for s in before["state"]["stages"]] == [
        s["state"] for s in after["state"]["stages"]
    ]


async def test_sdk_push_secret_must_be_usable(control_plane: ControlPlane) -> None:
    short = base64.b64encode(b"x").decode()
    with pytest.raises(Exception, match="secret"):
        work_app("pushed").asgi_push(control_plane.url, short, public_url="http://127.0.0.1:1/")


async def test_a_signal_while_registration_retries_stops_the_service_at_once(
    e2e_nats: str,
) -> None:
    """`controlplane examples` with the API down: Ctrl-C ends it without waiting out retries."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controlplane",
        "examples",
        "--nats-url",
        e2e_nats,
        "--api-url",
        "http://127.0.0.1:9",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")},
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(20):
            while b"api.retrying register" not in await process.stderr.readline():
                pass
        process.send_signal(signal.SIGINT)
        moment = time.monotonic()
        async with asyncio.timeout(10):
            rest = await process.stderr.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, rest.decode()
    assert time.monotonic() - moment < 5
    assert b"app.stopped_while_starting" in rest
