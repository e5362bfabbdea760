"""What a handler gets: the triggered event, its scope, a logger, and a way to report back."""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from tasksdk import contract, errors

Publish = Callable[[str, bytes], Awaitable[None]]
"""Sends one encoded event on a subject; the shape of ``Transport.publish``."""

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class ScopedLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that adds the task's scope to every record.

    The scope fields (``task``, ``keptn_context``, ``triggered_id``, ``project``, ``stage``,
    ``service``) become attributes of each ``LogRecord``, ready for a structured formatter.
    Fields passed with ``extra=`` are kept; the scope wins on a name clash.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the scope into the record's ``extra`` fields.

        Args:
            msg: The log message.
            kwargs: The keyword arguments of the logging call.

        Returns:
            The message and the keyword arguments with the merged ``extra``.
        """
        kwargs["extra"] = {**(kwargs.get("extra") or {}), **(self.extra or {})}
        return msg, kwargs


class TaskContext:
    """One run of a task handler: the triggered event, its scope and the answer channel.

    The SDK builds one context per received ``.triggered`` event and passes it to the handler.
    It is also the handle for finishing later when the task is registered with
    ``auto_finish=False``.
    """

    def __init__(self, event: contract.TriggeredEvent, *, source: str, publish: Publish) -> None:
        """Create the context; the SDK does this for each triggered event.

        Args:
            event: The received ``.triggered`` event.
            source: The service name put on answers as the CloudEvent ``source``.
            publish: Sends an encoded event on a subject.
        """
        self._event = event
        self._source = source
        self._publish = publish
        self._finished = False
        scope = {
            "task": event.task,
            "keptn_context": event.shkeptncontext,
            "triggered_id": event.id,
            "project": event.project,
            "stage": event.stage,
            "service": event.service,
        }
        self._logger = ScopedLogger(logging.getLogger(f"tasksdk.tasks.{event.task}"), scope)

    @property
    def event(self) -> contract.TriggeredEvent:
        """The ``.triggered`` event this run answers."""
        return self._event

    @property
    def task(self) -> str:
        """The task name, for example ``deployment``."""
        return self._event.task

    @property
    def data(self) -> Mapping[str, Any]:
        """The whole data of the triggered event (read-only)."""
        return self._event.data

    @property
    def properties(self) -> Mapping[str, Any]:
        """The task's own payload: ``data[<task>]`` if it is an object, else empty.

        The control plane puts the task's shipyard properties and the output of earlier
        tasks with the same name there.
        """
        value = self._event.data.get(self._event.task)
        return value if isinstance(value, Mapping) else _EMPTY

    @property
    def project(self) -> str:
        """The project of the event scope."""
        return self._event.project

    @property
    def stage(self) -> str:
        """The stage of the event scope."""
        return self._event.stage

    @property
    def service(self) -> str:
        """The service of the event scope."""
        return self._event.service

    @property
    def keptn_context(self) -> str:
        """The id of the sequence run (``shkeptncontext``)."""
        return self._event.shkeptncontext

    @property
    def logger(self) -> ScopedLogger:
        """A logger (``tasksdk.tasks.<task>``) whose records carry the task's scope."""
        return self._logger

    @property
    def finished(self) -> bool:
        """Whether the ``.finished`` event has been sent."""
        return self._finished

    async def progress(self, message: str, **data: Any) -> None:
        """Send a ``<task>.status.changed`` progress report.

        The control plane stores it but does not act on it.

        Args:
            message: Human-readable progress text.
            **data: Extra data fields.

        Raises:
            AlreadyFinished: If the task has already finished.
        """
        if self._finished:
            raise errors.AlreadyFinished("cannot report progress: the task has finished")
        await self._send(
            contract.status_changed_event(
                self._event, source=self._source, message=message, data=data
            )
        )

    async def finish(
        self,
        data: Mapping[str, Any] | None = None,
        /,
        *,
        status: contract.Status | str | None = None,
        result: contract.Result | str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> None:
        """Send the task's ``<task>.finished`` event.

        Handlers registered with ``auto_finish=False`` call this, possibly long after the
        handler returned. Others may call it to finish early; the SDK then sends nothing more.

        Args:
            data: Data fields as a mapping (handy for names like ``get-sli``).
            status: ``succeeded`` (default), ``errored`` or ``unknown``.
            result: ``pass`` (default), ``warning`` or ``fail``.
            message: Human-readable text.
            **fields: More data fields; they override ``data``.

        Raises:
            AlreadyFinished: If the task has already finished.
            InvalidAnswer: If ``status`` or ``result`` is not a Keptn value.
            TypeError: If the data cannot be represented as JSON.
        """
        if self._finished:
            raise errors.AlreadyFinished()
        body = {**(data or {}), **fields}
        explicit = {"status": status, "result": result, "message": message}
        body.update({key: value for key, value in explicit.items() if value is not None})
        event = contract.finished_event(self._event, source=self._source, data=body)
        payload = contract.encode(event)
        self._finished = True
        await self._publish(event["type"], payload)

    async def _send(self, event: Mapping[str, Any]) -> None:
        await self._publish(event["type"], contract.encode(event))
