"""An in-memory ScheduleStore that follows the PostgreSQL one's contract (claims are exclusive)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.application.envelope import Envelope
from controlplane.application.ports import (
    NoSuchProject,
    ScheduleState,
    SlotClaim,
    StoredSchedule,
)


@dataclass
class _Claim:
    claim: SlotClaim
    claimed_by: str
    claimed_at: float
    published: bool = False


class InMemoryScheduleStore:
    def __init__(self, projects: Callable[[], set[str]], clock: Callable[[], float]) -> None:
        self._projects = projects
        self._clock = clock
        self.states: dict[tuple[str, str], tuple[str, float]] = {}
        self.claims: dict[tuple[str, str, float], _Claim] = {}
        self.api: dict[tuple[str, str], StoredSchedule] = {}
        self.fail_claims = False
        self.lock = asyncio.Lock()

    async def schedule_states(
        self, seen: Sequence[tuple[str, str, str]], now: float
    ) -> list[ScheduleState]:
        states = []
        for project, name, fingerprint in seen:
            if project not in self._projects():
                continue
            stored = self.states.get((project, name))
            if stored is None or stored[0] != fingerprint:
                self.states[(project, name)] = (fingerprint, now)
            first_seen = self.states[(project, name)][1]
            last = self._last(project, name)
            states.append(
                ScheduleState(
                    project,
                    name,
                    first_seen,
                    last.claim.slot if last else None,
                    last.claim.event.keptn_context if last else "",
                )
            )
        return states

    def _last(self, project: str, name: str) -> _Claim | None:
        mine = [c for key, c in self.claims.items() if key[:2] == (project, name)]
        return max(mine, key=lambda c: c.claim.slot, default=None)

    async def forget_schedule_states(self, keys: Sequence[tuple[str, str]]) -> None:
        for key in keys:
            self.states.pop(key, None)

    async def claim_slots(self, claims: Sequence[SlotClaim], claimed_by: str) -> list[SlotClaim]:
        if self.fail_claims:
            raise ConnectionError("database went away")
        won = []
        async with self.lock:
            for claim in claims:
                key = (claim.project, claim.schedule, claim.slot)
                if key in self.claims or claim.project not in self._projects():
                    continue
                self.claims[key] = _Claim(claim, claimed_by, self._clock())
                won.append(claim)
        return won

    async def mark_published(self, claims: Sequence[SlotClaim]) -> None:
        for claim in claims:
            self.claims[(claim.project, claim.schedule, claim.slot)].published = True

    async def unpublished_claims(self, older_than: float, limit: int) -> list[SlotClaim]:
        now = self._clock()
        stale = [
            c.claim
            for c in self.claims.values()
            if not c.published and c.claimed_at < now - older_than
        ]
        return stale[:limit]

    async def prune_claims(self, older_than: float) -> int:
        return 0

    async def last_slots(self, project: str) -> dict[str, tuple[float, str]]:
        found: dict[str, tuple[float, str]] = {}
        for (owner, name, slot), claim in sorted(self.claims.items()):
            if owner == project:
                found[name] = (slot, claim.claim.event.keptn_context)
        return found

    async def list_api_schedules(self, project: str | None = None) -> list[StoredSchedule]:
        return [
            stored
            for key, stored in sorted(self.api.items())
            if project is None or key[0] == project
        ]

    async def put_api_schedule(self, schedule: StoredSchedule) -> bool:
        if schedule.project not in self._projects():
            raise NoSuchProject(schedule.project)
        created = (schedule.project, schedule.name) not in self.api
        self.api[(schedule.project, schedule.name)] = schedule
        return created

    async def delete_api_schedule(self, project: str, name: str) -> bool:
        return self.api.pop((project, name), None) is not None

    def fired(self) -> list[tuple[str, str, float]]:
        return sorted(self.claims)

    def events(self) -> list[Envelope]:
        return [self.claims[key].claim.event for key in sorted(self.claims)]


class FlakyPublisher:
    """Records what it published; fails while ``down`` is set."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.down = False
        self._changed = asyncio.Condition()

    async def publish(self, events: Sequence[Envelope]) -> None:
        if self.down:
            raise ConnectionError("NATS is down")
        self.published.extend(events)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.published) >= count)
