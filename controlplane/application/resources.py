"""Configuration files per project, stage and service: Keptn's resource service, minus git.

Quality gates read ``slo.yaml`` and ``sli.yaml`` from here. A file is checked before it is
stored: the project must exist, a stage must be in its shipyard, the content must be UTF-8
text within a size limit, and the files the control plane itself reads must parse, so a
gate never meets a broken file it could have refused at upload. An upload of several files
is stored all or nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.application.errors import InvalidEvent, NotFound, UnknownProject
from controlplane.application.ports import (
    DocumentReader,
    InvalidDocument,
    ProjectRecord,
    Resource,
    ResourceStore,
)
from controlplane.domain import sli_sources, slo
from controlplane.domain.errors import DomainError
from controlplane.domain.shipyard import Shipyard

MAX_RESOURCE_BYTES = 1 << 20
# A relative path of plain segments: no "..", no empty segment, no leading slash.
_URI_RULE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_SLI_DEFAULTS = {"sli.yaml": "prometheus", "prometheus/sli.yaml": "prometheus"}


class ProjectLookup(Protocol):
    """What the files need to know of projects (the definitions service has it)."""

    async def get(self, name: str) -> ProjectRecord | None: ...

    def shipyard(self, name: str) -> Shipyard | None: ...


@dataclass(frozen=True, slots=True)
class Upload:
    uri: str
    content: bytes


class Resources:
    def __init__(
        self,
        store: ResourceStore,
        definitions: ProjectLookup,
        documents: DocumentReader,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._definitions = definitions
        self._documents = documents
        self._clock = clock

    async def get(self, project: str, stage: str, service: str, uri: str) -> Resource:
        await self._check_level(project, stage, service)
        resource = await self._store.get_resource(project, stage, service, _clean_uri(uri))
        if resource is None:
            raise NotFound(f"{uri} does not exist {_where(project, stage, service)}")
        return resource

    async def listing(self, project: str, stage: str, service: str) -> list[Resource]:
        await self._check_level(project, stage, service)
        return await self._store.list_resources(project, stage, service)

    async def put(
        self, project: str, stage: str, service: str, uploads: Sequence[Upload]
    ) -> list[Resource]:
        """Store every upload or none; raises InvalidEvent naming the file and the problem."""
        await self._check_level(project, stage, service)
        if not uploads:
            raise InvalidEvent("resources: give at least one file")
        now = self._clock()
        checked = [
            Resource(project, stage, service, uri, self._check(upload, uri), updated_at=now)
            for upload in uploads
            for uri in (_clean_uri(upload.uri),)
        ]
        return await self._store.put_resources(checked)

    async def delete(self, project: str, stage: str, service: str, uri: str) -> None:
        await self._check_level(project, stage, service)
        if not await self._store.delete_resource(project, stage, service, _clean_uri(uri)):
            raise NotFound(f"{uri} does not exist {_where(project, stage, service)}")

    async def _check_level(self, project: str, stage: str, service: str) -> None:
        if await self._definitions.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")
        if service and not stage:
            raise InvalidEvent("a service-level file needs its stage")
        shipyard = self._definitions.shipyard(project)
        if stage and shipyard is not None and shipyard.stage(stage) is None:
            raise NotFound(f"project {project!r} has no stage {stage!r}")

    def _check(self, upload: Upload, uri: str) -> str:
        if len(upload.content) > MAX_RESOURCE_BYTES:
            raise InvalidEvent(f"{uri}: larger than {MAX_RESOURCE_BYTES} bytes")
        try:
            text = upload.content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(f"{uri}: not UTF-8 text") from None
        try:
            if uri == "slo.yaml":
                parsed = slo.parse_slo(self._mapping(text, uri))
                problems = slo.criteria_problems(parsed)
                if problems:
                    raise InvalidEvent(f"{uri}: " + "; ".join(problems))
            elif uri in _SLI_DEFAULTS:
                sli_sources.parse_sli(self._mapping(text, uri), default_source=_SLI_DEFAULTS[uri])
        except (InvalidDocument, DomainError) as exc:
            raise InvalidEvent(f"{uri}: {exc}") from None
        return text

    def _mapping(self, text: str, uri: str) -> dict[str, object] | None:
        document = self._documents.load(text, uri)
        if document is not None and not isinstance(document, dict):
            raise InvalidDocument(f"{uri}: must be a YAML mapping")
        return document


def _clean_uri(uri: str) -> str:
    cleaned = uri.strip().lstrip("/")
    if not _URI_RULE.fullmatch(cleaned) or any(part in (".", "..") for part in cleaned.split("/")):
        raise InvalidEvent(
            f"resource URI {uri!r} must be a relative path of letters, digits, '.', '_' and '-'"
        )
    return cleaned


def _where(project: str, stage: str, service: str) -> str:
    where = f"in project {project}"
    if stage:
        where += f", stage {stage}"
    if service:
        where += f", service {service}"
    return where
