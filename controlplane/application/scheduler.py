"""Cron schedules at run time: fire each slot once, whatever the number of replicas.

Schedules come from the shipyards (``spec.schedules``) and from the HTTP API. The
:class:`Scheduler` keeps them in a heap ordered by their next slot and sleeps until the
earliest one (or until a definition changes: at the latest every ``refresh_every``
seconds it reads the definitions again). To fire a slot it:

1. claims it in the store (an insert that only one replica can win, for a whole batch of
   due slots at once); a replica that loses simply moves on to the next slot;
2. publishes the trigger, ``sh.keptn.event.<stage>.<sequence>.triggered`` from source
   ``scheduler``, to JetStream; the engine consumes it like any other trigger;
3. marks the claim published once JetStream acknowledged it.

The event id and keptnContext are derived from (project, schedule, slot), so a trigger
published twice (a replica died between steps 2 and 3, and another one republished the
claim it left) is the same event: JetStream's duplicate window and the engine's event
store both drop the repeat. Claims left unpublished for ``republish_after`` seconds are
published again by whichever replica looks first.

Which slot fires when is decided by the pure :func:`controlplane.domain.schedules.due`
(missed slots, ``skip``/``runOnce``, no back-fill); this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.application.envelope import Envelope, format_time
from controlplane.application.errors import Conflict, InvalidEvent, NotFound, UnknownProject
from controlplane.application.ports import (
    DefinitionStore,
    NoSuchProject,
    ProjectRecord,
    Publisher,
    ScheduleStore,
    ShipyardReader,
    SlotClaim,
    StoredSchedule,
)
from controlplane.domain import schedules
from controlplane.domain.errors import InvalidShipyard, Problem
from controlplane.domain.eventtypes import Phase, SequenceEventType
from controlplane.domain.execution import derived_id
from controlplane.domain.schedules import Schedule
from controlplane.domain.shipyard import Shipyard

logger = logging.getLogger(__name__)

SOURCE = "scheduler"
SHIPYARD, API = "shipyard", "api"

Key = tuple[str, str]  # (project, schedule name)


class ProjectShipyards(Protocol):
    """The projects and their parsed shipyards (``Definitions`` in the serving process)."""

    async def list(self) -> list[ProjectRecord]: ...

    async def get(self, name: str) -> ProjectRecord | None: ...

    def shipyard(self, name: str) -> Shipyard | None: ...


# --------------------------------------------------------------------------- events


def trigger_event(project: str, schedule: Schedule, slot: float, now: float) -> Envelope:
    """The sequence trigger of one slot; its id and keptnContext depend only on the slot.

    The schedule's ``data`` goes first; project, stage and service are the schedule's, and
    ``labels`` gains ``schedule`` and ``scheduledFor`` (RFC 3339, UTC) so that whoever looks
    at the sequence sees why it ran.
    """
    when = schedules.slot_text(slot)
    labels = {str(k): str(v) for k, v in dict(schedule.data.get("labels") or {}).items()}
    labels.update({"schedule": schedule.name, "scheduledFor": when})
    data: dict[str, Any] = {
        **schedule.data,
        "project": project,
        "stage": schedule.stage,
        "service": schedule.service,
        "labels": labels,
    }
    return Envelope(
        id=derived_id("schedule", project, schedule.name, when),
        source=SOURCE,
        type=str(SequenceEventType(schedule.stage, schedule.sequence, Phase.TRIGGERED)),
        time=format_time(now),
        data=data,
        keptn_context=derived_id("schedule-context", project, schedule.name, when),
    )


def check_against(schedule: Schedule, shipyard: Shipyard) -> list[Problem]:
    """Whether the shipyard has the schedule's stage and sequence (API schedules)."""
    stage = shipyard.stage(schedule.stage)
    if stage is None:
        return [Problem("stage", f"stage {schedule.stage!r} is not defined in the shipyard")]
    if stage.sequence(schedule.sequence) is None:
        message = f"sequence {schedule.sequence!r} is not defined in stage {stage.name!r}"
        return [Problem("sequence", message)]
    return []


def read_api_schedule(
    stored: StoredSchedule, shipyard: Shipyard | None
) -> tuple[Schedule | None, str]:
    """An API schedule as it stands now: parsed and checked against the current shipyard."""
    if shipyard is None:
        return None, "the project's shipyard is invalid"
    if any(candidate.name == stored.name for candidate in shipyard.schedules):
        return None, "the shipyard defines a schedule of the same name, which wins"
    parsed, problems = schedules.parse_schedule({**stored.document, "name": stored.name})
    if parsed is not None:
        problems = check_against(parsed, shipyard)
    if problems:
        return None, _render(problems)
    return parsed, ""


def _render(problems: Sequence[Problem]) -> str:
    return "; ".join(problem.render() for problem in problems)


# --------------------------------------------------------------------------- the timer


@dataclass(slots=True)
class _Entry:
    project: str
    schedule: Schedule
    first_seen: float
    last_slot: float | None
    due_at: float | None = None
    reported_missed: float | None = None


@dataclass(slots=True)
class _Timers:
    """When the periodic chores are next due."""

    refresh: float = 0.0
    sweep: float = 0.0
    prune: float = 0.0


class Scheduler:
    """Fires the slots of every schedule; several may run against one database.

    ``reload`` is called before the definitions are read again (a scheduler outside the
    serving process re-reads the stored shipyards); ``grace`` is how late a slot may fire
    and still count as on time.
    """

    def __init__(
        self,
        store: ScheduleStore,
        publisher: Publisher,
        projects: ProjectShipyards,
        *,
        replica: str,
        reload: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        grace: float = 60.0,
        refresh_every: float = 30.0,
        republish_after: float = 30.0,
        keep_claims: float = 86400.0,
        retry_after: float = 2.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._projects = projects
        self._replica = replica
        self._reload = reload
        self._clock = clock
        self._grace = grace
        self._refresh_every = refresh_every
        self._republish_after = republish_after
        self._keep_claims = keep_claims
        self._retry_after = retry_after
        self._entries: dict[Key, _Entry] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._timers = _Timers()
        self._unpublished: list[SlotClaim] = []
        self._reported: dict[Key, str] = {}
        self._wake = asyncio.Event()

    def changed(self) -> None:
        """The definitions changed: read them again now, not at the next refresh."""
        self._timers.refresh = 0.0
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Fire slots until ``stop`` is set; an error is logged and retried, never fatal."""
        logger.info("scheduler.started", extra={"replica": self._replica})
        while not stop.is_set():
            self._wake.clear()
            try:
                wake_at = await self.tick()
            except Exception:
                logger.exception("scheduler.failed")
                wake_at = self._clock() + self._retry_after
            await _sleep_until(stop, self._wake, max(0.0, wake_at - self._clock()))
        logger.info("scheduler.stopped", extra={"replica": self._replica})

    async def tick(self) -> float:
        """One pass: refresh if due, fire what is due, republish and prune if due.

        Returns when the next pass is needed (epoch seconds).
        """
        now = self._clock()
        if now >= self._timers.refresh:
            # Set first: a change announced while this refresh runs must not be lost.
            self._timers.refresh = now + self._refresh_every
            try:
                await self._refresh(now)
            except BaseException:
                self._timers.refresh = 0.0
                raise
        await self._fire_due(now)
        if self._unpublished:
            await self._publish([])
        if now >= self._timers.sweep:
            await self._republish_stale()
            self._timers.sweep = now + max(self._republish_after / 3, 1.0)
        if now >= self._timers.prune:
            self._timers.prune = now + 3600.0
            removed = await self._store.prune_claims(self._keep_claims)
            if removed:
                logger.debug("schedule.pruned", extra={"claims": removed})
        return self._next_wake()

    def next_slots(self) -> dict[Key, float | None]:
        """When each known schedule next needs a look (for tests and diagnostics)."""
        return {key: entry.due_at for key, entry in self._entries.items()}

    # ------------------------------------------------------------------ definitions

    async def _refresh(self, now: float) -> None:
        if self._reload is not None:
            await self._reload()
        current = await self._current()
        gone = [key for key in self._entries if key not in current]
        for key in gone:
            del self._entries[key]
        if gone:
            await self._store.forget_schedule_states(gone)
        changed = {
            key: schedule
            for key, schedule in current.items()
            if key not in self._entries or self._entries[key].schedule != schedule
        }
        if not changed:
            return
        states = await self._store.schedule_states(
            [
                (project, name, schedule.fingerprint)
                for (project, name), schedule in changed.items()
            ],
            now,
        )
        for state in states:
            key = (state.project, state.schedule)
            entry = _Entry(state.project, changed[key], state.first_seen, state.last_slot)
            self._entries[key] = entry
            self._push(key, now)
        logger.debug("schedule.loaded", extra={"schedules": len(states)})

    async def _current(self) -> dict[Key, Schedule]:
        found: dict[Key, Schedule] = {}
        for record in await self._projects.list():
            shipyard = self._projects.shipyard(record.name)
            for schedule in shipyard.schedules if shipyard is not None else ():
                found[(record.name, schedule.name)] = schedule
        for stored in await self._store.list_api_schedules():
            key = (stored.project, stored.name)
            if key in found or await self._projects.get(stored.project) is None:
                continue
            parsed, problem = read_api_schedule(stored, self._projects.shipyard(stored.project))
            if parsed is not None:
                found[key] = parsed
                self._reported.pop(key, None)
            elif self._reported.get(key) != problem:
                self._reported[key] = problem
                logger.warning(
                    "schedule.invalid",
                    extra={"project": stored.project, "schedule": stored.name, "error": problem},
                )
        return found

    # ------------------------------------------------------------------ firing

    async def _fire_due(self, now: float) -> None:
        """Claim and publish every due slot; one round per slot a schedule still owes."""
        while ready := self._pop_due(now):
            claims: list[SlotClaim] = []
            fired: list[tuple[Key, schedules.Firing]] = []
            for key in ready:
                entry = self._entries[key]
                firing = schedules.due(
                    entry.schedule, entry.last_slot, entry.first_seen, now, self._grace
                )
                self._report_missed(entry, firing)
                if firing.slot is None:
                    if firing.missed_through is not None:  # skipped: do not count them again
                        entry.last_slot = max(entry.last_slot or 0.0, firing.missed_through)
                    self._push(key, firing.next_slot)
                    continue
                event = trigger_event(entry.project, entry.schedule, firing.slot, now)
                claims.append(SlotClaim(entry.project, entry.schedule.name, firing.slot, event))
                fired.append((key, firing))
            if not claims:
                return
            try:
                won = await self._store.claim_slots(claims, self._replica)
            except Exception:
                logger.exception("schedule.claim_failed", extra={"slots": len(claims)})
                for key, _ in fired:
                    self._push(key, now + self._retry_after)
                return
            for key, firing in fired:
                self._entries[key].last_slot = firing.slot
                self._push(key, firing.next_slot)
            self._log_claims(claims, won, fired)
            await self._publish(won)

    def _pop_due(self, now: float) -> list[Key]:
        ready: list[Key] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry.due_at == when:
                entry.due_at = None
                ready.append(key)
        return ready

    def _push(self, key: Key, when: float | None) -> None:
        entry = self._entries[key]
        entry.due_at = when
        if when is not None:
            heapq.heappush(self._heap, (when, next(self._order), key))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [item for item in self._heap if self._valid(item)]
            heapq.heapify(self._heap)

    def _valid(self, item: tuple[float, int, Key]) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.due_at == item[0]

    def _next_wake(self) -> float:
        wake = min(self._timers.refresh, self._timers.sweep, self._timers.prune)
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        if self._heap:
            wake = min(wake, self._heap[0][0])
        if self._unpublished:
            wake = min(wake, self._clock() + self._retry_after)
        return wake

    async def _publish(self, claims: Sequence[SlotClaim]) -> None:
        """Publish new claims and any that failed before; mark them once JetStream has them."""
        pending = [*self._unpublished, *claims]
        if not pending:
            return
        try:
            await self._publisher.publish([claim.event for claim in pending])
        except Exception as exc:
            # Kept for the next pass; the stale sweep would find them too, later.
            self._unpublished = pending[-1000:]
            logger.warning(
                "schedule.publish_failed", extra={"slots": len(pending), "error": str(exc)}
            )
            return
        self._unpublished = []
        try:
            await self._store.mark_published(pending)
        except Exception as exc:  # not marked: republished later, and dropped as a repeat
            logger.warning("schedule.mark_failed", extra={"error": str(exc)})

    async def _republish_stale(self) -> None:
        """Publish claims that a replica made and never marked (it died before it could)."""
        stale = await self._store.unpublished_claims(self._republish_after, limit=500)
        if not stale:
            return
        try:
            await self._publisher.publish([claim.event for claim in stale])
        except Exception as exc:
            logger.warning(
                "schedule.publish_failed", extra={"slots": len(stale), "error": str(exc)}
            )
            return
        await self._store.mark_published(stale)
        for claim in stale:
            logger.info(
                "schedule.republished",
                extra={
                    "project": claim.project,
                    "schedule": claim.schedule,
                    "slot": schedules.slot_text(claim.slot),
                    "keptn_context": claim.event.keptn_context,
                },
            )

    def _log_claims(
        self,
        claims: Sequence[SlotClaim],
        won: Sequence[SlotClaim],
        fired: Sequence[tuple[Key, schedules.Firing]],
    ) -> None:
        mine = {(claim.project, claim.schedule, claim.slot) for claim in won}
        for claim, (_, firing) in zip(claims, fired, strict=True):
            ours = (claim.project, claim.schedule, claim.slot) in mine
            logger.log(
                logging.INFO if ours else logging.DEBUG,
                "schedule.fired" if ours else "schedule.claimed_elsewhere",
                extra={
                    "project": claim.project,
                    "schedule": claim.schedule,
                    "slot": schedules.slot_text(claim.slot),
                    "keptn_context": claim.event.keptn_context,
                    "late": firing.late,
                },
            )

    def _report_missed(self, entry: _Entry, firing: schedules.Firing) -> None:
        through = firing.missed_through
        if through is None or through == entry.reported_missed:
            return
        entry.reported_missed = through
        logger.warning(
            "schedule.missed",
            extra={
                "project": entry.project,
                "schedule": entry.schedule.name,
                "through": schedules.slot_text(through),
                "policy": entry.schedule.missed,
            },
        )


async def _sleep_until(stop: asyncio.Event, wake: asyncio.Event, delay: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# --------------------------------------------------------------------------- shipyards


class StoredShipyards:
    """The stored projects and their shipyards, for a scheduler outside ``serve``.

    ``load`` re-reads the project list and parses only the shipyards that changed since the
    last time, so calling it on every refresh is cheap.
    """

    def __init__(self, store: DefinitionStore, reader: ShipyardReader) -> None:
        self._store = store
        self._reader = reader
        self._records: dict[str, ProjectRecord] = {}
        self._parsed: dict[str, Shipyard] = {}

    async def load(self) -> None:
        records = {record.name: record for record in await self._store.list_projects()}
        for name in list(self._parsed):
            if name not in records:
                del self._parsed[name]
        for name, record in records.items():
            known = self._records.get(name)
            if known is not None and (known.version, known.shipyard_yaml) == (
                record.version,
                record.shipyard_yaml,
            ):
                continue
            self._parsed.pop(name, None)
            if record.error:
                continue
            try:
                self._parsed[name] = self._reader.read(record.shipyard_yaml, name)
            except InvalidShipyard:
                continue
        self._records = records

    async def list(self) -> list[ProjectRecord]:
        return sorted(self._records.values(), key=lambda record: record.name)

    async def get(self, name: str) -> ProjectRecord | None:
        return self._records.get(name)

    def shipyard(self, name: str) -> Shipyard | None:
        return self._parsed.get(name)


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """One schedule of a project as the API lists it."""

    name: str
    origin: str  # "shipyard" or "api"
    document: Mapping[str, Any]
    next_slot: float | None = None
    last_slot: float | None = None
    last_context: str = ""
    problem: str = ""  # why an API schedule does not fire (its stage is gone, say)


class ScheduleCatalog:
    """List a project's schedules; create, replace and delete those defined by the API.

    An API schedule is validated like a shipyard entry, and against the project's shipyard
    (its stage and sequence must exist). Its name may not be one the shipyard uses: the
    shipyard owns that name.
    """

    def __init__(
        self,
        store: ScheduleStore,
        projects: ProjectShipyards,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._projects = projects
        self._clock = clock
        self._on_change = on_change

    def set_change_hook(self, hook: Callable[[], None]) -> None:
        self._on_change = hook

    async def list(self, project: str) -> list[ScheduleView]:
        await self._project(project)
        shipyard = self._projects.shipyard(project)
        last = await self._store.last_slots(project)
        now = self._clock()
        views: list[ScheduleView] = []
        for schedule in shipyard.schedules if shipyard is not None else ():
            views.append(self._view(schedule, SHIPYARD, last, now))
        for stored in await self._store.list_api_schedules(project):
            parsed, problem = read_api_schedule(stored, shipyard)
            if parsed is not None:
                views.append(self._view(parsed, API, last, now))
            else:
                slot, context = last.get(stored.name, (None, ""))
                views.append(
                    ScheduleView(stored.name, API, stored.document, None, slot, context, problem)
                )
        return views

    async def put(
        self, project: str, name: str, body: Mapping[str, Any]
    ) -> tuple[ScheduleView, bool]:
        """Create or replace an API schedule; returns it and whether it was created.

        Raises:
            UnknownProject: no such project.
            Conflict: the shipyard defines this name, or the shipyard is invalid.
            InvalidEvent: the body breaks a rule; the message names each field.
        """
        await self._project(project)
        shipyard = self._shipyard(project)
        if any(schedule.name == name for schedule in shipyard.schedules):
            raise Conflict(
                f"schedule {name!r} is defined in the shipyard of project {project!r};"
                " change it there"
            )
        if "name" in body and body["name"] != name:
            raise InvalidEvent(f"invalid schedule: name: must be {name!r}, as in the path")
        parsed, problems = schedules.parse_schedule({**body, "name": name})
        if parsed is not None:
            problems = check_against(parsed, shipyard)
        if problems or parsed is None:
            raise InvalidEvent(f"invalid schedule: {_render(problems)}")
        stored = StoredSchedule(project, name, parsed.document(), self._clock())
        try:
            created = await self._store.put_api_schedule(stored)
        except NoSuchProject:
            raise UnknownProject(f"project {project!r} does not exist") from None
        self._changed()
        last = await self._store.last_slots(project)
        return self._view(parsed, API, last, self._clock()), created

    async def delete(self, project: str, name: str) -> None:
        """Delete an API schedule; it starts anew (no back-fill) if it is created again."""
        await self._project(project)
        shipyard = self._projects.shipyard(project)
        if shipyard is not None and any(s.name == name for s in shipyard.schedules):
            raise Conflict(
                f"schedule {name!r} is defined in the shipyard of project {project!r};"
                " remove it there"
            )
        if not await self._store.delete_api_schedule(project, name):
            raise NotFound(f"project {project!r} has no schedule {name!r}")
        await self._store.forget_schedule_states([(project, name)])
        self._changed()

    async def _project(self, project: str) -> None:
        if await self._projects.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")

    def _shipyard(self, project: str) -> Shipyard:
        shipyard = self._projects.shipyard(project)
        if shipyard is None:
            raise Conflict(
                f"the shipyard of project {project!r} is invalid, so a schedule cannot be"
                " checked against it; fix the shipyard first"
            )
        return shipyard

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @staticmethod
    def _view(
        schedule: Schedule, origin: str, last: Mapping[str, tuple[float, str]], now: float
    ) -> ScheduleView:
        slot, context = last.get(schedule.name, (None, ""))
        return ScheduleView(
            schedule.name,
            origin,
            schedule.document(),
            schedule.cron.next_after(now, schedule.zone),
            slot,
            context,
        )
