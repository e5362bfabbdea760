"""What the HTTP API lets in, and how it stamps what it accepts (Keptn reference 2.6).

Keptn's api-service accepted sequence ``.triggered`` events and task ``.started``,
``.finished`` and ``.invalidated`` answers, plus a few log and problem types; it refused
client-sent task ``.triggered`` and sequence ``.finished`` events. We keep those rules and
two deliberate differences: the client's ``id`` is kept (so a retry is recognised as the same
event), and ``time`` is the time we received the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.application.envelope import KNOWN_ATTRIBUTES, Envelope, format_time
from controlplane.application.errors import InvalidEvent
from controlplane.domain import eventtypes
from controlplane.domain.eventtypes import Phase, SequenceEventType, TaskEventType

DEFAULT_SOURCE = "https://github.com/keptn/keptn/api"
_PASS_THROUGH = {eventtypes.LOG_ERROR, eventtypes.PROBLEM}
_ALLOWED_TASK_PHASES = {Phase.STARTED, Phase.STATUS_CHANGED, Phase.FINISHED, Phase.INVALIDATED}


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A CloudEvent as a client sent it: attributes (without ``data``) and the data."""

    attributes: Mapping[str, Any]
    data: Any = None


def admit(raw: IncomingEvent, *, now: float, new_id: Callable[[], str]) -> Envelope:
    """Validate a client's event and stamp it; raises :class:`InvalidEvent` naming the problem."""
    attributes = raw.attributes
    event_type = _required_string(attributes, "type")
    specversion = attributes.get("specversion", "1.0")
    if specversion != "1.0":
        raise InvalidEvent(f"specversion must be '1.0', got {specversion!r}")
    data = raw.data if raw.data is not None else {}
    if not isinstance(data, Mapping):
        raise InvalidEvent("data must be a JSON object")
    full_type = eventtypes.normalize(event_type)
    if full_type not in _PASS_THROUGH:
        _check_keptn_rules(full_type, attributes, data)
    event_id = _optional_string(attributes, "id") or new_id()
    source = _optional_string(attributes, "source") or DEFAULT_SOURCE
    extensions = {
        key: value
        for key, value in attributes.items()
        if key not in KNOWN_ATTRIBUTES and key != "data"
    }
    return Envelope(
        id=event_id,
        source=source,
        type=full_type,
        time=format_time(now),
        data=dict(data),
        keptn_context=_context_for(full_type, _optional_string(attributes, "shkeptncontext")),
        triggered_id=_optional_string(attributes, "triggeredid"),
        gitcommitid=_optional_string(attributes, "gitcommitid"),
        keptn_spec_version=_optional_string(attributes, "shkeptnspecversion") or "0.2.4",
        extensions=extensions,
    )


def _check_keptn_rules(
    full_type: str, attributes: Mapping[str, Any], data: Mapping[str, Any]
) -> None:
    try:
        parsed = eventtypes.parse(full_type)
    except eventtypes.EventTypeError as exc:
        raise InvalidEvent(f"unknown event type: {exc}") from None
    if isinstance(parsed, SequenceEventType):
        if parsed.phase != Phase.TRIGGERED:
            raise InvalidEvent(
                f"{full_type}: only the control plane sends a sequence .finished event;"
                " clients send <stage>.<sequence>.triggered"
            )
        _require_scope(data)
        if data["stage"] != parsed.stage:
            raise InvalidEvent(
                f"stage name in event data ({data['stage']!r}) and in event type"
                f" ({parsed.stage!r}) do not match"
            )
        return
    assert isinstance(parsed, TaskEventType)
    if parsed.phase not in _ALLOWED_TASK_PHASES:
        raise InvalidEvent(
            f"{full_type}: a client cannot send a task .triggered event; the control plane"
            " triggers tasks from sequences (send <stage>.<sequence>.triggered instead)"
        )
    if parsed.phase == Phase.INVALIDATED:
        return
    _require_scope(data)
    if not _optional_string(attributes, "triggeredid"):
        raise InvalidEvent(
            f"{full_type} needs the attribute 'triggeredid' (the id of the"
            " .triggered event it answers)"
        )
    if parsed.phase == Phase.FINISHED:
        for key in ("status", "result"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise InvalidEvent(f"{full_type} needs a non-empty data.{key}")


def _require_scope(data: Mapping[str, Any]) -> None:
    for key in ("project", "stage", "service"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"data.{key} is required and must be a non-empty string")


def _required_string(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"the CloudEvent attribute {name!r} is required")
    return value


def _optional_string(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"the CloudEvent attribute {name!r} must be a string")
    return value


def _context_for(full_type: str, value: str) -> str:
    """An answer without a context gets its task's context from the engine, not a new one."""
    if not value and full_type.startswith(eventtypes.PREFIX):
        try:
            parsed = eventtypes.parse(full_type)
        except eventtypes.EventTypeError:
            parsed = None
        if isinstance(parsed, TaskEventType):
            return ""
    return keptn_context(value)


def keptn_context(value: str) -> str:
    """Keptn's mapping of a client's ``shkeptncontext`` to a UUID.

    A UUID is kept; any other string becomes the UUID whose 16 bytes are the string's first
    16 bytes (right-padded with spaces) with the version-4 bits applied, as Go's
    ``uuid.NewRandomFromReader`` produced; nothing yields a fresh random UUID.
    """
    if not value:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    raw = bytearray(value.encode()[:16].ljust(16, b" "))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))
