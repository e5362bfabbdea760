"""Keptn-shaped events, a recording handler and a consumer runner for the NATS adapter tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client

from controlplane.adapters.nats.jetstream import Ack, Handler, JetStreamConsumer
from controlplane.application.envelope import Envelope

SEQUENCE_TRIGGERED = "sh.keptn.event.dev.delivery.triggered"
SEQUENCE_FINISHED = "sh.keptn.event.dev.delivery.finished"
TASK_TRIGGERED = "sh.keptn.event.deployment.triggered"
TASK_STARTED = "sh.keptn.event.deployment.started"
TASK_FINISHED = "sh.keptn.event.deployment.finished"


def event(type: str = TASK_FINISHED, *, id: str | None = None, **data: Any) -> Envelope:
    return Envelope(
        id=id or str(uuid.uuid4()),
        source="test-service",
        type=type,
        time="2024-01-01T00:00:00.000Z",
        data={"project": "p", "stage": "dev", "service": "svc", **data},
        keptn_context="ctx-1",
        triggered_id="trig-1" if not type.endswith(".triggered") else "",
    )


def structured(envelope: Envelope) -> bytes:
    """The body a Keptn task service (go-utils) puts on core NATS."""
    return json.dumps(envelope.to_json()).encode()


class Recorder:
    """A handler that records what it is given and leaves settling to the test."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[Envelope, Ack]] = asyncio.Queue()
        self.count = 0

    async def __call__(self, envelope: Envelope, ack: Ack) -> None:
        self.count += 1
        await self.received.put((envelope, ack))

    async def next(self) -> tuple[Envelope, Ack]:
        """The next delivery; fails the test after 10 s."""
        async with asyncio.timeout(10.0):
            return await self.received.get()


@contextlib.asynccontextmanager
async def running(
    consumer: JetStreamConsumer, handler: Handler
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``consumer`` in a task; stop it and require a clean end on exit."""
    task = asyncio.create_task(consumer.run(handler))
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=10.0)


async def wait_for_pull_request(nc: Client, stream: str, consumer: str = "controlplane") -> None:
    """Until the consumer has a pull request waiting at the server (it is idle and pulling)."""
    async with asyncio.timeout(10):
        while True:
            info = await nc.jetstream().consumer_info(stream, consumer)
            if info.num_waiting:
                return
            await asyncio.sleep(0.01)
