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

    async def unsubscribe(self, subject: str) -> None:
        """End this transport's subscriptions on a subject; unknown subjects are ignored.

        Messages already received may still be handed to the handler.

        Args:
            subject: The subject exactly as it was given to :meth:`subscribe`.
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


def subject_matches(pattern: str, subject: str) -> bool:
    """Tell whether a subject matches a NATS subscription pattern.

    Args:
        pattern: A subject where ``*`` stands for one token and a final ``>`` for one or more.
        subject: A concrete subject.

    Returns:
        True if NATS would deliver a message on ``subject`` to a subscription on ``pattern``.
    """
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">" and index == len(wanted) - 1:
            return len(given) > index
        if index >= len(given) or token not in ("*", given[index]):
            return False
    return len(wanted) == len(given)
