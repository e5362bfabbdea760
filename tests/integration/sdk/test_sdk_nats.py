"""The task SDK against a real nats-server: queue groups, answers on NATS, and run()."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from tasksdk import TaskApp, TaskContext, contract

pytestmark = pytest.mark.integration

README = Path(__file__).parents[3] / "task-sdk" / "README.md"


class Answers:
    """Collects the answer events of one task seen on NATS."""

    def __init__(self, expected_finished: int) -> None:
        self.events: list[dict[str, Any]] = []
        self._expected = expected_finished
        self.all_finished = asyncio.Event()

    async def receive(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        assert msg.subject == event["type"]
        if event["type"].endswith(".triggered"):
            return
        self.events.append(event)
        if self.count(".finished") >= self._expected:
            self.all_finished.set()

    def count(self, suffix: str) -> int:
        return sum(event["type"].endswith(suffix) for event in self.events)


@pytest.fixture
async def observer(nats_server: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server, name="sdk-observer")
    try:
        yield nc
    finally:
        await nc.close()


def replica(app_name: str, task: str, label: str, calls: list[tuple[str, str]]) -> TaskApp:
    app = TaskApp(app_name)

    @app.task(task)
    async def handle(ctx: TaskContext) -> dict[str, Any]:
        calls.append((label, ctx.event.id))
        return {task: {"replica": label, "number": ctx.properties["number"]}}

    return app


async def test_two_replicas_handle_each_triggered_event_exactly_once(
    nats_server: str, observer: Client
) -> None:
    task = f"check{uuid.uuid4().hex[:8]}"  # subjects of this test's own
    app_name = f"checknumber-{task}"
    count = 20
    calls: list[tuple[str, str]] = []
    answers = Answers(expected_finished=count)
    await observer.subscribe(f"sh.keptn.event.{task}.>", cb=answers.receive)
    await observer.flush()
    triggered = [
        contract.triggered_event(
            task, project="p", stage="dev", service="svc", data={task: {"number": n}}
        )
        for n in range(count)
    ]

    async with (
        replica(app_name, task, "a", calls).connect(nats_server),
        replica(app_name, task, "b", calls).connect(nats_server),
    ):
        for event in triggered:
            await observer.publish(event["type"], contract.encode(event))
        async with asyncio.timeout(10):
            await answers.all_finished.wait()
    # Both replicas have drained and flushed; one round trip brings anything still in flight.
    await observer.flush()

    assert sorted(event_id for _, event_id in calls) == sorted(e["id"] for e in triggered)
    assert len(answers.events) == 2 * count
    for event in triggered:
        answered = [e for e in answers.events if e["triggeredid"] == event["id"]]
        assert [e["type"].rsplit(".", 1)[1] for e in answered] == ["started", "finished"]
        assert {e["source"] for e in answered} == {app_name}
        data = answered[1]["data"]
        assert (data["status"], data["result"]) == ("succeeded", "pass")
        assert data[task]["number"] == event["data"][task]["number"]


def readme_service() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "the README starts with a python example"
    return match.group(1)


async def test_the_readme_service_answers_and_stops_cleanly_on_sigterm(
    nats_server: str, observer: Client, tmp_path: Path
) -> None:
    service = tmp_path / "service.py"
    service.write_text(readme_service())
    launcher = (
        "import logging, runpy, sys;"
        " logging.basicConfig(level=logging.INFO, stream=sys.stderr);"
        f" runpy.run_path({str(service)!r}, run_name='__main__')"
    )
    answers = Answers(expected_finished=1)
    await observer.subscribe("sh.keptn.event.checknumber.>", cb=answers.receive)
    await observer.flush()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        launcher,
        env={**os.environ, "NATS_URL": nats_server},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(10):
            while b"app.serving" not in (line := await process.stderr.readline()):
                assert line, "the service exited before serving"
            event = contract.triggered_event(
                "checknumber",
                project="p",
                stage="dev",
                service="svc",
                data={"checknumber": {"number": 12345}},
            )
            await observer.publish(event["type"], contract.encode(event))
            await answers.all_finished.wait()
            process.send_signal(signal.SIGTERM)
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert b"app.stopped" in stderr
    assert [e["type"] for e in answers.events] == [
        "sh.keptn.event.checknumber.started",
        "sh.keptn.event.checknumber.finished",
    ]
    finished = answers.events[-1]
    assert finished["triggeredid"] == event["id"]
    assert finished["source"] == "checknumber-service"
    assert finished["data"]["checknumber"] == {"digits": 5}
