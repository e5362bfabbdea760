"""What the HTTP routes need from the application, as Protocols.

Routes depend on these shapes rather than on the concrete engine and definitions, so the
API can be exercised against small fakes and the adapter never reaches into engine internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.application.admission import IncomingEvent
from controlplane.application.callbacks import CallbackLinks
from controlplane.application.ports import ProjectRecord
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.reruns import Reruns
from controlplane.application.resources import Resources
from controlplane.application.scheduler import ScheduleView
from controlplane.application.watch import Outcome, Subscription
from controlplane.domain.shipyard import Shipyard


class EngineApi(Protocol):
    @property
    def ready(self) -> bool: ...

    async def ingest(self, raw: IncomingEvent) -> str:
        """Admit, store durably and process an event; returns its keptnContext."""
        ...

    async def control(
        self, project: str, keptn_context: str, action: str, stage: str = ""
    ) -> None: ...

    async def complete_by_callback(self, triggered_id: str, output: dict[str, Any]) -> str:
        """Finish a task with a callback's output; returns its keptnContext."""
        ...

    def running(self, keptn_context: str) -> bool:
        """Whether the context still has something to run (synchronous: no missed end)."""
        ...


class WatchApi(Protocol):
    """Waiting for a context: long-polls, ``POST ?wait`` and the event stream."""

    async def wait_ended(self, keptn_context: str, within: float) -> bool: ...

    def subscribe(self, keptn_context: str) -> Subscription: ...

    async def outcome(self, project: str, keptn_context: str) -> Outcome | None: ...


class DefinitionsApi(Protocol):
    async def create(self, name: str, shipyard_yaml: str) -> ProjectRecord: ...

    async def replace(self, name: str, shipyard_yaml: str) -> ProjectRecord: ...

    async def get(self, name: str) -> ProjectRecord | None: ...

    async def list(self) -> list[ProjectRecord]: ...

    async def delete(self, name: str) -> bool: ...

    def shipyard(self, name: str) -> Shipyard | None: ...


class ScheduleApi(Protocol):
    """Cron schedules of a project: listed from the shipyard and the API, written by the API."""

    async def list(self, project: str) -> list[ScheduleView]: ...

    async def put(
        self, project: str, name: str, body: Mapping[str, Any]
    ) -> tuple[ScheduleView, bool]: ...

    async def delete(self, project: str, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    engine: EngineApi
    definitions: DefinitionsApi
    queries: Queries
    registry: Registry
    max_event_bytes: int = 65536
    resources: Resources | None = None
    watch: WatchApi | None = None
    callbacks: CallbackLinks | None = None
    reruns: Reruns | None = None
    schedules: ScheduleApi | None = None
