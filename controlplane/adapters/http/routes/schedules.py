"""Cron schedules of a project: list them, and write the ones the API owns.

``GET`` lists the schedules of the shipyard and of the API with their next slot and the
last one that fired. ``PUT`` creates or replaces an API schedule from a JSON body with the
keys of a shipyard entry (``cron``, ``timezone``, ``stage``, ``sequence``, ``service``,
``data``, ``missed``); ``DELETE`` removes it. A shipyard schedule is changed in the
shipyard, so writing one of its names is a 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Response, status
from pydantic import BaseModel, Field

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import ScheduleApi, Services
from controlplane.application.scheduler import ScheduleView
from controlplane.domain.schedules import slot_text

_PREFIX = "/api/controlPlane/v1/project/{project}/schedule"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
}
_EXAMPLE = {
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "stage": "dev",
    "sequence": "delivery",
    "service": "carts",
    "data": {"configurationChange": {"values": {"image": "carts:nightly"}}},
    "missed": "skip",
}


class ScheduleOut(BaseModel):
    name: str
    origin: Literal["shipyard", "api"] = Field(description="Where the schedule is defined.")
    cron: str
    timezone: str
    stage: str
    sequence: str
    service: str
    data: dict[str, Any] = Field(default_factory=dict)
    missed: str = Field(description="skip or runOnce: what happens to slots missed while down.")
    nextSlot: str | None = Field(None, description="The next slot (RFC 3339, UTC), if any.")
    lastSlot: str | None = Field(None, description="The latest slot that fired, if any.")
    lastKeptnContext: str = Field("", description="The keptnContext that slot started.")
    problem: str = Field("", description="Why an API schedule does not fire, if it does not.")


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["schedules"])
    if services.schedules is not None:
        _routes(api, services.schedules)
    return api


def _routes(api: APIRouter, catalog: ScheduleApi) -> None:
    @api.get(_PREFIX, response_model=ScheduleList, responses=_PROBLEMS)
    async def list_schedules(project: str) -> ScheduleList:
        """The project's schedules, from its shipyard and from the API."""
        return ScheduleList(schedules=[_out(view) for view in await catalog.list(project)])

    @api.put(_PREFIX + "/{name}", response_model=ScheduleOut, responses=_PROBLEMS)
    async def put_schedule(
        project: str,
        name: str,
        response: Response,
        body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
    ) -> ScheduleOut:
        """Create (201) or replace (200) a schedule defined through the API."""
        view, created = await catalog.put(project, name, body)
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return _out(view)

    @api.delete(_PREFIX + "/{name}", response_model=schemas.Message, responses=_PROBLEMS)
    async def delete_schedule(project: str, name: str) -> schemas.Message:
        """Delete a schedule defined through the API."""
        await catalog.delete(project, name)
        return schemas.Message(message=f"schedule {name!r} of project {project!r} deleted")


def _out(view: ScheduleView) -> ScheduleOut:
    document = view.document
    return ScheduleOut(
        name=view.name,
        origin="shipyard" if view.origin == "shipyard" else "api",
        cron=str(document.get("cron", "")),
        timezone=str(document.get("timezone", "")),
        stage=str(document.get("stage", "")),
        sequence=str(document.get("sequence", "")),
        service=str(document.get("service", "")),
        data=dict(document.get("data") or {}),
        missed=str(document.get("missed", "")),
        nextSlot=_time(view.next_slot),
        lastSlot=_time(view.last_slot),
        lastKeptnContext=view.last_context,
        problem=view.problem,
    )


def _time(epoch: float | None) -> str | None:
    return None if epoch is None else slot_text(epoch)
