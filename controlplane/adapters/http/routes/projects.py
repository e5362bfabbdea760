"""Keptn's project endpoints: register, replace, show and remove a project's shipyard.

Why the shipyard arrives base64-encoded: that is Keptn's API; a body that does not decode to
UTF-8 text is refused here with a 400, and the shipyard's own validation (field path and
YAML line) is the definitions service's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import DefinitionsApi, Services
from controlplane.application.errors import Conflict, InvalidEvent, UnknownProject
from controlplane.application.ports import ProjectRecord
from controlplane.domain import graph

_PREFIX = "/api/controlPlane/v1/project"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
}
_DIAGRAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A Mermaid flowchart, as text or as JSON",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"mermaid": {"type": "string"}},
                    "required": ["mermaid"],
                }
            },
        },
    },
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
}


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["projects"])
    definitions = services.definitions

    @api.post(
        _PREFIX,
        status_code=status.HTTP_201_CREATED,
        response_model=schemas.Empty,
        responses=_PROBLEMS,
    )
    async def create_project(body: schemas.ProjectRequest) -> schemas.Empty:
        """Create a project from a base64-encoded shipyard; 409 if it exists."""
        await definitions.create(body.name, decode_shipyard(body.shipyard))
        return schemas.Empty()

    @api.put(_PREFIX, response_model=schemas.Empty, responses=_PROBLEMS)
    async def replace_project(body: schemas.ProjectRequest) -> schemas.Empty:
        """Replace a project's shipyard; running sequences keep the one they started with."""
        await definitions.replace(body.name, decode_shipyard(body.shipyard))
        return schemas.Empty()

    @api.get(_PREFIX, response_model=schemas.Projects, response_model_exclude_none=True)
    async def list_projects(
        page_size: Annotated[int, Query(alias="pageSize", ge=0)] = 0,
        next_page_key: Annotated[int, Query(alias="nextPageKey", ge=0)] = 0,
    ) -> schemas.Projects:
        """Every project, by name; pageSize 0 returns all."""
        records = await definitions.list()
        end = next_page_key + page_size if page_size else len(records)
        page = records[next_page_key:end]
        return schemas.Projects(
            projects=[expanded(definitions, record) for record in page],
            nextPageKey=str(end) if end < len(records) else "0",
            totalCount=len(records),
        )

    @api.get(
        _PREFIX + "/{project}",
        response_model=schemas.ExpandedProject,
        response_model_exclude_none=True,
        responses=_PROBLEMS,
    )
    async def get_project(project: str) -> schemas.ExpandedProject:
        """The project, its shipyard text and stages, and ``shipyardError`` if it is invalid."""
        record = await definitions.get(project)
        if record is None:
            raise UnknownProject(f"project {project!r} does not exist")
        return expanded(definitions, record)

    @api.get(_PREFIX + "/{project}/diagram", response_class=Response, responses=_DIAGRAM)
    async def project_diagram(
        project: str,
        request: Request,
        output: Annotated[str | None, Query(alias="format", pattern="^(text|json)$")] = None,
    ) -> Response:
        """The shipyard as a Mermaid flowchart: text, or ``{"mermaid": ...}`` for JSON.

        JSON when ``format=json``, or when ``Accept`` prefers ``application/json`` to
        ``text/plain``; text otherwise. 409 when the stored shipyard is invalid.
        """
        record = await definitions.get(project)
        if record is None:
            raise UnknownProject(f"project {project!r} does not exist")
        shipyard = definitions.shipyard(project)
        if shipyard is None:
            reason = record.error or "the shipyard could not be read"
            raise Conflict(f"project {project!r} has an invalid shipyard: {reason}")
        chart = graph.mermaid(shipyard)
        if output == "json" if output else prefers_json(request.headers.get("accept")):
            return JSONResponse({"mermaid": chart})
        return PlainTextResponse(chart)

    @api.delete(_PREFIX + "/{project}", response_model=schemas.Message, responses=_PROBLEMS)
    async def delete_project(project: str) -> schemas.Message:
        """Remove the project with its sequences and events."""
        if not await definitions.delete(project):
            raise UnknownProject(f"project {project!r} does not exist")
        return schemas.Message(message=f"project {project!r} deleted")

    return api


def prefers_json(accept: str | None) -> bool:
    """Whether ``Accept`` ranks ``application/json`` above ``text/plain`` (ties go to text)."""
    quality = {"application/json": 0.0, "text/plain": 0.0}
    for item in (accept or "").split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if media.lower() not in quality:
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        quality[media.lower()] = max(quality[media.lower()], weight)
    return quality["application/json"] > quality["text/plain"]


def decode_shipyard(encoded: str) -> str:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("shipyard must be base64-encoded YAML") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("shipyard must be base64-encoded UTF-8 YAML text") from None


def expanded(definitions: DefinitionsApi, record: ProjectRecord) -> schemas.ExpandedProject:
    shipyard = definitions.shipyard(record.name)
    stages = shipyard.stages if shipyard else ()
    created = record.created_at or record.updated_at
    return schemas.ExpandedProject(
        projectName=record.name,
        shipyard=record.shipyard_yaml,
        shipyardVersion=shipyard.api_version if shipyard else "",
        shipyardRevision=record.version,
        creationDate=str(int(created * 1_000_000_000)),
        stages=[schemas.ProjectStage(stageName=stage.name) for stage in stages],
        shipyardError=record.error or (None if shipyard else "the shipyard could not be read"),
    )
