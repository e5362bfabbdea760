"""Request and response bodies at the HTTP edge, in Keptn's field names.

Why pydantic here and nowhere deeper: these models validate what clients send (a bad body is
a 400 naming the field) and document the API at ``/docs``; the application works with plain
values and dataclasses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    code: int = Field(description="The HTTP status code.")
    message: str = Field(description="What went wrong, for a person to read.")


class Empty(BaseModel):
    """Keptn answers some calls with ``{}``."""


class IdResponse(BaseModel):
    id: str


class Message(BaseModel):
    message: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class KeptnContextResponse(BaseModel):
    keptnContext: str = Field(description="The keptnContext the event belongs to.")


class ControlRequest(BaseModel):
    state: Literal["pause", "resume", "abort"]
    stage: str = Field("", description="Limit the action to this stage; empty means all.")


class ProjectRequest(BaseModel):
    """Keptn's create/update project body; ``gitCredentials`` and the like are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The project name.")
    shipyard: str = Field(description="The shipyard YAML, base64-encoded.")


class EventRef(BaseModel):
    type: str
    id: str
    time: str


class Evaluation(BaseModel):
    result: str
    score: float


class AttemptState(BaseModel):
    task: str
    attempt: int
    triggeredid: str
    result: str
    status: str
    message: str
    timedOut: bool
    time: str


class CurrentTaskState(BaseModel):
    name: str
    attempt: int


class StageState(BaseModel):
    name: str
    image: str = ""
    state: str
    latestEvaluation: Evaluation | None = None
    latestEvent: EventRef | None = None
    latestFailedEvent: EventRef | None = None
    # Our additions; present only when they say something.
    attempts: list[AttemptState] | None = Field(
        None, description="Failed attempts of tasks that were retried or paused."
    )
    currentTask: CurrentTaskState | None = Field(
        None, description="The task being retried, with its attempt number."
    )
    message: str | None = Field(None, description="Why the stage is paused, when it paused itself.")
    rerunOf: str | None = Field(None, description="The keptnContext this run repeats.")


class SequenceState(BaseModel):
    name: str
    service: str
    project: str
    time: str
    shkeptncontext: str
    state: str = Field(
        description="triggered, waiting, started, paused, aborted, timedOut or finished."
    )
    problemTitle: str = ""
    stages: list[StageState]


class SequenceStates(BaseModel):
    states: list[SequenceState]
    nextPageKey: int = Field(description="Offset of the next page; 0 on the last page.")
    totalCount: int


class TriggeredEvents(BaseModel):
    events: list[dict[str, Any]]
    nextPageKey: str = Field(description="Offset of the next page; '0' on the last page.")
    totalCount: int


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    nextPageKey: str = Field(description="Offset of the next page; '0' on the last page.")
    totalCount: int
    pageSize: int


class EventList(BaseModel):
    events: list[dict[str, Any]]


class ProjectStage(BaseModel):
    stageName: str
    services: list[dict[str, Any]] = Field(
        default_factory=list, description="Always empty: services need no registration."
    )


class ExpandedProject(BaseModel):
    projectName: str
    shipyard: str = Field(description="The shipyard YAML text.")
    shipyardVersion: str = Field(description="The shipyard's apiVersion, as in Keptn.")
    shipyardRevision: int = Field(description="How many times the shipyard was stored.")
    creationDate: str = Field(description="Unix time in nanoseconds, as in Keptn.")
    stages: list[ProjectStage]
    shipyardError: str | None = Field(None, description="Why the shipyard is invalid, if it is.")


class Projects(BaseModel):
    projects: list[ExpandedProject]
    nextPageKey: str
    totalCount: int


class SequenceOutcome(BaseModel):
    """``POST /api/v1/event?wait=...``: the sequence's context ended within the wait."""

    keptnContext: str
    finished: Literal[True] = True
    state: str = Field(description="finished, aborted or timedOut (as in the sequence view).")
    result: str = Field(description="pass, warning or fail of the last stage to end.")
    status: str = Field(description="succeeded, errored, aborted or unknown of that stage.")
    message: str = Field(description="That stage's message, if any.")
    data: dict[str, Any] = Field(
        description="What that stage's sequence produced: its trigger data with every"
        " task's output merged in."
    )


class SequencePending(BaseModel):
    """``POST /api/v1/event?wait=...``: the wait ran out first; the sequence goes on."""

    keptnContext: str
    finished: Literal[False] = False
