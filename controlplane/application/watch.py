"""Await a keptnContext: long-polls wait for its end, event streams follow its events.

Why a watcher fed by the engine rather than readers polling the store: the engine already
knows, right after each commit, which events it stored and which contexts have nothing left
to run (:class:`~controlplane.application.engine.CommitWatcher`). Handing that to the few
clients that wait costs a dictionary lookup per stored event and no query at all.

Three rules keep this safe next to the engine loop:

* :meth:`ContextWatch.committed` never blocks and never raises: a subscriber that does not
  keep up is cut off (its stream ends with reason ``overflow``) instead of holding the engine
  or growing without bound;
* nothing is kept for a context nobody watches, and a waiter that gives up (timeout, client
  gone, task cancelled) removes itself;
* registration checks the engine's synchronous ``running(context)`` and registers without an
  ``await`` in between, so an end committed after the check is always seen (the engine keeps a
  context "running" until the watcher has been told about its end).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.application.envelope import Envelope
from controlplane.application.ports import QueryStore
from controlplane.domain import views
from controlplane.domain.execution import Execution

EndReason = Literal["ended", "overflow", "closed"]
"""Why a subscription ended: the context has nothing left to run; the subscriber fell too
far behind; the watch was closed (the server is stopping) or the subscriber closed it."""

DEFAULT_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a context ended, for a client that waited for it.

    ``data`` is what the last stage's sequence produced: its trigger data with every task's
    output merged in, as a following task would have received it (a sequence's own
    ``.finished`` event carries only scope, status, result and message).
    """

    state: str
    result: str
    status: str
    message: str
    data: dict[str, Any]


class Subscription:
    """One subscriber's bounded queue of a context's committed events, then an end.

    Use it as a context manager (or call :meth:`close`) so that it leaves the watch even when
    the reader is cancelled halfway.
    """

    def __init__(
        self, keptn_context: str, limit: int, on_close: Callable[[Subscription], None]
    ) -> None:
        self.keptn_context = keptn_context
        self._limit = limit
        self._on_close = on_close
        self._items: deque[Envelope] = deque()
        self._end: EndReason | None = None
        self._wake = asyncio.Event()

    @property
    def end_reason(self) -> EndReason | None:
        """Why the stream ended, once it has; queued events are still delivered first."""
        return self._end

    async def next(self) -> Envelope | None:
        """The next event, or None once the stream has ended and is drained.

        Safe to cancel (e.g. under ``asyncio.timeout`` for a keep-alive): an event is only
        taken from the queue when it is returned.
        """
        while True:
            if self._items:
                return self._items.popleft()
            if self._end is not None:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        """Leave the watch; idempotent."""
        self._finish("closed")
        self._on_close(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Envelope]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Envelope]:
        while (event := await self.next()) is not None:
            yield event

    def _offer(self, event: Envelope) -> bool:
        """Queue ``event``; False (and the stream ends) when the subscriber fell behind."""
        if self._end is not None:
            return False
        if len(self._items) >= self._limit:
            self._finish("overflow")
            return False
        self._items.append(event)
        self._wake.set()
        return True

    def _finish(self, reason: EndReason) -> None:
        if self._end is None:
            self._end = reason
            self._wake.set()


class ContextWatch:
    """The engine's :class:`~controlplane.application.engine.CommitWatcher` for waiting clients.

    Call :meth:`attach` with the engine's ``running`` before the first wait or subscription
    (the engine is built with this watch, so it cannot be a constructor argument).
    """

    def __init__(self, store: QueryStore, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._store = store
        self._queue_size = queue_size
        self._running: Callable[[str], bool] | None = None
        self._waiters: dict[str, set[asyncio.Future[bool]]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._closed = False

    def attach(self, running: Callable[[str], bool]) -> None:
        self._running = running

    # ------------------------------------------------------------------ fed by the engine

    def committed(self, events: Sequence[Envelope], ended_contexts: Iterable[str]) -> None:
        """Hand stored events to subscribers and wake the waiters of ended contexts.

        Runs inside the engine's commit task: constant work per event, no awaiting.
        """
        if not (self._waiters or self._subscribers):
            return
        for event in events:
            subscribers = self._subscribers.get(event.keptn_context)
            if subscribers:
                for subscription in [s for s in subscribers if not s._offer(event)]:
                    self._drop(subscription)
        for context in ended_contexts:
            for waiter in self._waiters.pop(context, ()):
                if not waiter.done():
                    waiter.set_result(True)
            for subscription in self._subscribers.pop(context, ()):
                subscription._finish("ended")

    def close(self) -> None:
        """End every wait (as not ended) and every stream (reason ``closed``): shutting down."""
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for waiter in futures:
                if not waiter.done():
                    waiter.set_result(False)
        subscribers, self._subscribers = self._subscribers, {}
        for subscriptions in subscribers.values():
            for subscription in subscriptions:
                subscription._finish("closed")

    # ------------------------------------------------------------------ used by clients

    async def wait_ended(self, keptn_context: str, within: float) -> bool:
        """True when the context is not running, or ends within ``within`` seconds.

        False when the time ran out or the watch closed first. (Not named ``timeout``: the
        caller gets an answer either way, not an exception.)
        """
        if not self._is_running(keptn_context):
            return True
        if self._closed or within <= 0:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(keptn_context, set()).add(waiter)
        try:
            async with asyncio.timeout(within):
                return await waiter
        except TimeoutError:
            return False
        finally:
            self._discard(self._waiters, keptn_context, waiter)

    def subscribe(self, keptn_context: str) -> Subscription:
        """Follow the events committed for the context from now on, until it ends.

        A context that is not running gets a stream that has already ended (reason
        ``ended``): the caller reads what is stored and is done.
        """
        subscription = Subscription(keptn_context, self._queue_size, self._drop)
        if self._closed:
            subscription._finish("closed")
        elif not self._is_running(keptn_context):
            subscription._finish("ended")
        else:
            self._subscribers.setdefault(keptn_context, set()).add(subscription)
        return subscription

    async def outcome(self, project: str, keptn_context: str) -> Outcome | None:
        """How the context ended (or stands), from its stage executions; None if unknown."""
        groups = await self._store.contexts(project, keptn_contexts=[keptn_context], name="")
        executions = next((group for group in groups if group), None)
        return None if executions is None else summarize(executions)

    @property
    def watched(self) -> int:
        """How many contexts have a waiter or a subscriber (for tests and metrics)."""
        return len(self._waiters.keys() | self._subscribers.keys())

    # ------------------------------------------------------------------ internals

    def _is_running(self, keptn_context: str) -> bool:
        if self._running is None:
            raise RuntimeError("ContextWatch.attach(engine.running) was not called")
        return self._running(keptn_context)

    def _drop(self, subscription: Subscription) -> None:
        self._discard(self._subscribers, subscription.keptn_context, subscription)

    @staticmethod
    def _discard(registry: dict[str, set[Any]], keptn_context: str, member: object) -> None:
        members = registry.get(keptn_context)
        if members is not None:
            members.discard(member)
            if not members:
                del registry[keptn_context]


def summarize(executions: Sequence[Execution]) -> Outcome:
    """The outcome of a context from its stage executions (oldest first).

    The last execution to end speaks for the context, as in Keptn's sequence-state view; a
    context with live executions reports the overall state only (``result`` etc. empty).
    """
    state = views.overall_state(executions, context_paused=False, blocked=set())
    if any(not execution.state.terminal for execution in executions):
        return Outcome(state, "", "", "", {})
    last = max(executions, key=lambda execution: execution.ended_at or 0.0)
    data = last.next_payload()
    # A task's answer may carry another scope; the outcome speaks for this stage.
    data.update(project=last.scope.project, stage=last.scope.stage, service=last.scope.service)
    return Outcome(state, last.result, last.status, last.message, data)
