from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

import pytest

from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.nats.jetstream import (
    ConsumerError,
    JetStreamConsumer,
    JetStreamPublisher,
    connect,
)
from tests.integration.nats.harness import (
    TASK_FINISHED,
    Recorder,
    event,
    running,
    wait_for_pull_request,
)

pytestmark = pytest.mark.integration


async def test_consumer_and_publisher_ride_out_a_broker_restart(tmp_path: Path) -> None:
    """A server of the test's own, restarted on the same port and store mid-run."""
    data = tmp_path / "nats"
    server = EmbeddedNats(data)
    url = server.start()
    port = urlparse(url).port
    nc = await connect(url, name="engine")
    try:
        consumer = JetStreamConsumer(nc, stream="keptn", heartbeat=0.5)
        publisher = JetStreamPublisher(nc, ack_timeout=20.0)
        await consumer.ensure()
        recorder = Recorder()
        async with running(consumer, recorder):
            before = event(TASK_FINISHED)
            await publisher.publish([before])
            envelope, ack = await recorder.next()
            assert envelope == before
            await ack.processed()

            await asyncio.to_thread(server.stop)
            # Published while the broker is down: buffered, sent and acked after reconnect.
            during = event(TASK_FINISHED)
            publishing = asyncio.create_task(publisher.publish([during]))
            server = EmbeddedNats(data, port=port)
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(15):
                await publishing
            envelope, ack = await recorder.next()
            assert envelope == during
            await ack.processed()
    finally:
        await nc.close()
        server.stop()


async def test_run_fails_when_its_connection_is_closed(nats_url: str) -> None:
    nc = await connect(nats_url, name="engine")
    consumer = JetStreamConsumer(nc, stream="keptn", heartbeat=0.5)
    await consumer.ensure()
    task = asyncio.create_task(consumer.run(Recorder()))
    await wait_for_pull_request(nc, "keptn")
    await nc.close()
    async with asyncio.timeout(3):
        with pytest.raises(ConsumerError):
            await task


async def test_connect_fails_fast_without_a_server(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    server.stop()  # a port nobody listens on now
    async with asyncio.timeout(10):
        with pytest.raises(ConnectionError, match="cannot connect"):
            await connect(url, name="engine", connect_timeout=1.0)
