"""``TaskApp``: the registry of task handlers and the entry points that serve them.

Three ways to reach the control plane, each with a ``connect*`` context manager (serve for
the block), an async ``serve*`` (until SIGINT/SIGTERM) and a blocking ``run*``:

* NATS (:meth:`TaskApp.connect`): subscribe to ``.triggered`` subjects with a queue group;
  registering with the API is optional (``api_url``).
* HTTP pull (:meth:`TaskApp.connect_pull`): poll the API for open events.
* HTTP push (:meth:`TaskApp.asgi_push`, :meth:`TaskApp.run_push`): an ASGI app that takes
  the control plane's signed webhooks.

Whenever the API is known, the app registers as an integration and follows its
subscriptions (see :mod:`tasksdk.registry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tasksdk import contract, errors, registry, webhooks
from tasksdk.api import ControlPlaneApi
from tasksdk.runner import Handler, TaskRegistration, TaskRunner
from tasksdk.transports.base import Transport
from tasksdk.transports.http import HttpPullTransport, WebhookTransport
from tasksdk.transports.nats import NatsTransport

ScopeFilter = str | Collection[str] | None
"""Accepted values of one scope field: one name, several names, or None for any."""

ApiTarget = str | ControlPlaneApi
"""The control plane API: its base URL, or a configured client (its owner closes it)."""

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
"""Where :meth:`TaskApp.run` connects when neither an argument nor ``NATS_URL`` says."""

H = TypeVar("H", bound=Handler)

logger = logging.getLogger("tasksdk.app")


class TaskApp:
    """A task service: named handlers for Keptn tasks, served over NATS, HTTP pull or push.

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
            name: The service name. It is the ``source`` of every answer, the NATS queue
                group (so replicas with the same name share the work) and the integration
                name when registering.
            max_concurrency: How many handlers may run at once in one process.
            dedupe_size: How many accepted triggered event ids to remember so that a repeated
                delivery is ignored. Over HTTP pull an open event is listed on every poll, so
                this must exceed the number of this service's events open at once.
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
        """The service name (answer ``source``, queue group and integration name)."""
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
    async def attach(
        self, transport: Transport, *, subscriptions: Iterable[registry.Subscription] | None = None
    ) -> AsyncIterator[TaskRunner]:
        """Serve the registered tasks on a transport for the duration of the block.

        On exit it stops receiving, gives running handlers ``shutdown_grace`` seconds, and
        cancels the rest. The transport stays open; its owner closes it.

        Args:
            transport: A connected transport.
            subscriptions: Follow these subscriptions (see :meth:`TaskRunner.follow`) instead
                of serving every handler; ``runner.follow`` changes them later.

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
        try:
            if subscriptions is None:
                await runner.subscribe()
            else:
                await runner.follow(subscriptions)
            yield runner
        finally:
            await runner.shutdown(self.shutdown_grace)

    @contextlib.asynccontextmanager
    async def connect(
        self,
        nats_url: str,
        *,
        api_url: ApiTarget | None = None,
        api_token: str | None = None,
        ping_interval: float = 10.0,
        **options: Any,
    ) -> AsyncIterator[NatsTransport]:
        """Connect to NATS and serve the registered tasks for the duration of the block.

        With ``api_url`` the app also registers as an integration and follows its
        subscriptions: a task is served only while a subscription asks for it.

        On exit it drains: no new events, running handlers get ``shutdown_grace`` seconds,
        buffered answers are flushed, then the connection closes.

        Args:
            nats_url: The NATS server URL, for example ``nats://127.0.0.1:4222``.
            api_url: The control plane API (URL or client); None to serve every handler
                without registering.
            api_token: The API token, when ``api_url`` is a URL.
            ping_interval: Seconds between registration heartbeats.
            **options: Passed on to nats-py's ``connect`` (credentials, TLS, reconnect).

        Yields:
            The NATS transport.

        Raises:
            TransportError: If NATS (or the API, after retrying) cannot be reached.
            RegistrationError: If no task is registered, or the control plane refused the
                registration.
        """
        options.setdefault("name", self._name)
        async with contextlib.AsyncExitStack() as stack:
            api_client = None
            if api_url is not None:
                api_client = await stack.enter_async_context(_api_client(api_url, api_token))
            transport = await NatsTransport.connect(nats_url, **options)
            stack.push_async_callback(transport.close)
            await stack.enter_async_context(
                self._serving(
                    transport,
                    api_client,
                    location=registry.LOCATION_CONTROL_PLANE,
                    ping_interval=ping_interval,
                )
            )
            yield transport

    async def serve(
        self,
        nats_url: str | None = None,
        *,
        api_url: ApiTarget | None = None,
        api_token: str | None = None,
        ping_interval: float = 10.0,
        **options: Any,
    ) -> None:
        """Serve over NATS until SIGINT or SIGTERM, then drain and return.

        Args:
            nats_url: The NATS server URL; by default ``$NATS_URL``, else
                ``nats://127.0.0.1:4222``.
            api_url: The control plane API, to register and follow subscriptions; optional.
            api_token: The API token, when ``api_url`` is a URL.
            ping_interval: Seconds between registration heartbeats.
            **options: Passed on to nats-py's ``connect``.

        Raises:
            TransportError: If NATS cannot be reached, or the connection is lost for good.
            RegistrationError: If the control plane refused the registration.
        """
        if nats_url is None:
            nats_url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
        stop = asyncio.Event()
        serving = asyncio.Event()

        async def serve_until_stopped() -> None:
            async with self.connect(
                nats_url,
                api_url=api_url,
                api_token=api_token,
                ping_interval=ping_interval,
                **options,
            ) as transport:
                serving.set()
                logger.info("app.serving %s %s", self._name, sorted(self._registrations))
                await _wait_for_stop(stop, transport)

        with _stop_on_signals(stop):
            await _unless_stopped_early(serve_until_stopped(), stop, serving)
        logger.info("app.stopped %s", self._name)

    def run(
        self,
        nats_url: str | None = None,
        *,
        api_url: ApiTarget | None = None,
        api_token: str | None = None,
        ping_interval: float = 10.0,
        **options: Any,
    ) -> None:
        """Serve over NATS in a new event loop until SIGINT or SIGTERM; blocks.

        Args:
            nats_url: The NATS server URL; by default ``$NATS_URL``, else
                ``nats://127.0.0.1:4222``.
            api_url: The control plane API, to register and follow subscriptions; optional.
            api_token: The API token, when ``api_url`` is a URL.
            ping_interval: Seconds between registration heartbeats.
            **options: Passed on to nats-py's ``connect``.

        Raises:
            TransportError: If NATS cannot be reached, or the connection is lost for good.
            RegistrationError: If the control plane refused the registration.
        """
        asyncio.run(
            self.serve(
                nats_url,
                api_url=api_url,
                api_token=api_token,
                ping_interval=ping_interval,
                **options,
            )
        )

    @contextlib.asynccontextmanager
    async def connect_pull(
        self,
        api_url: ApiTarget,
        *,
        api_token: str | None = None,
        poll_interval: float = 1.0,
        ping_interval: float = 10.0,
    ) -> AsyncIterator[HttpPullTransport]:
        """Register, then poll the API for open events, for the duration of the block.

        Each served task's open ``.triggered`` events are listed every ``poll_interval``
        seconds; answers go to ``POST /api/v1/event``. A handler filtered on exactly one
        project, stage or service narrows the listing on the server too.

        Args:
            api_url: The control plane API (URL or client).
            api_token: The API token, when ``api_url`` is a URL.
            poll_interval: Seconds between polls.
            ping_interval: Seconds between registration heartbeats.

        Yields:
            The pull transport.

        Raises:
            TransportError: If the API stayed unreachable while registering.
            RegistrationError: If no task is registered, or the control plane refused the
                registration.
        """
        async with _api_client(api_url, api_token) as api_client:
            scopes = {
                contract.event_type(task, contract.Phase.TRIGGERED): _poll_scope(registration)
                for task, registration in self._registrations.items()
            }
            transport = HttpPullTransport(api_client, poll_interval=poll_interval, scopes=scopes)
            async with self._serving(
                transport,
                api_client,
                location=registry.LOCATION_REMOTE,
                ping_interval=ping_interval,
            ):
                yield transport

    async def serve_pull(
        self,
        api_url: ApiTarget,
        *,
        api_token: str | None = None,
        poll_interval: float = 1.0,
        ping_interval: float = 10.0,
    ) -> None:
        """Serve by polling the API until SIGINT or SIGTERM, then drain and return.

        Args:
            api_url: The control plane API (URL or client).
            api_token: The API token, when ``api_url`` is a URL.
            poll_interval: Seconds between polls.
            ping_interval: Seconds between registration heartbeats.

        Raises:
            TransportError: If the API stayed unreachable while registering.
            RegistrationError: If the control plane refused the registration.
        """
        stop = asyncio.Event()
        with _stop_on_signals(stop):
            async with self.connect_pull(
                api_url,
                api_token=api_token,
                poll_interval=poll_interval,
                ping_interval=ping_interval,
            ):
                logger.info("app.serving %s %s", self._name, sorted(self._registrations))
                await stop.wait()
        logger.info("app.stopped %s", self._name)

    def run_pull(
        self,
        api_url: ApiTarget,
        *,
        api_token: str | None = None,
        poll_interval: float = 1.0,
        ping_interval: float = 10.0,
    ) -> None:
        """Serve by polling the API in a new event loop until SIGINT or SIGTERM; blocks.

        Args:
            api_url: The control plane API (URL or client).
            api_token: The API token, when ``api_url`` is a URL.
            poll_interval: Seconds between polls.
            ping_interval: Seconds between registration heartbeats.

        Raises:
            TransportError: If the API stayed unreachable while registering.
            RegistrationError: If the control plane refused the registration.
        """
        asyncio.run(
            self.serve_pull(
                api_url,
                api_token=api_token,
                poll_interval=poll_interval,
                ping_interval=ping_interval,
            )
        )

    def asgi_push(
        self,
        api_url: ApiTarget,
        secret: str,
        *,
        api_token: str | None = None,
        public_url: str,
        mode: str = "structured",
        ping_interval: float = 10.0,
    ) -> webhooks.WebhookReceiver:
        """Build the ASGI application that receives the control plane's webhook pushes.

        Serve it with any ASGI server that runs the lifespan (uvicorn, hypercorn): on
        startup the app registers with one webhook subscription per handler, pointing at
        ``public_url`` and signed with ``secret``; on shutdown it drains. Answers go to
        ``POST /api/v1/event``.

        Args:
            api_url: The control plane API (URL or client).
            secret: The webhook secret, at least 16 characters; ``whsec_<base64>`` or text.
            api_token: The API token, when ``api_url`` is a URL.
            public_url: The URL at which the control plane reaches this app.
            mode: ``structured`` or ``binary``: how the control plane should encode pushes.
            ping_interval: Seconds between registration heartbeats.

        Returns:
            The ASGI application.

        Raises:
            RegistrationError: If the secret, the URL or the mode is unusable, or no task is
                registered.
        """
        if not self._registrations:
            raise errors.RegistrationError("no task is registered")
        _check_webhook(secret, public_url, mode)
        webhook = registry.Webhook(url=public_url, mode=mode, secret=secret)
        # Created now and closed when the lifespan ends, so the transport exists up front.
        api_client = _new_api_client(api_url, api_token)
        transport = WebhookTransport(api_client)

        @contextlib.asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            async with contextlib.AsyncExitStack() as stack:
                if api_client is not api_url:
                    stack.push_async_callback(api_client.aclose)
                await stack.enter_async_context(
                    self._serving(
                        transport,
                        api_client,
                        location=registry.LOCATION_REMOTE,
                        ping_interval=ping_interval,
                        webhook=webhook,
                    )
                )
                logger.info("app.serving %s %s", self._name, sorted(self._registrations))
                yield
            logger.info("app.stopped %s", self._name)

        return webhooks.WebhookReceiver(transport, secret, lifespan=lifespan)

    async def serve_push(
        self,
        api_url: ApiTarget,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 8080,
        public_url: str | None = None,
        *,
        api_token: str | None = None,
        mode: str = "structured",
        ping_interval: float = 10.0,
    ) -> None:
        """Serve :meth:`asgi_push` with uvicorn until SIGINT or SIGTERM, then drain and return.

        Needs uvicorn: ``pip install 'controlplane-task-sdk[push]'``.

        Args:
            api_url: The control plane API (URL or client).
            secret: The webhook secret, at least 16 characters.
            host: The address to listen on.
            port: The port to listen on.
            public_url: The URL at which the control plane reaches this service; by default
                ``http://<host>:<port>/``, which only works when ``host`` is a reachable
                address.
            api_token: The API token, when ``api_url`` is a URL.
            mode: ``structured`` or ``binary``.
            ping_interval: Seconds between registration heartbeats.

        Raises:
            TaskSdkError: If uvicorn is not installed.
            TransportError: If the API stayed unreachable while registering.
            RegistrationError: If the control plane refused the registration, or the
                arguments are unusable.
        """
        try:
            import uvicorn
        except ImportError:
            raise errors.TaskSdkError(
                "serving webhooks needs uvicorn: pip install 'controlplane-task-sdk[push]', "
                "or serve app.asgi_push(...) with any ASGI server"
            ) from None
        if public_url is None:
            if host in ("0.0.0.0", "::", ""):
                raise errors.RegistrationError(
                    f"listening on {host!r}: pass public_url, the URL the control plane uses"
                )
            public_url = f"http://{host}:{port}/"
        receiver = self.asgi_push(
            api_url,
            secret,
            api_token=api_token,
            public_url=public_url,
            mode=mode,
            ping_interval=ping_interval,
        )
        config = uvicorn.Config(
            receiver, host=host, port=port, lifespan="on", log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        stop = asyncio.Event()
        # uvicorn handles the signals itself and raises them again once it has stopped; this
        # handler takes that second delivery, so the process ends normally after the drain.
        with _stop_on_signals(stop):
            await server.serve()
        if receiver.startup_error is not None:
            raise receiver.startup_error
        if not server.started:
            raise errors.TransportError(f"cannot serve webhooks on {host}:{port}")

    def run_push(
        self,
        api_url: ApiTarget,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 8080,
        public_url: str | None = None,
        *,
        api_token: str | None = None,
        mode: str = "structured",
        ping_interval: float = 10.0,
    ) -> None:
        """Serve :meth:`asgi_push` with uvicorn in a new event loop until SIGINT or SIGTERM.

        Needs uvicorn: ``pip install 'controlplane-task-sdk[push]'``.

        Args:
            api_url: The control plane API (URL or client).
            secret: The webhook secret, at least 16 characters.
            host: The address to listen on.
            port: The port to listen on.
            public_url: The URL at which the control plane reaches this service.
            api_token: The API token, when ``api_url`` is a URL.
            mode: ``structured`` or ``binary``.
            ping_interval: Seconds between registration heartbeats.

        Raises:
            TaskSdkError: If uvicorn is not installed.
            TransportError: If the API stayed unreachable while registering.
            RegistrationError: If the control plane refused the registration, or the
                arguments are unusable.
        """
        asyncio.run(
            self.serve_push(
                api_url,
                secret,
                host,
                port,
                public_url,
                api_token=api_token,
                mode=mode,
                ping_interval=ping_interval,
            )
        )

    @contextlib.asynccontextmanager
    async def _serving(
        self,
        transport: Transport,
        api_client: ControlPlaneApi | None,
        *,
        location: str,
        ping_interval: float,
        webhook: registry.Webhook | None = None,
    ) -> AsyncIterator[TaskRunner]:
        """Attach to a transport; with an API, register first and keep the registration up.

        Over NATS and pull the runner follows the subscriptions. Until the registry first
        answers it serves the ones this service declares, so that events sent while the
        API is still starting (or unreachable) are not missed; for push (``webhook`` given)
        the control plane picks what to send.
        """
        if api_client is None:
            async with self.attach(transport) as runner:
                yield runner
            return
        push = webhook is not None
        registration = registry.IntegrationRegistration.of_this_process(
            self._name,
            [registry.subscription_for(r, webhook=webhook) for r in self._registrations.values()],
            location=location,
        )
        declared = None if push else registration.subscriptions
        async with self.attach(transport, subscriptions=declared) as runner:
            integration = registry.Integration(
                api_client,
                registration,
                ping_interval=ping_interval,
                push=push,
                on_subscriptions=None if push else runner.follow,
            )
            await integration.start()
            try:
                yield runner
            finally:
                await integration.stop()


def _names(field: str, value: ScopeFilter) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset([value] if isinstance(value, str) else value)
    if not names or not all(isinstance(name, str) for name in names):
        raise errors.RegistrationError(f"{field} filter must be a name or non-empty names")
    return names


def _poll_scope(registration: TaskRegistration) -> dict[str, str]:
    """Query filters for the open-events listing: a field with exactly one allowed value."""
    fields = {
        "project": registration.projects,
        "stage": registration.stages,
        "service": registration.services,
    }
    return {
        field: next(iter(names)) for field, names in fields.items() if names and len(names) == 1
    }


def _new_api_client(api_url: ApiTarget, api_token: str | None) -> ControlPlaneApi:
    if isinstance(api_url, ControlPlaneApi):
        if api_token is not None:
            raise errors.RegistrationError("give the token to the ControlPlaneApi, not api_token")
        return api_url
    return ControlPlaneApi(api_url, token=api_token)


@contextlib.asynccontextmanager
async def _api_client(api_url: ApiTarget, api_token: str | None) -> AsyncIterator[ControlPlaneApi]:
    """The API client to use: the given one (its owner closes it) or a new one, closed after."""
    api_client = _new_api_client(api_url, api_token)
    try:
        yield api_client
    finally:
        if api_client is not api_url:
            await api_client.aclose()


def _check_webhook(secret: str, public_url: str, mode: str) -> None:
    if len(secret) < webhooks.MIN_SECRET_LENGTH:
        raise errors.RegistrationError(
            f"the webhook secret needs at least {webhooks.MIN_SECRET_LENGTH} characters"
        )
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.RegistrationError(f"public_url must be an http(s) URL, not {public_url!r}")
    if mode not in registry.WEBHOOK_MODES:
        raise errors.RegistrationError(f"mode must be one of {registry.WEBHOOK_MODES}")


async def _unless_stopped_early(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, serving: asyncio.Event
) -> None:
    """Run ``work``; a stop that comes before ``serving`` is set cancels it.

    Start-up can take a while (registration retries while the API is down); a signal then
    must end the process, not wait for the retries. Once serving, ``work`` drains on stop
    by itself.
    """
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done() and not serving.is_set():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.info("app.stopped_while_starting")
        return
    await task


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
