"""Projects and their shipyards: register, replace, remove, and the parsed cache the engine reads.

Definitions come from two places, files in ``sequences/`` (the file stem is the project
name) and the HTTP API; both end up as versioned rows in the definition store. The engine
reads the parsed shipyard from this cache on every trigger; a running execution keeps the
sequence it snapshotted when it was triggered, so replacing a shipyard never changes it.

A file that does not parse does not stop the server: its project is stored with the error
(shown as ``shipyardError``), and triggers for it end errored/fail, as Keptn did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from controlplane.application.errors import Conflict, InvalidEvent, NotFound
from controlplane.application.ports import (
    DefinitionStore,
    ProjectExists,
    ProjectRecord,
    ShipyardReader,
)
from controlplane.domain.errors import InvalidShipyard
from controlplane.domain.shipyard import NAME_RULE, Shipyard

logger = logging.getLogger(__name__)

PROJECT_NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class ShipyardFile:
    """A shipyard read from a file; ``error`` is set when the file could not be read."""

    project: str
    text: str
    path: str
    error: str = ""

    @property
    def origin(self) -> str:
        return f"file:{self.path}"


class Definitions:
    def __init__(
        self,
        store: DefinitionStore,
        reader: ShipyardReader,
        *,
        clock: Callable[[], float] = time.time,
        on_delete: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._reader = reader
        self._clock = clock
        self._on_delete = on_delete
        self._records: dict[str, ProjectRecord] = {}
        self._parsed: dict[str, Shipyard] = {}

    def set_delete_hook(self, hook: Callable[[str], Awaitable[None]]) -> None:
        self._on_delete = hook

    async def load(self, files: Iterable[ShipyardFile] = ()) -> None:
        """Read every stored project, then bring the file-based ones up to date."""
        for record in await self._store.list_projects():
            self._remember(record)
        for file in files:
            await self._sync_file(file)

    async def _sync_file(self, file: ShipyardFile) -> None:
        error = (
            file.error or self._name_problem(file.project) or self._problem(file.text, file.path)
        )
        current = self._records.get(file.project)
        if current and current.shipyard_yaml == file.text and current.error == error:
            return
        record = ProjectRecord(
            file.project, file.text, error=error, origin=file.origin, updated_at=self._clock()
        )
        stored = await self._store.replace_project(record)
        self._remember(stored)
        if error:
            logger.error(
                "definitions.invalid_file", extra={"project": file.project, "error": error}
            )
        else:
            logger.info(
                "definitions.loaded", extra={"project": file.project, "version": stored.version}
            )

    def _name_problem(self, name: str) -> str:
        try:
            self._check_name(name)
        except InvalidEvent as exc:
            return f"the file name gives the project name: {exc.message}"
        return ""

    def _problem(self, text: str, source: str) -> str:
        try:
            self._reader.read(text, source)
        except InvalidShipyard as exc:
            return str(exc)
        return ""

    def _remember(self, record: ProjectRecord) -> None:
        self._records[record.name] = record
        self._parsed.pop(record.name, None)
        if not record.error:
            try:
                self._parsed[record.name] = self._reader.read(record.shipyard_yaml, record.name)
            except InvalidShipyard as exc:
                self._records[record.name] = replace(record, error=str(exc))

    # ------------------------------------------------------------------ queries

    def shipyard(self, name: str) -> Shipyard | None:
        return self._parsed.get(name)

    def record(self, name: str) -> ProjectRecord | None:
        return self._records.get(name)

    async def get(self, name: str) -> ProjectRecord | None:
        return self._records.get(name)

    async def list(self) -> list[ProjectRecord]:
        return sorted(self._records.values(), key=lambda record: record.name)

    # ------------------------------------------------------------------ commands

    async def create(self, name: str, shipyard_yaml: str) -> ProjectRecord:
        self._check_name(name)
        self._check_shipyard(shipyard_yaml, name)
        now = self._clock()
        try:
            stored = await self._store.create_project(
                ProjectRecord(name, shipyard_yaml, created_at=now, updated_at=now)
            )
        except ProjectExists:
            raise Conflict(f"project {name!r} already exists") from None
        self._remember(stored)
        return stored

    async def replace(self, name: str, shipyard_yaml: str) -> ProjectRecord:
        current = self._records.get(name)
        if current is None:
            raise NotFound(f"project {name!r} does not exist")
        self._check_shipyard(shipyard_yaml, name)
        stored = await self._store.replace_project(
            ProjectRecord(
                name,
                shipyard_yaml,
                origin="api",
                created_at=current.created_at,
                updated_at=self._clock(),
            )
        )
        self._remember(stored)
        return stored

    async def delete(self, name: str) -> bool:
        if name not in self._records:
            return False
        if self._on_delete is not None:
            await self._on_delete(name)
        await self._store.delete_project(name)
        self._records.pop(name, None)
        self._parsed.pop(name, None)
        return True

    def _check_name(self, name: str) -> None:
        if not name or len(name) > PROJECT_NAME_MAX or not NAME_RULE.fullmatch(name):
            raise InvalidEvent(
                f"project name {name!r} must be 1 to {PROJECT_NAME_MAX} lowercase letters,"
                " digits and dashes, start with a letter and not end with a dash"
            )

    def _check_shipyard(self, text: str, name: str) -> None:
        try:
            self._reader.read(text, f"shipyard of project {name}")
        except InvalidShipyard as exc:
            raise InvalidEvent(f"invalid shipyard: {exc}") from None
