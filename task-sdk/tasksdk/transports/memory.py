"""An in-process transport with core NATS delivery semantics, for tests.

Nothing leaves the process: :meth:`MemoryTransport.publish` records the message and hands it
straight to the matching subscriptions, one member per queue group (round robin), awaiting
each handler before returning.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

from tasksdk.transports.base import MessageHandler, subject_matches


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A published message.

    Attributes:
        subject: The subject it was published on.
        payload: The message body.
    """

    subject: str
    payload: bytes


@dataclasses.dataclass(slots=True)
class _Group:
    pattern: str
    queue: str
    members: list[MessageHandler]
    turn: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    def next_member(self) -> MessageHandler:
        return self.members[next(self.turn) % len(self.members)]


class MemoryTransport:
    """A :class:`~tasksdk.transports.base.Transport` that keeps everything in memory.

    Attributes:
        published: Every message published so far, in order.
    """

    def __init__(self) -> None:
        """Create a transport with no subscriptions."""
        self.published: list[Message] = []
        self._groups: list[_Group] = []

    async def subscribe(self, subject: str, *, queue: str, handler: MessageHandler) -> None:
        """Deliver the messages of a subject to a handler.

        Args:
            subject: The subject; ``*`` matches one token and a final ``>`` the rest.
            queue: The queue group; members of one group share the messages. ``""`` means no
                group: the subscription gets every message.
            handler: Called with each message body.
        """
        for group in self._groups:
            if queue and (group.pattern, group.queue) == (subject, queue):
                group.members.append(handler)
                return
        self._groups.append(_Group(subject, queue, [handler]))

    async def publish(self, subject: str, payload: bytes) -> None:
        """Record a message and deliver it to one member of each matching queue group.

        Args:
            subject: The subject.
            payload: The message body.
        """
        self.published.append(Message(subject, payload))
        for group in list(self._groups):
            if subject_matches(group.pattern, subject):
                await group.next_member()(payload)

    async def unsubscribe(self, subject: str) -> None:
        """Remove every subscription on a subject (the exact pattern it was subscribed with).

        Args:
            subject: The subject as given to :meth:`subscribe`.
        """
        self._groups = [group for group in self._groups if group.pattern != subject]

    async def stop_receiving(self) -> None:
        """Remove all subscriptions."""
        self._groups.clear()


__all__ = ["MemoryTransport", "Message", "subject_matches"]
