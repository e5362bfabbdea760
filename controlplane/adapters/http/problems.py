"""Every error the HTTP API answers, mapped in one place to Keptn's ``{"code", "message"}``.

Why one module: clients (Keptn's CLI and SDKs, our own CLI) read ``message`` to explain a
refusal, so every path must produce the same shape, a client mistake must never come back as
a 500, and an unexpected failure must come back as a generic 500 with its traceback in our
log rather than in the response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.application.errors import ControlPlaneError, Rejected

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error; the control plane logged the details"


class PayloadTooLarge(Rejected):
    """The request body is too large."""

    status = 413


def problem(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers and the last-resort middleware on ``app``."""
    app.add_exception_handler(ControlPlaneError, _control_plane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(UnexpectedErrors)


async def _control_plane_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlPlaneError)
    retry = {"Retry-After": "1"} if exc.status == 503 else None
    return problem(exc.status, exc.message, retry)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem(400, validation_message(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), exc.headers)


def validation_message(errors: Sequence[Any]) -> str:
    """One line per problem, naming the parameter or body field: 'query parameter pageSize: …'."""
    return "; ".join(_describe(error) for error in errors) or "invalid request"


def _describe(error: Any) -> str:
    location = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "is invalid"))
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"body is not valid JSON: {reason}" if reason else "body is not valid JSON"
    if not location:
        return message
    where, rest = location[0], ".".join(location[1:])
    if where == "body":
        subject = f"body field {rest}" if rest else "body"
    elif where in ("query", "path", "header"):
        subject = f"{where} parameter {rest}"
    else:
        subject = ".".join(location)
    return f"{subject}: {message}"


class UnexpectedErrors:
    """Answer an unhandled exception with a generic 500 and log it once, with its traceback.

    A plain ASGI middleware inside the user middleware stack: Starlette's own server-error
    middleware would re-raise after answering, so the server would log the error again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            logger.exception(
                "http.unexpected_error",
                extra={"method": scope.get("method"), "path": scope.get("path")},
            )
            if not started:
                await problem(500, INTERNAL_ERROR)(scope, receive, send)
