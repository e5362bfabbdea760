"""The ports: what the application needs from the outside world, as Protocols.

Adapters implement them (PostgreSQL in :mod:`controlplane.adapters.postgres`, JetStream in
:mod:`controlplane.adapters.nats`); :mod:`controlplane.testing` has in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.application.envelope import Envelope
from controlplane.domain.execution import Execution
from controlplane.domain.integrations import Integration
from controlplane.domain.shipyard import Shipyard


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """Enough of a stored event to recognise a repeat and to answer 409 versus 404."""

    id: str
    source: str
    type: str
    keptn_context: str


@dataclass(slots=True)
class UnitOfWork:
    """Everything one engine batch changes, committed in one transaction.

    ``events`` go to the event store; those flagged ``publish`` are also the outbox: they
    stay marked until ``published`` names them in a later unit of work.
    """

    events: list[tuple[Envelope, bool]] = field(default_factory=list)
    executions: dict[str, Execution] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    pauses_added: list[tuple[str, str]] = field(default_factory=list)  # (context, stage or "")
    pauses_removed: list[tuple[str, str | None]] = field(default_factory=list)  # None: all

    def __bool__(self) -> bool:
        return bool(
            self.events
            or self.executions
            or self.published
            or self.pauses_added
            or self.pauses_removed
        )


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """A project as stored: the shipyard text, its version, and why it is invalid if it is."""

    name: str
    shipyard_yaml: str
    version: int = 1
    error: str = ""
    origin: str = "api"  # "api" or "file:<path>"
    created_at: float = 0.0
    updated_at: float = 0.0


class UnstorableEvent(ValueError):
    """The store cannot hold this event: NUL characters, NaN or infinity, invalid Unicode.

    ``event_id`` names the event (or the execution's trigger) so the engine can refuse that
    one and commit the rest of its batch.
    """

    def __init__(self, message: str, *, event_id: str) -> None:
        super().__init__(message)
        self.event_id = event_id


class ProjectExists(Exception):
    """A project with this name already exists."""


class EngineStore(Protocol):
    async def load_live_executions(self) -> list[Execution]: ...

    async def load_pauses(self) -> list[tuple[str, str]]: ...

    async def find_events(self, ids: Sequence[str]) -> dict[str, StoredEvent]: ...

    async def commit(self, work: UnitOfWork) -> None: ...

    async def unpublished(self, limit: int) -> list[Envelope]: ...

    async def delete_project_data(self, project: str) -> None: ...


class DefinitionStore(Protocol):
    async def list_projects(self) -> list[ProjectRecord]: ...

    async def get_project(self, name: str) -> ProjectRecord | None: ...

    async def create_project(self, record: ProjectRecord) -> ProjectRecord:
        """Insert version 1; raises :class:`ProjectExists`."""
        ...

    async def replace_project(self, record: ProjectRecord) -> ProjectRecord:
        """Store a new version (or the first one); returns it with its version number."""
        ...

    async def delete_project(self, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    total: int
    next_offset: int | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    keptn_contexts: tuple[str, ...] = ()
    type: str = ""
    project: str = ""
    stage: str = ""
    service: str = ""
    event_id: str = ""
    source: str = ""
    from_time: str = ""
    before_time: str = ""
    root_only: bool = False


class QueryStore(Protocol):
    async def contexts(
        self, project: str, *, keptn_contexts: Sequence[str], name: str
    ) -> list[list[Execution]]:
        """Executions grouped by keptnContext, newest context first, oldest stage first."""
        ...

    async def context_page(
        self, project: str, *, name: str, limit: int | None, offset: int
    ) -> tuple[list[list[Execution]], int]:
        """One page of :meth:`contexts` (newest first) and how many contexts match in all."""
        ...

    async def live_executions(self, project: str) -> list[Execution]:
        """The project's executions that have not ended (few, next to the finished ones)."""
        ...

    async def pauses(self, keptn_contexts: Sequence[str]) -> dict[str, set[str]]: ...

    async def events(self, where: EventFilter, *, limit: int, offset: int) -> Page: ...

    async def events_by_type(
        self,
        type: str,
        *,
        match: Mapping[str, Sequence[str]],
        exclude_invalidated: bool,
        from_time: str,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Events of one type, newest first, filtered the way Keptn's datastore did.

        Each ``match`` path (``data.project``, ``shkeptncontext``) equals one of its values.
        """
        ...

    async def open_triggered(
        self,
        type: str,
        *,
        project: str,
        stage: str,
        service: str,
        event_id: str,
        limit: int,
        offset: int,
    ) -> Page: ...


class IntegrationStore(Protocol):
    async def load_integrations(self) -> list[Integration]: ...

    async def save_integration(self, integration: Integration) -> None:
        """Insert or replace the integration with its subscriptions and ``last_seen``."""
        ...

    async def save_last_seen(self, seen: Mapping[str, float]) -> None:
        """Move ``last_seen`` forward for these ids (never backwards)."""
        ...

    async def delete_integrations(self, ids: Sequence[str]) -> None: ...


class EventSink(Protocol):
    async def submit(self, events: Sequence[Envelope]) -> None:
        """Store and publish events made in this process; raises if they are refused."""
        ...


class Publisher(Protocol):
    async def publish(self, events: Sequence[Envelope]) -> None:
        """Publish and wait until the broker stored every one; raise if it did not."""
        ...


class Settle(Protocol):
    """How a consumer of the bus settles one message (the JetStream adapter's ``Ack``).

    ``retry`` asks for a redelivery after ``delay`` seconds (the broker's own when None);
    ``attempt`` counts deliveries, from 1.
    """

    @property
    def attempt(self) -> int: ...

    async def processed(self) -> bool: ...

    async def retry(self, delay: float | None = None) -> bool: ...


class ShipyardReader(Protocol):
    def read(self, text: str, source: str) -> Shipyard:
        """Parse shipyard YAML; raises ``InvalidShipyard`` with field paths and lines."""
        ...


class InvalidDocument(ValueError):
    """A configuration file is not well-formed YAML; the message says where."""


class DocumentReader(Protocol):
    def load(self, text: str, source: str) -> Any:
        """Parse YAML text; raises :class:`InvalidDocument` naming ``source`` and the line."""
        ...

    def dump(self, document: Any) -> str:
        """Render a document as YAML (for quoting an inline configuration back)."""
        ...


class SourceFailure(Exception):
    """A metric source could not give a value; the message says which source and why.

    Raised by :class:`MetricSources`; the evaluator turns it into a failed indicator value
    naming the objective, so one bad source never fails an evaluation as a whole.
    """


class MetricSources(Protocol):
    """Reads metric values over HTTP: Prometheus' query API and any JSON endpoint."""

    async def query_prometheus(
        self,
        url: str,
        query: str,
        *,
        at: float,
        headers: Mapping[str, str],
        time_limit: float,
    ) -> float:
        """Run an instant PromQL query at epoch ``at`` against the server at ``url``.

        Returns the single value of a scalar or one-sample vector result; raises
        :class:`SourceFailure` for anything else (no data, several series, NaN, HTTP or
        transport errors, a timeout after ``time_limit`` seconds).
        """
        ...

    async def fetch_json(
        self,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        body: str | None,
        time_limit: float,
    ) -> Any:
        """Fetch ``url`` and return its parsed JSON body; raises :class:`SourceFailure`."""
        ...


class Secrets(Protocol):
    """Named credentials of the control plane (environment or a mounted secret volume)."""

    def get(self, name: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Resource:
    """A configuration file kept per project, stage or service (Keptn's resource service).

    ``stage`` and ``service`` are empty for a project-level (or stage-level) file.
    """

    project: str
    stage: str
    service: str
    uri: str
    content: str
    version: int = 1
    updated_at: float = 0.0


class ResourceStore(Protocol):
    async def get_resource(
        self, project: str, stage: str, service: str, uri: str
    ) -> Resource | None: ...

    async def list_resources(self, project: str, stage: str, service: str) -> list[Resource]:
        """The files of exactly this level, by URI."""
        ...

    async def level_resources(
        self, project: str, stage: str, service: str, uris: Sequence[str]
    ) -> list[Resource]:
        """The files named ``uris`` that exist at the project, the stage or the service level."""
        ...

    async def put_resources(self, resources: Sequence[Resource]) -> list[Resource]:
        """Insert or replace, all or nothing; returns them with their new versions."""
        ...

    async def delete_resource(self, project: str, stage: str, service: str, uri: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class PastEvaluation:
    """An earlier ``evaluation.finished`` that relative criteria compare against."""

    event_id: str
    indicator_results: list[Any]


class EvaluationHistory(Protocol):
    async def past_evaluations(
        self, project: str, stage: str, service: str, *, results: Sequence[str], limit: int
    ) -> list[PastEvaluation]:
        """Newest first, filtered on ``data.result`` by ``results`` (empty: any result).

        Evaluations that an ``evaluation.invalidated`` names are left out.
        """
        ...


# --------------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the store knows of one schedule.

    ``first_seen``: when its current expression and time zone were first seen (slots before
    it never fire). ``last_slot``/``last_context``: the latest slot claimed by any replica.
    """

    project: str
    schedule: str
    first_seen: float
    last_slot: float | None = None
    last_context: str = ""


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """One slot of one schedule, with the trigger event that fires it."""

    project: str
    schedule: str
    slot: float
    event: Envelope


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule defined through the API, as written; it is validated again when read."""

    project: str
    name: str
    document: Mapping[str, Any]
    updated_at: float = 0.0


class NoSuchProject(LookupError):
    """The project does not exist (any more)."""


class ScheduleStore(Protocol):
    """Durable schedule state: claimed slots, first sightings, API-defined schedules.

    A slot is claimed by inserting its row; the row's key (project, schedule, slot) makes
    the claim exclusive across every replica of the scheduler.
    """

    async def schedule_states(
        self, seen: Sequence[tuple[str, str, str]], now: float
    ) -> list[ScheduleState]:
        """Register ``(project, schedule, fingerprint)`` triples; return their states.

        A schedule not stored yet, or stored with another fingerprint, gets ``first_seen =
        now``. Schedules of projects that do not exist are left out.
        """
        ...

    async def forget_schedule_states(self, keys: Sequence[tuple[str, str]]) -> None:
        """Drop the first sightings of ``(project, schedule)``: seen again, they start anew."""
        ...

    async def claim_slots(self, claims: Sequence[SlotClaim], claimed_by: str) -> list[SlotClaim]:
        """Claim the slots nobody claimed before; returns the claims this call won."""
        ...

    async def mark_published(self, claims: Sequence[SlotClaim]) -> None: ...

    async def unpublished_claims(self, older_than: float, limit: int) -> list[SlotClaim]:
        """Claims not marked published, made more than ``older_than`` seconds ago."""
        ...

    async def prune_claims(self, older_than: float) -> int:
        """Delete published claims older than that, keeping each schedule's latest one."""
        ...

    async def last_slots(self, project: str) -> dict[str, tuple[float, str]]:
        """The latest claimed slot of each schedule of the project, with its keptnContext."""
        ...

    async def list_api_schedules(self, project: str | None = None) -> list[StoredSchedule]: ...

    async def put_api_schedule(self, schedule: StoredSchedule) -> bool:
        """Insert or replace; True when it was created. Raises :class:`NoSuchProject`."""
        ...

    async def delete_api_schedule(self, project: str, name: str) -> bool: ...
