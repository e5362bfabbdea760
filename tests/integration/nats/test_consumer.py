from __future__ import annotations

import asyncio
import logging
import time

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from controlplane.adapters.nats.jetstream import (
    Ack,
    JetStreamConsumer,
    JetStreamPublisher,
    Outcome,
    ensure_stream,
)
from controlplane.application.envelope import Envelope
from tests.integration.nats.harness import (
    SEQUENCE_FINISHED,
    SEQUENCE_TRIGGERED,
    TASK_FINISHED,
    TASK_STARTED,
    TASK_TRIGGERED,
    Recorder,
    event,
    running,
    structured,
    wait_for_pull_request,
)

pytestmark = pytest.mark.integration

FAST: dict[str, float] = {"heartbeat": 0.5}


async def publish_core(nc: Client, *envelopes: Envelope) -> None:
    """What a Keptn task service does: plain core NATS, structured JSON body."""
    for envelope in envelopes:
        await nc.publish(envelope.type, structured(envelope))
    await nc.flush()


async def test_receives_events_from_core_nats_publishers(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    await consumer.ensure()
    sent = [event(TASK_STARTED), event(TASK_FINISHED, result="pass"), event(SEQUENCE_TRIGGERED)]
    await publish_core(nats_client, *sent)
    recorder = Recorder()
    async with running(consumer, recorder):
        received = [await recorder.next() for _ in sent]
        assert [envelope for envelope, _ in received] == sent
        for _, ack in received:
            assert ack.attempt == 1
            assert await ack(Outcome.PROCESSED)
            assert not await ack(Outcome.PROCESSED)  # settling twice is harmless
    info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
    assert info.num_redelivered == 0


async def test_events_published_before_the_consumer_existed_are_delivered(
    nats_client: Client, stream_name: str
) -> None:
    await ensure_stream(nats_client.jetstream(), stream=stream_name)
    early = event(TASK_FINISHED)
    await JetStreamPublisher(nats_client).publish([early])
    recorder = Recorder()
    async with running(JetStreamConsumer(nats_client, stream=stream_name, **FAST), recorder):
        envelope, ack = await recorder.next()
        assert envelope == early
        await ack.processed()


async def test_garbage_is_terminated_and_the_loop_goes_on(
    nats_client: Client, stream_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    await consumer.ensure()
    garbage = [b"not json", b"[1,2]", b'{"specversion":"1.0","id":"x"}', b'{"data": 5}']
    for body in garbage:
        await nats_client.publish(TASK_FINISHED, body)
    good = event(TASK_FINISHED)
    await publish_core(nats_client, good)
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="controlplane.adapters.nats"):
        async with running(consumer, recorder):
            envelope, ack = await recorder.next()
            assert envelope == good
            await ack.processed()
    records = [r for r in caplog.records if r.getMessage() == "nats.garbage"]
    assert len(records) == len(garbage)
    assert records[0].__dict__["subject"] == TASK_FINISHED
    assert "not valid JSON" in records[0].__dict__["reason"]
    info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
    assert info.num_ack_pending == 0  # terminated, not waiting for redelivery
    assert info.num_redelivered == 0
    assert recorder.count == 1


async def test_retry_redelivers_and_drop_does_not(nats_client: Client, stream_name: str) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    await consumer.ensure()
    retried, dropped = event(TASK_STARTED), event(TASK_FINISHED)
    await publish_core(nats_client, retried, dropped)
    recorder = Recorder()
    async with running(consumer, recorder):
        first, first_ack = await recorder.next()
        second, second_ack = await recorder.next()
        assert (first, second) == (retried, dropped)
        await first_ack.retry(delay=0.1)
        await second_ack.drop()
        again, again_ack = await recorder.next()
        assert again == retried
        assert again_ack.attempt == 2
        await again_ack.processed()
    info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
    assert info.num_ack_pending == 0
    assert recorder.count == 3


async def test_handler_failure_is_retried_and_does_not_stop_the_loop(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, retry_delay=0.05, **FAST)
    await consumer.ensure()
    flaky, steady = event(TASK_STARTED), event(TASK_FINISHED)
    await publish_core(nats_client, flaky, steady)
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(envelope: Envelope, ack: Ack) -> None:
        seen.append((envelope.id, ack.attempt))
        if envelope.id == flaky.id and ack.attempt == 1:
            raise RuntimeError("engine hiccup")
        await ack.processed()
        if {(flaky.id, 2), (steady.id, 1)} <= set(seen):
            done.set()

    async with running(consumer, handler):
        async with asyncio.timeout(10):
            await done.wait()
    assert seen[:2] == [(flaky.id, 1), (steady.id, 1)]


async def test_filter_excludes_the_engines_own_events(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    await consumer.ensure()
    excluded = [event(TASK_TRIGGERED), event(SEQUENCE_FINISHED)]
    included = [
        event(SEQUENCE_TRIGGERED),
        event(TASK_STARTED),
        event("sh.keptn.event.deployment.status.changed"),
        event("sh.keptn.event.evaluation.invalidated"),
        event("sh.keptn.log.error"),
        event("sh.keptn.events.problem"),
        event(TASK_FINISHED),
    ]
    # Excluded events go first: the consumer delivers in stream order, so if they were
    # delivered at all they would arrive before the last included one.
    await JetStreamPublisher(nats_client).publish(excluded + included)
    recorder = Recorder()
    async with running(consumer, recorder):
        received = [await recorder.next() for _ in included]
    assert [envelope for envelope, _ in received] == included
    info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
    assert info.num_pending == 0
    assert info.delivered.stream_seq == len(excluded) + len(included)


async def test_keeps_fetching_while_earlier_events_are_unsettled(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(
        nats_client, stream=stream_name, batch=64, max_ack_pending=100, **FAST
    )
    await consumer.ensure()
    sent = [event(TASK_FINISHED, n=i) for i in range(300)]
    await JetStreamPublisher(nats_client).publish(sent)
    recorder = Recorder()
    received: list[Envelope] = []
    async with running(consumer, recorder):
        while len(received) < len(sent):
            unsettled = [await recorder.next()]
            while len(unsettled) < 100 and len(received) + len(unsettled) < len(sent):
                unsettled.append(await recorder.next())
            # The broker stops at max_ack_pending until the engine settles.
            assert recorder.received.empty()
            info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
            assert info.num_ack_pending == len(unsettled)
            for envelope, ack in unsettled:
                received.append(envelope)
                await ack.processed()
    assert received == sent


async def test_unsettled_event_is_redelivered_to_the_next_instance(
    nats_client: Client, stream_name: str
) -> None:
    options = {"ack_wait": 1.0, **FAST}
    first = JetStreamConsumer(nats_client, stream=stream_name, **options)
    await first.ensure()
    pending = event(TASK_FINISHED)
    await publish_core(nats_client, pending)
    recorder = Recorder()
    async with running(first, recorder):
        envelope, _ = await recorder.next()  # taken, never settled: the engine "crashed"
        assert envelope == pending

    second = JetStreamConsumer(nats_client, stream=stream_name, **options)
    again = Recorder()
    async with running(second, again):
        envelope, ack = await again.next()
        assert envelope == pending
        assert ack.attempt == 2
        await ack.processed()


async def test_stop_releases_events_not_yet_handed_over(
    nats_client: Client, stream_name: str
) -> None:
    # ack_wait is long: anything the next instance gets quickly was released by stop().
    options = {"ack_wait": 60.0, "batch": 10, **FAST}
    first = JetStreamConsumer(nats_client, stream=stream_name, **options)
    await first.ensure()
    sent = [event(TASK_FINISHED, n=i) for i in range(40)]
    await JetStreamPublisher(nats_client).publish(sent)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_handler(envelope: Envelope, ack: Ack) -> None:
        await ack.processed()
        entered.set()
        await release.wait()  # the engine is busy with the first event

    task = asyncio.create_task(first.run(slow_handler))
    async with asyncio.timeout(10):
        await entered.wait()
        # Delivery ran ahead of the busy handler, up to the batch bound.
        while True:
            info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
            if info.num_ack_pending >= 9:
                break
            await asyncio.sleep(0.01)
    first.stop()
    release.set()
    async with asyncio.timeout(10):
        await task

    recorder = Recorder()
    async with running(JetStreamConsumer(nats_client, stream=stream_name, **options), recorder):
        received = [await recorder.next() for _ in sent[1:]]
    assert [envelope for envelope, _ in received] == sent[1:]


async def test_stop_ends_an_idle_loop_promptly(nats_client: Client, stream_name: str) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, heartbeat=5.0)
    await consumer.ensure()
    task = asyncio.create_task(consumer.run(Recorder()))
    await wait_for_pull_request(nats_client, stream_name)
    consumer.stop()
    async with asyncio.timeout(1):
        await task
    # Unsubscribing made the server forget the request: nothing is lost in flight.
    await JetStreamPublisher(nats_client).publish([event(TASK_FINISHED)])
    async with asyncio.timeout(5):
        while True:
            info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
            if not info.num_waiting:  # the server dropped the request without delivering
                break
            await asyncio.sleep(0.01)
    assert (info.num_pending, info.num_ack_pending) == (1, 0)


async def test_an_event_on_a_quiet_stream_arrives_at_once(
    nats_client: Client, stream_name: str
) -> None:
    # Heartbeat and request expiry far above the bound: only streaming delivery passes.
    consumer = JetStreamConsumer(nats_client, stream=stream_name, heartbeat=10.0)
    await consumer.ensure()
    recorder = Recorder()
    async with running(consumer, recorder):
        await wait_for_pull_request(nats_client, stream_name)
        for _ in range(3):
            sent = event(TASK_FINISHED)
            started = time.monotonic()
            await publish_core(nats_client, sent)
            envelope, ack = await recorder.next()
            assert envelope == sent
            assert time.monotonic() - started < 0.5
            await ack.processed()


async def test_existing_consumer_with_other_settings_is_updated(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    await js.add_consumer(
        stream_name,
        ConsumerConfig(
            durable_name="controlplane",
            filter_subjects=["sh.keptn.event.*.finished"],
            max_ack_pending=7,
            ack_wait=5,
        ),
    )
    consumer = JetStreamConsumer(nats_client, stream=stream_name, max_ack_pending=50)
    info = await consumer.ensure()
    assert sorted(info.config.filter_subjects or []) == sorted(
        JetStreamConsumer(nats_client, stream=stream_name)._filter_subjects
    )
    assert info.config.max_ack_pending == 50
    assert info.config.ack_wait == pytest.approx(30)
    again = await consumer.ensure()
    assert again.created == info.created  # reused, not recreated


async def test_incompatible_consumer_is_recreated_after_its_ack_floor(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    old, new = event(TASK_FINISHED), event(TASK_FINISHED)
    await JetStreamPublisher(nats_client).publish([old])
    # A push consumer of that name (say, from an older version) that has acked ``old``.
    sub = await js.subscribe(TASK_FINISHED, durable="controlplane", stream=stream_name)
    msg = await sub.next_msg(timeout=5)
    await msg.ack_sync()
    await sub.unsubscribe()
    info = await js.consumer_info(stream_name, "controlplane")
    assert info.config.deliver_subject is not None

    await JetStreamPublisher(nats_client).publish([new])
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    info = await consumer.ensure()
    assert info.config.deliver_subject is None
    assert info.config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    recorder = Recorder()
    async with running(consumer, recorder):
        envelope, ack = await recorder.next()
        await ack.processed()
    assert envelope == new  # ``old`` was acked before: not delivered again
    assert (await consumer.ensure()).created == info.created  # stable from now on


async def test_a_deleted_consumer_is_recreated_while_running(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, **FAST)
    await consumer.ensure()
    recorder = Recorder()
    async with running(consumer, recorder):
        await wait_for_pull_request(nats_client, stream_name)
        await nats_client.jetstream().delete_consumer(stream_name, "controlplane")
        later = event(TASK_FINISHED)
        await publish_core(nats_client, later)
        envelope, ack = await recorder.next()
        assert envelope == later
        await ack.processed()
    info = await nats_client.jetstream().consumer_info(stream_name, "controlplane")
    assert info.num_ack_pending == 0


async def test_retry_without_a_delay_waits_the_consumers_retry_delay(
    nats_client: Client, stream_name: str
) -> None:
    consumer = JetStreamConsumer(nats_client, stream=stream_name, retry_delay=0.3, **FAST)
    await consumer.ensure()
    sent = event(TASK_FINISHED)
    await publish_core(nats_client, sent)
    recorder = Recorder()
    async with running(consumer, recorder):
        _, ack = await recorder.next()
        retried_at = time.monotonic()
        assert await ack("retry")  # what the engine calls: a plain outcome string
        envelope, again = await recorder.next()
        assert envelope == sent
        assert time.monotonic() - retried_at >= 0.25  # not redelivered at once
        assert await again("processed")
    assert again.settled
    assert again.attempt == 2
