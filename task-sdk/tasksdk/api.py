"""A small client of the control plane's HTTP API, as task services use it.

Task services that are not on NATS, and services that register as integrations, talk to
four endpoints (see ``docs/integrations.md``):

* ``POST /api/controlPlane/v1/uniform/registration``: register (201 new, 200 known id);
* ``PUT /api/controlPlane/v1/uniform/registration/{id}/ping``: heartbeat, answers the
  integration with its current subscriptions (404 once it has expired);
* ``GET /api/controlPlane/v1/event/triggered/{eventType}``: the open ``.triggered`` events;
* ``POST /api/v1/event``: send an answer.

Why the retries live here: the API is the one remote party, and what is worth retrying
(network errors, 5xx, 408 and 429) is a property of that protocol, not of the callers.
Everything the server refuses for good (another 4xx) is raised at once with its message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from tasksdk import errors

REGISTRATION_PATH = "/api/controlPlane/v1/uniform/registration"
"""Where integrations register; ``{id}/ping`` below it is the heartbeat."""

TRIGGERED_PATH = "/api/controlPlane/v1/event/triggered/"
"""Followed by an event type: the open ``.triggered`` events of that type."""

EVENT_PATH = "/api/v1/event"
"""Where answers are sent."""

TOKEN_HEADER = "x-token"
"""The header that carries the API token."""

CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
"""The content type of a structured-mode CloudEvent."""

MAX_PAGE_SIZE = 50
"""The largest ``pageSize`` the open-events listing accepts."""

_RETRIED_STATUSES = frozenset({408, 429})

T = TypeVar("T")

logger = logging.getLogger("tasksdk.api")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is repeated while the API is unreachable.

    Delays double from ``first_delay`` up to ``max_delay``, each with ±20 % jitter so that
    many replicas restarting together do not hit the API in step.

    Attributes:
        attempts: How many times the request is tried in all (1 = no retry).
        first_delay: Seconds before the second attempt.
        max_delay: The longest wait between two attempts.
    """

    attempts: int
    first_delay: float
    max_delay: float

    def delays(self) -> Iterator[float]:
        """Yield the waits between attempts: one fewer than ``attempts``.

        Yields:
            Seconds to wait before the next attempt.
        """
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay) * random.uniform(0.8, 1.2)
            delay *= 2


REGISTRATION_RETRY = RetryPolicy(attempts=10, first_delay=0.5, max_delay=10.0)
"""Registration: ten tries over about a minute, as Keptn's distributor did."""

PUBLISH_RETRY = RetryPolicy(attempts=5, first_delay=0.5, max_delay=4.0)
"""Answers: five tries over about eight seconds."""


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrationAnswer:
    """What the control plane answered to a registration.

    Attributes:
        id: The integration id (derived from name, namespace and hostname, so stable).
        created: True for a new registration (201); False when the id was known (200), in
            which case the server kept its stored subscriptions and ignored the sent ones.
    """

    id: str
    created: bool


class ControlPlaneApi:
    """The control plane API endpoints a task service uses, over one ``httpx.AsyncClient``.

    Use it as an async context manager, or call :meth:`aclose` when done. The TaskApp entry
    points accept either an API URL or an instance of this class; pass an instance to set
    timeouts, retry policies or an httpx transport (TLS settings, proxies, tests).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        registration_retry: RetryPolicy = REGISTRATION_RETRY,
        publish_retry: RetryPolicy = PUBLISH_RETRY,
    ) -> None:
        """Create the client.

        Args:
            url: The API base URL, for example ``http://127.0.0.1:8080``. A trailing
                ``/api`` (Keptn's ``KEPTN_ENDPOINT`` form) is dropped, since every path
                below starts with it.
            token: The API token, sent as ``x-token``; None when the server has none.
            timeout: Seconds each request may take.
            http_transport: An httpx transport to send the requests through.
            registration_retry: How registration is retried while the API is unreachable.
            publish_retry: How sending an event is retried while the API is unreachable.
        """
        headers = {TOKEN_HEADER: token} if token else {}
        self._url = url.rstrip("/").removesuffix("/api")
        self._client = httpx.AsyncClient(
            base_url=self._url, headers=headers, timeout=timeout, transport=http_transport
        )
        self._registration_retry = registration_retry
        self._publish_retry = publish_retry

    @property
    def url(self) -> str:
        """The API base URL."""
        return self._url

    async def register(self, body: Mapping[str, Any]) -> RegistrationAnswer:
        """Register an integration, retrying while the API is unreachable.

        Args:
            body: The registration (``name``, ``metadata``, ``subscriptions``, ``expires``).

        Returns:
            The integration id and whether it is a new registration.

        Raises:
            RegistrationError: If the server refused the registration (a 4xx answer).
            TransportError: If the API stayed unreachable for every attempt.
        """

        async def attempt() -> RegistrationAnswer:
            response = await self._request("POST", REGISTRATION_PATH, json=dict(body))
            answer = _json_object(response)
            integration_id = answer.get("id")
            if not isinstance(integration_id, str) or not integration_id:
                raise errors.TransportError(f"the registration answer has no id: {answer}")
            return RegistrationAnswer(id=integration_id, created=response.status_code == 201)

        try:
            return await self._retrying(self._registration_retry, "register", attempt)
        except errors.ApiError as exc:
            if exc.status >= 500:
                raise
            raise errors.RegistrationError(
                f"the control plane refused the registration: {exc.message}"
            ) from exc

    async def ping(self, integration_id: str) -> dict[str, Any]:
        """Send one heartbeat.

        Args:
            integration_id: The id :meth:`register` returned.

        Returns:
            The integration as the server stores it, with its current ``subscriptions``.

        Raises:
            ApiError: With status 404 if the registration is unknown (expired or deleted);
                with another status if the server refused.
            TransportError: If the API cannot be reached.
        """
        path = f"{REGISTRATION_PATH}/{quote(integration_id, safe='')}/ping"
        return _json_object(await self._request("PUT", path))

    async def open_triggered(
        self,
        event_type: str,
        *,
        scope: Mapping[str, str] | None = None,
        page_size: int = MAX_PAGE_SIZE,
        max_pages: int = 100,
    ) -> list[dict[str, Any]]:
        """List the open ``.triggered`` events of a type, following the pages.

        Args:
            event_type: A full ``.triggered`` event type.
            scope: Query filters among ``project``, ``stage`` and ``service``.
            page_size: Events per page, at most 50.
            max_pages: A bound on the pages read in one call.

        Returns:
            The events, oldest first, as decoded CloudEvents.

        Raises:
            ApiError: If the server refused (404 for an unknown project).
            TransportError: If the API cannot be reached.
        """
        path = TRIGGERED_PATH + quote(event_type, safe="")
        params = {**(scope or {}), "pageSize": str(min(page_size, MAX_PAGE_SIZE))}
        events: list[dict[str, Any]] = []
        for _ in range(max_pages):
            page = _json_object(await self._request("GET", path, params=params))
            listed = page.get("events")
            if not isinstance(listed, list) or not listed:
                break
            events.extend(event for event in listed if isinstance(event, dict))
            next_key = str(page.get("nextPageKey") or "0")
            if next_key == "0":
                break
            params["nextPageKey"] = next_key
        return events

    async def send_event(self, payload: bytes) -> None:
        """Send one structured-mode CloudEvent, retrying while the API is unreachable.

        Retrying is safe: the server treats a repeat of the same ``source`` and ``id`` as the
        same event.

        Args:
            payload: The CloudEvent as JSON bytes.

        Raises:
            ApiError: If the server refused the event (a 4xx answer, with its message), or
                kept failing with 5xx.
            TransportError: If the API stayed unreachable for every attempt.
        """
        headers = {"content-type": CLOUDEVENT_CONTENT_TYPE}

        async def attempt() -> None:
            await self._request("POST", EVENT_PATH, content=payload, headers=headers)

        await self._retrying(self._publish_retry, "send an event", attempt)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def __aenter__(self) -> ControlPlaneApi:
        """Enter the block.

        Returns:
            The client.
        """
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the HTTP connections.

        Args:
            exc_type: The exception type, if the block raised.
            exc: The exception, if the block raised.
            traceback: The traceback, if the block raised.
        """
        await self.aclose()

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **options)
        except httpx.HTTPError as exc:
            raise errors.TransportError(
                f"cannot reach the control plane API at {self._url}: {_describe(exc)}"
            ) from exc
        if response.is_error:
            raise errors.ApiError(
                f"{method} {path}: {response.status_code} {_server_message(response)}",
                status=response.status_code,
            )
        return response

    async def _retrying(
        self, policy: RetryPolicy, what: str, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        delays = policy.delays()
        while True:
            try:
                return await attempt()
            except errors.TransportError as exc:
                if not _worth_retrying(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
                logger.warning("api.retrying %s in %.1fs: %s", what, delay, exc)
                await asyncio.sleep(delay)


def _worth_retrying(exc: errors.TransportError) -> bool:
    if not isinstance(exc, errors.ApiError):
        return True  # the API could not be reached at all
    return exc.status >= 500 or exc.status in _RETRIED_STATUSES


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise errors.TransportError(f"the API answered something that is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise errors.TransportError("the API answered JSON that is not an object")
    return value


def _server_message(response: httpx.Response) -> str:
    """The ``message`` of an error answer, else its text (the API's errors are JSON)."""
    try:
        value = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return str(value)[:500]


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
