"""Push delivery: POST each ``.triggered`` event to the webhooks subscribed to it.

The dispatcher is fed by its own durable JetStream consumer over the ``.triggered``
subjects, so what it must still deliver lives in the broker, not in this process: a message
is acknowledged only when every matching webhook has taken the event (or has been given up
on), and a retry is a negative acknowledgement with a delay, which the broker keeps across a
restart of the control plane. The broker's delivery count is the attempt number.

Several webhooks can want one event; those that already took it are remembered in memory
until the message is settled, so a retry goes only to the others. After a restart that
memory is gone and a retry may reach a webhook twice: delivery is at least once, and the
``webhook-id`` header (the same on every attempt) lets a receiver drop the repeat.

When a webhook cannot be reached for good and the event is a task's ``.triggered`` that is
still open, the dispatcher answers the task itself, ``.started`` and ``.finished`` with
``errored``/``fail`` and the reason, so the sequence moves on instead of waiting for an
executor that never got the event. Their ids are derived from the event and subscription,
so a repeated give-up is dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.application.envelope import Envelope, format_time
from controlplane.application.ports import Publisher, Settle
from controlplane.application.registry import Registry
from controlplane.domain import eventtypes
from controlplane.domain.eventtypes import Phase, TaskEventType
from controlplane.domain.execution import derived_id
from controlplane.domain.integrations import Integration, Subscription

logger = logging.getLogger(__name__)

SOURCE = "controlplane/webhook"
_RETRYABLE_STATUSES = frozenset({408, 429})
# CloudEvents' HTTP binding: header values are printable ASCII; the rest is percent-encoded.
_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in '"%')


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    url: str
    headers: Mapping[str, str]
    body: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one POST came to: an HTTP status, or no status and the transport error."""

    status: int | None
    error: str = ""
    elapsed: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth trying again: no answer, a server error, a timeout or rate limit answer."""
        return self.status is None or self.status >= 500 or self.status in _RETRYABLE_STATUSES

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        return f"HTTP {self.status}" + (f": {self.error}" if self.error else "")


class WebhookSender(Protocol):
    async def send(self, request: WebhookRequest, *, time_limit: float) -> DeliveryResult:
        """POST the request; never raises for an unreachable or failing receiver."""
        ...


OpenCheck = Callable[[str, str], Awaitable[bool]]
"""``(event type, event id) -> whether that .triggered event's task is still open``."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.2

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), jittered ±``jitter``."""
        try:
            base = min(self.maximum, self.initial * self.factor ** max(attempt - 1, 0))
        except OverflowError:  # a message redelivered for days: the power outgrew floats
            base = self.maximum
        return max(0.0, base * (1 + self.jitter * (2 * draw() - 1)))


# ------------------------------------------------------------------------------ encoding


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' signature: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def build_request(event: Envelope, subscription: Subscription, *, now: float) -> WebhookRequest:
    """The signed POST for one event and one webhook subscription, structured or binary."""
    webhook = subscription.webhook
    if webhook is None:
        raise ValueError(f"subscription {subscription.id} has no webhook")
    data = dict(event.data)
    temporary = dict(data.get("temporaryData") or {})
    temporary["distributor"] = {
        **dict(temporary.get("distributor") or {}),
        "subscriptionID": subscription.id,
    }
    data["temporaryData"] = temporary
    outgoing = event.evolve(data=data)
    headers: dict[str, str]
    if webhook.mode == "binary":
        body = _json_bytes(data)
        headers = {"content-type": "application/json", **_binary_headers(outgoing)}
    else:
        body = _json_bytes(outgoing.to_json())
        headers = {"content-type": "application/cloudevents+json"}
    message_id = f"{event.id}.{subscription.id}"
    timestamp = int(now)
    headers["webhook-id"] = message_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = sign(webhook.key, message_id, timestamp, body)
    return WebhookRequest(webhook.url, headers, body, message_id)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _binary_headers(event: Envelope) -> dict[str, str]:
    attributes = event.to_json()
    attributes.pop("data", None)
    attributes.pop("datacontenttype", None)
    headers = {}
    for name, value in attributes.items():
        if value is None or value == "" or isinstance(value, dict | list):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        headers[f"ce-{name}"] = urllib.parse.quote(text, safe=_HEADER_SAFE)
    return headers


# ------------------------------------------------------------------------------ dispatching


class WebhookDispatcher:
    def __init__(
        self,
        registry: Registry,
        sender: WebhookSender,
        publisher: Publisher,
        *,
        is_open: OpenCheck,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
        max_in_flight: int = 64,
    ) -> None:
        self._registry = registry
        self._sender = sender
        self._publisher = publisher
        self._is_open = is_open
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._clock = clock
        self._draw = draw
        # Per event id in retry: subscriptions that took it or were given up on.
        self._settled_targets: dict[str, set[str]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        # More concurrent POSTs than the sender has connections only queue inside its pool,
        # where the bookkeeping costs more CPU than the sending (measured: bench/push.py).
        self._sending = asyncio.Semaphore(max_in_flight)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def receive(self, event: Envelope, ack: Settle) -> None:
        """Take one consumed ``.triggered`` event; delivery goes on in the background."""
        targets = self._registry.webhook_targets(
            event.type, event.project, event.stage, event.service
        )
        if not targets:
            await self._done(event, ack)
            return
        task = asyncio.create_task(self._deliver(event, ack), name=f"webhook {event.id}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def stop(self) -> None:
        """Cancel deliveries in progress; their messages come back from the broker."""
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _deliver(self, event: Envelope, ack: Settle) -> None:
        try:
            async with self._sending:
                await self._attempt(event, ack)
        except asyncio.CancelledError:
            await ack.retry(0)
            raise
        except Exception:
            # A bug or an event we cannot encode: retried like a failed delivery, but not for
            # ever (the consumer itself has no delivery limit).
            attempt = ack.attempt
            logger.exception(
                "webhook.dispatch_failed", extra={"event_id": event.id, "attempt": attempt}
            )
            if attempt >= self._retry.attempts:
                await self._done(event, ack)
            else:
                await ack.retry(self._retry.delay(attempt, self._draw))

    async def _attempt(self, event: Envelope, ack: Settle) -> None:
        attempt = ack.attempt
        settled = self._settled_targets.setdefault(event.id, set())
        # Only a task's .triggered can end; the open check never finds a sequence's.
        if (
            attempt > 1
            and _triggered_task(event.type) is not None
            and not await self._is_open(event.type, event.id)
        ):
            logger.info("webhook.task_ended", extra={"event_id": event.id, "attempt": attempt})
            await self._done(event, ack)
            return
        # Subscriptions are looked up again on every attempt: one deleted meanwhile is
        # no longer delivered to, one edited gets its new URL.
        targets = [
            (integration, subscription)
            for integration, subscription in self._registry.webhook_targets(
                event.type, event.project, event.stage, event.service
            )
            if subscription.id not in settled
        ]
        results = await asyncio.gather(
            *(self._send(event, subscription) for _, subscription in targets)
        )
        waiting = False
        for (integration, subscription), result in zip(targets, results, strict=True):
            log = {
                "event_id": event.id,
                "subscription": subscription.id,
                "integration": integration.name,
                "attempt": attempt,
                "outcome": result.describe(),
            }
            if result.delivered:
                logger.debug("webhook.delivered", extra=log)
                settled.add(subscription.id)
            elif result.retryable and attempt < self._retry.attempts:
                logger.warning("webhook.retrying", extra=log)
                waiting = True
            else:
                logger.warning("webhook.given_up", extra=log)
                await self._give_up(event, integration, subscription, result, attempt)
                # Only now: if the answer could not be published, the retry gives up again.
                settled.add(subscription.id)
        if waiting:
            await ack.retry(self._retry.delay(attempt, self._draw))
        else:
            await self._done(event, ack)

    async def _done(self, event: Envelope, ack: Settle) -> None:
        self._settled_targets.pop(event.id, None)
        await ack.processed()

    async def _send(self, event: Envelope, subscription: Subscription) -> DeliveryResult:
        request = build_request(event, subscription, now=self._clock())
        return await self._sender.send(request, time_limit=self._timeout)

    async def _give_up(
        self,
        event: Envelope,
        integration: Integration,
        subscription: Subscription,
        result: DeliveryResult,
        attempt: int,
    ) -> None:
        parsed = _triggered_task(event.type)
        if parsed is None or not await self._is_open(event.type, event.id):
            return
        assert subscription.webhook is not None
        tries = "attempt" if attempt == 1 else "attempts"
        message = (
            f"webhook {subscription.webhook.url} of integration {integration.name!r} did not"
            f" take the event after {attempt} {tries}: {result.describe()}"
        )
        await self._publisher.publish(
            [
                self._answer(event, parsed.task, Phase.STARTED, subscription.id, {}),
                self._answer(
                    event,
                    parsed.task,
                    Phase.FINISHED,
                    subscription.id,
                    {"status": "errored", "result": "fail", "message": message},
                ),
            ]
        )

    def _answer(
        self,
        event: Envelope,
        task: str,
        phase: Phase,
        subscription_id: str,
        outcome: Mapping[str, Any],
    ) -> Envelope:
        scope = {
            key: event.data[key] for key in ("project", "stage", "service") if key in event.data
        }
        return Envelope(
            id=derived_id("webhook-gave-up", event.id, subscription_id, str(phase)),
            source=SOURCE,
            type=eventtypes.task(task, phase),
            time=format_time(self._clock()),
            data={**scope, **outcome},
            keptn_context=event.keptn_context,
            triggered_id=event.id,
            gitcommitid=event.gitcommitid,
        )


def _triggered_task(event_type: str) -> TaskEventType | None:
    """The task of a task's ``.triggered`` type; None for a sequence's or anything else."""
    try:
        parsed = eventtypes.parse(event_type)
    except eventtypes.EventTypeError:
        return None
    if isinstance(parsed, TaskEventType) and parsed.phase is Phase.TRIGGERED:
        return parsed
    return None
