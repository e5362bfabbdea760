from __future__ import annotations

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from controlplane.adapters.nats.jetstream import ensure_stream

pytestmark = pytest.mark.integration


async def test_creates_the_stream_with_dedupe_window(nats_client: Client, stream_name: str) -> None:
    js = nats_client.jetstream()
    info = await ensure_stream(js, stream=stream_name, duplicate_window_seconds=90)
    assert info.config.subjects == ["sh.keptn.>"]
    assert info.config.duplicate_window == pytest.approx(90)
    stored = await js.stream_info(stream_name)
    assert stored.config.subjects == ["sh.keptn.>"]


async def test_is_idempotent(nats_client: Client, stream_name: str) -> None:
    js = nats_client.jetstream()
    first = await ensure_stream(js, stream=stream_name)
    second = await ensure_stream(js, stream=stream_name)
    assert second.config == first.config
    assert second.state.messages == 0


async def test_keeps_an_existing_stream_as_configured(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=["sh.keptn.>", "ops.audit"],
            max_msgs=1000,
            duplicate_window=30,
        )
    )
    await js.publish("ops.audit", b"kept")
    info = await ensure_stream(js, stream=stream_name, duplicate_window_seconds=600)
    assert info.config.subjects == ["sh.keptn.>", "ops.audit"]
    assert info.config.max_msgs == 1000
    assert info.config.duplicate_window == pytest.approx(30)
    assert info.state.messages == 1


async def test_adds_missing_subjects_replacing_narrower_ones(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await js.add_stream(
        StreamConfig(name=stream_name, subjects=["sh.keptn.event.>", "ops.audit"], max_msgs=500)
    )
    await js.publish("sh.keptn.event.deployment.finished", b"{}")
    info = await ensure_stream(js, stream=stream_name)
    assert sorted(info.config.subjects or []) == ["ops.audit", "sh.keptn.>"]
    assert info.config.max_msgs == 500
    assert info.state.messages == 1
    ack = await js.publish("sh.keptn.log.error", b"{}")
    assert ack.stream == stream_name


async def test_a_second_stream_on_our_subjects_is_refused(
    nats_client: Client, stream_name: str
) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, stream=stream_name)
    with pytest.raises(nats.js.errors.APIError):
        await ensure_stream(js, stream=stream_name + "_other")
