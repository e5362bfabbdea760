"""The wire contract between the control plane and task services.

This module is the one place that knows Keptn's event-type strings and CloudEvent envelope
fields. Everything here is pure: parsing and building plain dicts, no I/O.

Keptn names task events ``sh.keptn.event.<task>.<phase>``. The control plane sends
``<task>.triggered``; a task service answers with ``<task>.started``, optionally
``<task>.status.changed``, and exactly one ``<task>.finished``. Every answer carries the
``.triggered`` event's id as ``triggeredid`` and its ``shkeptncontext``, and its data repeats
the event scope (``project``, ``stage``, ``service``). The ``.finished`` data must hold a
``status`` (did the service work) and a ``result`` (what it found); the control plane treats a
missing result as ``fail``.

Events travel as structured-mode CloudEvents in JSON, one per NATS message, on the subject
equal to their type.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasksdk import errors

PREFIX = "sh.keptn.event."
"""Common prefix of all Keptn event types."""

CLOUDEVENTS_SPEC_VERSION = "1.0"
"""The ``specversion`` of every event."""

KEPTN_SPEC_VERSION = "0.2.4"
"""The ``shkeptnspecversion`` extension the SDK puts on its answers."""

CONTENT_TYPE = "application/json"
"""The ``datacontenttype`` of every event."""

SCOPE_KEYS = ("project", "stage", "service")
"""Data keys that name the event scope; answers always copy them from the trigger."""

_NOT_IN_NAMES = frozenset(". *>\t\r\n")


class Phase(enum.StrEnum):
    """The last part of a task event type."""

    TRIGGERED = "triggered"
    """The control plane asks for the task to run."""
    STARTED = "started"
    """A service has taken the task."""
    STATUS_CHANGED = "status.changed"
    """Progress report; ignored by the control plane."""
    FINISHED = "finished"
    """The task is done; carries status and result."""
    INVALIDATED = "invalidated"
    """Marks an earlier evaluation as not comparable (``evaluation`` only)."""


class Status(enum.StrEnum):
    """Whether the service carried out the task (the ``status`` data field)."""

    SUCCEEDED = "succeeded"
    """The service did its work, whatever the result."""
    ERRORED = "errored"
    """A technical problem kept the service from doing its work."""
    UNKNOWN = "unknown"
    """The service cannot tell."""


class Result(enum.StrEnum):
    """What the task found (the ``result`` data field)."""

    PASS = "pass"
    """Everything is fine; the sequence continues."""
    WARNING = "warning"
    """Acceptable with reservations; the sequence continues."""
    FAIL = "fail"
    """Not acceptable; the sequence takes its failure path."""


def is_valid_name(name: str) -> bool:
    """Tell whether a task name can be used in an event type and as a NATS subject token.

    Args:
        name: A task name such as ``deployment`` or ``get-sli``.

    Returns:
        True if the name is non-empty and has no dots, whitespace or NATS wildcards.
    """
    return bool(name) and not _NOT_IN_NAMES.intersection(name)


def event_type(task: str, phase: Phase) -> str:
    """Build the type of a task event.

    Args:
        task: The task name, for example ``deployment``.
        phase: The phase of the task.

    Returns:
        The type, for example ``sh.keptn.event.deployment.finished``.

    Raises:
        ValueError: If the task name is not usable in an event type.
    """
    if not is_valid_name(task):
        raise ValueError(f"invalid task name {task!r}")
    return f"{PREFIX}{task}.{phase}"


def full_event_type(type_: str) -> str:
    """Expand the short form of an event type that Keptn's API accepts.

    Args:
        type_: A type such as ``checknumber.triggered`` or ``sh.keptn.event.test.finished``.

    Returns:
        The type with the ``sh.keptn.event.`` prefix; types under ``sh.keptn.`` unchanged.
    """
    return type_ if type_.startswith("sh.keptn.") else PREFIX + type_


def parse_event_type(type_: str) -> tuple[str, Phase]:
    """Split a task event type into its task name and phase.

    Args:
        type_: A full type such as ``sh.keptn.event.test.status.changed``.

    Returns:
        The task name and the phase.

    Raises:
        InvalidEvent: If the string is not a task event type.
    """
    rest = type_.removeprefix(PREFIX)
    task, _, phase = rest.partition(".")
    if rest != type_ and is_valid_name(task) and phase in set(Phase):
        return task, Phase(phase)
    raise errors.InvalidEvent(f"not a task event type: {type_!r}")


def format_time(moment: datetime) -> str:
    """Format a moment the way Keptn does: ``2006-01-02T15:04:05.000Z``.

    Args:
        moment: An aware datetime; a naive one is taken to be UTC.

    Returns:
        The UTC time with milliseconds and a literal ``Z``.
    """
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True, slots=True)
class TriggeredEvent:
    """A received ``sh.keptn.event.<task>.triggered`` CloudEvent.

    Attributes:
        id: The event id; answers carry it as ``triggeredid``.
        type: The full event type.
        task: The task name taken from the type.
        source: Who sent it, usually ``shipyard-controller``.
        shkeptncontext: The id of the sequence run, copied onto every answer.
        gitcommitid: The configuration commit the control plane used, if any.
        time: The event time as sent, if any.
        data: The event data as a read-only mapping.
    """

    id: str
    type: str
    task: str
    source: str
    shkeptncontext: str
    gitcommitid: str | None
    time: str | None
    data: Mapping[str, Any] = dataclasses.field(hash=False)

    @property
    def project(self) -> str:
        """The ``data.project`` scope field, or ``""``."""
        return _text(self.data.get("project"))

    @property
    def stage(self) -> str:
        """The ``data.stage`` scope field, or ``""``."""
        return _text(self.data.get("stage"))

    @property
    def service(self) -> str:
        """The ``data.service`` scope field, or ``""``."""
        return _text(self.data.get("service"))

    @property
    def labels(self) -> Mapping[str, Any] | None:
        """The ``data.labels`` mapping, if the event has one."""
        labels = self.data.get("labels")
        return labels if isinstance(labels, Mapping) else None

    @classmethod
    def from_json(cls, payload: bytes | str) -> TriggeredEvent:
        """Parse a structured-mode CloudEvent in JSON.

        Args:
            payload: The message body.

        Returns:
            The parsed event.

        Raises:
            InvalidEvent: If the payload is not JSON or not a task ``.triggered`` event.
        """
        return cls.from_mapping(decode(payload))

    @classmethod
    def from_mapping(cls, envelope: Mapping[str, Any]) -> TriggeredEvent:
        """Read a CloudEvent that has already been decoded into a mapping.

        Args:
            envelope: The CloudEvent attributes and ``data``.

        Returns:
            The parsed event.

        Raises:
            InvalidEvent: If a required attribute is missing or the type is not a task
                ``.triggered`` type.
        """
        type_ = _required(envelope, "type")
        task, phase = parse_event_type(type_)
        if phase is not Phase.TRIGGERED:
            raise errors.InvalidEvent(f"not a .triggered event: {type_!r}")
        data = envelope.get("data")
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise errors.InvalidEvent("the CloudEvent data is not a JSON object")
        for key in SCOPE_KEYS:
            if not isinstance(data.get(key, ""), str):
                raise errors.InvalidEvent(f"data.{key} is not a string")
        return cls(
            id=_required(envelope, "id"),
            type=type_,
            task=task,
            source=_optional(envelope, "source") or "",
            shkeptncontext=_required(envelope, "shkeptncontext"),
            gitcommitid=_optional(envelope, "gitcommitid"),
            time=_optional(envelope, "time"),
            data=types.MappingProxyType(dict(data)),
        )


def triggered_event(
    task: str,
    *,
    project: str,
    stage: str,
    service: str,
    data: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    event_id: str | None = None,
    shkeptncontext: str | None = None,
    gitcommitid: str | None = None,
    source: str = "shipyard-controller",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build a ``<task>.triggered`` CloudEvent like the one the control plane sends.

    Args:
        task: The task name.
        project: Scope: the project.
        stage: Scope: the stage.
        service: Scope: the service.
        data: More data fields, typically the task's properties under the task name.
        labels: Optional ``data.labels``.
        event_id: The event id; a new UUID if not given.
        shkeptncontext: The sequence run id; a new UUID if not given.
        gitcommitid: Optional configuration commit.
        source: The sender.
        now: The event time; the current time if not given.

    Returns:
        The CloudEvent as a JSON-ready dict.
    """
    body: dict[str, Any] = {**(data or {}), "project": project, "stage": stage, "service": service}
    if labels is not None:
        body["labels"] = dict(labels)
    event: dict[str, Any] = {
        "specversion": CLOUDEVENTS_SPEC_VERSION,
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type(task, Phase.TRIGGERED),
        "time": format_time(now or datetime.now(UTC)),
        "datacontenttype": CONTENT_TYPE,
        "shkeptncontext": shkeptncontext or str(uuid.uuid4()),
        "shkeptnspecversion": KEPTN_SPEC_VERSION,
        "data": body,
    }
    if gitcommitid:
        event["gitcommitid"] = gitcommitid
    return event


def started_event(
    triggered: TriggeredEvent, *, source: str, now: datetime | None = None
) -> dict[str, Any]:
    """Build the ``.started`` answer to a triggered event.

    Args:
        triggered: The event being answered.
        source: The answering service's name.
        now: The event time; the current time if not given.

    Returns:
        The CloudEvent as a JSON-ready dict.
    """
    return _answer(triggered, Phase.STARTED, source=source, data={}, now=now)


def status_changed_event(
    triggered: TriggeredEvent,
    *,
    source: str,
    message: str,
    data: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build a ``.status.changed`` progress report for a triggered event.

    Args:
        triggered: The event being answered.
        source: The answering service's name.
        message: Human-readable progress text.
        data: Extra data fields.
        now: The event time; the current time if not given.

    Returns:
        The CloudEvent as a JSON-ready dict.
    """
    body = {**(data or {}), "message": message}
    return _answer(triggered, Phase.STATUS_CHANGED, source=source, data=body, now=now)


def finished_event(
    triggered: TriggeredEvent,
    *,
    source: str,
    data: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the ``.finished`` answer to a triggered event.

    As in Keptn's go-utils, an empty or missing ``status`` becomes ``succeeded`` and an empty
    or missing ``result`` becomes ``pass``.

    Args:
        triggered: The event being answered.
        source: The answering service's name.
        data: The task's output and optionally ``status``, ``result`` and ``message``.
        now: The event time; the current time if not given.

    Returns:
        The CloudEvent as a JSON-ready dict.

    Raises:
        InvalidAnswer: If ``status`` or ``result`` is not one of the Keptn values.
    """
    body = dict(data or {})
    body["status"] = _member(Status, body.get("status") or Status.SUCCEEDED, "status")
    body["result"] = _member(Result, body.get("result") or Result.PASS, "result")
    return _answer(triggered, Phase.FINISHED, source=source, data=body, now=now)


def encode(event: Mapping[str, Any]) -> bytes:
    """Serialise a CloudEvent dict for the wire.

    Args:
        event: The CloudEvent.

    Returns:
        Compact UTF-8 JSON.

    Raises:
        TypeError: If the event holds a value JSON cannot represent (any mapping is fine).
        ValueError: If the event holds a circular reference or a non-finite float.
    """
    return json.dumps(
        event, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain
    ).encode()


def decode(payload: bytes | str) -> dict[str, Any]:
    """Parse a CloudEvent from the wire without checking its type.

    Args:
        payload: UTF-8 JSON.

    Returns:
        The CloudEvent as a dict.

    Raises:
        InvalidEvent: If the payload is not a JSON object.
    """
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.InvalidEvent(f"not a JSON CloudEvent: {exc}") from exc
    if not isinstance(event, dict):
        raise errors.InvalidEvent("not a JSON CloudEvent: the payload is not an object")
    return event


def _answer(
    triggered: TriggeredEvent,
    phase: Phase,
    *,
    source: str,
    data: Mapping[str, Any],
    now: datetime | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if triggered.labels is not None:
        body["labels"] = dict(triggered.labels)
    body.update(data)
    # The scope always comes from the trigger: an answer for another scope would be rejected.
    body.update(project=triggered.project, stage=triggered.stage, service=triggered.service)
    event: dict[str, Any] = {
        "specversion": CLOUDEVENTS_SPEC_VERSION,
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event_type(triggered.task, phase),
        "time": format_time(now or datetime.now(UTC)),
        "datacontenttype": CONTENT_TYPE,
        "shkeptncontext": triggered.shkeptncontext,
        "triggeredid": triggered.id,
        "shkeptnspecversion": KEPTN_SPEC_VERSION,
        "data": body,
    }
    if triggered.gitcommitid:
        event["gitcommitid"] = triggered.gitcommitid
    return event


def _member(kind: type[enum.StrEnum], value: object, field: str) -> str:
    if isinstance(value, str) and value in set(kind):
        return str(kind(value))
    allowed = ", ".join(kind)
    raise errors.InvalidAnswer(f"invalid {field} {value!r}; expected one of {allowed}")


def _plain(value: object) -> dict[str, Any]:
    # Read-only mappings (the data of a TriggeredEvent) are not dicts, but are JSON objects.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _required(envelope: Mapping[str, Any], name: str) -> str:
    value = envelope.get(name)
    if not isinstance(value, str) or not value:
        raise errors.InvalidEvent(f"the CloudEvent has no {name!r} attribute")
    return value


def _optional(envelope: Mapping[str, Any], name: str) -> str | None:
    value = envelope.get(name)
    return value if isinstance(value, str) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
