"""``TaskApp``: the registry of task handlers and the entry points that serve them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

from tasksdk import contract, errors
from tasksdk.runner import Handler, TaskRegistration, TaskRunner
from tasksdk.transports.base import Transport
from tasksdk.transports.nats import NatsTransport

ScopeFilter = str | Collection[str] | None
"""Accepted values of one scope field: one name, several names, or None for any."""

H = TypeVar("H", bound=Handler)

logger = logging.getLogger("tasksdk.app")


class TaskApp:
    """A task service: named handlers for Keptn tasks, served over NATS.

    Example:
        ```python
        app = TaskApp("checknumber-service")

        @app.task("checknumber")
        async def check_number(ctx: TaskContext) -> dict[str, Any]:
            return {"checknumber": {"digits": len(str(ctx.properties["number"]))}}

        app.run("nats://127.0.0.1:4222")
        ```
    """

    def __init__(
        self,
        name: str,
        *,
        max_concurrency: int = 100,
        dedupe_size: int = 10_000,
        shutdown_grace: float = 20.0,
    ) -> None:
        """Create an app.

        Args:
            name: The service name. It is the ``source`` of every answer and the NATS queue
                group, so replicas with the same name share the work.
            max_concurrency: How many handlers may run at once in one process.
            dedupe_size: How many recent triggered event ids to remember so that a repeated
                delivery is ignored.
            shutdown_grace: Seconds running handlers get to finish on shutdown before they are
                cancelled (their tasks then finish as errored).

        Raises:
            RegistrationError: If the name is empty or contains whitespace or wildcards.
        """
        if not name or any(char.isspace() or char in "*>" for char in name):
            raise errors.RegistrationError(f"invalid app name {name!r}")
        if max_concurrency < 1 or dedupe_size < 1:
            raise errors.RegistrationError("max_concurrency and dedupe_size must be positive")
        self._name = name
        self._registrations: dict[str, TaskRegistration] = {}
        self.max_concurrency = max_concurrency
        self.dedupe_size = dedupe_size
        self.shutdown_grace = shutdown_grace

    @property
    def name(self) -> str:
        """The service name (answer ``source`` and queue group)."""
        return self._name

    @property
    def registrations(self) -> Mapping[str, TaskRegistration]:
        """The registered handlers by task name."""
        return dict(self._registrations)

    def task(
        self,
        task: str,
        *,
        project: ScopeFilter = None,
        stage: ScopeFilter = None,
        service: ScopeFilter = None,
        auto_finish: bool = True,
    ) -> Callable[[H], H]:
        """Register the decorated function as the handler of a task.

        The handler takes a :class:`~tasksdk.context.TaskContext` and returns the data to
        merge into the ``.finished`` event (or None). It may be async; a sync handler runs in
        a worker thread.

        Args:
            task: The task name, as in the shipyard (``deployment``, ``test``, ...).
            project: Only handle events of these projects; None for any.
            stage: Only handle events of these stages; None for any.
            service: Only handle events of these services; None for any.
            auto_finish: Send ``.finished`` when the handler returns. With False the handler
                (or code it starts) must call :meth:`TaskContext.finish` later; the SDK still
                sends ``.started`` and still answers errored/fail if the handler raises.

        Returns:
            A decorator that registers the function and returns it unchanged.

        Raises:
            RegistrationError: If the task name is invalid or already registered.
        """
        if not contract.is_valid_name(task):
            raise errors.RegistrationError(f"invalid task name {task!r}")
        if task in self._registrations:
            raise errors.RegistrationError(f"task {task!r} already has a handler")
        filters = {"project": project, "stage": stage, "service": service}
        projects, stages, services = (_names(field, value) for field, value in filters.items())

        def register(handler: H) -> H:
            self._registrations[task] = TaskRegistration(
                task=task,
                handler=handler,
                projects=projects,
                stages=stages,
                services=services,
                auto_finish=auto_finish,
            )
            return handler

        return register

    @contextlib.asynccontextmanager
    async def attach(self, transport: Transport) -> AsyncIterator[TaskRunner]:
        """Serve the registered tasks on a transport for the duration of the block.

        On exit it stops receiving, gives running handlers ``shutdown_grace`` seconds, and
        cancels the rest. The transport stays open; its owner closes it.

        Args:
            transport: A connected transport.

        Yields:
            The runner answering the events.

        Raises:
            RegistrationError: If no task is registered.
        """
        if not self._registrations:
            raise errors.RegistrationError("no task is registered")
        runner = TaskRunner(
            self._registrations,
            transport,
            source=self._name,
            max_concurrency=self.max_concurrency,
            dedupe_size=self.dedupe_size,
        )
        await runner.subscribe()
        try:
            yield runner
        finally:
            await runner.shutdown(self.shutdown_grace)

    @contextlib.asynccontextmanager
    async def connect(self, nats_url: str, **options: Any) -> AsyncIterator[NatsTransport]:
        """Connect to NATS and serve the registered tasks for the duration of the block.

        On exit it drains: no new events, running handlers get ``shutdown_grace`` seconds,
        buffered answers are flushed, then the connection closes.

        Args:
            nats_url: The NATS server URL, for example ``nats://127.0.0.1:4222``.
            **options: Passed on to nats-py's ``connect`` (credentials, TLS, reconnect).

        Yields:
            The NATS transport.

        Raises:
            TransportError: If NATS cannot be reached.
            RegistrationError: If no task is registered.
        """
        options.setdefault("name", self._name)
        transport = await NatsTransport.connect(nats_url, **options)
        try:
            async with self.attach(transport):
                yield transport
        finally:
            await transport.close()

    async def serve(self, nats_url: str, **options: Any) -> None:
        """Serve over NATS until SIGINT or SIGTERM, then drain and return.

        Args:
            nats_url: The NATS server URL.
            **options: Passed on to nats-py's ``connect``.

        Raises:
            TransportError: If NATS cannot be reached, or the connection is lost for good.
        """
        stop = asyncio.Event()
        with _stop_on_signals(stop):
            async with self.connect(nats_url, **options) as transport:
                logger.info("app.serving %s %s", self._name, sorted(self._registrations))
                await _wait_for_stop(stop, transport)
        logger.info("app.stopped %s", self._name)

    def run(self, nats_url: str, **options: Any) -> None:
        """Serve over NATS in a new event loop until SIGINT or SIGTERM; blocks.

        Args:
            nats_url: The NATS server URL.
            **options: Passed on to nats-py's ``connect``.

        Raises:
            TransportError: If NATS cannot be reached, or the connection is lost for good.
        """
        asyncio.run(self.serve(nats_url, **options))


def _names(field: str, value: ScopeFilter) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset([value] if isinstance(value, str) else value)
    if not names or not all(isinstance(name, str) for name in names):
        raise errors.RegistrationError(f"{field} filter must be a name or non-empty names")
    return names


async def _wait_for_stop(stop: asyncio.Event, transport: NatsTransport) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    closing = asyncio.ensure_future(transport.wait_closed())
    try:
        await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        closing.cancel()
    if not stop.is_set():
        raise errors.TransportError("the NATS connection was closed")


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT/SIGTERM; a second one gets the default behaviour."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal() -> None:
        stop.set()
        for signum in installed:
            loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
