"""Turn an HTTP request into the attributes and data of the CloudEvent a client sent.

Three ways in, as Keptn's clients use them: structured mode (``application/cloudevents+json``),
binary mode (attributes in ``ce-*`` headers, the data as the body) and a plain
``application/json`` body holding the whole event (Keptn's CLI and go-utils, with Keptn's
``contenttype`` attribute). The ``cloudevents`` package does the HTTP binding; this module adds
what the binding leaves out: a hard size limit, strict JSON (no ``NaN``, which PostgreSQL
would refuse later for a whole batch) and 400s that say what is wrong. Keptn's own rules
(required attributes, types, data fields) are the engine's, not checked here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, NoReturn

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from starlette.requests import Request

from controlplane.adapters.http.problems import PayloadTooLarge
from controlplane.application.admission import IncomingEvent
from controlplane.application.errors import InvalidEvent

_FORMAT = JSONFormat()
_JSON_CONTENT = re.compile(r"^(application|text)/([a-zA-Z0-9.-]+\+)?json(;.*)?$", re.IGNORECASE)
_BINARY_PREFIX = "ce-"


async def read_event(request: Request, max_bytes: int) -> IncomingEvent:
    """Read, size-check and parse the event; raises 400 or 413 as :class:`Rejected`."""
    body = await read_body(request, max_bytes)
    headers = dict(request.headers.items())
    binary = any(name.startswith(_BINARY_PREFIX) for name in headers)
    if binary:
        if _is_json(headers.get("content-type", "")) and body.strip():
            _strict_json(body, "the event data")
    elif not isinstance(_strict_json(body, "the event"), dict):
        raise InvalidEvent("the event must be a JSON object")
    try:
        event = from_http(HTTPMessage(headers, body), _FORMAT, _Captured)
    except (ValueError, TypeError, BaseCloudEventException) as exc:
        raise InvalidEvent(f"not a valid CloudEvent: {exc}") from None
    assert isinstance(event, _Captured)
    return IncomingEvent(attributes=event.plain_attributes(), data=_data(event.get_data()))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing anything over ``max_bytes`` whatever ``Content-Length`` claims."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidEvent(f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > max_bytes:
            _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> NoReturn:
    raise PayloadTooLarge(f"the event is larger than the limit of {max_bytes // 1024} KiB")


def _is_json(content_type: str) -> bool:
    return bool(_JSON_CONTENT.match(content_type.strip()))


def _strict_json(body: bytes, what: str) -> Any:
    if not body.strip():
        raise InvalidEvent(f"{what} is empty; expected JSON")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise InvalidEvent(f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise InvalidEvent(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent(f"{what} is nested too deeply") from None


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _data(data: dict[str, Any] | str | bytes | None) -> Any:
    if isinstance(data, bytes):
        raise InvalidEvent("binary data (data_base64) is not supported: Keptn events carry JSON")
    return data


class _Captured:
    """A CloudEvent exactly as sent: the binding's parse without the package's validation.

    The package would invent an ``id`` and refuse a missing ``source``; Keptn's ingest rules
    (which the engine applies) differ, so nothing is judged here.
    """

    def __init__(
        self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None = None
    ) -> None:
        self._attributes = attributes
        self._data = data

    def plain_attributes(self) -> dict[str, Any]:
        """Attributes as JSON values: the binding parses ``time``, we hand on its string form."""
        return {name: _plain(value) for name, value in self._attributes.items()}

    def get_attributes(self) -> dict[str, Any]:
        return self._attributes

    def get_data(self) -> dict[str, Any] | str | bytes | None:
        return self._data

    def get_id(self) -> str:
        return str(self._attributes.get("id", ""))

    def get_source(self) -> str:
        return str(self._attributes.get("source", ""))

    def get_type(self) -> str:
        return str(self._attributes.get("type", ""))

    def get_specversion(self) -> str:
        return str(self._attributes.get("specversion", ""))

    def get_datacontenttype(self) -> str | None:
        return self._optional("datacontenttype")

    def get_dataschema(self) -> str | None:
        return self._optional("dataschema")

    def get_subject(self) -> str | None:
        return self._optional("subject")

    def get_time(self) -> datetime | None:
        value = self._attributes.get("time")
        return value if isinstance(value, datetime) else None

    def get_extension(self, extension_name: str) -> Any:
        return self._attributes.get(extension_name)

    def _optional(self, name: str) -> str | None:
        value = self._attributes.get(name)
        return None if value is None else str(value)


def _plain(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
