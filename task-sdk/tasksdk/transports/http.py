"""Transports over the control plane's HTTP API, for services that cannot reach its NATS.

Both send answers with ``POST /api/v1/event``; they differ in how events come in:

* :class:`HttpPullTransport` polls ``GET /api/controlPlane/v1/event/triggered/{type}`` for
  each subscribed subject, as Keptn's distributor did on a remote execution plane. The
  listing holds every open event until its task is complete, so the same event comes back
  on every poll: the runner's memory of accepted ids drops the repeats.
* :class:`WebhookTransport` is fed by the push receiver (:mod:`tasksdk.webhooks`), which
  hands it each event the control plane POSTs.

There are no queue groups over HTTP: every replica of a pull service sees every open event
and would answer it, counting as another executor, so run one replica per pull service. For
push the control plane sends each event once per subscription, to one URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from tasksdk import api, contract, errors
from tasksdk.transports.base import MessageHandler

logger = logging.getLogger("tasksdk.transports.http")


class HttpPullTransport:
    """A :class:`~tasksdk.transports.base.Transport` that polls the API for open events.

    Each subscribed subject becomes a poll target; one background loop polls them all every
    ``poll_interval`` seconds and hands each listed event to the target's handler, one at a
    time. ``queue`` is ignored (see the module docstring).
    """

    def __init__(
        self,
        api_client: api.ControlPlaneApi,
        *,
        poll_interval: float = 1.0,
        scopes: Mapping[str, Mapping[str, str]] | None = None,
        page_size: int = api.MAX_PAGE_SIZE,
    ) -> None:
        """Create the transport; polling starts with the first subscription.

        Args:
            api_client: The control plane API; its owner closes it.
            poll_interval: Seconds between two polls.
            scopes: Per subject, query filters (``project``, ``stage``, ``service``) that
                narrow the listing on the server. Only exact single values belong here;
                the runner filters again anyway.
            page_size: Events per page of the listing (all pages are read).
        """
        self._api = api_client
        self._poll_interval = poll_interval
        self._scopes = dict(scopes or {})
        self._page_size = page_size
        self._targets: dict[str, MessageHandler] = {}
        self._polling: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    @property
    def subjects(self) -> frozenset[str]:
        """The subjects being polled."""
        return frozenset(self._targets)

    async def subscribe(self, subject: str, *, queue: str, handler: MessageHandler) -> None:
        """Poll for the open events of a type.

        Args:
            subject: A concrete ``.triggered`` event type (no wildcards over HTTP).
            queue: Ignored: HTTP has no queue groups.
            handler: Called with each listed event, encoded as a structured CloudEvent.

        Raises:
            TransportError: If the subject contains NATS wildcards.
        """
        if any(token in ("*", ">") for token in subject.split(".")):
            raise errors.TransportError(f"cannot poll a wildcard subject: {subject!r}")
        self._targets[subject] = handler
        if self._polling is None:
            self._polling = asyncio.create_task(self._poll_forever(), name="tasksdk pull")

    async def unsubscribe(self, subject: str) -> None:
        """Stop polling a subject.

        Args:
            subject: The subject as given to :meth:`subscribe`.
        """
        self._targets.pop(subject, None)

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send an event with ``POST /api/v1/event``.

        Args:
            subject: The event type (the API reads it from the payload).
            payload: The structured-mode CloudEvent.

        Raises:
            TransportError: If the API refused the event or stayed unreachable.
        """
        await self._api.send_event(payload)

    async def stop_receiving(self) -> None:
        """Stop polling. An event being handed over stays listed, for the next process."""
        self._targets.clear()
        polling, self._polling = self._polling, None
        if polling is not None:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling

    async def poll_once(self) -> int:
        """Poll every subject once and hand over what is listed.

        Returns:
            How many events were handed over (repeats included).
        """
        handed = 0
        for subject, handler in list(self._targets.items()):
            for event in await self._listed(subject):
                if subject not in self._targets:
                    break  # unsubscribed meanwhile
                await handler(contract.encode(event))
                handed += 1
        return handed

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pull.poll_crashed")
            await asyncio.sleep(self._poll_interval)

    async def _listed(self, subject: str) -> list[dict[str, object]]:
        try:
            events = await self._api.open_triggered(
                subject, scope=self._scopes.get(subject), page_size=self._page_size
            )
        except errors.TransportError as exc:
            if isinstance(exc, errors.ApiError) and exc.status == 404:
                # An unknown project in the scope: nothing can be open for it yet.
                events = []
            else:
                self._note_failure(subject, exc)
                return []
        if subject in self._failing:
            self._failing.discard(subject)
            logger.info("pull.recovered %s", subject)
        return events

    def _note_failure(self, subject: str, exc: errors.TransportError) -> None:
        # Once per outage, not once per poll: a poll runs every second.
        if subject not in self._failing:
            self._failing.add(subject)
            logger.warning("pull.failing %s: %s", subject, exc)
        else:
            logger.debug("pull.still_failing %s: %s", subject, exc)


class WebhookTransport:
    """A :class:`~tasksdk.transports.base.Transport` fed by pushed webhooks.

    The push receiver calls :meth:`deliver` with each verified event; the event is handed to
    the subject's handler in the background, so the receiver can answer the control plane at
    once. Answers go out with ``POST /api/v1/event``.
    """

    def __init__(self, api_client: api.ControlPlaneApi) -> None:
        """Create the transport.

        Args:
            api_client: The control plane API; its owner closes it.
        """
        self._api = api_client
        self._handlers: dict[str, MessageHandler] = {}
        self._receiving = False
        self._handing_over: set[asyncio.Task[None]] = set()

    @property
    def receiving(self) -> bool:
        """Whether some subject has a handler and receiving has not been stopped."""
        return self._receiving and bool(self._handlers)

    def handles(self, subject: str) -> bool:
        """Tell whether events of a type have a handler.

        Args:
            subject: An event type.

        Returns:
            True if :meth:`deliver` would take it.
        """
        return self._receiving and subject in self._handlers

    async def subscribe(self, subject: str, *, queue: str, handler: MessageHandler) -> None:
        """Take pushed events of a type.

        Args:
            subject: The event type.
            queue: Ignored: the control plane pushes each event to one URL.
            handler: Called with each pushed event, encoded as a structured CloudEvent.
        """
        self._handlers[subject] = handler
        self._receiving = True

    async def unsubscribe(self, subject: str) -> None:
        """Stop taking pushed events of a type.

        Args:
            subject: The event type.
        """
        self._handlers.pop(subject, None)

    def deliver(self, subject: str, payload: bytes) -> bool:
        """Hand a pushed event to its handler in the background.

        Args:
            subject: The event type.
            payload: The structured-mode CloudEvent.

        Returns:
            False if no handler takes this type (or receiving has stopped).
        """
        handler = self._handlers.get(subject) if self._receiving else None
        if handler is None:
            return False
        task = asyncio.create_task(_hand_over(handler, payload), name=f"tasksdk push {subject}")
        self._handing_over.add(task)
        task.add_done_callback(self._handed_over)
        return True

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send an event with ``POST /api/v1/event``.

        Args:
            subject: The event type (the API reads it from the payload).
            payload: The structured-mode CloudEvent.

        Raises:
            TransportError: If the API refused the event or stayed unreachable.
        """
        await self._api.send_event(payload)

    async def stop_receiving(self) -> None:
        """Refuse further pushes, and wait until the accepted ones reached the runner."""
        self._receiving = False
        self._handlers.clear()
        while self._handing_over:
            await asyncio.wait(set(self._handing_over))

    def _handed_over(self, task: asyncio.Task[None]) -> None:
        self._handing_over.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("push.handover_failed", exc_info=task.exception())


async def _hand_over(handler: MessageHandler, payload: bytes) -> None:
    await handler(payload)
