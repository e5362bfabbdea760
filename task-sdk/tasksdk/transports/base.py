"""The interface the SDK needs from a message transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

MessageHandler = Callable[[bytes], Awaitable[None]]
"""Called with the body of each message a subscription receives."""


class Transport(Protocol):
    """Publish/subscribe on subjects with queue groups, as core NATS offers.

    Subscribers that share a queue group split the messages of a subject between them (each
    message goes to one member); every queue group gets its own copy.
    """

    async def subscribe(self, subject: str, *, queue: str, handler: MessageHandler) -> None:
        """Start delivering the messages of a subject to a handler.

        Messages of one subscription are handed to the handler one at a time, in order.

        Args:
            subject: The subject, possibly with NATS wildcards.
            queue: The queue group shared by the replicas of one service.
            handler: Called with each message body.
        """
        ...

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send a message.

        Args:
            subject: The subject (for Keptn events: the event type).
            payload: The message body.
        """
        ...

    async def stop_receiving(self) -> None:
        """End all subscriptions after handing over the messages already received.

        Publishing keeps working, so in-flight tasks can still send their answers.
        """
        ...
