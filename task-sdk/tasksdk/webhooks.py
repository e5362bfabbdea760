"""Receive the control plane's webhook pushes: signatures and a small ASGI application.

A service in push mode registers a webhook (URL, mode, secret) with each subscription, and
the control plane POSTs every matching ``.triggered`` event to it. This module has two parts:

* **Signatures**, in the `Standard Webhooks <https://www.standardwebhooks.com/>`_ form that
  the control plane signs with: :func:`sign` and :func:`verify_signature` are pure, so the
  sending side and tests can use the same code.
* :class:`WebhookReceiver`, an ASGI application written against the raw ASGI interface (no
  web framework needed). It checks the size (1 MiB) and the signature, rebuilds the
  CloudEvent from either content mode, hands it to the runner through a
  :class:`~tasksdk.transports.http.WebhookTransport` and answers 202 at once: the control
  plane waits only a few seconds for an answer, while a task may take hours.

Status codes are chosen for the control plane's retry rules: 401 (bad signature), 400 (not a
task event), 404 (no handler here) and 413 (too large) are final, so the control plane
answers the task errored itself; 503 (starting or stopping) is retried.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote

from tasksdk import contract, errors
from tasksdk.transports.http import WebhookTransport

SECRET_PREFIX = "whsec_"
"""Marks a secret whose key is the base64-decoded rest (the Standard Webhooks convention)."""

SIGNATURE_VERSION = "v1"
"""The signature scheme: HMAC-SHA256, base64."""

TIMESTAMP_TOLERANCE = 300.0
"""Seconds a ``webhook-timestamp`` may be away from the receiver's clock."""

MAX_BODY_BYTES = 1 << 20
"""The largest webhook body accepted (1 MiB); larger ones get 413."""

MIN_SECRET_LENGTH = 16
"""The control plane refuses shorter webhook secrets."""

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
AsgiMessage = MutableMapping[str, Any]
"""An ASGI event or message."""
Receive = Callable[[], Awaitable[AsgiMessage]]
"""The ASGI ``receive`` callable."""
Send = Callable[[AsgiMessage], Awaitable[None]]
"""The ASGI ``send`` callable."""

logger = logging.getLogger("tasksdk.webhooks")


def secret_key(secret: str) -> bytes:
    """Derive the HMAC key from a webhook secret.

    Args:
        secret: ``whsec_<base64>`` or any other text.

    Returns:
        The base64-decoded part of a ``whsec_`` secret; otherwise the UTF-8 bytes of the
        whole secret (also when the part after ``whsec_`` is not valid base64).
    """
    if secret.startswith(SECRET_PREFIX):
        with contextlib.suppress(binascii.Error, ValueError):
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """Compute the ``webhook-signature`` value for one delivery.

    Args:
        secret: The webhook secret.
        webhook_id: The ``webhook-id`` header (``<event id>.<subscription id>``).
        timestamp: The ``webhook-timestamp`` header: Unix seconds.
        body: The exact request body.

    Returns:
        ``v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.
    """
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(
    secret: str, webhook_id: str, body: bytes, *, timestamp: int
) -> dict[str, str]:
    """Build the three Standard Webhooks headers for one delivery.

    Args:
        secret: The webhook secret.
        webhook_id: The delivery id, the same on every retry.
        body: The exact request body.
        timestamp: Unix seconds of this attempt.

    Returns:
        ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.
    """
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = TIMESTAMP_TOLERANCE,
) -> None:
    """Check a delivery's Standard Webhooks signature.

    The ``webhook-signature`` header may hold several space-separated signatures (a sender
    rotating its secret signs with both); one matching ``v1`` signature is enough. The
    comparison takes constant time.

    Args:
        secret: The webhook secret.
        headers: The request headers (any letter case).
        body: The exact request body.
        now: The receiver's clock, in Unix seconds.
        tolerance: How many seconds the timestamp may be away from ``now``.

    Raises:
        InvalidSignature: If a header is missing, the timestamp is malformed or too far
            from ``now``, or no signature matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    given = lowered.get("webhook-signature", "")
    if not (webhook_id and timestamp and given):
        raise errors.InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        moment = int(timestamp)
    except ValueError:
        raise errors.InvalidSignature(f"malformed webhook-timestamp {timestamp!r}") from None
    if abs(now - moment) > tolerance:
        raise errors.InvalidSignature(
            f"webhook-timestamp {moment} is more than {tolerance:.0f}s away from now"
        )
    expected = sign(secret, webhook_id, timestamp, body).encode()
    candidates = [part.encode() for part in given.split() if part.startswith(SIGNATURE_VERSION)]
    # Compare with every candidate (no early exit) so timing tells nothing.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    if not any(matches):
        raise errors.InvalidSignature("no webhook-signature matches the body and the secret")


def event_from_push(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Rebuild the CloudEvent of a push, in structured or binary content mode.

    Binary mode is recognised by a ``ce-specversion`` header: every ``ce-<name>`` header
    becomes attribute ``<name>`` (percent-decoded, as the CloudEvents HTTP binding asks)
    and the JSON body becomes ``data``. Otherwise the body is the whole CloudEvent.

    Args:
        headers: The request headers, names in lower case.
        body: The request body.

    Returns:
        The structured CloudEvent.

    Raises:
        InvalidEvent: If the body is not the JSON the mode calls for.
    """
    if "ce-specversion" not in headers:
        return contract.decode(body)
    event: dict[str, Any] = {
        name.removeprefix("ce-"): unquote(value)
        for name, value in headers.items()
        if name.startswith("ce-")
    }
    try:
        data = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.InvalidEvent(f"the binary-mode body is not JSON: {exc}") from exc
    event["datacontenttype"] = headers.get("content-type", "").split(";")[0].strip() or (
        contract.CONTENT_TYPE
    )
    event["data"] = data
    return event


class WebhookReceiver:
    """The ASGI application that takes the control plane's webhook pushes.

    ``POST`` (any path) receives one event; ``GET`` (any path) answers 200 while the app
    takes events and 503 otherwise, for health probes. Other methods get 405.

    Serving starts in the ASGI lifespan (registration with the control plane, attaching the
    runner) or, for servers without lifespan support and for tests, in :meth:`running`.
    """

    def __init__(
        self,
        transport: WebhookTransport,
        secret: str,
        *,
        lifespan: Callable[[], AbstractAsyncContextManager[object]] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        tolerance: float = TIMESTAMP_TOLERANCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create the receiver; :meth:`TaskApp.asgi_push <tasksdk.app.TaskApp.asgi_push>` does.

        Args:
            transport: Where verified events go.
            secret: The webhook secret the control plane signs with.
            lifespan: What serving means (registering, running the runner), as an async
                context manager factory; None if the transport is fed some other way.
            max_body_bytes: The largest body accepted.
            tolerance: Seconds a timestamp may be away from ``clock()``.
            clock: The current time in Unix seconds.
        """
        self._transport = transport
        self._secret = secret
        self._lifespan = lifespan
        self._max_body = max_body_bytes
        self._tolerance = tolerance
        self._clock = clock
        self.startup_error: BaseException | None = None

    @property
    def transport(self) -> WebhookTransport:
        """The transport that verified events are handed to."""
        return self._transport

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve for the duration of the block, as the ASGI lifespan does.

        Yields:
            Nothing; events are taken while the block runs.
        """
        if self._lifespan is None:
            yield
            return
        async with self._lifespan():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection.

        Args:
            scope: The connection scope.
            receive: Receives ASGI events.
            send: Sends ASGI messages.
        """
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._handle(scope, receive, send)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            try:
                await stack.enter_async_context(self.running())
            except Exception as exc:
                self.startup_error = exc
                logger.exception("push.startup_failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            try:
                await stack.aclose()
            except Exception as exc:
                logger.exception("push.shutdown_failed")
                await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.shutdown.complete"})

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "")
        if method in ("GET", "HEAD"):
            ready = self._transport.receiving
            await _answer(send, 200 if ready else 503, "ok" if ready else "not serving")
            return
        if method != "POST":
            await _answer(send, 405, "only POST delivers events", [(b"allow", b"POST, GET")])
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        status, message = await self._take(headers, receive)
        if status >= 400:
            logger.warning("push.refused %d %s", status, message)
        retry = [(b"retry-after", b"1")] if status == 503 else []
        await _answer(send, status, message, retry)

    async def _take(self, headers: Mapping[str, str], receive: Receive) -> tuple[int, str]:
        """Check and hand over one push; return the status and message to answer with."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return 413, f"the body is larger than {self._max_body} bytes"
        body = await _read_body(receive, self._max_body)
        if body is None:
            return 413, f"the body is larger than {self._max_body} bytes"
        try:
            verify_signature(
                self._secret, headers, body, now=self._clock(), tolerance=self._tolerance
            )
        except errors.InvalidSignature as exc:
            return 401, exc.message
        if not self._transport.receiving:
            return 503, "the service is not taking events now"
        try:
            event = event_from_push(headers, body)
            event_type = contract.TriggeredEvent.from_mapping(event).type
        except errors.InvalidEvent as exc:
            return 400, exc.message
        if not self._transport.deliver(event_type, contract.encode(event)):
            return 404, f"this service does not handle {event_type}"
        return 202, "accepted"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Read the whole request body, or None as soon as it exceeds ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"code": status, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
