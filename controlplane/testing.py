"""Public fakes for tests of code built on the control plane (no NATS, no PostgreSQL).

Why public and in the package: the HTTP adapter, the CLI and anything built on them are
tested against the same small, typed stand-ins, and those stand-ins follow the real
contracts (Keptn's ingest rules, the definition errors, the query store's ordering) closely
enough that a test passing here says something. No production module imports this one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from controlplane.application import admission
from controlplane.application.envelope import Envelope, parse_time
from controlplane.application.errors import Conflict, ControlPlaneError, InvalidEvent, NotFound
from controlplane.application.ports import EventFilter, Page, ProjectRecord, Resource
from controlplane.domain import eventtypes
from controlplane.domain.errors import InvalidShipyard
from controlplane.domain.execution import Execution
from controlplane.domain.integrations import Integration
from controlplane.domain.shipyard import NAME_RULE, Shipyard, parse_shipyard

# ================================================================================
# Fakes for the HTTP API: FakeEngine, FakeDefinitions, InMemoryQueryStore
# ================================================================================


@dataclass(frozen=True, slots=True)
class ControlCall:
    project: str
    keptn_context: str
    action: str
    stage: str


@dataclass
class FakeEngine:
    """Admits events with the real ingest rules and records them; never runs a sequence.

    Set ``fail_with`` to make the next calls raise that error (e.g. ``Unavailable()``).
    """

    ready: bool = True
    fail_with: ControlPlaneError | None = None
    clock: float = 1_700_000_000.0
    received: list[admission.IncomingEvent] = field(default_factory=list)
    admitted: list[Envelope] = field(default_factory=list)
    controls: list[ControlCall] = field(default_factory=list)

    async def ingest(self, raw: admission.IncomingEvent) -> str:
        self.received.append(raw)
        if self.fail_with is not None:
            raise self.fail_with
        envelope = admission.admit(raw, now=self.clock, new_id=lambda: str(uuid.uuid4()))
        self.admitted.append(envelope)
        return envelope.keptn_context

    async def control(self, project: str, keptn_context: str, action: str, stage: str = "") -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if action not in ("pause", "resume", "abort"):
            raise InvalidEvent(f"state must be pause, resume or abort, got {action!r}")
        self.controls.append(ControlCall(project, keptn_context, action, stage))


class FakeDefinitions:
    """Projects in a dict, validated like the real definitions service (400, 404, 409)."""

    def __init__(self, clock: float = 1_700_000_000.0) -> None:
        self._clock = clock
        self.records: dict[str, ProjectRecord] = {}

    def add(self, name: str, shipyard_yaml: str, *, error: str = "") -> ProjectRecord:
        """Seed a project without checks, e.g. one whose file in ``sequences/`` is invalid."""
        record = ProjectRecord(name, shipyard_yaml, error=error, created_at=self._clock)
        self.records[name] = record
        return record

    async def create(self, name: str, shipyard_yaml: str) -> ProjectRecord:
        if not NAME_RULE.fullmatch(name):
            raise InvalidEvent(f"project name {name!r} is invalid")
        _read(shipyard_yaml, name)
        if name in self.records:
            raise Conflict(f"project {name!r} already exists")
        return self.add(name, shipyard_yaml)

    async def replace(self, name: str, shipyard_yaml: str) -> ProjectRecord:
        current = self.records.get(name)
        if current is None:
            raise NotFound(f"project {name!r} does not exist")
        _read(shipyard_yaml, name)
        record = replace(
            current, shipyard_yaml=shipyard_yaml, version=current.version + 1, error=""
        )
        self.records[name] = record
        return record

    async def get(self, name: str) -> ProjectRecord | None:
        return self.records.get(name)

    async def list(self) -> list[ProjectRecord]:
        return sorted(self.records.values(), key=lambda record: record.name)

    async def delete(self, name: str) -> bool:
        return self.records.pop(name, None) is not None

    def shipyard(self, name: str) -> Shipyard | None:
        record = self.records.get(name)
        if record is None or record.error:
            return None
        try:
            return _read(record.shipyard_yaml, name)
        except InvalidEvent:
            return None


def _read(text: str, name: str) -> Shipyard:
    try:
        return parse_shipyard(yaml.safe_load(text), source=name)
    except (yaml.YAMLError, InvalidShipyard) as exc:
        raise InvalidEvent(f"invalid shipyard: {exc}") from None


class InMemoryQueryStore:
    """A :class:`~controlplane.application.ports.QueryStore` over lists you fill directly."""

    def __init__(self) -> None:
        self.executions: list[Execution] = []
        self.stored_events: list[dict[str, Any]] = []  # oldest first
        self.paused: set[tuple[str, str]] = set()  # (keptnContext, stage or "")

    async def contexts(
        self, project: str, *, keptn_contexts: Sequence[str] = (), name: str = ""
    ) -> list[list[Execution]]:
        groups: dict[str, list[Execution]] = {}
        for execution in sorted(self.executions, key=lambda e: e.triggered_at):
            if execution.scope.project != project:
                continue
            if keptn_contexts and execution.scope.keptn_context not in keptn_contexts:
                continue
            groups.setdefault(execution.scope.keptn_context, []).append(execution)
        found = [group for group in groups.values() if not name or group[0].name == name]
        return sorted(found, key=lambda group: group[0].triggered_at, reverse=True)

    async def context_page(
        self, project: str, *, name: str, limit: int | None, offset: int
    ) -> tuple[list[list[Execution]], int]:
        groups = await self.contexts(project, keptn_contexts=(), name=name)
        end = None if limit is None else offset + limit
        return groups[offset:end], len(groups)

    async def live_executions(self, project: str) -> list[Execution]:
        groups = await self.contexts(project, keptn_contexts=(), name="")
        return [e for group in groups for e in group if not e.state.terminal]

    async def pauses(self, keptn_contexts: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for context, stage in self.paused:
            if context in keptn_contexts:
                found.setdefault(context, set()).add(stage)
        return found

    async def events(self, where: EventFilter, *, limit: int, offset: int) -> Page:
        matching = [event for event in reversed(self.stored_events) if _matches(event, where)]
        if where.root_only:
            matching = _roots(matching)
        return _page(matching, limit, offset)

    async def events_by_type(
        self,
        type: str,
        *,
        match: Mapping[str, Sequence[str]],
        exclude_invalidated: bool,
        from_time: str,
        limit: int,
    ) -> list[dict[str, Any]]:
        invalidated = {
            str(event.get("triggeredid"))
            for event in self.stored_events
            if str(event.get("type", "")).endswith(".invalidated")
        }
        found = [
            event
            for event in reversed(self.stored_events)
            if event.get("type") == type
            and all(str(_path(event, path)) in values for path, values in match.items())
            and (not from_time or parse_time(event["time"]) > parse_time(from_time))
            and not (exclude_invalidated and event.get("id") in invalidated)
        ]
        return found[:limit] if limit > 0 else found

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
    ) -> Page:
        answered = {
            event.get("triggeredid")
            for event in self.stored_events
            if str(event.get("type", "")).endswith(".finished")
        }
        scope = {"project": project, "stage": stage, "service": service}
        found = [
            event
            for event in self.stored_events
            if event.get("type") == type
            and event.get("id") not in answered
            and (not event_id or event.get("id") == event_id)
            and all(not want or event["data"].get(key) == want for key, want in scope.items())
        ]
        return _page(found, limit, offset)


def _matches(event: Mapping[str, Any], where: EventFilter) -> bool:
    data = event.get("data") or {}
    wanted: list[tuple[Any, str]] = [
        (event.get("type"), where.type),
        (data.get("project"), where.project),
        (data.get("stage"), where.stage),
        (data.get("service"), where.service),
        (event.get("id"), where.event_id),
        (event.get("source"), where.source),
    ]
    if any(want and value != want for value, want in wanted):
        return False
    if where.keptn_contexts and event.get("shkeptncontext") not in where.keptn_contexts:
        return False
    time = parse_time(event["time"])
    if where.from_time and time <= parse_time(where.from_time):
        return False
    return not (where.before_time and time >= parse_time(where.before_time))


def _roots(events_newest_first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for event in reversed(events_newest_first):
        first.setdefault(str(event.get("shkeptncontext")), event)
    return [event for event in events_newest_first if event in first.values()]


def _path(event: Mapping[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _page(items: list[dict[str, Any]], limit: int, offset: int) -> Page:
    page = items[offset : offset + limit] if limit > 0 else items[offset:]
    following = offset + len(page)
    return Page(page, len(items), following if following < len(items) else None)


def stored_event(
    type: str,
    *,
    keptn_context: str,
    time: str,
    data: Mapping[str, Any],
    id: str | None = None,
    source: str = "test",
    triggered_id: str = "",
) -> dict[str, Any]:
    """A stored CloudEvent as the event store returns it (``Envelope.to_json``)."""
    envelope = Envelope(
        id=id or str(uuid.uuid4()),
        source=source,
        type=eventtypes.normalize(type),
        time=time,
        data=dict(data),
        keptn_context=keptn_context,
        triggered_id=triggered_id,
    )
    return envelope.to_json()


class InMemoryIntegrationStore:
    """An :class:`~controlplane.application.ports.IntegrationStore` in a dict."""

    def __init__(self) -> None:
        self.integrations: dict[str, Integration] = {}
        self.last_seen_writes = 0

    async def load_integrations(self) -> list[Integration]:
        return list(self.integrations.values())

    async def save_integration(self, integration: Integration) -> None:
        self.integrations[integration.id] = integration

    async def save_last_seen(self, seen: Mapping[str, float]) -> None:
        self.last_seen_writes += 1
        for integration_id, when in seen.items():
            stored = self.integrations.get(integration_id)
            if stored is not None and stored.last_seen < when:
                self.integrations[integration_id] = stored.evolve(last_seen=when)

    async def delete_integrations(self, ids: Sequence[str]) -> None:
        for integration_id in ids:
            self.integrations.pop(integration_id, None)


class InMemoryResourceStore:
    """Configuration files in a dict, versioned like the PostgreSQL store."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str, str, str], Resource] = {}

    async def get_resource(
        self, project: str, stage: str, service: str, uri: str
    ) -> Resource | None:
        return self.files.get((project, stage, service, uri))

    async def list_resources(self, project: str, stage: str, service: str) -> list[Resource]:
        return sorted(
            (
                resource
                for key, resource in self.files.items()
                if key[:3] == (project, stage, service)
            ),
            key=lambda resource: resource.uri,
        )

    async def level_resources(
        self, project: str, stage: str, service: str, uris: Sequence[str]
    ) -> list[Resource]:
        levels = {(project, "", ""), (project, stage, ""), (project, stage, service)}
        return [
            resource
            for (*level, uri), resource in self.files.items()
            if tuple(level) in levels and uri in uris
        ]

    async def put_resources(self, resources: Sequence[Resource]) -> list[Resource]:
        stored = []
        for resource in resources:
            key = (resource.project, resource.stage, resource.service, resource.uri)
            current = self.files.get(key)
            version = current.version + 1 if current else 1
            self.files[key] = replace(resource, version=version)
            stored.append(self.files[key])
        return stored

    async def delete_resource(self, project: str, stage: str, service: str, uri: str) -> bool:
        return self.files.pop((project, stage, service, uri), None) is not None
