"""In-memory stand-ins for the engine's ports, for unit tests of the application layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from controlplane.application.envelope import Envelope
from controlplane.application.ports import (
    ProjectExists,
    ProjectRecord,
    StoredEvent,
    UnitOfWork,
    UnstorableEvent,
)
from controlplane.domain.execution import Execution


class MemoryStore:
    def __init__(self) -> None:
        self.events: dict[str, Envelope] = {}
        self.pending: list[str] = []
        self.executions: dict[str, Execution] = {}
        self.pauses: set[tuple[str, str]] = set()
        self.projects: dict[str, ProjectRecord] = {}
        self.commits = 0
        self.fail_next_commit = False

    async def load_live_executions(self) -> list[Execution]:
        return [e for e in self.executions.values() if not e.state.terminal]

    async def load_pauses(self) -> list[tuple[str, str]]:
        return sorted(self.pauses)

    async def find_events(self, ids: Sequence[str]) -> dict[str, StoredEvent]:
        return {
            i: StoredEvent(
                i, self.events[i].source, self.events[i].type, self.events[i].keptn_context
            )
            for i in ids
            if i in self.events
        }

    async def commit(self, work: UnitOfWork) -> None:
        for envelope, _publish in work.events:
            if "\\u0000" in json.dumps(envelope.data):
                raise UnstorableEvent("NUL in the event", event_id=envelope.id)
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise ConnectionError("database went away")
        self.commits += 1
        for envelope, publish in work.events:
            if envelope.id not in self.events:
                self.events[envelope.id] = envelope
                if publish:
                    self.pending.append(envelope.id)
        self.executions.update(work.executions)
        done = set(work.published)
        self.pending = [i for i in self.pending if i not in done]
        self.pauses |= set(work.pauses_added)
        for context, stage in work.pauses_removed:
            self.pauses = {
                p
                for p in self.pauses
                if not (p[0] == context and (stage is None or p[1] in (stage, "")))
            }

    async def contexts(
        self, project: str, *, keptn_contexts: Sequence[str], name: str
    ) -> list[list[Execution]]:
        """What the re-run service reads: one context's executions, oldest first."""
        found = [
            e
            for e in self.executions.values()
            if e.scope.project == project and e.scope.keptn_context in keptn_contexts
        ]
        return [sorted(found, key=lambda e: e.triggered_at)] if found else []

    async def unpublished(self, limit: int) -> list[Envelope]:
        return [self.events[i] for i in self.pending[:limit]]

    async def delete_project_data(self, project: str) -> None:
        self.executions = {k: v for k, v in self.executions.items() if v.scope.project != project}

    async def list_projects(self) -> list[ProjectRecord]:
        return list(self.projects.values())

    async def get_project(self, name: str) -> ProjectRecord | None:
        return self.projects.get(name)

    async def create_project(self, record: ProjectRecord) -> ProjectRecord:
        if record.name in self.projects:
            raise ProjectExists(record.name)
        self.projects[record.name] = record
        return record

    async def replace_project(self, record: ProjectRecord) -> ProjectRecord:
        old = self.projects.get(record.name)
        from dataclasses import replace

        stored = replace(record, version=(old.version + 1) if old else 1)
        self.projects[record.name] = stored
        return stored

    async def delete_project(self, name: str) -> bool:
        return self.projects.pop(name, None) is not None


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.changed = asyncio.Event()

    async def publish(self, events: Sequence[Envelope]) -> None:
        self.published.extend(events)
        self.changed.set()

    def types(self) -> list[str]:
        return [e.type for e in self.published]


class FakeSettle:
    """Records how a consumer settled one message (the JetStream ``Ack``'s stand-in)."""

    def __init__(self, attempt: int = 1) -> None:
        self.attempt = attempt
        self.outcomes: list[tuple[str, float | None]] = []
        self.settled = asyncio.Event()

    async def processed(self) -> bool:
        self.outcomes.append(("processed", None))
        self.settled.set()
        return True

    async def retry(self, delay: float | None = None) -> bool:
        self.outcomes.append(("retry", delay))
        self.settled.set()
        return True
