"""``GET /health``: 200 only when the engine can take work, so probes and the CLI can wait on it."""

from __future__ import annotations

from fastapi import APIRouter

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import Services
from controlplane.application.errors import Unavailable


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["health"])

    @api.get("/health", response_model=schemas.Health, responses={503: {"model": schemas.Problem}})
    async def health() -> schemas.Health:
        """Ready: migrations applied, definitions loaded, the JetStream consumer attached."""
        if not services.engine.ready:
            raise Unavailable("the control plane is not ready")
        return schemas.Health()

    return api
