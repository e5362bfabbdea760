"""Keptn's mongodb-datastore read API over our event store: the trace of every event.

Why Keptn's paths and parameters: the Keptn bridge, CLI and SDK-based services query these
exact URLs; the filter grammar itself is parsed in :mod:`controlplane.application.queries`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import Services
from controlplane.application.ports import EventFilter

_PREFIX = "/api/mongodb-datastore"


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["datastore"])

    @api.get(
        _PREFIX + "/event",
        response_model=schemas.EventPage,
        responses={400: {"model": schemas.Problem}},
    )
    async def events(
        keptn_context: Annotated[str, Query(alias="keptnContext")] = "",
        type: str = "",
        project: str = "",
        stage: str = "",
        service: str = "",
        event_id: Annotated[str, Query(alias="eventID")] = "",
        source: str = "",
        from_time: Annotated[str, Query(alias="fromTime")] = "",
        before_time: Annotated[str, Query(alias="beforeTime")] = "",
        root: bool = False,
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 20,
        next_page_key: Annotated[int, Query(alias="nextPageKey", ge=0)] = 0,
    ) -> schemas.EventPage:
        """Stored events, newest first; needs keptnContext or project."""
        where = EventFilter(
            keptn_contexts=(keptn_context,) if keptn_context else (),
            type=type,
            project=project,
            stage=stage,
            service=service,
            event_id=event_id,
            source=source,
            from_time=from_time,
            before_time=before_time,
            root_only=root,
        )
        found = await services.queries.events(where, page_size=page_size, offset=next_page_key)
        return schemas.EventPage.model_validate(found)

    @api.get(
        _PREFIX + "/event/type/{eventType}",
        response_model=schemas.EventList,
        responses={400: {"model": schemas.Problem}},
    )
    async def events_by_type(
        event_type: Annotated[str, Path(alias="eventType")],
        filter: Annotated[
            str,
            Query(
                description="Clauses 'path:value' or 'path:v1,v2' joined by ' AND ';"
                " must name data.project or shkeptncontext."
            ),
        ],
        exclude_invalidated: Annotated[bool, Query(alias="excludeInvalidated")] = False,
        from_time: Annotated[str, Query(alias="fromTime")] = "",
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> schemas.EventList:
        """Events of one type matching Keptn's filter grammar, newest first."""
        found = await services.queries.events_by_type(
            event_type,
            filter=filter,
            exclude_invalidated=exclude_invalidated,
            from_time=from_time,
            limit=limit,
        )
        return schemas.EventList.model_validate(found)

    return api
