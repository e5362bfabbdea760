"""A fake of the control plane API parts the task SDK talks to, as docs/integrations.md has them.

It serves, in memory and through ``httpx.ASGITransport`` (no sockets):

* the uniform registry: ``POST /uniform/registration`` (201 new, 200 known id, subscriptions
  of a known id kept), ``PUT .../{id}/ping`` (the integration, 404 once deleted), and the
  subscription CRUD below a registration;
* ``GET /api/controlPlane/v1/event/triggered/{eventType}`` over :attr:`open_events`, paged;
* ``POST /api/v1/event``, recorded in :attr:`events`; a ``.finished`` closes its task.

Tests change its state directly (``down``, ``fail_events``, :meth:`delete_subscription`...)
and watch it through the recorded lists.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasksdk import ControlPlaneApi, RetryPolicy

BASE_URL = "http://controlplane.test"
REGISTRATION = "/api/controlPlane/v1/uniform/registration"

FAST_REGISTRATION = RetryPolicy(attempts=10, first_delay=0.005, max_delay=0.02)
FAST_PUBLISH = RetryPolicy(attempts=4, first_delay=0.005, max_delay=0.02)


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


class FakeControlPlane:
    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.integrations: dict[str, dict[str, Any]] = {}
        self.registrations: list[tuple[int, dict[str, Any]]] = []
        self.pings: list[str] = []
        self.polls: list[tuple[str, dict[str, str]]] = []
        self.open_events: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.event_content_types: list[str] = []
        self.down = False
        self.unreachable_attempts = 0
        self.unreachable_registrations = 0
        self.fail_events: list[int] = []  # statuses to answer the next POST /api/v1/event with
        self.close_on_finished = True
        self.app = Starlette(
            routes=[
                Route(REGISTRATION, self.register, methods=["POST"]),
                Route(REGISTRATION + "/{id}/ping", self.ping, methods=["PUT"]),
                Route(REGISTRATION + "/{id}", self.delete_registration, methods=["DELETE"]),
                Route(
                    REGISTRATION + "/{id}/subscription",
                    self.add_subscription_route,
                    methods=["POST"],
                ),
                Route(
                    REGISTRATION + "/{id}/subscription/{sid}",
                    self.replace_subscription_route,
                    methods=["PUT"],
                ),
                Route(
                    "/api/controlPlane/v1/event/triggered/{type}", self.triggered, methods=["GET"]
                ),
                Route("/api/v1/event", self.post_event, methods=["POST"]),
            ]
        )

    # -- clients -------------------------------------------------------------------------

    def http_transport(self) -> httpx.AsyncBaseTransport:
        return _Switchable(self)

    def api(self, **options: Any) -> ControlPlaneApi:
        options.setdefault("registration_retry", FAST_REGISTRATION)
        options.setdefault("publish_retry", FAST_PUBLISH)
        return ControlPlaneApi(BASE_URL, http_transport=self.http_transport(), **options)

    # -- state helpers for tests ---------------------------------------------------------

    def only_integration(self) -> dict[str, Any]:
        assert len(self.integrations) == 1, list(self.integrations)
        return next(iter(self.integrations.values()))

    def add_subscription(self, integration_id: str, subscription: dict[str, Any]) -> str:
        stored = {**subscription, "id": uuid.uuid4().hex}
        stored["event"] = _full_type(stored["event"])
        stored.setdefault("filter", {"projects": [], "stages": [], "services": []})
        self.integrations[integration_id]["subscriptions"].append(stored)
        return str(stored["id"])

    def delete_subscription(self, integration_id: str, subscription_id: str) -> None:
        subscriptions = self.integrations[integration_id]["subscriptions"]
        subscriptions[:] = [s for s in subscriptions if s["id"] != subscription_id]

    def add_open(self, event: dict[str, Any]) -> None:
        self.open_events.append(event)

    def answers_to(self, triggered_id: str) -> list[str]:
        return [
            e["type"].rsplit(".", 1)[1] for e in self.events if e.get("triggeredid") == triggered_id
        ]

    # -- routes --------------------------------------------------------------------------

    def _refused(self, request: Request) -> JSONResponse | None:
        if self.token is not None and request.headers.get("x-token") != self.token:
            return problem(401, "missing or incorrect API token")
        return None

    async def register(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        body = await request.json()
        name = body.get("name")
        if not isinstance(name, str) or not name or any(c in name for c in " *>"):
            return problem(400, "name is required")
        for subscription in body.get("subscriptions", []):
            filters = subscription.get("filter") or {}
            if filters.get("services") and not filters.get("stages"):
                return problem(400, "a subscription filter with services needs stages")
        metadata = body.get("metadata") or {}
        namespace = (metadata.get("kubernetesmetadata") or {}).get("namespace", "")
        key = f"{name}-{namespace}-{metadata.get('hostname', '')}"
        integration_id = hashlib.sha1(key.encode()).hexdigest()
        self.registrations.append((200 if integration_id in self.integrations else 201, body))
        if integration_id in self.integrations:
            self.integrations[integration_id]["metadata"] = metadata
            return JSONResponse({"id": integration_id}, status_code=200)
        self.integrations[integration_id] = {
            "id": integration_id,
            "name": name,
            "metadata": metadata,
            "subscriptions": [],
            "expires": body.get("expires", True),
        }
        for subscription in body.get("subscriptions", []):
            self.add_subscription(integration_id, subscription)
        return JSONResponse({"id": integration_id}, status_code=201)

    async def ping(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        integration_id = request.path_params["id"]
        self.pings.append(integration_id)
        integration = self.integrations.get(integration_id)
        if integration is None:
            return problem(404, f"no integration with id {integration_id}")
        shown = json.loads(json.dumps(integration))
        for subscription in shown["subscriptions"]:
            if subscription.get("webhook"):
                subscription["webhook"].pop("secret", None)  # write-only
        return JSONResponse(shown)

    async def delete_registration(self, request: Request) -> JSONResponse:
        if self.integrations.pop(request.path_params["id"], None) is None:
            return problem(404, "unknown integration")
        return JSONResponse({})

    async def add_subscription_route(self, request: Request) -> JSONResponse:
        integration_id = request.path_params["id"]
        if integration_id not in self.integrations:
            return problem(404, "unknown integration")
        return JSONResponse(
            {"id": self.add_subscription(integration_id, await request.json())}, status_code=201
        )

    async def replace_subscription_route(self, request: Request) -> JSONResponse:
        integration = self.integrations.get(request.path_params["id"])
        if integration is None:
            return problem(404, "unknown integration")
        sid = request.path_params["sid"]
        for index, subscription in enumerate(integration["subscriptions"]):
            if subscription["id"] == sid:
                replaced = {**(await request.json()), "id": sid}
                replaced["event"] = _full_type(replaced["event"])
                integration["subscriptions"][index] = replaced
                return JSONResponse({})
        return problem(404, "unknown subscription")

    async def triggered(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        event_type = _full_type(request.path_params["type"])
        query = dict(request.query_params)
        self.polls.append((event_type, query))
        matching = [
            event
            for event in self.open_events
            if event["type"] == event_type
            and all(
                not query.get(field) or event["data"].get(field) == query[field]
                for field in ("project", "stage", "service")
            )
        ]
        size = int(query.get("pageSize", "20"))
        offset = int(query.get("nextPageKey", "0"))
        page = matching[offset : offset + size]
        following = offset + size if offset + size < len(matching) else 0
        return JSONResponse(
            {"events": page, "nextPageKey": str(following), "totalCount": len(matching)}
        )

    async def post_event(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        if self.fail_events:
            status = self.fail_events.pop(0)
            return problem(status, f"refused with {status} for the test")
        event = json.loads(await request.body())
        if not event.get("triggeredid"):
            return problem(400, "triggeredid is required")
        if event["triggeredid"] not in {e["id"] for e in self.open_events}:
            return problem(409, f"the task {event['triggeredid']} has already ended")
        self.events.append(event)
        self.event_content_types.append(request.headers.get("content-type", ""))
        if self.close_on_finished and event["type"].endswith(".finished"):
            self.open_events = [e for e in self.open_events if e["id"] != event["triggeredid"]]
        return JSONResponse({"keptnContext": event.get("shkeptncontext", "")})


class _Switchable(httpx.AsyncBaseTransport):
    """Sends requests to the fake, or fails to connect while ``down`` is set."""

    def __init__(self, fake: FakeControlPlane) -> None:
        self._fake = fake
        self._asgi = httpx.ASGITransport(app=fake.app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._fake.down:
            self._fake.unreachable_attempts += 1
            if request.method == "POST" and request.url.path.endswith("/uniform/registration"):
                self._fake.unreachable_registrations += 1
            raise httpx.ConnectError("connection refused (fake is down)", request=request)
        return await self._asgi.handle_async_request(request)


def _full_type(event_type: str) -> str:
    return event_type if event_type.startswith("sh.keptn.") else f"sh.keptn.event.{event_type}"


async def eventually(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds.

    Checks every 10 ms: the state watched changes in other tasks of the same loop.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {timeout}s: {inspect.getsource(condition).strip()}")
