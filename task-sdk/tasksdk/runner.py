"""Turns received ``.triggered`` events into handler calls and Keptn answers.

For each ``<task>.triggered`` message the runner:

1. parses it, and drops it if it is malformed, for an unknown task, a repeat of an event id it
   has already seen, or outside the registration's project/stage/service filters;
2. sends ``<task>.started``;
3. calls the handler in its own asyncio task (a sync handler in a worker thread);
4. sends ``<task>.finished``: the returned data with ``status``/``result`` defaulting to
   ``succeeded``/``pass``; ``TaskFailed`` gives succeeded/fail, ``TaskErrored`` and any other
   exception errored/fail, with the exception text as ``message``.

Step 4 is skipped for registrations with ``auto_finish=False`` unless the handler raises;
those finish later through :meth:`TaskContext.finish`.

Why the repeat check: the control plane publishes ``.triggered`` at least once, and core NATS
passes a repeat on like any message; the HTTP pull transport even sees each event again on
every poll until its task is complete. Answering twice would count as a second executor, so
the runner remembers the ids it accepted (bounded, least recently seen first out) and ignores
repeats. A repeat refreshes its id, so an event that stays listed is never forgotten while
fewer than ``dedupe_size`` accepted events are open at once. The memory is per process: a
repeat that reaches another replica is not caught. Filters are checked before the memory, so
events meant for other services do not crowd it.

Following subscriptions: by default every registered task is served. Once :meth:`follow` is
called (the app does it with what the control plane's registry answers), a task is served only
while at least one subscription covers its ``.triggered`` type, and an event is accepted only
if one of those subscriptions admits its scope, besides the handler's own filters.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tasksdk import contract, errors
from tasksdk.context import ScopedLogger, TaskContext
from tasksdk.transports.base import Transport

if TYPE_CHECKING:
    from tasksdk.registry import Subscription

Handler = Callable[[TaskContext], Awaitable[Mapping[str, Any] | None] | Mapping[str, Any] | None]
"""A task handler: takes the context, returns data for ``.finished`` (or None); may be async."""

logger = logging.getLogger("tasksdk.runner")

_STOPPED_MESSAGE = "the task service stopped before the task finished"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRegistration:
    """A handler and the events it handles.

    Attributes:
        task: The task name, for example ``deployment``.
        handler: The function called for each accepted ``.triggered`` event.
        projects: Accepted ``data.project`` values; None accepts any.
        stages: Accepted ``data.stage`` values; None accepts any.
        services: Accepted ``data.service`` values; None accepts any.
        auto_finish: Whether the runner sends ``.finished`` when the handler returns.
    """

    task: str
    handler: Handler
    projects: frozenset[str] | None = None
    stages: frozenset[str] | None = None
    services: frozenset[str] | None = None
    auto_finish: bool = True

    def accepts(self, event: contract.TriggeredEvent) -> bool:
        """Tell whether the event's scope passes the filters.

        Args:
            event: A triggered event for this task.

        Returns:
            True if every filter that is set contains the event's value.
        """
        checks = (
            (self.projects, event.project),
            (self.stages, event.stage),
            (self.services, event.service),
        )
        return all(allowed is None or value in allowed for allowed, value in checks)


class TaskRunner:
    """Answers the triggered events of a set of registrations on one transport.

    :meth:`TaskApp.attach <tasksdk.app.TaskApp.attach>` creates and stops runners; use it
    rather than this class directly.
    """

    def __init__(
        self,
        registrations: Mapping[str, TaskRegistration],
        transport: Transport,
        *,
        source: str,
        max_concurrency: int = 100,
        dedupe_size: int = 10_000,
    ) -> None:
        """Create a runner.

        Args:
            registrations: The registrations by task name.
            transport: Where events come from and answers go.
            source: The service name: CloudEvent ``source`` of answers and queue group.
            max_concurrency: How many handlers may run at once; further messages wait.
            dedupe_size: How many recent triggered ids to remember for ignoring repeats.
        """
        self._registrations = dict(registrations)
        self._transport = transport
        self._source = source
        self._seen = _RecentIds(dedupe_size)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._subscribed: set[str] = set()
        self._following: dict[str, tuple[Subscription, ...]] | None = None
        self._stopping = False

    @property
    def inflight(self) -> int:
        """The number of handlers running now."""
        return len(self._inflight)

    @property
    def served(self) -> frozenset[str]:
        """The tasks whose ``.triggered`` subject the runner is subscribed to."""
        return frozenset(self._subscribed)

    async def subscribe(self) -> None:
        """Serve every registered task: subscribe to each ``.triggered`` subject."""
        for task in self._registrations:
            await self._serve(task)

    async def follow(self, subscriptions: Iterable[Subscription]) -> None:
        """Serve only the tasks some subscription covers, and only the events they admit.

        Subscribes to the subjects of tasks that gained a subscription and unsubscribes from
        those of tasks that lost their last one. Call it again whenever the subscriptions
        change; after :meth:`shutdown` has begun it does nothing.

        Args:
            subscriptions: The subscriptions that apply to this service.
        """
        if self._stopping:
            return
        applicable = tuple(subscriptions)
        following = {
            task: tuple(s for s in applicable if s.covers(_triggered_type(task)))
            for task in self._registrations
        }
        # The new filters hold before the subjects change, so nothing slips through between.
        self._following = following
        for task, covering in following.items():
            if covering and task not in self._subscribed:
                await self._serve(task)
                logger.info("runner.serving %s", task)
            elif not covering and task in self._subscribed:
                await self._transport.unsubscribe(_triggered_type(task))
                self._subscribed.discard(task)
                logger.info("runner.not_serving %s: no subscription asks for it", task)

    async def receive(self, payload: bytes) -> None:
        """Handle one received message: start its task in the background if it is accepted.

        Waits while ``max_concurrency`` handlers are running.

        Args:
            payload: The message body, a structured-mode CloudEvent.
        """
        accepted = self._accept(payload)
        if accepted is None:
            return
        registration, event = accepted
        await self._slots.acquire()
        task = asyncio.create_task(
            self._run(registration, event), name=f"tasksdk {event.task} {event.id}"
        )
        self._inflight.add(task)
        task.add_done_callback(self._forget)

    async def join(self) -> None:
        """Wait until no handler is running."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def shutdown(self, grace: float) -> None:
        """Stop receiving, let running handlers finish, then cancel the ones still running.

        Stopping and waiting overlap: messages the transport had already received still
        start handlers, and a full ``max_concurrency`` cannot hold up the shutdown beyond the
        grace time. A cancelled task is answered with ``.finished`` errored/fail.

        Args:
            grace: Seconds handlers get before they are cancelled.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        stopping = asyncio.ensure_future(self._transport.stop_receiving())
        cancelled: set[asyncio.Task[None]] = set()
        while not stopping.done() or self._inflight:
            overdue = loop.time() >= deadline
            if overdue and self._inflight - cancelled:
                # Let tasks created just now enter _run, so that they answer the cancellation.
                await asyncio.sleep(0)
                late = self._inflight - cancelled
                logger.warning("runner.cancelling %d running tasks", len(late))
                for task in late:
                    task.cancel()
                cancelled |= late
            waiting = set(self._inflight) if stopping.done() else {*self._inflight, stopping}
            timeout = None if overdue else deadline - loop.time()
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopping.result()

    def _accept(self, payload: bytes) -> tuple[TaskRegistration, contract.TriggeredEvent] | None:
        try:
            event = contract.TriggeredEvent.from_json(payload)
        except errors.InvalidEvent as exc:
            logger.warning("runner.invalid_event %s", exc)
            return None
        registration = self._registrations.get(event.task)
        if registration is None:
            logger.debug("runner.unknown_task %s", event.task)
            return None
        if not registration.accepts(event) or not self._subscribed_to(event):
            logger.debug("runner.filtered_out %s", event.id, extra={"triggered_id": event.id})
            return None
        if not self._seen.add(event.id):
            logger.debug("runner.repeat_ignored %s", event.id, extra={"triggered_id": event.id})
            return None
        return registration, event

    def _subscribed_to(self, event: contract.TriggeredEvent) -> bool:
        if self._following is None:
            return True
        return any(s.admits(event) for s in self._following.get(event.task, ()))

    async def _serve(self, task: str) -> None:
        subject = _triggered_type(task)
        await self._transport.subscribe(subject, queue=self._source, handler=self.receive)
        self._subscribed.add(task)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("runner.task_crashed", exc_info=task.exception())

    async def _run(self, registration: TaskRegistration, event: contract.TriggeredEvent) -> None:
        ctx = TaskContext(event, source=self._source, publish=self._transport.publish)
        log = ScopedLogger(logger, ctx.logger.extra)
        try:
            if not await self._start(event, log):
                return
            outcome = await _call(registration.handler, ctx)
        except asyncio.CancelledError:
            await _finish_errored(ctx, log, _STOPPED_MESSAGE)
            raise
        except errors.TaskOutcome as exc:
            status = (
                contract.Status.ERRORED
                if isinstance(exc, errors.TaskErrored)
                else contract.Status.SUCCEEDED
            )
            await _finish(
                ctx, log, exc.data, status=status, result=contract.Result.FAIL, message=exc.message
            )
        except Exception as exc:
            log.exception("task.handler_raised")
            await _finish_errored(ctx, log, _describe(exc))
        else:
            await _complete(registration, ctx, log, outcome)

    async def _start(self, event: contract.TriggeredEvent, log: ScopedLogger) -> bool:
        started = contract.started_event(event, source=self._source)
        try:
            await self._transport.publish(started["type"], contract.encode(started))
        except Exception:
            log.exception("task.started_failed")
            # Nothing was taken on, so a later delivery of the same event gets a new chance.
            self._seen.discard(event.id)
            return False
        log.info("task.started")
        return True


async def _call(handler: Handler, ctx: TaskContext) -> object:
    if _is_async(handler):
        outcome: object = handler(ctx)
    else:
        outcome = await asyncio.to_thread(handler, ctx)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _is_async(handler: Handler) -> bool:
    # Async callable objects define an async __call__ rather than being coroutine functions.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


async def _complete(
    registration: TaskRegistration, ctx: TaskContext, log: ScopedLogger, outcome: object
) -> None:
    if ctx.finished or not registration.auto_finish:
        if outcome is not None:
            log.warning("task.output_ignored: returned data is only used with auto_finish")
        return
    if outcome is not None and not isinstance(outcome, Mapping):
        message = f"the handler returned {type(outcome).__name__}, expected a mapping or None"
        log.error("task.bad_output %s", message)
        await _finish_errored(ctx, log, message)
        return
    await _finish(ctx, log, outcome)


async def _finish(
    ctx: TaskContext,
    log: ScopedLogger,
    data: Mapping[str, Any] | None = None,
    *,
    status: contract.Status | None = None,
    result: contract.Result | None = None,
    message: str | None = None,
) -> None:
    """Send ``.finished`` unless the task already did; never raises except on cancellation."""
    if ctx.finished:
        log.info("task.already_finished")
        return
    try:
        await ctx.finish(data, status=status, result=result, message=message)
    except (errors.InvalidAnswer, TypeError, ValueError) as exc:
        log.error("task.invalid_answer %s", exc)
        await _finish_errored(ctx, log, f"invalid answer: {exc}")
        return
    except Exception:
        log.exception("task.finished_failed")
        return
    log.info("task.finished")


async def _finish_errored(ctx: TaskContext, log: ScopedLogger, message: str) -> None:
    await _finish(
        ctx, log, status=contract.Status.ERRORED, result=contract.Result.FAIL, message=message
    )


def _triggered_type(task: str) -> str:
    return contract.event_type(task, contract.Phase.TRIGGERED)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _RecentIds:
    """A bounded set of ids that forgets the least recently seen first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def add(self, item: str) -> bool:
        """Remember an id; return False if it was already remembered."""
        if item in self._ids:
            self._ids.move_to_end(item)
            return False
        self._ids[item] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True

    def discard(self, item: str) -> None:
        """Forget an id."""
        self._ids.pop(item, None)
