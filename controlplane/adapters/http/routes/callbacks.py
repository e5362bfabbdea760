"""One-time callback links: an outside system (or a person) completes a task by calling one.

The path lies outside ``/api`` on purpose: the link's own token authenticates it, so it works
from an e-mail or a third party's webhook settings that cannot send the API token. A GET
shows a small page with approve/reject buttons (link scanners that follow GETs change
nothing); only a POST completes the task.
"""

from __future__ import annotations

import html
import json
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from controlplane.adapters.http import ingress, schemas
from controlplane.adapters.http.services import Services
from controlplane.application.callbacks import PATH, task_output
from controlplane.application.errors import InvalidEvent, NotFound

_PROBLEMS: dict[int | str, dict[str, object]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
    409: {"model": schemas.Problem},
}
_UNKNOWN = "no such callback link"


def router(services: Services) -> APIRouter:
    api = APIRouter(tags=["callbacks"])

    def check(triggered_id: str, token: str) -> None:
        links = services.callbacks
        if links is None or not links.verify(triggered_id, token):
            raise NotFound(_UNKNOWN)

    @api.post(
        PATH + "/{triggered_id}/{token}",
        response_model=schemas.KeptnContextResponse,
        responses=_PROBLEMS,
    )
    async def complete(
        triggered_id: str, token: str, request: Request
    ) -> schemas.KeptnContextResponse:
        """Finish the task with the body as its output (JSON, or a form); works once."""
        check(triggered_id, token)
        body = await ingress.read_body(request, services.max_event_bytes)
        output = task_output(_parse(body, request.headers.get("content-type", "")))
        context = await services.engine.complete_by_callback(triggered_id, output)
        return schemas.KeptnContextResponse(keptnContext=context)

    @api.get(PATH + "/{triggered_id}/{token}", response_class=HTMLResponse, responses=_PROBLEMS)
    async def page(triggered_id: str, token: str) -> HTMLResponse:
        """A page for people: approve or reject with one click (the click is a POST)."""
        check(triggered_id, token)
        action = html.escape(f"{PATH}/{triggered_id}/{token}", quote=True)
        return HTMLResponse(_PAGE.format(action=action, task=html.escape(triggered_id)))

    return api


def _parse(body: bytes, content_type: str) -> object:
    if not body.strip():
        return {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode("utf-8", "replace")))
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidEvent(f"the callback body is not JSON: {exc}") from None


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Task waiting for you</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
<h1>A task is waiting for your answer</h1>
<p>Task event <code>{task}</code>. Your answer completes it once.</p>
<form method="post" action="{action}">
<button name="result" value="pass">Approve</button>
<button name="result" value="fail">Reject</button>
</form>
</body></html>
"""
