"""Test a task service without servers.

:class:`TaskEnvironment` serves a :class:`~tasksdk.app.TaskApp` on an in-memory transport,
sends it synthetic ``.triggered`` events the way the control plane would, and returns the
answers the app emitted::

    env = TaskEnvironment(app)
    events = await env.trigger("checknumber", data={"checknumber": {"number": 12345}})
    assert [e["type"] for e in events] == [
        "sh.keptn.event.checknumber.started",
        "sh.keptn.event.checknumber.finished",
    ]
    assert finished_data(events)["checknumber"] == {"digits": 5}

The app runs through the same runner as in production, including filters and the handling of
repeated event ids; only the transport differs.

To test how the app behaves under the subscriptions an operator may set, give them to the
environment; it then follows them as the app follows the control plane's registry::

    seed_only = Subscription.for_task("checknumber", projects=["seed"])
    env = TaskEnvironment(app, subscriptions=[seed_only])
    assert await env.trigger("checknumber", project="other") == []  # no subscription admits it
    await env.follow([])  # the subscription was deleted
    assert "checknumber" not in env.served
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from tasksdk import contract, errors
from tasksdk.app import TaskApp
from tasksdk.registry import Subscription
from tasksdk.runner import TaskRunner
from tasksdk.transports.memory import MemoryTransport


class TaskEnvironment:
    """Runs an app's handlers on synthetic triggered events, in memory.

    The app is attached to an in-memory transport on the first event, exactly as
    ``TaskApp.attach`` does for NATS. Use the environment directly or as an async context
    manager; leaving the block detaches the app, giving handlers still running the app's
    ``shutdown_grace`` before they are cancelled.
    """

    def __init__(
        self,
        app: TaskApp,
        *,
        project: str = "project",
        stage: str = "dev",
        service: str = "service",
        subscriptions: Iterable[Subscription] | None = None,
    ) -> None:
        """Create the environment.

        Args:
            app: The app under test.
            project: Default ``data.project`` of triggered events.
            stage: Default ``data.stage`` of triggered events.
            service: Default ``data.service`` of triggered events.
            subscriptions: Follow these subscriptions, as the app does when it is registered
                with the control plane; None serves every handler (no registration).
        """
        self._app = app
        self._scope = {"project": project, "stage": stage, "service": service}
        self._subscriptions = None if subscriptions is None else tuple(subscriptions)
        self._transport = MemoryTransport()
        self._stack = contextlib.AsyncExitStack()
        self._runner: TaskRunner | None = None
        self._sent: set[int] = set()

    @property
    def transport(self) -> MemoryTransport:
        """The in-memory transport; ``transport.published`` holds every message."""
        return self._transport

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event the app has emitted so far, oldest first, as dicts."""
        return self.events_since(0)

    async def trigger(
        self,
        task: str,
        *,
        data: Mapping[str, Any] | None = None,
        project: str | None = None,
        stage: str | None = None,
        service: str | None = None,
        labels: Mapping[str, str] | None = None,
        event_id: str | None = None,
        shkeptncontext: str | None = None,
        gitcommitid: str | None = None,
    ) -> list[dict[str, Any]]:
        """Send a ``<task>.triggered`` event and wait until the handler is done.

        Args:
            task: The task name.
            data: Data fields, typically the task properties under the task name.
            project: ``data.project``; the environment's default if not given.
            stage: ``data.stage``; the environment's default if not given.
            service: ``data.service``; the environment's default if not given.
            labels: Optional ``data.labels``.
            event_id: The event id; a new UUID if not given. Reuse one to test repeats.
            shkeptncontext: The sequence run id; a new UUID if not given.
            gitcommitid: Optional configuration commit id.

        Returns:
            The events the app emitted in answer, oldest first.
        """
        event = contract.triggered_event(
            task,
            project=self._scope["project"] if project is None else project,
            stage=self._scope["stage"] if stage is None else stage,
            service=self._scope["service"] if service is None else service,
            data=data,
            labels=labels,
            event_id=event_id,
            shkeptncontext=shkeptncontext,
            gitcommitid=gitcommitid,
        )
        return await self.deliver(event)

    async def deliver(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Deliver a ready-made CloudEvent and wait until the handler is done.

        Args:
            event: A CloudEvent as a dict, e.g. from :func:`tasksdk.contract.triggered_event`.

        Returns:
            The events the app emitted in answer, oldest first.
        """
        runner = await self._attached()
        start = len(self._transport.published)
        self._sent.add(start)
        await self._transport.publish(str(event.get("type", "")), contract.encode(event))
        await runner.join()
        return self.events_since(start + 1)

    def events_since(self, index: int) -> list[dict[str, Any]]:
        """The events the app emitted from a position in ``transport.published`` on.

        Args:
            index: A position in ``transport.published``.

        Returns:
            The decoded events, oldest first.
        """
        return [
            contract.decode(message.payload)
            for position, message in enumerate(self._transport.published[index:], start=index)
            if position not in self._sent
        ]

    @property
    def served(self) -> frozenset[str]:
        """The tasks the app serves now (all of them unless subscriptions are followed)."""
        if self._runner is None:
            if self._subscriptions is None:
                return frozenset(self._app.registrations)
            return frozenset(
                task
                for task in self._app.registrations
                if any(
                    s.covers(contract.event_type(task, contract.Phase.TRIGGERED))
                    for s in self._subscriptions
                )
            )
        return self._runner.served

    async def follow(self, subscriptions: Iterable[Subscription]) -> None:
        """Change the followed subscriptions, as a ping answer from the registry would.

        Args:
            subscriptions: The subscriptions that now apply to the app.
        """
        self._subscriptions = tuple(subscriptions)
        runner = await self._attached()
        await runner.follow(self._subscriptions)

    async def wait(self) -> None:
        """Wait until no handler is running."""
        if self._runner is not None:
            await self._runner.join()

    async def _attached(self) -> TaskRunner:
        if self._runner is None:
            self._runner = await self._stack.enter_async_context(
                self._app.attach(self._transport, subscriptions=self._subscriptions)
            )
        return self._runner

    async def __aenter__(self) -> TaskEnvironment:
        """Enter the block.

        Returns:
            The environment.
        """
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop receiving and wait for running handlers, cancelling them after the grace time.

        Args:
            exc_type: The exception type, if the block raised.
            exc: The exception, if the block raised.
            traceback: The traceback, if the block raised.
        """
        await self._stack.aclose()


def finished_data(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the data of the one ``.finished`` event among emitted events.

    Args:
        events: Events as returned by :meth:`TaskEnvironment.trigger`.

    Returns:
        The ``data`` of the ``.finished`` event.

    Raises:
        AssertionError: If there is not exactly one ``.finished`` event.
    """
    finished = [event for event in events if _phase(event) is contract.Phase.FINISHED]
    if len(finished) != 1:
        types = [event.get("type") for event in events]
        raise AssertionError(f"expected exactly one .finished event, got {types}")
    return dict(finished[0].get("data") or {})


def _phase(event: Mapping[str, Any]) -> contract.Phase | None:
    try:
        return contract.parse_event_type(str(event.get("type", "")))[1]
    except errors.InvalidEvent:
        return None
