"""JetStream transport: the event stream, the engine's durable consumer, and the publisher.

Why JetStream and how it is used, in Keptn v1 terms: task services speak plain core NATS
(subject == CloudEvent type), and the control plane keeps one stream over ``sh.keptn.>`` so
that nothing they send while the engine is busy or down is lost. The engine reads that stream
through one durable *pull* consumer with explicit acks, and writes through JetStream so that
every event it emits is stored by the broker before the outbox marks it as published.

Design points, each from a measured limit (see the environment notes):

* Publishing awaits acks for a whole batch through a bounded window of ``publish_async``
  futures; awaiting each ack in turn caps out around 3k msgs/s, the window goes past 20k.
  Each message carries ``Nats-Msg-Id`` = event id, so a re-sent outbox entry is dropped by
  the stream's duplicate window instead of being delivered twice.
* The consumer fetches in batches and does not wait for the engine to commit before fetching
  again: every message is handed over with an :class:`Ack` the engine settles later (after its
  PostgreSQL commit), and the server bounds the un-acked backlog with ``max_ack_pending``.
* A message that is not a CloudEvent is logged and terminated: garbage from a task service
  must never stop the engine, nor be redelivered forever.
* The consumer filters out what the engine emits itself and never needs (task ``.triggered``,
  sequence ``.finished``), so it does not read back half of its own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    PubAck,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext

from controlplane.adapters.nats import wire
from controlplane.application.envelope import Envelope

__all__ = [
    "DEFAULT_FILTER_SUBJECTS",
    "DEFAULT_STREAM_SUBJECTS",
    "Ack",
    "ConsumerError",
    "Handler",
    "JetStreamConsumer",
    "JetStreamPublisher",
    "Outcome",
    "PublishError",
    "connect",
    "ensure_stream",
    "subject_covers",
]

logger = logging.getLogger(__name__)

DEFAULT_STREAM_SUBJECTS: tuple[str, ...] = ("sh.keptn.>",)

# What the engine reads. Token counts matter: a sequence ``.triggered`` has six tokens
# (sh.keptn.event.<stage>.<sequence>.triggered), a task ``.triggered`` five; a task
# ``.finished`` five, the engine's own sequence ``.finished`` six. The server requires
# filters of one consumer not to overlap; these do not.
DEFAULT_FILTER_SUBJECTS: tuple[str, ...] = (
    "sh.keptn.event.*.*.triggered",
    "sh.keptn.event.*.started",
    "sh.keptn.event.*.finished",
    "sh.keptn.event.*.status.changed",
    "sh.keptn.event.*.invalidated",
    "sh.keptn.log.>",
    "sh.keptn.events.>",
)

MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
STATUS_HEADER = "Status"
NO_RESPONDERS = "503"
PENDING_MESSAGES_HEADER = "Nats-Pending-Messages"

# JetStream API error codes we react to.
_STREAM_NAME_IN_USE = 10058
_CONSUMER_EXISTS = 10148


# --------------------------------------------------------------------------- connection


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 10.0,
    reconnect_time_wait: int = 1,
    ping_interval: int = 10,
) -> Client:
    """Connect to NATS and keep reconnecting forever once connected.

    A control plane must ride out a broker restart, so the client never gives up after the
    first connection; the *first* connection, though, must fail loudly and quickly when the
    URL is wrong, so it is bounded by ``connect_timeout``.

    Raises:
        ConnectionError: no connection within ``connect_timeout`` seconds.
    """
    client = Client()

    async def on_error(error: Exception) -> None:
        logger.warning("nats.error", extra={"connection": name, "error": repr(error)})

    async def on_disconnected() -> None:
        if client.is_closed:  # our own close(): nothing to warn about
            return
        logger.warning("nats.disconnected", extra={"connection": name})

    async def on_reconnected() -> None:
        logger.info("nats.reconnected", extra={"connection": name, "server": client.connected_url})

    async def on_closed() -> None:
        logger.info("nats.closed", extra={"connection": name})

    try:
        await asyncio.wait_for(
            client.connect(
                url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_time_wait,
                connect_timeout=max(1, int(connect_timeout)),
                ping_interval=ping_interval,
                max_outstanding_pings=3,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ),
            timeout=connect_timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        with contextlib.suppress(Exception):
            await client.close()
        raise ConnectionError(f"cannot connect to NATS at {url}: {error!r}") from error
    return client


# --------------------------------------------------------------------------- stream


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every subject ``subject`` can match is also matched by ``pattern``.

    Both may contain wildcards: ``sh.keptn.>`` covers ``sh.keptn.event.*.started``;
    ``sh.keptn.*`` does not cover ``sh.keptn.>``.
    """
    have = pattern.split(".")
    want = subject.split(".")
    for index, token in enumerate(have):
        if token == ">":
            return index < len(want)
        if index >= len(want):
            return False
        if want[index] == ">":
            return False
        if token != "*" and token != want[index]:
            return False
    return len(have) == len(want)


async def ensure_stream(
    js: JetStreamContext,
    *,
    stream: str,
    subjects: Sequence[str] = DEFAULT_STREAM_SUBJECTS,
    duplicate_window_seconds: float = 600.0,
) -> StreamInfo:
    """Create the event stream, or adopt the one that exists.

    An existing stream is used as it is configured (an operator may have tuned limits,
    replicas or retention); only subjects it does not yet cover are added, replacing its
    own subjects that ours cover (the server rejects overlapping subjects in one stream).

    The default duplicate window of ten minutes covers an engine restart that re-sends its
    outbox: a republished event id within the window is stored once.
    """
    wanted = list(subjects)
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(
            name=stream,
            description="Keptn CloudEvents (controlplane)",
            subjects=wanted,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window_seconds,
        )
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as error:
            if error.err_code != _STREAM_NAME_IN_USE:
                raise
            info = await js.stream_info(stream)  # created concurrently by someone else
        else:
            logger.info("nats.stream_created", extra={"stream": stream, "subjects": wanted})
            return info
    existing = list(info.config.subjects or [])
    missing = [s for s in wanted if not any(subject_covers(have, s) for have in existing)]
    if not missing:
        return info
    kept = [have for have in existing if not any(subject_covers(s, have) for s in missing)]
    info = await js.update_stream(info.config.evolve(subjects=kept + missing))
    logger.info(
        "nats.stream_subjects_added",
        extra={"stream": stream, "added": missing, "subjects": info.config.subjects},
    )
    return info


# --------------------------------------------------------------------------- publisher


class PublishError(Exception):
    """JetStream did not store every event of a batch (no stream, timeout, broker error)."""

    def __init__(self, message: str, *, failed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed = tuple(failed)


class JetStreamPublisher:
    """:class:`~controlplane.application.ports.Publisher` over JetStream.

    Each event is published with a reply subject on one wildcard inbox of ours, so the acks
    of a whole batch are awaited together. (nats-py's ``publish_async`` is not used: it
    leaves the future pending forever when the stream answers with an API error.)

    ``window`` bounds the publishes awaiting their ack (shared by concurrent ``publish``
    calls on one publisher); ``ack_timeout`` is how long the window may stay full, and how
    long the last acks of a batch may take, before the batch fails. ``stream``, when given,
    makes the broker refuse events that would land in any other stream.
    """

    def __init__(
        self,
        nc: Client,
        *,
        window: int = 1024,
        ack_timeout: float = 10.0,
        stream: str | None = None,
        no_stream_retries: int = 2,
        no_stream_retry_wait: float = 0.25,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._nc = nc
        self._no_stream_retries = no_stream_retries
        self._no_stream_retry_wait = no_stream_retry_wait
        self._window = asyncio.Semaphore(window)
        self._ack_timeout = ack_timeout
        self._stream = stream
        self._inbox: str | None = None
        self._inbox_lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._awaiting: dict[str, asyncio.Future[PubAck]] = {}
        self._tokens = itertools.count()

    async def publish(self, events: Sequence[Envelope]) -> None:
        """Publish every event and wait until the stream stored each one.

        An event answered by "no stream" (503) is sent again, a few times: that answer is
        transient while a restarted broker loads its streams or a stream is being created.
        Re-sending is safe because the stream drops repeated ``Nats-Msg-Id`` values.

        Raises:
            PublishError: at least one event was not stored; the first cause is chained.
        """
        if not events:
            return
        # Encode everything first: an unsendable event fails the batch before any is sent.
        messages = [self._message(event) for event in events]
        todo = list(range(len(events)))
        errors: dict[int, BaseException] = {}
        for attempt in range(self._no_stream_retries + 1):
            if attempt:
                await asyncio.sleep(self._no_stream_retry_wait)
            errors = await self._publish_round(events, messages, todo)
            todo = [
                index
                for index, error in errors.items()
                if isinstance(error, nats.js.errors.NoStreamResponseError)
            ]
            if not todo:
                break
        if errors:
            failed = sorted(errors)
            event, error = events[failed[0]], errors[failed[0]]
            raise PublishError(
                f"JetStream did not store {len(failed)} of {len(events)} events"
                f" (first {event.type} {event.id}: {error!r})",
                failed=[events[index].id for index in failed],
            ) from error

    async def _publish_round(
        self,
        events: Sequence[Envelope],
        messages: Sequence[tuple[str, bytes, dict[str, str]]],
        indices: Sequence[int],
    ) -> dict[int, BaseException]:
        """Send the given events, await their acks; the errors by index."""
        futures: list[asyncio.Future[PubAck]] = []
        try:
            inbox = await self._reply_inbox()
            for index in indices:
                subject, payload, headers = messages[index]
                futures.append(await self._send(events[index], subject, payload, headers, inbox))
            _, pending = await asyncio.wait(futures, timeout=self._ack_timeout)
        finally:
            # On failure or cancellation, abandon what is still in flight (frees the window).
            for future in futures:
                if not future.done():
                    future.cancel()
        errors: dict[int, BaseException] = {}
        for index, future in zip(indices, futures, strict=True):
            if future in pending:
                errors[index] = TimeoutError(f"no ack within {self._ack_timeout}s")
            elif (error := future.exception()) is not None:
                errors[index] = error
        return errors

    async def close(self) -> None:
        """Drop the reply subscription; in-flight batches fail with a timeout."""
        subscription, self._subscription, self._inbox = self._subscription, None, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _reply_inbox(self) -> str:
        if self._inbox is None:
            async with self._inbox_lock:
                if self._inbox is None:
                    try:
                        prefix = self._nc.new_inbox() + "."
                        self._subscription = await self._nc.subscribe(prefix + "*", cb=self._on_ack)
                    except (nats.errors.Error, OSError) as error:
                        raise PublishError(f"cannot subscribe for acks: {error!r}") from error
                    self._inbox = prefix
        return self._inbox

    def _message(self, event: Envelope) -> tuple[str, bytes, dict[str, str]]:
        try:
            subject = wire.subject(event)
            payload = wire.encode(event)
        except wire.WireError as error:
            raise PublishError(str(error), failed=[event.id]) from error
        headers = {MSG_ID_HEADER: event.id}
        if self._stream is not None:
            headers[EXPECTED_STREAM_HEADER] = self._stream
        return subject, payload, headers

    async def _send(
        self, event: Envelope, subject: str, payload: bytes, headers: dict[str, str], inbox: str
    ) -> asyncio.Future[PubAck]:
        if self._window.locked():
            try:
                await asyncio.wait_for(self._window.acquire(), timeout=self._ack_timeout)
            except TimeoutError as error:
                raise PublishError(
                    f"JetStream acks stalled for {self._ack_timeout}s", failed=[event.id]
                ) from error
        else:
            await self._window.acquire()
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._awaiting[token] = future
        future.add_done_callback(functools.partial(self._settled, token))
        try:
            await self._nc.publish(subject, payload, reply=inbox + token, headers=headers)
        except (nats.errors.Error, OSError) as error:
            future.cancel()
            raise PublishError(f"cannot publish {event.type}: {error!r}", failed=[event.id]) from (
                error
            )
        except BaseException:
            future.cancel()
            raise
        return future

    def _settled(self, token: str, future: asyncio.Future[PubAck]) -> None:
        self._awaiting.pop(token, None)
        self._window.release()
        if not future.cancelled():
            future.exception()  # reported by ``publish``; never "exception not retrieved"

    async def _on_ack(self, msg: Msg) -> None:
        inbox = self._inbox
        if inbox is None or not msg.subject.startswith(inbox):
            return
        future = self._awaiting.get(msg.subject[len(inbox) :])
        if future is None or future.done():
            return  # abandoned (timed out or cancelled)
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            response = json.loads(msg.data)
            if "error" in response:
                nats.js.errors.APIError.from_error(response["error"])  # raises the right subclass
            future.set_result(PubAck.from_response(response))
        except Exception as error:  # an API error, or a reply we cannot read
            future.set_exception(error)


# --------------------------------------------------------------------------- consumer


def _stored_at(msg: Msg) -> float:
    try:
        stamp = msg.metadata.timestamp
    except (nats.errors.Error, ValueError, AttributeError, IndexError):
        return 0.0
    return stamp.timestamp() if stamp is not None else 0.0


class Outcome(enum.StrEnum):
    """How the engine settles a delivered event."""

    PROCESSED = "processed"  # committed: ack, never deliver again
    RETRY = "retry"  # not now: deliver again after a delay
    DROP = "drop"  # never usable: terminate, no redelivery


class Ack:
    """Settles one delivered message, once; later calls are ignored.

    Call it with an outcome (``await ack(Outcome.PROCESSED)``, ``await ack("retry",
    delay=5)``) or use the named methods. A retry without a delay waits the consumer's
    ``retry_delay`` (so a failing event cannot spin). Failures to reach the broker are
    logged, not raised: an unsettled message is redelivered after the ack wait anyway.
    """

    __slots__ = ("_attempt", "_msg", "_retry_delay", "event_id", "stored_at", "subject")

    def __init__(self, msg: Msg, event_id: str, *, retry_delay: float = 1.0) -> None:
        self._msg: Msg | None = msg
        self._attempt = 0
        self._retry_delay = retry_delay
        self.event_id = event_id
        self.subject = msg.subject
        #: When the stream stored the message (epoch seconds; 0.0 if the broker did not say).
        self.stored_at = _stored_at(msg)

    @property
    def settled(self) -> bool:
        return self._msg is None

    @property
    def attempt(self) -> int:
        """How many times the broker has delivered this message (1 on first delivery)."""
        if not self._attempt and self._msg is not None:
            self._attempt = self._msg.metadata.num_delivered or 1
        return self._attempt

    async def __call__(
        self, outcome: str = Outcome.PROCESSED, *, delay: float | None = None
    ) -> bool:
        """Settle with ``outcome``; returns False if already settled or the broker is gone."""
        kind = Outcome(outcome)
        msg = self._msg
        if msg is None:
            return False
        self.attempt  # noqa: B018  # keep it readable after settling
        self._msg = None
        try:
            if kind is Outcome.PROCESSED:
                await msg.ack()
            elif kind is Outcome.RETRY:
                wait = self._retry_delay if delay is None else delay
                await msg.nak(delay=wait if wait > 0 else None)
            else:
                await msg.term()
        except (nats.errors.Error, OSError) as error:
            logger.warning(
                "nats.ack_failed",
                extra={"event_id": self.event_id, "outcome": str(kind), "error": repr(error)},
            )
            return False
        return True

    async def processed(self) -> bool:
        return await self(Outcome.PROCESSED)

    async def retry(self, delay: float | None = None) -> bool:
        return await self(Outcome.RETRY, delay=delay)

    async def drop(self) -> bool:
        return await self(Outcome.DROP)

    async def in_progress(self) -> bool:
        """Tell the broker the event is still being worked on (restarts its ack wait)."""
        msg = self._msg
        if msg is None:
            return False
        try:
            await msg.in_progress()
        except (nats.errors.Error, OSError):
            return False
        return True


Handler = Callable[[Envelope, Ack], Awaitable[None]]


class ConsumerError(RuntimeError):
    """The consumer cannot go on (its NATS connection was closed under it)."""


class JetStreamConsumer:
    """The engine's durable pull consumer on the event stream.

    ``run(handler)`` calls ``await handler(envelope, ack)`` for each event, in stream order.
    The handler should hand the event over (to the engine's queue, say) and return; the
    engine settles ``ack`` after its commit. Meanwhile delivery goes on: up to ``batch``
    events are requested or buffered ahead of the handler, and the server stops at
    ``max_ack_pending`` unsettled events.

    Pull requests are kept outstanding continuously (topped up whenever half of ``batch``
    has been consumed), the way ``nats.go``'s ``Consume`` works, instead of calling
    nats-py's ``fetch`` in a loop: ``fetch`` holds a partly filled batch until its timeout,
    which would add up to that timeout to the latency of every event on a quiet system.
    Idle heartbeats on the requests tell a silent broker from a quiet stream; after a
    reconnect, a missed heartbeat or a consumer that vanished, the consumer is checked (and
    recreated if need be) and pulling starts over.

    ``retry_delay``: the redelivery delay of a retry that names none and of an event whose
    handler raised; also the first step of the backoff while the broker is unavailable.
    ``stream_subjects``: when set, the stream is created (or its subjects added) before the
    consumer, so a broker that lost its state recovers without a restart of the engine.
    """

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        name: str = "controlplane",
        filter_subjects: Sequence[str] = DEFAULT_FILTER_SUBJECTS,
        max_ack_pending: int = 4096,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        batch: int = 256,
        heartbeat: float = 1.0,
        request_expires: float = 30.0,
        retry_delay: float = 1.0,
        stream_subjects: Sequence[str] | None = DEFAULT_STREAM_SUBJECTS,
        description: str = "controlplane engine intake",
        start_with_new: bool = False,
    ) -> None:
        if batch < 1 or max_ack_pending < 1:
            raise ValueError("batch and max_ack_pending must be at least 1")
        if not 0 < heartbeat <= request_expires / 2:
            raise ValueError("heartbeat must be positive and at most half of request_expires")
        self._nc = nc
        self._js = nc.jetstream()
        self._stream = stream
        self._name = name
        self._filter_subjects = list(filter_subjects)
        self._max_ack_pending = max_ack_pending
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._batch = batch
        self._refill_at = max(1, batch // 2)
        self._heartbeat = heartbeat
        self._request_expires = request_expires
        self._retry_delay = retry_delay
        self._stream_subjects = list(stream_subjects) if stream_subjects is not None else None
        self._description = description
        # A consumer created later than the stream may not want its history: the webhook
        # consumer must not push every old .triggered event when it is first created.
        self._first_policy = DeliverPolicy.NEW if start_with_new else DeliverPolicy.ALL
        self._stopping = asyncio.Event()
        self._running = False
        # Pull state, valid while running.
        self._buffer: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._requested = 0
        self._last_heard = 0.0
        self._needs_check = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def stream(self) -> str:
        return self._stream

    def stop(self) -> None:
        """Ask :meth:`run` to return once the handler call in progress is done.

        Events received but not yet handed to the handler are released for immediate
        redelivery; handed-over events stay valid to settle while the connection is open.
        """
        self._stopping.set()
        self._wake.set()
        self._buffer.put_nowait(None)

    def _desired_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self._name,
            durable_name=self._name,
            description=self._description,
            deliver_policy=self._first_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
            max_ack_pending=self._max_ack_pending,
            filter_subjects=list(self._filter_subjects),
        )

    def _matches(self, current: ConsumerConfig) -> bool:
        return (
            current.deliver_subject is None
            and current.ack_policy == AckPolicy.EXPLICIT
            and current.deliver_policy
            in (DeliverPolicy.ALL, DeliverPolicy.NEW, DeliverPolicy.BY_START_SEQUENCE)
            and not current.filter_subject
            and sorted(current.filter_subjects or []) == sorted(self._filter_subjects)
            and current.max_ack_pending == self._max_ack_pending
            and current.ack_wait is not None
            and abs(current.ack_wait - self._ack_wait) < 1e-3
            and current.max_deliver == self._max_deliver
        )

    async def ensure(self) -> ConsumerInfo:
        """Create the durable consumer, reuse it, or bring it to our configuration.

        Editable settings are updated in place. If the server refuses the update (a push
        consumer or another ack policy by that name), the consumer is recreated starting
        after its ack floor, so acknowledged events are not delivered again.
        """
        if self._stream_subjects is not None:
            await ensure_stream(self._js, stream=self._stream, subjects=self._stream_subjects)
        desired = self._desired_config()
        info: ConsumerInfo
        try:
            info = await self._js.consumer_info(self._stream, self._name)
        except nats.js.errors.NotFoundError:
            try:
                info = await self._js.add_consumer(self._stream, desired)
            except nats.js.errors.APIError as error:
                if error.err_code != _CONSUMER_EXISTS:
                    raise
                info = await self._js.consumer_info(self._stream, self._name)
            else:
                logger.info("nats.consumer_created", extra=self._log_fields())
                return info
        if self._matches(info.config):
            return info
        try:
            updated: ConsumerInfo = await self._js.add_consumer(
                self._stream,
                desired.evolve(
                    deliver_policy=info.config.deliver_policy,
                    opt_start_seq=info.config.opt_start_seq,
                    opt_start_time=info.config.opt_start_time,
                ),
            )
        except nats.js.errors.APIError as error:
            start = (info.ack_floor.stream_seq if info.ack_floor else 0) + 1
            logger.warning(
                "nats.consumer_recreated",
                extra={**self._log_fields(), "reason": repr(error), "start_seq": start},
            )
            await self._js.delete_consumer(self._stream, self._name)
            recreated: ConsumerInfo = await self._js.add_consumer(
                self._stream,
                desired.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            )
            return recreated
        logger.info("nats.consumer_updated", extra=self._log_fields())
        return updated

    def _log_fields(self) -> dict[str, Any]:
        return {"stream": self._stream, "consumer": self._name}

    async def run(self, handler: Handler) -> None:
        """Deliver events to ``handler`` until :meth:`stop`.

        Raises:
            ConsumerError: the NATS connection was closed while not stopping.
        """
        if self._running:
            raise RuntimeError("this consumer is already running")
        self._running = True
        try:
            await self._run(handler)
        finally:
            self._running = False

    async def _run(self, handler: Handler) -> None:
        if not await self._check_consumer(initial=True):
            return
        inbox = self._nc.new_inbox()
        try:
            subscription = await self._nc.subscribe(inbox, cb=self._on_delivery)
        except (nats.errors.Error, OSError) as error:
            raise ConsumerError(f"cannot subscribe to {inbox}: {error!r}") from error
        self._requested = 0
        self._needs_check = False
        self._wake.set()  # request at once
        puller = asyncio.create_task(self._pull_loop(inbox), name="nats-consumer-pull")
        failure: BaseException | None = None
        try:
            await self._dispatch_loop(handler, puller)
        finally:
            self.stop()
            # Draining unsubscribes (the server forgets our pull requests) and still lets
            # messages already on their way reach the buffer, to be released below.
            with contextlib.suppress(Exception):
                await subscription.drain()  # type: ignore[no-untyped-call]  # nats-py lacks it
            await asyncio.wait({puller})
            failure = None if puller.cancelled() else puller.exception()
            await _release(self._drain_buffer())
        if failure is not None:  # pulling ended for another reason than stop()
            raise failure

    def _drain_buffer(self) -> list[Msg]:
        msgs: list[Msg] = []
        while not self._buffer.empty():
            if (msg := self._buffer.get_nowait()) is not None:
                msgs.append(msg)
        return msgs

    async def _on_delivery(self, msg: Msg) -> None:
        """Subscription callback: buffer events, account for the pull requests' status."""
        self._last_heard = time.monotonic()
        if msg.reply:  # a stream message (its reply subject is the ack subject)
            self._requested = max(0, self._requested - 1)
            self._buffer.put_nowait(msg)
            return
        headers = msg.headers or {}
        status = headers.get(STATUS_HEADER)
        if status == "100":  # idle heartbeat: the request is alive, the stream quiet
            return
        pending = headers.get(PENDING_MESSAGES_HEADER)
        if pending is not None and pending.isdigit():
            # A request ended (expired, or cut short) with this many messages unsent.
            self._requested = max(0, self._requested - int(pending))
        else:
            self._requested = 0
        if status != "408":  # 408 is a plain expiry; anything else may need attention
            logger.warning(
                "nats.pull_status",
                extra={
                    **self._log_fields(),
                    "status": status,
                    "description": headers.get("Description", ""),
                },
            )
            self._needs_check = True
        self._wake.set()

    async def _pull_loop(self, inbox: str) -> None:
        """Keep pull requests outstanding for up to ``batch`` events ahead of the handler."""
        try:
            await self._pull(inbox)
        finally:
            self._buffer.put_nowait(None)  # wake the dispatcher, whatever ended pulling

    async def _pull(self, inbox: str) -> None:
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._name}"
        reconnects = self._nc.stats["reconnects"]
        backoff = _Backoff(self._retry_delay)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._heartbeat)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if self._nc.is_closed:
                raise ConsumerError("the NATS connection is closed")
            now = time.monotonic()
            if self._nc.stats["reconnects"] != reconnects:
                # Requests die with the old connection; the consumer may be gone with a
                # broker that lost its state.
                reconnects = self._nc.stats["reconnects"]
                self._requested = 0
                self._needs_check = True
            elif self._requested and now - self._last_heard > 3 * self._heartbeat:
                logger.warning("nats.pull_stalled", extra=self._log_fields())
                self._requested = 0
                self._needs_check = True
            if self._needs_check:
                if not await self._check_consumer():
                    await self._sleep(backoff.next())
                    continue
                backoff.reset()
            wanted = self._batch - self._requested - self._buffer.qsize()
            if wanted < self._refill_at:
                continue
            request = {
                "batch": wanted,
                "expires": int(self._request_expires * 1e9),
                "idle_heartbeat": int(self._heartbeat * 1e9),
            }
            try:
                await self._nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
            except (nats.errors.Error, OSError) as error:
                self._check_connection(error)
                logger.warning(
                    "nats.pull_failed", extra={**self._log_fields(), "error": repr(error)}
                )
                await self._sleep(backoff.next())
                continue
            self._requested += wanted
            self._last_heard = now

    async def _check_consumer(self, *, initial: bool = False) -> bool:
        """Make sure the consumer exists (creating it if need be); False while unavailable."""
        self._needs_check = False
        backoff = _Backoff(self._retry_delay)
        while not self._stopping.is_set():
            try:
                if initial:
                    await self.ensure()
                else:
                    try:
                        await self._js.consumer_info(self._stream, self._name)
                    except nats.js.errors.NotFoundError:
                        logger.warning("nats.consumer_missing", extra=self._log_fields())
                        await self.ensure()
                return True
            except (nats.errors.Error, OSError, TimeoutError) as error:
                self._check_connection(error)
                logger.warning(
                    "nats.consumer_unavailable", extra={**self._log_fields(), "error": repr(error)}
                )
                if not initial:
                    self._needs_check = True
                    return False
            await self._sleep(backoff.next())
        return False

    def _check_connection(self, error: BaseException) -> None:
        if self._nc.is_closed and not self._stopping.is_set():
            raise ConsumerError("the NATS connection is closed") from error

    async def _dispatch_loop(self, handler: Handler, puller: asyncio.Task[None]) -> None:
        while (msg := await self._buffer.get()) is not None:
            if self._batch - self._requested - self._buffer.qsize() >= self._refill_at:
                self._wake.set()
            if self._stopping.is_set() or puller.done():
                await _release([msg])  # first, so redelivery keeps the stream order
                return
            await self._dispatch(msg, handler)

    async def _dispatch(self, msg: Msg, handler: Handler) -> None:
        try:
            envelope = wire.decode(msg.data)
        except wire.WireError as error:
            logger.warning(
                "nats.garbage",
                extra={
                    **self._log_fields(),
                    "subject": msg.subject,
                    "stream_seq": _stream_seq(msg),
                    "reason": str(error),
                    "size": len(msg.data),
                    "preview": msg.data[:200].decode("utf-8", "replace"),
                },
            )
            with contextlib.suppress(nats.errors.Error, OSError):
                await msg.term()
            return
        ack = Ack(msg, envelope.id, retry_delay=self._retry_delay)
        try:
            await handler(envelope, ack)
        except Exception:
            logger.exception(
                "nats.handler_failed",
                extra={**self._log_fields(), "event_id": envelope.id, "subject": msg.subject},
            )
            await ack.retry()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once on :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


async def _release(msgs: Sequence[Msg]) -> None:
    """Hand received but undelivered messages back to the broker for immediate redelivery."""
    for msg in msgs:
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.nak()


def _stream_seq(msg: Msg) -> int | None:
    try:
        return msg.metadata.sequence.stream
    except Exception:  # not a JetStream reply subject; only used for a log line
        return None


class _Backoff:
    """Exponential backoff between retries, capped, reset on success."""

    def __init__(self, first: float, cap: float = 10.0) -> None:
        self._first = max(first, 0.01)
        self._cap = cap
        self._next = self._first

    def next(self) -> float:
        current = self._next
        self._next = min(self._next * 2, self._cap)
        return current

    def reset(self) -> None:
        self._next = self._first


async def listen(
    client: Client, subject: str, handler: Callable[[Envelope], None]
) -> Callable[[], Awaitable[None]]:
    """Hand every event on ``subject`` (core NATS, no durability) to ``handler``.

    For answers a waiting request can afford to miss (it has its own time limit), such as
    the quality gate's ``get-sli.finished``: every replica sees every answer and keeps the
    ones it waits for. Undecodable messages are logged and skipped. Returns an unsubscribe.
    """

    async def deliver(msg: Msg) -> None:
        try:
            envelope = wire.decode(msg.data)
        except wire.WireError as error:
            logger.warning("nats.garbage", extra={"subject": msg.subject, "reason": str(error)})
            return
        try:
            handler(envelope)
        except Exception:
            logger.exception("nats.listener_failed", extra={"subject": msg.subject})

    subscription = await client.subscribe(subject, cb=deliver)
    return subscription.unsubscribe
