"""Configuration files (Keptn's resource service) and the evaluation endpoint.

Keptn served files under ``/api/resource-service/v1`` (and, before 0.13, under
``/api/configuration-service/v1``); both prefixes work here, at project, stage and service
level, with the content base64-encoded on the wire as Keptn had it. ``POST .../evaluation``
starts the built-in ``evaluation`` sequence of a stage for one service over a time window.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, Field

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import Services
from controlplane.application import evaluation
from controlplane.application.errors import InvalidEvent, UnknownProject
from controlplane.application.ports import Resource
from controlplane.application.resources import Resources, Upload
from controlplane.domain.errors import DomainError

PREFIXES = ("/api/resource-service/v1", "/api/configuration-service/v1")
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
}
Uri = Annotated[str, Path(description="The file's path, e.g. slo.yaml.")]
_LEVELS = (
    "/project/{project}",
    "/project/{project}/stage/{stage}",
    "/project/{project}/stage/{stage}/service/{service}",
)


class ResourceIn(BaseModel):
    resourceURI: str = Field(description="The file's path, e.g. slo.yaml or sli.yaml.")
    resourceContent: str = Field(description="The file's content, base64-encoded.")


class ResourcesIn(BaseModel):
    resources: list[ResourceIn] = Field(min_length=1)


class ContentIn(BaseModel):
    resourceContent: str = Field(description="The file's content, base64-encoded.")


class ResourceMetadata(BaseModel):
    version: str
    updatedAt: str = ""


class ResourceOut(BaseModel):
    resourceURI: str
    resourceContent: str | None = None
    metadata: ResourceMetadata


class ResourceList(BaseModel):
    resources: list[ResourceOut]
    nextPageKey: str = "0"
    totalCount: int


class Written(BaseModel):
    commitID: str = Field(description="The new version of the (last) file written.")
    metadata: ResourceMetadata


class EvaluationRequest(BaseModel):
    start: str = Field("", description="Window start (RFC 3339 or 2006-01-02T15:04:05).")
    end: str = Field("", description="Window end; give start with it, not timeframe.")
    timeframe: str = Field("", description="Window length, e.g. 5m (default 5m).")
    labels: dict[str, str] = Field(default_factory=dict)
    gitcommitid: str = ""


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["resources"])
    if services.resources is not None:
        _file_routes(api, services.resources)

    @api.post(
        "/api/controlPlane/v1/project/{project}/stage/{stage}/service/{service}/evaluation",
        response_model=schemas.KeptnContextResponse,
        responses=_PROBLEMS,
        tags=["evaluation"],
    )
    async def trigger_evaluation(
        project: str, stage: str, service: str, body: EvaluationRequest | None = None
    ) -> schemas.KeptnContextResponse:
        """Run the stage's ``evaluation`` sequence for one service over a time window."""
        request = body or EvaluationRequest()
        shipyard = services.definitions.shipyard(project)
        if await services.definitions.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")
        if shipyard is not None and shipyard.stage(stage) is None:
            raise UnknownProject(f"project {project!r} has no stage {stage!r}")
        try:
            incoming = evaluation.trigger_request(
                project,
                stage,
                service,
                start=request.start,
                end=request.end,
                timeframe=request.timeframe,
                labels=request.labels,
                gitcommitid=request.gitcommitid,
                now=time.time(),
            )
        except DomainError as exc:
            raise InvalidEvent(str(exc)) from None
        context = await services.engine.ingest(incoming)
        return schemas.KeptnContextResponse(keptnContext=context)

    return api


def _file_routes(api: APIRouter, resources: Resources) -> None:
    for prefix in PREFIXES:
        for level in _LEVELS:
            _level_routes(api, resources, prefix + level + "/resource")


def _level_routes(api: APIRouter, resources: Resources, path: str) -> None:
    hidden = path.startswith("/api/configuration-service")

    @api.get(path, response_model=ResourceList, responses=_PROBLEMS, include_in_schema=not hidden)
    async def list_files(request: Request) -> ResourceList:
        """The files stored at this level (without their content)."""
        found = await resources.listing(*_scope(request))
        return ResourceList(
            resources=[_out(item, content=False) for item in found], totalCount=len(found)
        )

    @api.get(
        path + "/{uri:path}",
        response_model=ResourceOut,
        responses=_PROBLEMS,
        include_in_schema=not hidden,
    )
    async def get_file(request: Request, uri: Uri) -> ResourceOut:
        """One file, its content base64-encoded."""
        return _out(await resources.get(*_scope(request), uri), content=True)

    async def write(request: Request, body: ResourcesIn) -> Written:
        uploads = [Upload(item.resourceURI, _decode(item)) for item in body.resources]
        stored = await resources.put(*_scope(request), uploads)
        last = stored[-1]
        return Written(commitID=str(last.version), metadata=_metadata(last))

    @api.post(
        path,
        status_code=status.HTTP_201_CREATED,
        response_model=Written,
        responses=_PROBLEMS,
        include_in_schema=not hidden,
    )
    async def create_files(request: Request, body: ResourcesIn) -> Written:
        """Store files (base64 content); checks slo.yaml and sli.yaml before storing any."""
        return await write(request, body)

    @api.put(path, response_model=Written, responses=_PROBLEMS, include_in_schema=not hidden)
    async def update_files(request: Request, body: ResourcesIn) -> Written:
        """Store files, replacing those with the same URI."""
        return await write(request, body)

    @api.put(
        path + "/{uri:path}",
        response_model=Written,
        responses=_PROBLEMS,
        include_in_schema=not hidden,
    )
    async def update_file(request: Request, uri: Uri, body: ContentIn) -> Written:
        """Store one file under ``uri``."""
        item = ResourceIn(resourceURI=uri, resourceContent=body.resourceContent)
        return await write(request, ResourcesIn(resources=[item]))

    @api.delete(
        path + "/{uri:path}",
        response_model=schemas.Message,
        responses=_PROBLEMS,
        include_in_schema=not hidden,
    )
    async def delete_file(request: Request, uri: Uri) -> schemas.Message:
        """Remove one file."""
        await resources.delete(*_scope(request), uri)
        return schemas.Message(message=f"{uri} deleted")


def _scope(request: Request) -> tuple[str, str, str]:
    """Project, stage and service from the path; the last two are empty above their level."""
    params = request.path_params
    return params["project"], params.get("stage", ""), params.get("service", "")


def _decode(item: ResourceIn) -> bytes:
    try:
        return base64.b64decode(item.resourceContent, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent(f"{item.resourceURI}: resourceContent must be base64") from None


def _metadata(resource: Resource) -> ResourceMetadata:
    return ResourceMetadata(
        version=str(resource.version),
        updatedAt=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(resource.updated_at)),
    )


def _out(resource: Resource, *, content: bool) -> ResourceOut:
    encoded = base64.b64encode(resource.content.encode()).decode("ascii") if content else None
    return ResourceOut(
        resourceURI=resource.uri, resourceContent=encoded, metadata=_metadata(resource)
    )
