"""Micro-benchmark of the JetStream adapter: publisher and consumer throughput, decode speed.

Not a test: it prints numbers to compare against the environment's measured limits
(``publish_async`` with a window about 30k msgs/s, pull ``fetch(256)`` + ack about 16k/s).

Run from the repository root::

    .venv/bin/python -m bench.nats_publish [--events 50000] [--url nats://...]

Without ``--url`` it starts its own ``nats-server`` in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.nats.jetstream import (
    Ack,
    JetStreamConsumer,
    JetStreamPublisher,
    connect,
    ensure_stream,
)
from controlplane.adapters.nats.wire import decode, encode
from controlplane.application.envelope import Envelope

STREAM = "bench"


def make_events(count: int) -> list[Envelope]:
    """About 1 KiB each, shaped like a task ``.finished`` event."""
    context = str(uuid.uuid4())
    return [
        Envelope(
            id=str(uuid.uuid4()),
            source="helm-service",
            type="sh.keptn.event.deployment.finished",
            time="2024-01-01T00:00:00.000Z",
            keptn_context=context,
            triggered_id=str(uuid.uuid4()),
            data={
                "project": "sockshop",
                "stage": "production",
                "service": "carts",
                "status": "succeeded",
                "result": "pass",
                "message": "x" * 600,
                "labels": {"n": str(n)},
                "deployment": {"deploymentURIsLocal": ["http://carts.production:80"]},
            },
        )
        for n in range(count)
    ]


async def reset_stream(url: str) -> None:
    nc = await connect(url, name="bench-admin")
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name:
            await js.delete_stream(info.config.name)
    await ensure_stream(js, stream=STREAM)
    await nc.close()


async def bench_publish(url: str, events: Sequence[Envelope], batch: int, window: int) -> float:
    await reset_stream(url)
    nc = await connect(url, name="bench-publisher")
    publisher = JetStreamPublisher(nc, window=window)
    started = time.perf_counter()
    for offset in range(0, len(events), batch):
        await publisher.publish(events[offset : offset + batch])
    elapsed = time.perf_counter() - started
    info = await nc.jetstream().stream_info(STREAM)
    assert info.state.messages == len(events), info.state.messages
    await nc.close()
    return len(events) / elapsed


async def bench_consume(url: str, events: Sequence[Envelope], *, ack_in_batches: int) -> float:
    """Events already in the stream; time until the handler saw and settled every one.

    ``ack_in_batches`` > 1 imitates the engine: settle after a group commit of that many.
    """
    await reset_stream(url)
    nc = await connect(url, name="bench-consumer")
    await JetStreamPublisher(nc).publish(events)
    consumer = JetStreamConsumer(nc, stream=STREAM, name="bench", max_ack_pending=8192)
    await consumer.ensure()
    done = asyncio.Event()
    unsettled: list[Ack] = []
    seen = 0

    async def handler(envelope: Envelope, ack: Ack) -> None:
        nonlocal seen
        seen += 1
        unsettled.append(ack)
        if len(unsettled) >= ack_in_batches or seen == len(events):
            for each in unsettled:
                await each.processed()
            unsettled.clear()
        if seen == len(events):
            done.set()

    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(handler))
    async with asyncio.timeout(120):
        await done.wait()
    elapsed = time.perf_counter() - started
    consumer.stop()
    await task
    await nc.close()
    return len(events) / elapsed


def bench_decode(events: Sequence[Envelope]) -> tuple[float, int]:
    bodies = [encode(event) for event in events]
    started = time.perf_counter()
    for body in bodies:
        decode(body)
    return len(bodies) / (time.perf_counter() - started), len(bodies[0])


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--url", default=None, help="a disposable NATS server (default: own)")
    args = parser.parse_args(argv)
    events = make_events(args.events)

    server: EmbeddedNats | None = None
    url = args.url
    if url is None:
        server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="nats-bench-")))
        url = server.start()
    try:
        rate, size = bench_decode(events)
        print(f"wire.decode: {rate:,.0f} events/s ({size} byte bodies)")
        for batch, window in ((1, 1024), (100, 1024), (1000, 256), (1000, 1024), (1000, 4096)):
            count = min(len(events), 5000) if batch == 1 else len(events)
            rate = await bench_publish(url, events[:count], batch, window)
            print(f"publish batch={batch:>5} window={window:>4}: {rate:>9,.0f} events/s")
        rate = await bench_publish(url, events, len(events), 1024)
        print(f"publish one batch of {len(events)} window=1024: {rate:>9,.0f} events/s")
        for group in (1, 100, 1000):
            rate = await bench_consume(url, events, ack_in_batches=group)
            print(f"consume + ack (settled in groups of {group:>4}): {rate:>9,.0f} events/s")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
