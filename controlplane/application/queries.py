"""The read side of the HTTP API: Keptn-shaped JSON built from the query store.

Why a module of its own: the shapes (sequence states, the datastore's event pages, open
``.triggered`` events) are Keptn's public contract, and the rules behind them (which state a
context shows, what a datastore filter may say) belong to the application, not to the HTTP
adapter that only serialises them or to the store that only fetches rows.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from controlplane.application.envelope import format_time, parse_time
from controlplane.application.errors import Rejected
from controlplane.application.ports import EventFilter, Page, QueryStore
from controlplane.domain import eventtypes, queueing, views
from controlplane.domain.execution import EventRef, Execution, State

SEQUENCE_STATES = ("triggered", "waiting", "started", "paused", "aborted", "timedOut", "finished")
_FILTER_SEPARATOR = " AND "
_FILTER_SCOPES = ("data.project", "shkeptncontext")
_FILTER_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_T = TypeVar("_T")


class Queries:
    """Answers the read endpoints; raises :class:`Rejected` (400) for a bad query."""

    def __init__(self, store: QueryStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    # ------------------------------------------------------------------ sequence states

    async def sequence_states(
        self,
        project: str,
        *,
        keptn_contexts: Sequence[str] = (),
        name: str = "",
        state: str = "",
        from_time: str = "",
        before_time: str = "",
        page_size: int = 0,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Keptn's ``GET /sequence/{project}``: one entry per keptnContext, newest first.

        ``page_size`` 0 means every matching context. ``nextPageKey`` is the offset of the
        next page, or 0 when this page is the last.
        """
        if state and state not in SEQUENCE_STATES:
            raise Rejected(f"state must be one of {', '.join(SEQUENCE_STATES)}; got {state!r}")
        after = _time_bound("fromTime", from_time)
        before = _time_bound("beforeTime", before_time)
        if not (keptn_contexts or state or after is not None or before is not None):
            # The common listing: let the database choose the page.
            groups, total = await self._store.context_page(
                project, name=name, limit=page_size or None, offset=offset
            )
            states = await self._states(project, groups, filtered=True)
            following = offset + len(states)
            return {
                "states": states,
                "nextPageKey": following if following < total else 0,
                "totalCount": total,
            }
        groups = await self._store.contexts(project, keptn_contexts=keptn_contexts, name=name)
        groups = [group for group in groups if group and _within(group, after, before)]
        filtered = bool(keptn_contexts or name or after is not None or before is not None)
        states = await self._states(project, groups, filtered=filtered)
        if state:
            states = [entry for entry in states if entry["state"] == state]
        page = states[offset : offset + page_size] if page_size else states[offset:]
        following = offset + len(page)
        return {
            "states": page,
            "nextPageKey": following if following < len(states) else 0,
            "totalCount": len(states),
        }

    async def _states(
        self, project: str, groups: list[list[Execution]], *, filtered: bool
    ) -> list[dict[str, Any]]:
        blocked = await self._blocked(project, groups, filtered=filtered)
        pauses = await self._store.pauses([group[0].scope.keptn_context for group in groups])
        return [_sequence_state(project, group, pauses, blocked) for group in groups]

    async def _blocked(
        self, project: str, groups: list[list[Execution]], *, filtered: bool
    ) -> set[str]:
        """Ids of the shown executions queued behind another of the same project/stage/service.

        The blocker may belong to a context the filter left out; then the whole project is
        read once more (only when something shown is waiting for its slot).
        """
        now = self._clock()
        candidates = [
            execution for group in groups for execution in group if execution.wants_slot(now)
        ]
        if not candidates:
            return set()
        pool: Iterable[Execution] = (execution for group in groups for execution in group)
        if filtered:
            pool = await self._store.live_executions(project)
        live: dict[str, list[Execution]] = defaultdict(list)
        for execution in pool:
            if not execution.state.terminal:
                live[execution.slot_key].append(execution)
        return {
            candidate.id
            for candidate in candidates
            if queueing.is_blocked(candidate, live[candidate.slot_key], now)
        }

    # ------------------------------------------------------------------ events

    async def events(self, where: EventFilter, *, page_size: int, offset: int) -> dict[str, Any]:
        """Keptn's datastore ``GET /event``: newest first, ``nextPageKey`` "0" on the last page."""
        if not where.keptn_contexts and not where.project:
            raise Rejected("either keptnContext or project must be set")
        where = _normalise_times(where)
        page = await self._store.events(where, limit=page_size, offset=offset)
        return {
            "events": page.items,
            "nextPageKey": _page_key(page),
            "totalCount": page.total,
            "pageSize": page_size,
        }

    async def events_by_type(
        self,
        event_type: str,
        *,
        filter: str,
        exclude_invalidated: bool = False,
        from_time: str = "",
        limit: int = 20,
    ) -> dict[str, Any]:
        """Keptn's datastore ``GET /event/type/{eventType}`` with its filter grammar."""
        match = parse_filter(filter)
        bound = _time_bound("fromTime", from_time)
        events = await self._store.events_by_type(
            eventtypes.normalize(event_type),
            match=match,
            exclude_invalidated=exclude_invalidated,
            from_time=format_time(bound) if bound is not None else "",
            limit=limit,
        )
        return {"events": events}

    async def open_triggered(
        self,
        event_type: str,
        *,
        project: str = "",
        stage: str = "",
        service: str = "",
        event_id: str = "",
        page_size: int = 20,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Keptn's ``GET /event/triggered/{eventType}``: ``.triggered`` events still unanswered."""
        page = await self._store.open_triggered(
            eventtypes.normalize(event_type),
            project=project,
            stage=stage,
            service=service,
            event_id=event_id,
            limit=page_size,
            offset=offset,
        )
        return {"events": page.items, "nextPageKey": _page_key(page), "totalCount": page.total}


def parse_filter(text: str) -> dict[str, list[str]]:
    """Keptn's datastore filter: ``path:value`` or ``path:v1,v2`` clauses joined by " AND ".

    Raises:
        Rejected: a clause is malformed, a path repeats, or neither ``data.project`` nor
            ``shkeptncontext`` is given (Keptn refused those queries too).
    """
    match: dict[str, list[str]] = {}
    for clause in text.split(_FILTER_SEPARATOR):
        path, colon, raw_values = clause.strip().partition(":")
        values = [value.strip() for value in raw_values.split(",")]
        if not colon or not _FILTER_PATH.fullmatch(path) or not all(values):
            raise Rejected(
                f"filter clause {clause.strip()!r} must read 'path:value' or 'path:v1,v2'"
                " (clauses are joined by ' AND ')"
            )
        if path in match:
            raise Rejected(f"filter names {path!r} twice")
        match[path] = values
    if not any(scope in match for scope in _FILTER_SCOPES):
        raise Rejected("filter must contain data.project or shkeptncontext")
    return match


# ---------------------------------------------------------------------- sequence-state JSON


def _sequence_state(
    project: str,
    executions: list[Execution],
    pauses: Mapping[str, set[str]],
    blocked: set[str],
) -> dict[str, Any]:
    first = executions[0]
    context = first.scope.keptn_context
    state = views.overall_state(
        executions, context_paused="" in pauses.get(context, set()), blocked=blocked
    )
    return {
        "name": first.name,
        "service": first.scope.service,
        "project": project,
        "time": format_time(first.triggered_at),
        "shkeptncontext": context,
        "state": state,
        "problemTitle": next(
            (e.view.problem_title for e in executions if e.view.problem_title), ""
        ),
        "stages": [_stage(group) for group in _by_stage(executions)],
    }


def _by_stage(executions: list[Execution]) -> list[list[Execution]]:
    """A stage appears once even when a loop ran it twice; the later run decides its state."""
    stages: dict[str, list[Execution]] = {}
    for execution in executions:
        stages.setdefault(execution.scope.stage, []).append(execution)
    return list(stages.values())


def _stage(runs: list[Execution]) -> dict[str, Any]:
    last = runs[-1]
    stage: dict[str, Any] = {
        "name": last.scope.stage,
        "image": _last(run.view.image for run in runs) or "",
        "state": views.stage_state(last),
        "latestEvaluation": _evaluation(_last(run.view.latest_evaluation for run in runs)),
        "latestEvent": _event(_last(run.view.latest_event for run in runs)),
        "latestFailedEvent": _event(_last(run.view.latest_failed_event for run in runs)),
    }
    # Our additions, only where they say something (Keptn's clients ignore unknown keys).
    attempts = [attempt for run in runs for attempt in run.attempts]
    if attempts:
        stage["attempts"] = [
            {
                "task": attempt.name,
                "attempt": attempt.attempt,
                "triggeredid": attempt.triggered_id,
                "result": attempt.result,
                "status": attempt.status,
                "message": attempt.message,
                "timedOut": attempt.timed_out,
                "time": format_time(attempt.ended_at),
            }
            for attempt in attempts
        ]
    if last.current is not None and last.current.attempt > 1:
        stage["currentTask"] = {"name": last.current.name, "attempt": last.current.attempt}
    if last.state == State.PAUSED and last.message:
        stage["message"] = last.message
    if last.rerun_of:
        stage["rerunOf"] = last.rerun_of
    return stage


def _last(values: Iterable[_T | None]) -> _T | None:
    found: _T | None = None
    for value in values:
        if value:
            found = value
    return found


def _event(ref: EventRef | None) -> dict[str, str] | None:
    if ref is None:
        return None
    return {"type": ref.type, "id": ref.id, "time": format_time(ref.time)}


def _evaluation(evaluation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    return {"result": evaluation.get("result", ""), "score": evaluation.get("score", 0)}


def _within(executions: list[Execution], after: float | None, before: float | None) -> bool:
    started = executions[0].triggered_at
    return (after is None or started >= after) and (before is None or started < before)


# ---------------------------------------------------------------------- helpers


def _time_bound(name: str, text: str) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise Rejected(
            f"{name} must be a time such as 2024-01-31T10:00:00.000Z, got {text!r}"
        ) from None


def _normalise_times(where: EventFilter) -> EventFilter:
    """Bring time bounds into Keptn's one string form, which the store compares as text."""
    after = _time_bound("fromTime", where.from_time)
    before = _time_bound("beforeTime", where.before_time)
    return replace(
        where,
        type=eventtypes.normalize(where.type) if where.type else "",
        from_time=format_time(after) if after is not None else "",
        before_time=format_time(before) if before is not None else "",
    )


def _page_key(page: Page) -> str:
    return str(page.next_offset) if page.next_offset else "0"
