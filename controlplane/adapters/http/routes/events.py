"""Event intake (Keptn's ``POST /v1/event``), open ``.triggered`` events, a context's stream.

Why the handler reads the raw request: an event arrives in three encodings and must be
size-checked before it is parsed, so :mod:`..ingress` owns the body, not FastAPI's model
binding.

Why the stream subscribes before it reads the stored events: an event committed between the
read and the subscription would otherwise be lost; reading after subscribing can only show
an event twice, and the stream drops repeats by id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from controlplane.adapters.http import ingress, schemas, waiting
from controlplane.adapters.http.services import Services
from controlplane.application.admission import IncomingEvent
from controlplane.application.errors import NotFound, UnknownProject
from controlplane.application.ports import EventFilter
from controlplane.application.watch import Subscription
from controlplane.domain import eventtypes
from controlplane.domain.eventtypes import Phase

KEEP_ALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies from closing a quiet stream, and lets the stream
notice a context that stopped running without a commit (its project was deleted)."""
_STORED_PAGE = 500

_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A CloudEvent: structured, binary (ce-* headers) or plain JSON.",
        "content": {
            "application/cloudevents+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["events"])

    @api.post(
        "/api/v1/event",
        response_model=schemas.KeptnContextResponse | schemas.SequenceOutcome,
        responses={
            202: {
                "model": schemas.SequencePending,
                "description": "With wait: the event is stored, the sequence still runs.",
            },
            400: {"model": schemas.Problem},
            413: {"model": schemas.Problem},
        },
        openapi_extra=_EVENT_BODY,
    )
    async def post_event(
        request: Request,
        wait: Annotated[
            str,
            Query(
                description="For a sequence trigger: answer with the final result once the"
                " context has ended, or 202 after this duration (30s, 1m, seconds; at most"
                " 5m). Ignored for other events."
            ),
        ] = "",
    ) -> schemas.KeptnContextResponse | schemas.SequenceOutcome | JSONResponse:
        """Accept a sequence trigger or a task answer; 200 means it is durably stored."""
        seconds = waiting.wait_seconds(wait)  # refused before anything is stored
        if seconds is not None:
            waiting.watch_of(services)
        raw = await ingress.read_event(request, services.max_event_bytes)
        context = await services.engine.ingest(raw)
        if seconds is None or not _is_trigger(raw):
            return schemas.KeptnContextResponse(keptnContext=context)
        return await _await_result(request, services, raw, context, seconds)

    @api.get(
        "/api/v1/event/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "Server-Sent Events: the context's stored events, then live"
                " ones, then `event: end` with the overall state.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            404: {"model": schemas.Problem},
        },
    )
    async def event_stream(
        keptn_context: Annotated[str, Query(alias="keptnContext", min_length=1)],
        last_event_id: Annotated[
            str,
            Header(
                alias="Last-Event-ID",
                description="Resume after this event id (browsers send it on reconnect).",
            ),
        ] = "",
    ) -> StreamingResponse:
        """Follow one context's events live until it ends (Server-Sent Events)."""
        watch = waiting.watch_of(services)
        # Subscribe first (see the module docstring), then read what is stored.
        subscription = watch.subscribe(keptn_context)
        try:
            stored = await _stored_events(services, keptn_context)
            if not stored and not services.engine.running(keptn_context):
                raise NotFound(f"no events for keptnContext {keptn_context!r}")
        except BaseException:
            subscription.close()
            raise
        return _EventStream(_stream(services, subscription, stored, last_event_id), subscription)

    @api.get(
        "/api/controlPlane/v1/event/triggered/{eventType}",
        response_model=schemas.TriggeredEvents,
        responses={404: {"model": schemas.Problem}},
    )
    async def triggered_events(
        event_type: Annotated[str, Path(alias="eventType")],
        project: str = "",
        stage: str = "",
        service: str = "",
        event_id: Annotated[str, Query(alias="eventID")] = "",
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=50)] = 20,
        next_page_key: Annotated[int, Query(alias="nextPageKey", ge=0)] = 0,
    ) -> schemas.TriggeredEvents:
        """Open ``.triggered`` events (short types such as ``approval.triggered`` work too)."""
        if project and await services.definitions.get(project) is None:
            raise UnknownProject(f"project {project!r} does not exist")
        found = await services.queries.open_triggered(
            event_type,
            project=project,
            stage=stage,
            service=service,
            event_id=event_id,
            page_size=page_size,
            offset=next_page_key,
        )
        return schemas.TriggeredEvents.model_validate(found)

    return api


class _EventStream(StreamingResponse):
    """A ``text/event-stream`` response that always leaves the watch when it is done.

    A client that hangs up before the first frame cancels the response before the frame
    generator has started, so the generator's own cleanup never runs; this does.
    """

    def __init__(self, frames: AsyncIterator[str], subscription: Subscription) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            # No caching, and no buffering in nginx-style proxies: events must arrive now.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()


def _is_trigger(raw: IncomingEvent) -> bool:
    try:
        parsed = eventtypes.parse(str(raw.attributes.get("type", "")))
    except eventtypes.EventTypeError:
        return False
    return isinstance(parsed, eventtypes.SequenceEventType) and parsed.phase is Phase.TRIGGERED


async def _await_result(
    request: Request, services: Services, raw: IncomingEvent, context: str, seconds: float
) -> schemas.SequenceOutcome | JSONResponse:
    """The final result when the context ends within ``seconds``; else 202 (it goes on)."""
    watch = waiting.watch_of(services)
    if not await waiting.wait_ended(request, watch, context, seconds):
        pending = schemas.SequencePending(keptnContext=context)
        return JSONResponse(pending.model_dump(), status_code=202)
    project = str((raw.data or {}).get("project") or "")
    outcome = await watch.outcome(project, context)
    if outcome is None:  # e.g. the project was deleted while we waited
        return schemas.SequenceOutcome(
            keptnContext=context, state="", result="", status="", message="", data={}
        )
    return schemas.SequenceOutcome(
        keptnContext=context,
        state=outcome.state,
        result=outcome.result,
        status=outcome.status,
        message=outcome.message,
        data=outcome.data,
    )


async def _stored_events(services: Services, context: str) -> list[dict[str, Any]]:
    """Every stored event of the context, oldest first (the store pages newest first)."""
    newest_first: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await services.queries.events(
            EventFilter(keptn_contexts=(context,)), page_size=_STORED_PAGE, offset=offset
        )
        newest_first.extend(page["events"])
        offset = int(page["nextPageKey"])
        if not offset:
            break
    seen: set[str] = set()
    oldest_first = []
    # A commit between two pages shifts the offsets and can repeat an event: keep one.
    for event in reversed(newest_first):
        if str(event.get("id")) not in seen:
            seen.add(str(event.get("id")))
            oldest_first.append(event)
    return oldest_first


async def _stream(
    services: Services,
    subscription: Subscription,
    stored: Sequence[Mapping[str, Any]],
    last_event_id: str,
) -> AsyncIterator[str]:
    """The SSE frames: stored events after ``last_event_id``, live ones, then ``end``."""
    with subscription:
        seen = {str(event.get("id")) for event in stored}
        ids = [str(event.get("id")) for event in stored]
        start = ids.index(last_event_id) + 1 if last_event_id in ids else 0
        project = next((_project(event) for event in stored if _project(event)), "")
        for event in stored[start:]:
            yield _frame(event)
        reason = "ended"
        while True:
            try:
                async with asyncio.timeout(KEEP_ALIVE_SECONDS):
                    envelope = await subscription.next()
            except TimeoutError:
                if not services.engine.running(subscription.keptn_context):
                    break  # it stopped without a commit telling us: its project was deleted
                yield ": keep-alive\n\n"
                continue
            if envelope is None:
                reason = subscription.end_reason or "ended"
                break
            if envelope.id in seen:
                continue
            seen.add(envelope.id)
            project = project or envelope.project
            yield _frame(envelope.to_json())
        state = await _state(services, project, subscription.keptn_context)
        end = {"keptnContext": subscription.keptn_context, "state": state, "reason": reason}
        yield f"event: end\ndata: {json.dumps(end)}\n\n"


def _frame(event: Mapping[str, Any]) -> str:
    # json.dumps escapes line breaks inside strings, so the data is always one line.
    kind = str(event.get("type", "")).replace("\r", "").replace("\n", "")
    return f"id: {event.get('id')}\nevent: {kind}\ndata: {json.dumps(event)}\n\n"


def _project(event: Mapping[str, Any]) -> str:
    data = event.get("data")
    return str(data.get("project") or "") if isinstance(data, Mapping) else ""


async def _state(services: Services, project: str, context: str) -> str:
    """The context's overall state for the end of a stream; "" when it has no sequence."""
    if not project:
        return ""
    try:
        found = await services.queries.sequence_states(project, keptn_contexts=[context])
    except UnknownProject:
        return ""
    states = found["states"]
    return str(states[0]["state"]) if states else ""
