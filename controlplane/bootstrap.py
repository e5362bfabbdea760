"""The composition root: builds every adapter from :class:`Settings` and runs the roles.

Start-up order matters for ``GET /health``: migrations, then definitions, then the engine
(which reloads live executions and republishes anything left in the outbox), then the
JetStream consumer; only then is the engine marked ready. Shutdown runs in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn

from controlplane.adapters import files
from controlplane.adapters.http.app import create_app
from controlplane.adapters.metric_sources import HttpMetricSources
from controlplane.adapters.nats import jetstream
from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.postgres.embedded import EmbeddedPostgres
from controlplane.adapters.postgres.migrate import migrate as apply_migrations
from controlplane.adapters.postgres.store import PostgresScheduleStore, PostgresStore
from controlplane.adapters.secrets import EnvironmentSecrets
from controlplane.adapters.webhook_sender import HttpxWebhookSender
from controlplane.application.callbacks import CallbackLinks
from controlplane.application.definitions import Definitions, ShipyardFile
from controlplane.application.engine import Engine
from controlplane.application.envelope import Envelope
from controlplane.application.evaluation import (
    GET_SLI_FINISHED,
    TRIGGERED_SUBJECTS,
    EvaluationSettings,
    Evaluator,
)
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.reruns import Reruns
from controlplane.application.resources import Resources
from controlplane.application.scheduler import ScheduleCatalog, Scheduler, StoredShipyards
from controlplane.application.watch import ContextWatch
from controlplane.application.webhooks import RetryPolicy, WebhookDispatcher
from controlplane.settings import Settings

logger = logging.getLogger(__name__)


def _shipyard_files(directory: Path) -> list[ShipyardFile]:
    if not directory.is_dir():
        logger.warning("definitions.no_directory", extra={"path": str(directory)})
        return []
    return [
        ShipyardFile(
            loaded.project, loaded.text, str(loaded.path), str(loaded.error) if loaded.error else ""
        )
        for loaded in files.load_directory(directory)
    ]


async def migrate(settings: Settings) -> int:
    store = await PostgresStore.connect(settings.database_url, min_size=1, max_size=2)
    try:
        applied = await apply_migrations(store.pool)
    finally:
        await store.close()
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return 0


class StartupError(RuntimeError):
    """The control plane could not reach one of the servers it needs."""


def _redact(url: str) -> str:
    """Hide a password in a URL before it appears in a message."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


async def _connect(settings: Settings) -> tuple[PostgresStore, Any]:
    try:
        store = await PostgresStore.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(
            f"cannot reach PostgreSQL at {_redact(settings.database_url)}: {exc}"
        ) from exc
    try:
        nats = await jetstream.connect(settings.nats_url, name="controlplane")
    except (OSError, ConnectionError) as exc:
        await store.close()
        raise StartupError(f"cannot reach NATS at {_redact(settings.nats_url)}: {exc}") from exc
    return store, nats


WEBHOOK_SUBJECTS = ("sh.keptn.event.*.triggered", "sh.keptn.event.*.*.triggered")


async def serve(settings: Settings, *, banner: str = "") -> int:
    store, nats = await _connect(settings)
    consumer_task: asyncio.Task[None] | None = None
    webhook_task: asyncio.Task[None] | None = None
    expiry_task: asyncio.Task[None] | None = None
    stop_expiry = asyncio.Event()
    dispatcher: WebhookDispatcher | None = None
    sender = HttpxWebhookSender()
    metric_sources = HttpMetricSources()
    gate: _QualityGate | None = None
    engine: Engine | None = None
    timer: _Timer | None = None
    try:
        await apply_migrations(store.pool)
        js = nats.jetstream()
        await jetstream.ensure_stream(js, stream=settings.stream)
        publisher = jetstream.JetStreamPublisher(nats, stream=settings.stream)
        definitions = Definitions(store, files.YamlShipyardReader())
        await definitions.load(_shipyard_files(settings.sequences))
        watch = ContextWatch(store)
        links = await _callback_links(settings, store)
        engine = Engine(
            store=store,
            publisher=publisher,
            definitions=definitions,
            task_started_timeout=settings.task_started_timeout,
            readiness_probes=[lambda: bool(nats.is_connected)],
            batch_size=settings.batch_size,
            watcher=watch,
            callback_links=links,
        )
        watch.attach(engine.running)
        definitions.set_delete_hook(_forget(engine, store))
        schedule_store = PostgresScheduleStore(store.pool)
        catalog = ScheduleCatalog(schedule_store, definitions)
        # In-flight events of a crashed engine come back after ack_wait: keep it short.
        consumer = jetstream.JetStreamConsumer(
            nats, stream=settings.stream, name=settings.consumer, ack_wait=10.0
        )
        await consumer.ensure()
        registry = Registry(store, ttl=settings.integration_ttl)
        await registry.load()
        dispatcher = WebhookDispatcher(
            registry,
            sender,
            publisher,
            is_open=_open_check(store),
            retry=RetryPolicy(
                attempts=settings.webhook_attempts,
                initial=settings.webhook_backoff,
                maximum=settings.webhook_backoff_max,
            ),
            timeout=settings.webhook_timeout,
        )
        webhook_consumer = jetstream.JetStreamConsumer(
            nats,
            stream=settings.stream,
            name=settings.webhook_consumer,
            filter_subjects=WEBHOOK_SUBJECTS,
            ack_wait=settings.webhook_timeout + 10.0,
            max_ack_pending=1024,
            description="controlplane webhook delivery",
            start_with_new=True,
        )
        await webhook_consumer.ensure()
        documents = files.YamlDocuments()
        if settings.builtin_evaluation:
            gate = await _QualityGate.build(settings, nats, store, engine, metric_sources)
        await engine.start()
        if settings.scheduler:
            timer = _Timer(Scheduler(schedule_store, publisher, definitions, replica=_replica()))
            catalog.set_change_hook(timer.scheduler.changed)
            timer.start()
        consumer_task = asyncio.create_task(consumer.run(_deliver_to(engine)), name="consumer")
        webhook_task = asyncio.create_task(
            webhook_consumer.run(_deliver_webhooks(dispatcher)), name="webhooks"
        )
        expiry_task = asyncio.create_task(registry.run_expiry(stop_expiry), name="expiry")
        if gate is not None:
            await gate.start()
        app = create_app(
            engine=engine,
            definitions=definitions,
            queries=Queries(store),
            registry=registry,
            api_token=settings.api_token,
            resource_files=Resources(store, definitions, documents),
            schedule_catalog=catalog,
            watch=watch,
            callback_links=links,
            rerun_service=Reruns(store, definitions, engine, clock=time.time),
        )
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            lifespan="off",
            access_log=False,
        )
        # Long-polls and event streams end at shutdown instead of holding it up.
        server = _Server(config, on_shutdown=watch.close)
        if banner:
            asyncio.get_running_loop().call_later(0.5, _print_when_started, server, banner)
        await server.serve()
        consumer.stop()
        webhook_consumer.stop()
    finally:
        stop_expiry.set()
        if timer is not None:
            await timer.stop()
        if gate is not None:
            await gate.stop()
        await metric_sources.close()
        if dispatcher is not None:
            await dispatcher.stop()
        for task in (webhook_task, expiry_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, timeout=5.0)
        await sender.close()
        if consumer_task is not None:
            # Let the consumer release what it buffered (immediate redelivery), then go.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(consumer_task, timeout=5.0)
        if engine is not None:
            await engine.stop()
        with contextlib.suppress(Exception):
            await nats.drain()
        await store.close()
    return 0


def _replica() -> str:
    """Who claimed a slot, as the schedule_slots table records it: host and process."""
    return f"{os.uname().nodename}/{os.getpid()}"


class _Timer:
    """A process's scheduler task: started after the engine, stopped before it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.scheduler.run(self._stop), name="scheduler")

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5.0)


async def schedule(settings: Settings) -> int:
    """The ``scheduler`` role: fire schedules only (PostgreSQL and NATS; no engine, no API).

    Any number may run next to ``serve`` (which runs one too unless told not to): each slot
    is claimed in PostgreSQL by exactly one of them. Shipyards are read from the database,
    where ``serve`` keeps them, again at every refresh.
    """
    store, nats = await _connect(settings)
    timer: _Timer | None = None
    try:
        await apply_migrations(store.pool)
        await jetstream.ensure_stream(nats.jetstream(), stream=settings.stream)
        publisher = jetstream.JetStreamPublisher(nats, stream=settings.stream)
        shipyards = StoredShipyards(store, files.YamlShipyardReader())
        scheduler = Scheduler(
            PostgresScheduleStore(store.pool),
            publisher,
            shipyards,
            replica=_replica(),
            reload=shipyards.load,
        )
        timer = _Timer(scheduler)
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, timer.request_stop)
        timer.start()
        await timer.wait()
    finally:
        if timer is not None:
            await timer.stop()
        with contextlib.suppress(Exception):
            await nats.drain()
        await store.close()
    return 0


class _QualityGate:
    """The built-in evaluation task: its consumer, its get-sli listener and the evaluator."""

    def __init__(
        self,
        evaluator: Evaluator,
        consumer: jetstream.JetStreamConsumer,
        nats: Any,
    ) -> None:
        self._evaluator = evaluator
        self._consumer = consumer
        self._nats = nats
        self._task: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], Awaitable[None]] | None = None

    @classmethod
    async def build(
        cls,
        settings: Settings,
        nats: Any,
        store: PostgresStore,
        engine: Engine,
        sources: HttpMetricSources,
    ) -> _QualityGate:
        evaluator = Evaluator(
            resources=store,
            history=store,
            sources=sources,
            secrets=EnvironmentSecrets(directory=settings.secrets_dir, environ=os.environ),
            documents=files.YamlDocuments(),
            events=engine,
            settings=EvaluationSettings(
                source_timeout=settings.evaluation_source_timeout,
                get_sli_timeout=settings.evaluation_get_sli_timeout,
                prometheus_url=settings.prometheus_url,
            ),
        )
        consumer = jetstream.JetStreamConsumer(
            nats,
            stream=settings.stream,
            name=settings.evaluation_consumer,
            filter_subjects=TRIGGERED_SUBJECTS,
            # An evaluation may wait this long for an SLI provider before it answers.
            ack_wait=settings.evaluation_get_sli_timeout + 30.0,
            max_ack_pending=1024,
            description="controlplane built-in quality gate",
            start_with_new=True,
        )
        await consumer.ensure()
        return cls(evaluator, consumer, nats)

    async def start(self) -> None:
        self._unlisten = await jetstream.listen(
            self._nats, GET_SLI_FINISHED, self._evaluator.on_answer
        )
        self._task = asyncio.create_task(
            self._consumer.run(self._evaluator.receive), name="evaluations"
        )

    async def stop(self) -> None:
        self._consumer.stop()
        await self._evaluator.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=5.0)
        if self._unlisten is not None:
            with contextlib.suppress(Exception):
                await self._unlisten()


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the stop signal once it has stopped serving.

    uvicorn re-raises SIGINT/SIGTERM after a graceful stop, which would end the process
    before the consumer, the engine and the embedded servers are shut down in order.
    ``on_shutdown`` runs when it starts to stop: uvicorn waits for open responses, so
    long-polls and event streams must be told to end first.
    """

    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _print_when_started(server: uvicorn.Server, banner: str) -> None:
    if server.started:
        print(banner, flush=True)
    else:
        asyncio.get_running_loop().call_later(0.2, _print_when_started, server, banner)


async def _callback_links(settings: Settings, store: PostgresStore) -> CallbackLinks:
    """Links are signed with the configured key, else with one kept in PostgreSQL."""
    if settings.callback_key:
        key = settings.callback_key.encode()
    else:
        key = await store.key("callback-links", secrets.token_bytes(32))
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return CallbackLinks(key, settings.public_url or f"http://{host}:{settings.port}")


def _deliver_to(engine: Engine) -> jetstream.Handler:
    async def deliver(envelope: Envelope, ack: jetstream.Ack) -> None:
        first_seen_at = ack.stored_at if ack.attempt <= 1 and ack.stored_at else None
        await engine.receive(envelope, ack, first_seen_at=first_seen_at)

    return deliver


def _deliver_webhooks(dispatcher: WebhookDispatcher) -> jetstream.Handler:
    async def deliver(envelope: Envelope, ack: jetstream.Ack) -> None:
        await dispatcher.receive(envelope, ack)

    return deliver


def _open_check(store: PostgresStore) -> Callable[[str, str], Awaitable[bool]]:
    async def is_open(event_type: str, event_id: str) -> bool:
        page = await store.open_triggered(
            event_type, project="", stage="", service="", event_id=event_id, limit=1, offset=0
        )
        return page.total > 0

    return is_open


def _forget(engine: Engine, store: PostgresStore) -> Callable[[str], Awaitable[None]]:
    async def hook(project: str) -> None:
        await engine.forget_project(project)
        await store.delete_project_data(project)

    return hook


async def up(settings: Settings, *, examples: bool = True) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(data_dir):
        return await _up(settings, data_dir, examples=examples)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One `controlplane up` per data folder: a second one would take over its servers."""
    lock_path = data_dir / "up.lock"
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise StartupError(
                f"{data_dir} is in use by a running `controlplane up` (pid {owner});"
                " stop it first, or give this one another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


async def _up(settings: Settings, data_dir: Path, *, examples: bool) -> int:
    nats_server = EmbeddedNats(data_dir / "nats", port=settings.local_nats_port or None)
    postgres = EmbeddedPostgres()
    stop_examples = asyncio.Event()
    example_task: asyncio.Task[None] | None = None
    try:
        nats_url = await asyncio.to_thread(nats_server.start)
        database_url = await asyncio.to_thread(postgres.start, data_dir / "postgres")
        local = settings.model_copy(update={"nats_url": nats_url, "database_url": database_url})
        if examples:
            example_task = asyncio.create_task(_run_examples(local, nats_url, stop_examples))
        return await serve(local, banner=_banner(local))
    finally:
        stop_examples.set()
        if example_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(example_task, timeout=10.0)
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(nats_server.stop)


async def _run_examples(settings: Settings, nats_url: str, stop: asyncio.Event) -> None:
    """Serve the example task services until ``stop``; the SDK is optional for `serve`.

    They connect over NATS like any task service and register with the API (retrying until
    it is up), so ``controlplane integrations`` lists them.
    """
    try:
        from controlplane.examples import services
    except ImportError as exc:
        logger.warning(
            "examples.unavailable",
            extra={"reason": str(exc), "hint": "pip install -e ./task-sdk -e '.[examples]'"},
        )
        return
    app = services.build_app(image_dirs=services.image_dirs_from_environment())
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    async with app.connect(
        nats_url, api_url=f"http://{host}:{settings.port}", api_token=settings.api_token
    ):
        logger.info("examples.started", extra={"tasks": ",".join(sorted(app.registrations))})
        await stop.wait()


def examples(settings: Settings) -> int:
    """Serve the example task services until SIGINT or SIGTERM (their own process, e.g. a pod).

    Needs the ``examples`` extra and the task SDK (the image has both).
    """
    from controlplane.examples import services

    app = services.build_app(image_dirs=services.image_dirs_from_environment())
    app.run(settings.nats_url, api_url=settings.api_url or None, api_token=settings.api_token)
    return 0


def _banner(settings: Settings) -> str:
    url = f"http://{settings.host}:{settings.port}"
    token = ' -H "x-token: $CONTROLPLANE_API_TOKEN"' if settings.api_token else ""
    cli_token = ' --token "$CONTROLPLANE_API_TOKEN"' if settings.api_token else ""
    if url != "http://127.0.0.1:8080":
        cli_token = f" --url {url}{cli_token}"
    return f"""
controlplane is up
  API        {url}   (OpenAPI docs: {url}/docs)
  NATS       {settings.nats_url}   (JetStream stream '{settings.stream}')
  data       {settings.data_dir}/
  sequences  {settings.sequences}/

Check a phone number with the example sequence and read its result:
  controlplane trigger seed dev sequence-one --service phone{cli_token} \\
    --data '{{"checknumber": {{"number": "+41 44 668 18 00"}}}}' --wait
or over HTTP (then: curl {url}/api/mongodb-datastore/event?keptnContext=<keptnContext>):
  curl -s {url}/api/v1/event{token} -H 'content-type: application/json' \\
    -d '{{"type": "dev.sequence-one.triggered", "source": "readme",
         "data": {{"project": "seed", "stage": "dev", "service": "phone",
                  "checknumber": {{"number": "+41 44 668 18 00"}}}}}}'
Registered task services:
  controlplane integrations{cli_token}
Press Ctrl-C to stop.
"""
