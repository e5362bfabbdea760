"""The task SDK with registration, against real servers but no control plane.

* NATS with ``api_url``: a real nats-server, and the fake registry API of the unit tests;
  subscription edits subscribe and unsubscribe the NATS subject.
* ``run_push``: a service process serving webhooks with uvicorn, registering with the fake
  API served by a real uvicorn on 127.0.0.1, stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.aio.client import Client
from nats.aio.msg import Msg

from tasksdk import TaskApp, contract
from tasksdk.webhooks import signature_headers
from tests.unit.sdk.fake_control_plane import FakeControlPlane, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def observer(nats_server: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server, name="sdk-registration-observer")
    try:
        yield nc
    finally:
        await nc.close()


async def test_over_nats_the_subject_follows_the_subscriptions(
    nats_server: str, observer: Client, caplog: pytest.LogCaptureFixture
) -> None:
    task = f"reg{os.getpid()}{time.monotonic_ns() % 10**8}"  # subjects of this test's own
    triggered_type = contract.event_type(task, contract.Phase.TRIGGERED)
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        event = json.loads(msg.data)
        if not event["type"].endswith(".triggered"):
            answers.append(event)

    await observer.subscribe(f"sh.keptn.event.{task}.>", cb=collect)
    await observer.flush()

    def answered(event: dict[str, Any]) -> list[str]:
        phases = [a["type"].rsplit(".", 1)[1] for a in answers if a["triggeredid"] == event["id"]]
        return phases

    async def send(event: dict[str, Any]) -> None:
        await observer.publish(event["type"], contract.encode(event))
        await observer.flush()

    def logged(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    app = TaskApp(f"{task}-service")
    app.task(task)(lambda ctx: None)
    fake = FakeControlPlane()
    caplog.set_level(logging.INFO, logger="tasksdk.runner")

    async with fake.api() as api, app.connect(nats_server, api_url=api, ping_interval=0.02):
        integration = fake.only_integration()
        assert integration["metadata"]["location"] == "control-plane"
        first = contract.triggered_event(task, project="p", stage="dev", service="s")
        await send(first)
        await eventually(lambda: answered(first) == ["started", "finished"])

        fake.delete_subscription(integration["id"], integration["subscriptions"][0]["id"])
        await eventually(lambda: logged(f"runner.not_serving {task}") == 1)
        ignored = contract.triggered_event(task, project="p", stage="dev", service="s")
        await send(ignored)

        fake.add_subscription(
            integration["id"],
            {"event": triggered_type, "filter": {"projects": ["p"], "stages": [], "services": []}},
        )
        await eventually(lambda: logged(f"runner.serving {task}") == 2)
        other_project = contract.triggered_event(task, project="q", stage="dev", service="s")
        again = contract.triggered_event(task, project="p", stage="dev", service="s")
        await send(other_project)
        await send(again)
        await eventually(lambda: answered(again) == ["started", "finished"])

    await observer.flush()
    assert answered(ignored) == []
    assert answered(other_project) == []


# -- run_push in a process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served_over_http(fake: FakeControlPlane) -> AsyncIterator[str]:
    """Serve the fake API with uvicorn on 127.0.0.1 (a port of its own) for the block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
        sock.close()


SERVICE = """
import logging, sys
from tasksdk import TaskApp

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
app = TaskApp("push-service")


@app.task("checknumber")
async def check(ctx):
    return {"checknumber": {"digits": len(str(ctx.properties["number"]))}}


api_url, secret, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
app.run_push(api_url, secret, "127.0.0.1", port, ping_interval=0.2)
"""


async def test_run_push_serves_webhooks_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    fake = FakeControlPlane()
    secret = "a-plain-secret-for-the-test"
    port = free_port()
    script = tmp_path / "push_service.py"
    script.write_text(SERVICE)
    event = contract.triggered_event(
        "checknumber", project="p", stage="dev", service="s", data={"checknumber": {"number": 123}}
    )
    fake.add_open(event)

    async with served_over_http(fake) as api_url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            api_url,
            secret,
            str(port),
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            async with asyncio.timeout(20):
                while b"app.serving" not in (line := await process.stderr.readline()):
                    assert line, "the service exited before serving"
                [subscription] = fake.only_integration()["subscriptions"]
                assert subscription["webhook"]["url"] == f"http://127.0.0.1:{port}/"
                body = contract.encode(event)
                headers = {
                    "content-type": "application/cloudevents+json",
                    **signature_headers(
                        secret,
                        f"{event['id']}.{subscription['id']}",
                        body,
                        timestamp=int(time.time()),
                    ),
                }
                async with httpx.AsyncClient() as client:
                    response = await client.post(
                        f"http://127.0.0.1:{port}/", content=body, headers=headers
                    )
                assert response.status_code == 202
                await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])
                process.send_signal(signal.SIGTERM)
                _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert b"app.stopped" in stderr
    assert fake.events[-1]["data"]["checknumber"] == {"digits": 3}
