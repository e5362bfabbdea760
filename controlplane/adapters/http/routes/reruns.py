"""Re-run an ended sequence in a new keptnContext, from its failed task or a named one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from controlplane.adapters.http import schemas
from controlplane.adapters.http.services import Services
from controlplane.application.errors import Unavailable

_PROBLEMS: dict[int | str, dict[str, object]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
}


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fromTask: str = Field("", description="Start at this task; default: the one that failed.")
    stage: str = Field("", description="The stage to re-run; default: the one that failed.")


class RerunResponse(BaseModel):
    keptnContext: str = Field(description="The new run's context.")
    rerunOf: str
    stage: str
    sequence: str
    fromTask: str


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["sequences"])

    @api.post(
        "/api/controlPlane/v1/sequence/{project}/{keptnContext}/rerun",
        response_model=RerunResponse,
        responses=_PROBLEMS,
    )
    async def rerun(
        project: str,
        keptn_context: Annotated[str, Path(alias="keptnContext")],
        body: RerunRequest | None = None,
    ) -> RerunResponse:
        """Start the re-run with the original input; the old context is left as it was."""
        if services.reruns is None:
            raise Unavailable("re-runs are not available in this process")
        request = body or RerunRequest()
        started = await services.reruns.rerun(
            project, keptn_context, from_task=request.fromTask, stage=request.stage
        )
        return RerunResponse(
            keptnContext=started.keptn_context,
            rerunOf=started.rerun_of,
            stage=started.stage,
            sequence=started.sequence,
            fromTask=started.from_task,
        )

    return api
