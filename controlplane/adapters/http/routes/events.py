"""Event intake (Keptn's api-service ``POST /v1/event``) and open ``.triggered`` events.

Why the handler reads the raw request: an event arrives in three encodings and must be
size-checked before it is parsed, so :mod:`..ingress` owns the body, not FastAPI's model
binding.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from controlplane.adapters.http import ingress, schemas
from controlplane.adapters.http.services import Services
from controlplane.application.errors import UnknownProject

_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A CloudEvent: structured, binary (ce-* headers) or plain JSON.",
        "content": {
            "application/cloudevents+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["events"])

    @api.post(
        "/api/v1/event",
        response_model=schemas.KeptnContextResponse,
        responses={400: {"model": schemas.Problem}, 413: {"model": schemas.Problem}},
        openapi_extra=_EVENT_BODY,
    )
    async def post_event(request: Request) -> schemas.KeptnContextResponse:
        """Accept a sequence trigger or a task answer; 200 means it is durably stored."""
        raw = await ingress.read_event(request, services.max_event_bytes)
        context = await services.engine.ingest(raw)
        return schemas.KeptnContextResponse(keptnContext=context)

    @api.get(
        "/api/controlPlane/v1/event/triggered/{eventType}",
        response_model=schemas.TriggeredEvents,
        responses={404: {"model": schemas.Problem}},
    )
    async def triggered_events(
        event_type: Annotated[str, Path(alias="eventType")],
        project: str = "",
        stage: str = "",
        service: str = "",
        event_id: Annotated[str, Query(alias="eventID")] = "",
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=50)] = 20,
        next_page_key: Annotated[int, Query(alias="nextPageKey", ge=0)] = 0,
    ) -> schemas.TriggeredEvents:
        """Open ``.triggered`` events (short types such as ``approval.triggered`` work too)."""
        if project and await services.definitions.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")
        found = await services.queries.open_triggered(
            event_type,
            project=project,
            stage=stage,
            service=service,
            event_id=event_id,
            page_size=page_size,
            offset=next_page_key,
        )
        return schemas.TriggeredEvents.model_validate(found)

    return api
