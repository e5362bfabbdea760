"""Core NATS transport (no JetStream), as Keptn integrations use.

Task services subscribe to ``sh.keptn.event.<task>.triggered`` with the service name as the
queue group, so replicas share the work and different services each get a copy. Answers are
plain core NATS publishes on the subject equal to their type; the control plane's JetStream
stream captures them.

``publish`` only appends to nats-py's outgoing buffer, which a background flusher writes to
the socket, so bursts of answers go out in few writes without one round trip each. Closing
drains the connection, so nothing buffered is lost on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tasksdk import errors
from tasksdk.transports.base import MessageHandler

logger = logging.getLogger("tasksdk.transports.nats")


class NatsTransport:
    """A :class:`~tasksdk.transports.base.Transport` over one core NATS connection.

    Create it with :meth:`connect`; it owns the connection and :meth:`close` ends it.
    """

    def __init__(self, client: Client) -> None:
        """Wrap a nats-py client; prefer :meth:`connect`, which also sets up logging callbacks.

        Args:
            client: A connected nats-py client.
        """
        self._client = client
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._closed = asyncio.Event()

    @classmethod
    async def connect(cls, servers: str | list[str], *, name: str, **options: Any) -> NatsTransport:
        """Connect to NATS.

        Args:
            servers: One server URL such as ``nats://127.0.0.1:4222``, or several.
            name: The connection name shown in NATS monitoring.
            **options: Passed on to ``nats.aio.client.Client.connect`` (credentials, TLS,
                reconnect settings, callbacks).

        Returns:
            The connected transport.

        Raises:
            TransportError: If no server could be reached.
        """
        transport = cls(Client())
        user_closed_cb = options.pop("closed_cb", None)

        async def on_closed() -> None:
            transport._closed.set()
            if user_closed_cb is not None:
                await user_closed_cb()

        options.setdefault("error_cb", _log_error)
        options.setdefault("disconnected_cb", _log_disconnected)
        options.setdefault("reconnected_cb", _log_reconnected)
        try:
            await transport._client.connect(servers, name=name, closed_cb=on_closed, **options)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise errors.TransportError(f"cannot connect to NATS at {servers}: {exc}") from exc
        return transport

    @property
    def client(self) -> Client:
        """The underlying nats-py client."""
        return self._client

    @property
    def is_closed(self) -> bool:
        """Whether the connection is closed for good."""
        return self._client.is_closed

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by :meth:`close` or by giving up reconnecting."""
        await self._closed.wait()

    async def subscribe(self, subject: str, *, queue: str, handler: MessageHandler) -> None:
        """Subscribe with a queue group; returns once the server has the subscription.

        Args:
            subject: The subject, possibly with wildcards.
            queue: The queue group.
            handler: Called with each message body, one message at a time.

        Raises:
            TransportError: If the connection is closed or the subject is invalid.
        """

        async def deliver(msg: Msg) -> None:
            await handler(msg.data)

        try:
            subscription = await self._client.subscribe(subject, queue=queue, cb=deliver)
            self._subscriptions.setdefault(subject, []).append(subscription)
            # One round trip, so that the server knows the subscription when this returns.
            await self._client.flush()
        except nats.errors.Error as exc:
            raise errors.TransportError(f"cannot subscribe to {subject!r}: {exc}") from exc

    async def publish(self, subject: str, payload: bytes) -> None:
        """Publish a message with core NATS (buffered; see the module docstring).

        Args:
            subject: The subject.
            payload: The message body.

        Raises:
            TransportError: If the connection is closed or the message is too large.
        """
        try:
            await self._client.publish(subject, payload)
        except nats.errors.Error as exc:
            raise errors.TransportError(f"cannot publish on {subject!r}: {exc}") from exc

    async def unsubscribe(self, subject: str) -> None:
        """Drain the subscriptions on a subject: unsubscribe, then hand over what was received.

        Args:
            subject: The subject exactly as given to :meth:`subscribe`; unknown ones are ignored.
        """
        await self._drain(self._subscriptions.pop(subject, []))

    async def stop_receiving(self) -> None:
        """Drain all subscriptions: unsubscribe, then hand over the messages already received."""
        subscriptions, self._subscriptions = self._subscriptions, {}
        await self._drain([sub for subs in subscriptions.values() for sub in subs])

    async def _drain(self, subscriptions: list[Subscription]) -> None:
        for subscription in subscriptions:
            if self._client.is_closed:
                return
            try:
                await subscription.drain()  # type: ignore[no-untyped-call]
            except nats.errors.Error as exc:
                logger.warning("nats.drain_failed %s", exc)

    async def close(self) -> None:
        """Flush what is buffered and close the connection."""
        if self._client.is_closed:
            return
        try:
            await self._client.drain()
        except nats.errors.Error:
            await self._client.close()


async def _log_error(exc: Exception) -> None:
    logger.warning("nats.error %r", exc)


async def _log_disconnected() -> None:
    logger.warning("nats.disconnected")


async def _log_reconnected() -> None:
    logger.info("nats.reconnected")
