"""What the HTTP routes need from the application, as Protocols.

Routes depend on these shapes rather than on the concrete engine and definitions, so the
API can be exercised against small fakes and the adapter never reaches into engine internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controlplane.application.admission import IncomingEvent
from controlplane.application.ports import ProjectRecord
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.resources import Resources
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


class DefinitionsApi(Protocol):
    async def create(self, name: str, shipyard_yaml: str) -> ProjectRecord: ...

    async def replace(self, name: str, shipyard_yaml: str) -> ProjectRecord: ...

    async def get(self, name: str) -> ProjectRecord | None: ...

    async def list(self) -> list[ProjectRecord]: ...

    async def delete(self, name: str) -> bool: ...

    def shipyard(self, name: str) -> Shipyard | None: ...


@dataclass(frozen=True, slots=True)
class Services:
    engine: EngineApi
    definitions: DefinitionsApi
    queries: Queries
    registry: Registry
    max_event_bytes: int = 65536
    resources: Resources | None = None
