"""The engine: one loop that turns received events into decisions, state and emitted events.

Why one loop with batches: on a small machine the scarce resource is the database commit, so
the engine takes whatever work is waiting (events from the JetStream consumer, events posted
to the HTTP API, control requests, timers), decides each with the pure core, and commits the
whole batch in one transaction: received events, new execution states and the events to
emit (the outbox) together. Only after the commit does it acknowledge NATS messages, answer
HTTP callers and publish the emitted events to JetStream (with ``Nats-Msg-Id`` = event id, so
a republish after a crash is dropped by JetStream, and the event store refuses ids twice).

Live executions stay in memory (they are also in PostgreSQL; a restart reloads them), so a
decision never waits for a read. Nothing polls: a timer wakes the loop exactly when a delayed
task becomes due or a task's answer deadline passes.

If a commit fails, every caller of that batch gets 503 (NATS messages are negatively
acknowledged and come back), and the in-memory state is reloaded from the database, which
still holds the last committed truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from controlplane.application import admission
from controlplane.application.callbacks import CallbackLinks
from controlplane.application.definitions import Definitions
from controlplane.application.envelope import Envelope, format_time
from controlplane.application.errors import (
    Conflict,
    ControlPlaneError,
    InvalidEvent,
    NotFound,
    Rejected,
    TaskEnded,
    Unavailable,
    UnknownProject,
    UnknownTask,
)
from controlplane.application.ports import (
    EngineStore,
    Publisher,
    StoredEvent,
    UnitOfWork,
    UnstorableEvent,
)
from controlplane.domain import eventtypes, extensions, machine, queueing, views
from controlplane.domain.errors import UnknownSequence
from controlplane.domain.eventtypes import Phase, SequenceEventType, TaskEventType
from controlplane.domain.execution import Execution, Scope, TaskOutcome, derived_id
from controlplane.domain.extensions import DEFAULT_CONCURRENCY_KEY
from controlplane.domain.shipyard import Sequence as DomainSequence

logger = logging.getLogger(__name__)

Outcome = Literal["processed", "drop", "retry"]
AckCallback = Callable[[Outcome], Awaitable[object]]
_RECENT_IDS = 200_000
CALLBACK_SOURCE = "callback"


@dataclass(slots=True)
class _Work:
    envelope: Envelope | None = None
    from_api: bool = False
    future: asyncio.Future[str] | None = None
    ack: AckCallback | None = None
    control: tuple[str, str, str, str] | None = None  # project, context, action, stage
    due: list[str] | None = None  # execution ids whose timer fired
    forget: str | None = None  # project whose executions are deleted
    # Whether the event store must be asked if this event was seen before: not needed for
    # a first delivery of a message stored after the engine started (it would be in memory).
    verify: bool = True
    # Made in this process (the quality gate's answers): stored, then published from the
    # outbox like the engine's own events.
    internal: bool = False
    rerun: RerunPlan | None = None  # with ``envelope``: the trigger of a re-run
    callback: tuple[str, dict[str, Any]] | None = None  # a task's triggeredid and its output


@dataclass(slots=True)
class _Pending:
    """A decided batch waiting for its commit, with the answers to give once it is stored."""

    items: list[_Work]
    batch: _Batch
    replies: list[tuple[_Work, str | ControlPlaneError, Outcome]]
    generation: int


@dataclass(slots=True)
class _Batch:
    """What one batch changed, before the commit makes it true."""

    work: UnitOfWork = field(default_factory=UnitOfWork)
    to_publish: list[Envelope] = field(default_factory=list)
    touched_keys: set[str] = field(default_factory=set)
    touched_contexts: set[str] = field(default_factory=set)
    new_ids: set[str] = field(default_factory=set)
    # Contexts with no live execution left once this batch is stored.
    ended_contexts: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class RerunPlan:
    """A re-run: which context it repeats, and the outcomes of the tasks it skips."""

    keptn_context: str
    carried: tuple[TaskOutcome, ...] = ()


class CommitWatcher(Protocol):
    """Told after each commit what became true: for long-polls and event streams."""

    def committed(self, events: Sequence[Envelope], ended_contexts: Iterable[str]) -> None: ...


class Engine:
    def __init__(
        self,
        *,
        store: EngineStore,
        publisher: Publisher,
        definitions: Definitions,
        task_started_timeout: float,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        batch_size: int = 512,
        inbox_size: int = 20_000,
        readiness_probes: Sequence[Callable[[], bool]] = (),
        watcher: CommitWatcher | None = None,
        callback_links: CallbackLinks | None = None,
    ) -> None:
        self._watcher = watcher
        self._links = callback_links
        # Contexts whose end is decided but not yet committed: still running for a reader.
        self._ending: dict[str, int] = {}
        self._probes = tuple(readiness_probes)
        self._started_at = float("inf")
        self._store_ok = True
        self._store = store
        self._publisher = publisher
        self._definitions = definitions
        self._timeout = task_started_timeout
        self._clock = clock
        self._new_id = new_id
        self._batch_size = batch_size
        self._inbox: asyncio.Queue[_Work] = asyncio.Queue(maxsize=inbox_size)
        self._executions: dict[str, Execution] = {}
        self._by_key: dict[str, set[str]] = {}  # concurrency key -> execution ids
        self._by_context: dict[str, set[str]] = {}
        self._task_index: dict[str, str] = {}
        self._pauses: dict[str, set[str]] = {}
        self._recent: OrderedDict[str, StoredEvent] = OrderedDict()
        self._timers: list[tuple[float, str]] = []
        self._timer_at: dict[str, float] = {}
        self._timer_wake = asyncio.Event()
        self._publish_queue: deque[Envelope] = deque()
        self._publish_wake = asyncio.Event()
        self._published: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        # One batch committing and one decided and waiting: enough to overlap the two.
        self._commits: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=1)
        self._state_lock = asyncio.Lock()
        self._generation = 0
        self._retry_items: list[_Work] = []
        self._ready = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Started, the last commit worked, and every probe (e.g. NATS connected) agrees."""
        return self._ready and self._store_ok and all(probe() for probe in self._probes)

    async def start(self) -> None:
        self._started_at = self._clock()
        await self._load()
        for envelope in await self._store.unpublished(limit=1_000_000):
            self._publish_queue.append(envelope)
        self._tasks = [
            asyncio.create_task(self._run(), name="engine.loop"),
            asyncio.create_task(self._run_commits(), name="engine.commits"),
            asyncio.create_task(self._run_timers(), name="engine.timers"),
            asyncio.create_task(self._run_publisher(), name="engine.publisher"),
        ]
        self._publish_wake.set()
        self._ready = True
        logger.info("engine.started", extra={"live_executions": len(self._executions)})

    async def stop(self) -> None:
        self._ready = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _load(self) -> None:
        self._executions.clear()
        self._by_key.clear()
        self._by_context.clear()
        self._task_index.clear()
        self._pauses.clear()
        self._timers.clear()
        self._timer_at.clear()
        for execution in await self._store.load_live_executions():
            self._index(execution)
        for context, stage in await self._store.load_pauses():
            self._pauses.setdefault(context, set()).add(stage)

    # ------------------------------------------------------------------ entry points

    async def ingest(self, raw: admission.IncomingEvent) -> str:
        """Admit an event from the HTTP API; returns its keptnContext once it is committed."""
        if not self._ready:
            raise Unavailable("the control plane is starting; try again shortly")
        envelope = admission.admit(raw, now=self._clock(), new_id=self._new_id)
        client_id = bool(raw.attributes.get("id"))
        return await self._decided(_Work(envelope=envelope, from_api=True, verify=client_id))

    async def receive(
        self, envelope: Envelope, ack: AckCallback, *, first_seen_at: float | None = None
    ) -> None:
        """Take an event from the bus; ``ack`` is called after the commit with the outcome.

        ``first_seen_at``: when the bus first stored the message, if this is its first
        delivery. A message first stored after this engine started cannot be a repeat of
        one it has forgotten, which saves a database round trip per event.
        """
        fresh = first_seen_at is not None and first_seen_at >= self._started_at
        await self._inbox.put(_Work(envelope=envelope, ack=ack, verify=not fresh))

    async def submit(self, events: Sequence[Envelope]) -> None:
        """Store and publish events made inside the control plane, as if they had arrived.

        For built-in task services (the quality gate): their answers take the engine's
        path without a round trip through the bus, and a request they send to another
        service (``get-sli.triggered``) is stored before anyone can answer it. Returns once
        every event is committed; raises the engine's refusal (an ended task, say).
        """
        if not self._ready:
            raise Unavailable("the control plane is starting; try again shortly")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str]] = []
        for envelope in events:
            future: asyncio.Future[str] = loop.create_future()
            futures.append(future)
            await self._inbox.put(_Work(envelope=envelope, future=future, internal=True))
        await asyncio.gather(*futures)

    async def start_rerun(self, envelope: Envelope, plan: RerunPlan) -> str:
        """Trigger a re-run (built by :mod:`controlplane.application.reruns`); like ingest."""
        if not self._ready:
            raise Unavailable("the control plane is starting; try again shortly")
        return await self._decided(
            _Work(envelope=envelope, from_api=True, verify=False, rerun=plan)
        )

    async def complete_by_callback(self, triggered_id: str, output: dict[str, Any]) -> str:
        """Finish a task with a callback's output; returns the keptnContext once stored.

        The caller has checked the link's token. Raises :class:`TaskEnded` when the task has
        already ended (the link was used, or the task finished another way).
        """
        if not self._ready:
            raise Unavailable("the control plane is starting; try again shortly")
        return await self._decided(_Work(callback=(triggered_id, output)))

    def running(self, keptn_context: str) -> bool:
        """Whether the context has a live execution, or one whose end is not yet stored.

        Synchronous on purpose: a caller that checks this and then registers with the
        watcher, without awaiting in between, cannot miss the end.
        """
        return keptn_context in self._by_context or keptn_context in self._ending

    async def control(self, project: str, keptn_context: str, action: str, stage: str = "") -> None:
        if action not in ("pause", "resume", "abort"):
            raise InvalidEvent(f"state must be pause, resume or abort, got {action!r}")
        await self._decided(_Work(control=(project, keptn_context, action, stage)))

    async def forget_project(self, project: str) -> None:
        await self._decided(_Work(forget=project))

    async def _decided(self, work: _Work) -> str:
        """Queue ``work`` and wait until it is committed; its refusal is raised here."""
        work.future = asyncio.get_running_loop().create_future()
        await self._inbox.put(work)
        return await work.future

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        """Decide batch after batch; the commit task stores them in order.

        Deciding the next batch while the previous one is being committed keeps the loop busy
        with work instead of waiting on the database round trip. A batch is decided on top of
        the in-memory state left by the batches before it, so when a commit fails every batch
        decided after it is void too: the commit task bumps ``_generation``, reloads the state
        and puts their work back in front of the queue.
        """
        while True:
            if not self._retry_items:
                first = await self._inbox.get()
                # Work may have been put back while we waited: it goes first.
                self._retry_items.append(first)
            items, self._retry_items = self._retry_items, []
            while len(items) < self._batch_size and not self._inbox.empty():
                items.append(self._inbox.get_nowait())
            try:
                async with self._state_lock:
                    pending = await self._decide(items)
            except Exception:
                # A bug or a failed lookup: the state may be half-changed, so start over from
                # the database, and let the callers retry.
                logger.exception("engine.batch_failed", extra={"size": len(items)})
                async with self._state_lock:
                    self._generation += 1
                    await self._reload()
                for item in items:
                    await self._reply(item, Unavailable("the engine failed; retry"), "retry")
                continue
            await self._commits.put(pending)

    async def _decide(self, items: list[_Work]) -> _Pending:
        existing = await self._lookup_existing(items)
        batch = _Batch()
        replies: list[tuple[_Work, str | ControlPlaneError, Outcome]] = []
        for item in items:
            try:
                reply = self._handle(item, existing, batch)
            except Rejected as exc:
                replies.append((item, exc, "drop"))
                if not item.from_api and item.envelope is not None:
                    logger.warning(
                        "engine.event_dropped",
                        extra={
                            "event_id": item.envelope.id,
                            "type": item.envelope.type,
                            "reason": exc.message,
                        },
                    )
            else:
                replies.append((item, reply, "processed"))
        self._grant_slots(batch)
        self._clear_ended_pauses(batch)
        batch.ended_contexts = {c for c in batch.touched_contexts if c not in self._by_context}
        for context in batch.ended_contexts:
            self._ending[context] = self._ending.get(context, 0) + 1
        batch.work.published, self._published = self._published, []
        return _Pending(items, batch, replies, self._generation)

    async def _run_commits(self) -> None:
        while True:
            pending = await self._commits.get()
            try:
                await self._commit(pending)
            except Exception:
                logger.exception("engine.commit_task_failed")

    async def _commit(self, pending: _Pending) -> None:
        try:
            await self._commit_batch(pending)
        finally:
            for context in pending.batch.ended_contexts:
                left = self._ending.get(context, 0) - 1
                if left > 0:
                    self._ending[context] = left
                else:
                    self._ending.pop(context, None)

    async def _commit_batch(self, pending: _Pending) -> None:
        batch = pending.batch
        if pending.generation != self._generation:
            # Decided on top of a batch whose commit failed: decide it again.
            self._published = batch.work.published + self._published
            self._requeue(pending.items)
            return
        try:
            if batch.work:
                await self._store.commit(batch.work)
        except Exception as exc:
            await self._recover(pending, exc)
            return
        self._store_ok = True
        # Hand the emitted events to the publisher first: the next task's hand-off should not
        # wait for this batch's acknowledgements.
        if batch.to_publish:
            self._publish_queue.extend(batch.to_publish)
            self._publish_wake.set()
            for envelope in batch.to_publish:
                self._log_emit(envelope)
        self._forget_recent_overflow()
        if self._watcher is not None and (batch.work.events or batch.ended_contexts):
            try:
                self._watcher.committed(
                    [envelope for envelope, _ in batch.work.events], batch.ended_contexts
                )
            except Exception:
                logger.exception("engine.watcher_failed")
        for item, answer, outcome in pending.replies:
            await self._reply(item, answer, outcome)

    async def _recover(self, pending: _Pending, exc: Exception) -> None:
        """A commit failed: void this and later decisions, reload, retry or refuse the work."""
        async with self._state_lock:
            self._generation += 1
            self._published = pending.batch.work.published + self._published
            # Events decided since are no longer known to be stored: ask the store again.
            self._recent.clear()
            if not isinstance(exc, UnstorableEvent):
                logger.exception("engine.commit_failed", exc_info=exc)
                self._store_ok = False  # /health answers 503 until the database is back
            await self._reload()
            # Only messages stored from now on are known to be new without asking the store.
            self._started_at = self._clock()
        if isinstance(exc, UnstorableEvent):
            self._requeue(await self._refuse_unstorable(pending.items, exc))
            return
        for item, _answer, _outcome in pending.replies:
            await self._reply(item, Unavailable("could not store the event; retry"), "retry")

    def _requeue(self, items: list[_Work]) -> None:
        if not items:
            return
        self._retry_items = items + self._retry_items
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox wakes the loop anyway
            self._inbox.put_nowait(_Work(due=[]))

    async def _refuse_unstorable(self, items: list[_Work], exc: UnstorableEvent) -> list[_Work]:
        """Refuse the event the store cannot hold; return the rest, to be decided again."""
        culprit = [item for item in items if item.envelope and item.envelope.id == exc.event_id]
        if not culprit:  # an emitted event: refuse whatever the batch held, one at a time
            culprit = items[:1]
        logger.warning(
            "engine.event_unstorable", extra={"event_id": exc.event_id, "reason": str(exc)}
        )
        for item in culprit:
            await self._reply(item, InvalidEvent(f"the event cannot be stored: {exc}"), "drop")
        return [item for item in items if item not in culprit]

    async def _reload(self) -> None:
        while True:
            try:
                await self._load()
                self._store_ok = True
                return
            except Exception:
                logger.exception("engine.reload_failed")
                await asyncio.sleep(1.0)

    async def _reply(self, item: _Work, reply: str | ControlPlaneError, outcome: Outcome) -> None:
        if item.future is not None and not item.future.done():
            if isinstance(reply, ControlPlaneError):
                item.future.set_exception(reply)
            else:
                item.future.set_result(reply)
        if item.ack is not None:
            try:
                await item.ack(outcome)
            except Exception:
                logger.exception("engine.ack_failed")

    async def _lookup_existing(self, items: list[_Work]) -> dict[str, StoredEvent]:
        wanted: set[str] = set()
        for item in items:
            envelope = item.envelope
            if envelope is None:
                continue
            must_check = item.verify or (not item.from_api and _is_trigger(envelope))
            if envelope.id not in self._recent and must_check:
                wanted.add(envelope.id)
            if envelope.triggered_id and envelope.triggered_id not in self._task_index:
                wanted.add(envelope.triggered_id)
        found = dict(await self._store.find_events(sorted(wanted))) if wanted else {}
        for event_id in list(found):
            self._remember(found[event_id])
        return found

    # ------------------------------------------------------------------ handling

    def _handle(self, item: _Work, existing: dict[str, StoredEvent], batch: _Batch) -> str:
        if item.control is not None:
            self._control(*item.control, batch=batch)
            return ""
        if item.due is not None:
            for execution_id in item.due:
                self._tick(execution_id, batch)
            return ""
        if item.forget is not None:
            self._forget(item.forget, batch)
            return ""
        if item.callback is not None:
            return self._on_callback(*item.callback, batch=batch)
        assert item.envelope is not None
        publish = item.from_api or item.internal
        return self._receive(
            item.envelope, item.from_api, existing, batch, publish=publish, rerun=item.rerun
        )

    def _receive(
        self,
        envelope: Envelope,
        from_api: bool,
        existing: dict[str, StoredEvent],
        batch: _Batch,
        *,
        publish: bool,
        rerun: RerunPlan | None = None,
    ) -> str:
        """Handle one event; ``publish`` says whether it still has to go out on NATS."""
        seen = self._recent.get(envelope.id) or existing.get(envelope.id)
        if seen is not None or envelope.id in batch.new_ids:
            if seen is not None and seen.source != envelope.source and from_api:
                raise Conflict(
                    f"event id {envelope.id!r} was already used by source {seen.source!r}"
                )
            return seen.keptn_context if seen else envelope.keptn_context
        try:
            parsed: eventtypes.EventType | None = eventtypes.parse(envelope.type)
        except eventtypes.EventTypeError:
            parsed = None
        if isinstance(parsed, SequenceEventType) and parsed.phase == Phase.TRIGGERED:
            return self._on_trigger(
                envelope, parsed, publish, batch, from_api=from_api, rerun=rerun
            )
        if isinstance(parsed, TaskEventType) and parsed.phase in (
            Phase.STARTED,
            Phase.FINISHED,
            Phase.STATUS_CHANGED,
        ):
            return self._on_answer(envelope, parsed.phase, publish, existing, batch)
        self._store_event(envelope, publish=publish, batch=batch)
        return envelope.keptn_context

    def _store_event(self, envelope: Envelope, *, publish: bool, batch: _Batch) -> None:
        batch.work.events.append((envelope, publish))
        batch.new_ids.add(envelope.id)
        self._remember(
            StoredEvent(envelope.id, envelope.source, envelope.type, envelope.keptn_context)
        )
        if publish:
            batch.to_publish.append(envelope)

    def _remember(self, event: StoredEvent) -> None:
        self._recent[event.id] = event
        self._recent.move_to_end(event.id)

    def _forget_recent_overflow(self) -> None:
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)

    # ------------------------------------------------------------------ triggers

    def _on_trigger(
        self,
        envelope: Envelope,
        parsed: SequenceEventType,
        publish: bool,
        batch: _Batch,
        *,
        from_api: bool = False,
        rerun: RerunPlan | None = None,
    ) -> str:
        if not envelope.keptn_context or envelope.keptn_context != admission.keptn_context(
            envelope.keptn_context
        ):
            # Over NATS nobody stamped the event: give it Keptn's context (a derived one when
            # it has none, so a redelivery maps to the same context).
            context = envelope.keptn_context or derived_id(envelope.id, "context")
            envelope = envelope.evolve(keptn_context=admission.keptn_context(context))
        project = envelope.project
        record = self._definitions.record(project)
        if record is None:
            raise UnknownProject(f"project {project!r} does not exist")
        now = self._clock()
        stage = parsed.stage  # the type names the stage; the API also checks data.stage
        if not envelope.service:
            raise InvalidEvent("data.service is required and must be a non-empty string")
        scope = Scope(project, stage, envelope.service, envelope.keptn_context)
        shipyard = self._definitions.shipyard(project)
        problem = ""
        sequence = None
        key = ""
        if shipyard is None:
            problem = f"invalid shipyard of project {project!r}: {record.error}"
        else:
            try:
                sequence = shipyard.sequence(parsed.stage, parsed.sequence)
            except UnknownSequence as exc:
                problem = str(exc)
            else:
                if not sequence.tasks:
                    problem = f"task sequence {parsed.sequence!r} does not contain any tasks"
                else:
                    key, problem = _concurrency_key(sequence, scope, envelope.data)
                    if problem and from_api:
                        raise InvalidEvent(problem)  # refused before anything is stored
        self._store_event(envelope, publish=publish, batch=batch)
        if problem or sequence is None:
            decision = machine.reject_trigger(
                trigger_id=envelope.id,
                scope=scope,
                sequence_name=parsed.sequence,
                data=envelope.data,
                now=now,
                message=problem,
            )
            logger.info(
                "sequence.rejected", extra={"keptn_context": scope.keptn_context, "reason": problem}
            )
            self._apply(decision, batch, observed=envelope)
            return scope.keptn_context
        paused = self._is_paused(scope.keptn_context, stage)
        execution = machine.start(
            trigger_id=envelope.id,
            scope=scope,
            sequence=sequence,
            data=envelope.data,
            now=now,
            task_started_timeout=self._timeout,
            paused=paused,
            shipyard_version=record.version,
            gitcommitid=envelope.gitcommitid,
            concurrency_key=key,
            carried=rerun.carried if rerun else (),
            rerun_of=rerun.keptn_context if rerun else "",
        )
        self._apply(machine.Decision(execution), batch, observed=envelope)
        logger.info(
            "sequence.triggered",
            extra={
                "keptn_context": scope.keptn_context,
                "project": project,
                "stage": stage,
                "sequence": sequence.name,
            },
        )
        return scope.keptn_context

    # ------------------------------------------------------------------ answers

    def _on_answer(
        self,
        envelope: Envelope,
        phase: Phase,
        publish: bool,
        existing: dict[str, StoredEvent],
        batch: _Batch,
    ) -> str:
        execution_id = self._task_index.get(envelope.triggered_id)
        execution = self._executions.get(execution_id) if execution_id else None
        if execution is None:
            known = self._recent.get(envelope.triggered_id) or existing.get(envelope.triggered_id)
            if known is not None and _foreign_request(known):
                # An answer to a request between services (the quality gate's get-sli, say):
                # kept in the event store, as Keptn's datastore kept it, but no task of ours.
                self._store_event(envelope, publish=publish, batch=batch)
                return envelope.keptn_context or known.keptn_context
            if known is not None and known.type.endswith(".triggered"):
                raise TaskEnded(
                    f"the task {known.type} with id {envelope.triggered_id!r} has already ended"
                )
            raise UnknownTask(f"no task was triggered with id {envelope.triggered_id!r}")
        decision = machine.decide(
            execution,
            machine.TaskAnswered(
                envelope.id, envelope.triggered_id, phase, envelope.source, envelope.data
            ),
            now=self._clock(),
        )
        if decision.rejection == machine.Rejection.TASK_ENDED:
            raise TaskEnded(f"the task answered by {envelope.id!r} has already ended")
        if decision.rejection == machine.Rejection.UNKNOWN_TASK:
            raise UnknownTask(f"no task was triggered with id {envelope.triggered_id!r}")
        if not envelope.keptn_context:
            envelope = envelope.evolve(keptn_context=execution.scope.keptn_context)
        self._store_event(envelope, publish=publish, batch=batch)
        self._apply(decision, batch, observed=envelope)
        return execution.scope.keptn_context

    def _on_callback(self, triggered_id: str, output: dict[str, Any], *, batch: _Batch) -> str:
        """A callback link was called: answer the task for the outside system."""
        execution_id = self._task_index.get(triggered_id)
        execution = self._executions.get(execution_id) if execution_id else None
        current = execution.current if execution else None
        if execution is None or current is None or current.triggered_id != triggered_id:
            raise TaskEnded("the task has already ended; a callback link works only once")
        scope = execution.scope
        data = {
            "project": scope.project,
            "stage": scope.stage,
            "service": scope.service,
            **output,
        }
        answers: list[tuple[Phase, dict[str, Any]]] = []
        if current.started_count == 0:
            answers.append((Phase.STARTED, {**data, "status": "succeeded", "result": ""}))
        answers.append((Phase.FINISHED, data))
        for phase, payload in answers:
            envelope = Envelope(
                id=derived_id(triggered_id, "callback", str(phase)),
                source=CALLBACK_SOURCE,
                type=eventtypes.task(current.name, phase),
                time=format_time(self._clock()),
                data={key: value for key, value in payload.items() if value != ""},
                keptn_context=scope.keptn_context,
                triggered_id=triggered_id,
                gitcommitid=execution.gitcommitid,
            )
            self._receive(envelope, False, {}, batch, publish=True)
        return scope.keptn_context

    # ------------------------------------------------------------------ control

    def _control(self, project: str, context: str, action: str, stage: str, batch: _Batch) -> None:
        ids = [
            execution_id
            for execution_id in self._by_context.get(context, set())
            if self._executions[execution_id].scope.project == project
            and (not stage or self._executions[execution_id].scope.stage == stage)
        ]
        if not ids:
            raise NotFound(
                f"no running sequence with keptnContext {context!r} in project"
                f" {project!r}" + (f" and stage {stage!r}" if stage else "")
            )
        event: machine.Input
        if action == "pause":
            self._pauses.setdefault(context, set()).add(stage)
            batch.work.pauses_added.append((context, stage))
            event = machine.Pause()
        elif action == "resume":
            self._clear_pause(context, stage or None, batch)
            event = machine.Resume()
        else:
            self._clear_pause(context, None, batch)
            event = machine.Abort()
        now = self._clock()
        for execution_id in sorted(ids, key=lambda i: self._executions[i].triggered_at):
            execution = self._executions[execution_id]
            self._apply(machine.decide(execution, event, now=now), batch)
        logger.info(
            "sequence.control", extra={"keptn_context": context, "action": action, "stage": stage}
        )

    def _clear_pause(self, context: str, stage: str | None, batch: _Batch) -> None:
        stages = self._pauses.get(context)
        if stages is None:
            return
        if stage is None:
            self._pauses.pop(context, None)
        else:
            stages.discard(stage)
            stages.discard("")
            if not stages:
                self._pauses.pop(context, None)
        batch.work.pauses_removed.append((context, stage))

    def _clear_ended_pauses(self, batch: _Batch) -> None:
        """Keptn drops a context's pause flags once none of its sequences is running."""
        for context in batch.touched_contexts:
            if context in self._pauses and context not in self._by_context:
                self._clear_pause(context, None, batch)

    def _is_paused(self, context: str, stage: str) -> bool:
        stages = self._pauses.get(context, set())
        return "" in stages or stage in stages

    def _tick(self, execution_id: str, batch: _Batch) -> None:
        execution = self._executions.get(execution_id)
        if execution is None:
            return
        now = self._clock()
        if execution.wants_slot(now):
            # A delay or a backoff ran out: the queue gives the slot (see _grant_slots).
            batch.touched_keys.add(execution.slot_key)
        wake = machine.next_wakeup(execution, now)
        if wake is None or wake > now:
            return
        self._apply(machine.decide(execution, machine.Tick(), now=self._clock()), batch)

    def _forget(self, project: str, batch: _Batch) -> None:
        for execution in [e for e in self._executions.values() if e.scope.project == project]:
            self._unindex(execution)
            # Whoever waits for these contexts learns that they are over.
            batch.touched_contexts.add(execution.scope.keptn_context)

    # ------------------------------------------------------------------ applying decisions

    def _apply(
        self, decision: machine.Decision, batch: _Batch, *, observed: Envelope | None = None
    ) -> None:
        execution = decision.execution
        if observed is not None:
            execution = self._observe(execution, observed)
        follow_ups: list[Envelope] = []
        chains: list[machine.Chain] = []
        for command in decision.commands:
            if isinstance(command, machine.Chain):
                chains.append(command)
                continue
            envelope = self._envelope(command)
            execution = self._observe(execution, envelope)
            self._store_event(envelope, publish=True, batch=batch)
            if command.type == eventtypes.task(machine.APPROVAL, Phase.TRIGGERED):
                follow_ups.extend(self._approval(command, execution))
        self._update(execution, batch)
        for chain in chains:
            follow_ups.extend(self._chain(chain, execution.scope))
        for envelope in follow_ups:
            self._receive(envelope, False, {}, batch, publish=True)

    def _update(self, execution: Execution, batch: _Batch) -> None:
        previous = self._executions.get(execution.id)
        if previous is not None:
            self._unindex(previous)
        batch.work.executions[execution.id] = execution
        batch.touched_keys.add(execution.slot_key)
        batch.touched_contexts.add(execution.scope.keptn_context)
        if not execution.state.terminal:
            self._index(execution)

    def _index(self, execution: Execution) -> None:
        self._executions[execution.id] = execution
        self._by_key.setdefault(execution.slot_key, set()).add(execution.id)
        self._by_context.setdefault(execution.scope.keptn_context, set()).add(execution.id)
        if execution.current is not None:
            self._task_index[execution.current.triggered_id] = execution.id
        wake = machine.next_wakeup(execution, self._clock())
        if wake is not None and self._timer_at.get(execution.id) != wake:
            self._timer_at[execution.id] = wake
            if len(self._timers) > 4 * len(self._executions) + 1024:
                self._compact_timers()
            heapq.heappush(self._timers, (wake, execution.id))
            if self._timers[0] == (wake, execution.id):
                self._timer_wake.set()

    def _compact_timers(self) -> None:
        """Drop timer entries that no longer match a live execution's next wake-up."""
        self._timers = [
            (wake, execution_id)
            for wake, execution_id in self._timers
            if self._timer_at.get(execution_id) == wake and execution_id in self._executions
        ]
        heapq.heapify(self._timers)

    def _unindex(self, execution: Execution) -> None:
        self._executions.pop(execution.id, None)
        key_members = self._by_key.get(execution.slot_key)
        if key_members is not None:
            key_members.discard(execution.id)
            if not key_members:
                del self._by_key[execution.slot_key]
        context_members = self._by_context.get(execution.scope.keptn_context)
        if context_members is not None:
            context_members.discard(execution.id)
            if not context_members:
                del self._by_context[execution.scope.keptn_context]
        if execution.current is not None:
            self._task_index.pop(execution.current.triggered_id, None)
        self._timer_at.pop(execution.id, None)

    def _grant_slots(self, batch: _Batch) -> None:
        """Give free slots of each touched concurrency key to the oldest waiting executions."""
        pending = set(batch.touched_keys)
        while pending:
            key = pending.pop()
            now = self._clock()
            members = [self._executions[i] for i in self._by_key.get(key, ())]
            chosen = queueing.grant(members, now)
            if not chosen:
                continue
            before = set(batch.touched_keys)
            for execution in chosen:
                granted = self._executions.get(execution.id, execution)
                self._apply(machine.decide(granted, machine.SlotGranted(), now=now), batch)
            # The granted execution may have ended at once (an automatic approval, say), and
            # chained triggers may have touched other slots: look at both again.
            pending.add(key)
            pending |= batch.touched_keys - before

    def _observe(self, execution: Execution, envelope: Envelope) -> Execution:
        view = views.observe(
            execution.view,
            type=envelope.type,
            id=envelope.id,
            time=self._clock(),
            data=envelope.data,
            source=envelope.source,
        )
        return execution.evolve(view=view)

    def _envelope(self, command: machine.Emit) -> Envelope:
        data = dict(command.data)
        if command.callback and self._links is not None:
            data["callback"] = {"url": self._links.url(command.id), "method": "POST"}
        return Envelope(
            id=command.id,
            source=command.source,
            type=command.type,
            time=format_time(self._clock()),
            data=data,
            keptn_context=command.keptn_context,
            triggered_id=command.triggered_id,
            gitcommitid=command.gitcommitid,
        )

    def _log_emit(self, envelope: Envelope) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "event.emitted",
                extra={
                    "type": envelope.type,
                    "event_id": envelope.id,
                    "keptn_context": envelope.keptn_context,
                },
            )

    def _approval(self, command: machine.Emit, execution: Execution) -> list[Envelope]:
        answers = machine.approval_answers(command)
        return [
            Envelope(
                id=answer.event_id,
                source=answer.source,
                type=eventtypes.task(machine.APPROVAL, answer.phase),
                time=format_time(self._clock()),
                data=dict(answer.data or {}),
                keptn_context=execution.scope.keptn_context,
                triggered_id=answer.triggered_id,
                gitcommitid=execution.gitcommitid,
            )
            for answer in answers
        ]

    def _chain(self, chain: machine.Chain, execution_scope: Scope) -> list[Envelope]:
        shipyard = self._definitions.shipyard(execution_scope.project)
        if shipyard is None:
            return []
        triggered: list[Envelope] = []
        for stage, sequence in shipyard.triggered_by(
            chain.stage, chain.sequence, chain.result, chain.last_task
        ):
            data = dict(chain.data)
            data["stage"] = stage.name
            triggered.append(
                Envelope(
                    id=derived_id(chain.execution_id, "chain", stage.name, sequence.name),
                    source=machine.SOURCE,
                    type=eventtypes.sequence(stage.name, sequence.name, Phase.TRIGGERED),
                    time=format_time(self._clock()),
                    data=data,
                    keptn_context=execution_scope.keptn_context,
                )
            )
        return triggered

    # ------------------------------------------------------------------ timers and publishing

    async def _run_timers(self) -> None:
        while True:
            self._timer_wake.clear()
            now = self._clock()
            due: list[str] = []
            while self._timers and self._timers[0][0] <= now:
                _, execution_id = heapq.heappop(self._timers)
                due.append(execution_id)
            # One work item per timer, so a burst due at once is decided and committed in
            # batches of at most batch_size: bounded memory, and the loop stays free for
            # other work between batches.
            for execution_id in sorted(set(due)):
                await self._inbox.put(_Work(due=[execution_id]))
            delay = (self._timers[0][0] - now) if self._timers else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=max(delay, 0.0))

    async def _run_publisher(self) -> None:
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            while self._publish_queue:
                chunk = [
                    self._publish_queue.popleft()
                    for _ in range(min(len(self._publish_queue), 1024))
                ]
                try:
                    await self._publisher.publish(chunk)
                except Exception:
                    logger.exception("outbox.publish_failed", extra={"count": len(chunk)})
                    self._publish_queue.extendleft(reversed(chunk))
                    await asyncio.sleep(0.5)
                    continue
                self._published.extend(envelope.id for envelope in chunk)
                if self._inbox.empty():
                    await self._inbox.put(_Work(due=[]))


def _concurrency_key(
    sequence: DomainSequence, scope: Scope, data: Mapping[str, Any]
) -> tuple[str, str]:
    """The rendered key ("" for Keptn's default) or a problem naming the missing field."""
    if sequence.concurrency is None or sequence.concurrency.key == DEFAULT_CONCURRENCY_KEY:
        return "", ""
    values = {**data, "project": scope.project, "stage": scope.stage, "service": scope.service}
    try:
        return extensions.render_key(sequence.concurrency.key, values), ""
    except KeyError as exc:
        return "", (
            f"the concurrency key {sequence.concurrency.key!r} of sequence {sequence.name!r}"
            f" needs data.{exc.args[0]}, which the event does not carry (or is not a"
            " string or number)"
        )


def _is_trigger(envelope: Envelope) -> bool:
    """Sequence triggers are always checked: a forgotten repeat would restart a sequence."""
    try:
        parsed = eventtypes.parse(envelope.type)
    except eventtypes.EventTypeError:
        return False
    return isinstance(parsed, SequenceEventType) and parsed.phase == Phase.TRIGGERED


def _foreign_request(known: StoredEvent) -> bool:
    """A task ``.triggered`` that another service sent, not one of our sequences' tasks."""
    if known.source == machine.SOURCE:
        return False
    try:
        parsed = eventtypes.parse(known.type)
    except eventtypes.EventTypeError:
        return False
    return isinstance(parsed, TaskEventType) and parsed.phase == Phase.TRIGGERED
