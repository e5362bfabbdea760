"""The NATS JetStream adapter: how events reach the engine and how its events leave.

Task services exchange Keptn CloudEvents over NATS (subject == event type, structured JSON
body). This package keeps everything NATS-specific out of the application layer:
:mod:`.wire` converts between message bodies and :class:`Envelope`, :mod:`.jetstream` holds
the stream, the engine's durable consumer and the :class:`Publisher` port implementation,
and :mod:`.embedded` runs a real ``nats-server`` for local mode and tests.
"""

from __future__ import annotations

from controlplane.adapters.nats.embedded import EmbeddedNats, EmbeddedNatsError
from controlplane.adapters.nats.jetstream import (
    DEFAULT_FILTER_SUBJECTS,
    DEFAULT_STREAM_SUBJECTS,
    Ack,
    ConsumerError,
    Handler,
    JetStreamConsumer,
    JetStreamPublisher,
    Outcome,
    PublishError,
    connect,
    ensure_stream,
)
from controlplane.adapters.nats.wire import WireError, decode, encode, subject

__all__ = [
    "DEFAULT_FILTER_SUBJECTS",
    "DEFAULT_STREAM_SUBJECTS",
    "Ack",
    "ConsumerError",
    "EmbeddedNats",
    "EmbeddedNatsError",
    "Handler",
    "JetStreamConsumer",
    "JetStreamPublisher",
    "Outcome",
    "PublishError",
    "WireError",
    "connect",
    "decode",
    "encode",
    "ensure_stream",
    "subject",
]
