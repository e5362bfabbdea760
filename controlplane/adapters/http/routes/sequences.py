"""Keptn's shipyard-controller sequence endpoints: the state view and pause/resume/abort."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from controlplane.adapters.http import schemas, waiting
from controlplane.adapters.http.services import Services
from controlplane.application.errors import Rejected, UnknownProject

_PREFIX = "/api/controlPlane/v1/sequence"


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["sequences"])

    async def known(project: str) -> None:
        if await services.definitions.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")

    @api.get(
        _PREFIX + "/{project}",
        response_model=schemas.SequenceStates,
        response_model_exclude_unset=True,
        responses={400: {"model": schemas.Problem}, 404: {"model": schemas.Problem}},
    )
    async def sequence_states(
        request: Request,
        project: str,
        keptn_context: Annotated[
            str, Query(alias="keptnContext", description="Comma-separated keptnContexts.")
        ] = "",
        wait: Annotated[
            str,
            Query(
                description="Long-poll: with exactly one keptnContext, answer once that context"
                " has ended or this duration (30s, 1m, seconds; at most 5m) has passed."
            ),
        ] = "",
        name: str = "",
        state: str = "",
        from_time: Annotated[str, Query(alias="fromTime")] = "",
        before_time: Annotated[str, Query(alias="beforeTime")] = "",
        page_size: Annotated[int, Query(alias="pageSize", ge=0)] = 0,
        next_page_key: Annotated[int, Query(alias="nextPageKey", ge=0)] = 0,
    ) -> schemas.SequenceStates:
        """One entry per keptnContext, newest first; pageSize 0 returns every match."""
        contexts = _split(keptn_context)
        seconds = waiting.wait_seconds(wait)
        if seconds is not None and len(contexts) != 1:
            raise Rejected("query parameter wait needs exactly one keptnContext")
        await known(project)
        if seconds:
            watch = waiting.watch_of(services)
            await waiting.wait_ended(request, watch, contexts[0], seconds)
        found = await services.queries.sequence_states(
            project,
            keptn_contexts=contexts,
            name=name,
            state=state,
            from_time=from_time,
            before_time=before_time,
            page_size=page_size,
            offset=next_page_key,
        )
        return schemas.SequenceStates.model_validate(found)

    @api.post(
        _PREFIX + "/{project}/{keptnContext}/control",
        response_model=schemas.Empty,
        responses={400: {"model": schemas.Problem}, 404: {"model": schemas.Problem}},
    )
    async def control(
        project: str,
        keptn_context: Annotated[str, Path(alias="keptnContext")],
        body: schemas.ControlRequest,
    ) -> schemas.Empty:
        """Pause, resume or abort; a 200 means the change is already in force."""
        await known(project)
        await services.engine.control(project, keptn_context, body.state, body.stage)
        return schemas.Empty()

    return api


def _split(contexts: str) -> list[str]:
    return [part.strip() for part in contexts.split(",") if part.strip()]
