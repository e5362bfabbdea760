"""Keptn's integration registry ("uniform"): registration, ping and subscription CRUD.

Bodies are read as plain JSON and checked by the domain, which names every wrong field by
its path (``subscriptions[0].webhook.secret: ...``); a body that is not JSON at all is a 400
here. The shapes are in docs/integrations.md.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from controlplane.adapters.http import schemas
from controlplane.adapters.http.problems import PayloadTooLarge
from controlplane.adapters.http.services import Services
from controlplane.application.errors import Rejected
from controlplane.application.registry import Registry, integration_json

_PREFIX = "/api/controlPlane/v1/uniform/registration"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
}
_MAX_BODY = 65536


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise PayloadTooLarge(f"the body is larger than {_MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(f"the body is not JSON: {exc}") from exc


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["integrations"])
    registry: Registry = services.registry

    @api.post(
        _PREFIX,
        status_code=status.HTTP_201_CREATED,
        response_model=schemas.IdResponse,
        responses={**_PROBLEMS, 200: {"model": schemas.IdResponse}},
    )
    async def register(request: Request) -> JSONResponse:
        """Register a task service: 201 if new, 200 if known (its subscriptions are kept)."""
        integration_id, created = await registry.register(await _json_body(request))
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return JSONResponse({"id": integration_id}, status_code=code)

    @api.get(_PREFIX, response_model=list[dict[str, Any]])
    async def list_integrations(
        id: str = "", name: str = "", project: str = "", stage: str = "", service: str = ""
    ) -> list[dict[str, Any]]:
        """Live integrations; project/stage/service keep those with a subscription for it."""
        found = registry.search(id=id, name=name, project=project, stage=stage, service=service)
        return [integration_json(integration) for integration in found]

    @api.put(f"{_PREFIX}/{{integration_id}}/ping", responses=_PROBLEMS)
    async def ping(integration_id: str) -> dict[str, Any]:
        """Say the service is alive; answers with its current subscriptions."""
        return integration_json(await registry.ping(integration_id))

    @api.delete(f"{_PREFIX}/{{integration_id}}", response_model=schemas.Empty, responses=_PROBLEMS)
    async def unregister(integration_id: str) -> schemas.Empty:
        """Remove an integration and its subscriptions."""
        await registry.unregister(integration_id)
        return schemas.Empty()

    @api.get(f"{_PREFIX}/{{integration_id}}/subscription", responses=_PROBLEMS)
    async def list_subscriptions(integration_id: str) -> list[dict[str, Any]]:
        """The integration's subscriptions (webhook secrets are never returned)."""
        return [s.to_json() for s in registry.get(integration_id).subscriptions]

    @api.post(
        f"{_PREFIX}/{{integration_id}}/subscription",
        status_code=status.HTTP_201_CREATED,
        response_model=schemas.IdResponse,
        responses=_PROBLEMS,
    )
    async def add_subscription(integration_id: str, request: Request) -> schemas.IdResponse:
        """Add a subscription; SDK services follow it within one ping."""
        subscription_id = await registry.add_subscription(integration_id, await _json_body(request))
        return schemas.IdResponse(id=subscription_id)

    @api.get(f"{_PREFIX}/{{integration_id}}/subscription/{{subscription_id}}", responses=_PROBLEMS)
    async def get_subscription(integration_id: str, subscription_id: str) -> dict[str, Any]:
        """One subscription."""
        return registry.subscription(integration_id, subscription_id).to_json()

    @api.put(
        f"{_PREFIX}/{{integration_id}}/subscription/{{subscription_id}}",
        response_model=schemas.Empty,
        responses=_PROBLEMS,
    )
    async def replace_subscription(
        integration_id: str, subscription_id: str, request: Request
    ) -> schemas.Empty:
        """Replace a subscription's event, filter and webhook."""
        await registry.replace_subscription(
            integration_id, subscription_id, await _json_body(request)
        )
        return schemas.Empty()

    @api.delete(
        f"{_PREFIX}/{{integration_id}}/subscription/{{subscription_id}}",
        response_model=schemas.Empty,
        responses=_PROBLEMS,
    )
    async def delete_subscription(integration_id: str, subscription_id: str) -> schemas.Empty:
        """Remove a subscription; pending webhook deliveries for it are dropped."""
        await registry.delete_subscription(integration_id, subscription_id)
        return schemas.Empty()

    return api
