from __future__ import annotations

import asyncio
import json

import nats.js.errors
import pytest
from nats.aio.client import Client

from controlplane.adapters.nats.jetstream import JetStreamPublisher, PublishError, ensure_stream
from controlplane.adapters.nats.wire import decode
from tests.integration.nats.harness import SEQUENCE_FINISHED, TASK_TRIGGERED, event

pytestmark = pytest.mark.integration


async def test_publishes_a_batch_on_subjects_equal_to_types(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    events = [event(TASK_TRIGGERED, n=i) for i in range(2000)] + [event(SEQUENCE_FINISHED)]
    await JetStreamPublisher(nats_client, window=64).publish(events)

    info = await js.stream_info(stream_name)
    assert info.state.messages == len(events)
    first = await js.get_msg(stream_name, 1)
    assert first.subject == TASK_TRIGGERED
    assert first.headers is not None
    assert first.headers["Nats-Msg-Id"] == events[0].id
    assert decode(first.data or b"") == events[0]
    last = await js.get_msg(stream_name, len(events))
    assert last.subject == SEQUENCE_FINISHED
    assert json.loads(last.data or b"")["id"] == events[-1].id


async def test_short_type_goes_out_on_the_full_subject(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    await JetStreamPublisher(nats_client).publish([event("dev.delivery.triggered")])
    stored = await js.get_msg(stream_name, 1)
    assert stored.subject == "sh.keptn.event.dev.delivery.triggered"


async def test_same_event_id_is_stored_once(nats_client: Client, stream_name: str) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    publisher = JetStreamPublisher(nats_client)
    once = event()
    await publisher.publish([once])
    await publisher.publish([once])  # an outbox re-send after a crash
    await publisher.publish([once, event(id=once.id), once])  # repeats inside one batch
    other = event()
    await publisher.publish([other])
    info = await js.stream_info(stream_name)
    assert info.state.messages == 2


async def test_empty_batch_is_a_no_op(nats_client: Client) -> None:
    await JetStreamPublisher(nats_client).publish([])


async def test_fails_when_no_stream_takes_the_events(nats_client: Client) -> None:
    publisher = JetStreamPublisher(nats_client, ack_timeout=2.0)
    events = [event(), event()]
    with pytest.raises(PublishError) as caught:
        await publisher.publish(events)
    assert caught.value.failed == tuple(e.id for e in events)
    assert isinstance(caught.value.__cause__, nats.js.errors.NoStreamResponseError)


async def test_a_stream_created_moments_later_still_gets_the_events(
    nats_client: Client, stream_name: str
) -> None:
    publisher = JetStreamPublisher(nats_client, no_stream_retries=200, no_stream_retry_wait=0.05)
    publishing = asyncio.create_task(publisher.publish([event()]))
    await asyncio.sleep(0.1)  # the first attempts find no stream
    assert not publishing.done()  # still trying, not failed
    await ensure_stream(nats_client.jetstream(), stream=stream_name)
    async with asyncio.timeout(10):
        await publishing
    assert (await nats_client.jetstream().stream_info(stream_name)).state.messages == 1


async def test_fails_when_the_expected_stream_is_another(
    nats_client: Client, stream_name: str
) -> None:
    await ensure_stream(nats_client.jetstream(), stream=stream_name)
    publisher = JetStreamPublisher(nats_client, stream="some_other_stream", ack_timeout=30)
    async with asyncio.timeout(5):  # the broker's refusal is reported, not waited out
        with pytest.raises(PublishError, match="1 of 1") as caught:
            await publisher.publish([event()])
    cause = caught.value.__cause__
    assert isinstance(cause, nats.js.errors.APIError)
    assert cause.err_code == 10060  # expected stream does not match


async def test_fails_before_sending_an_unsendable_type(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    publisher = JetStreamPublisher(nats_client)
    with pytest.raises(PublishError, match="not a valid NATS subject"):
        await publisher.publish([event(), event("sh.keptn.event.a b.finished")])
    assert (await js.stream_info(stream_name)).state.messages == 0  # all or nothing
    await publisher.publish([event()])  # the connection survived the attempt
    assert (await js.stream_info(stream_name)).state.messages == 1


async def test_concurrent_batches_share_the_window(nats_client: Client, stream_name: str) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    publisher = JetStreamPublisher(nats_client, window=8)
    batches = [[event(n=i) for i in range(300)] for _ in range(5)]
    await asyncio.gather(*(publisher.publish(batch) for batch in batches))
    assert (await js.stream_info(stream_name)).state.messages == 1500


async def test_cancelled_publish_frees_the_window(nats_client: Client, stream_name: str) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    publisher = JetStreamPublisher(nats_client, window=4, ack_timeout=5.0)
    with pytest.raises(TimeoutError):  # cancels publish() in the middle of the batch
        async with asyncio.timeout(0.02):
            await publisher.publish([event() for _ in range(10_000)])
    async with asyncio.timeout(5):
        await publisher.publish([event() for _ in range(10)])
