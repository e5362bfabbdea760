"""The ``wait`` query parameter and waiting on a context without outliving the client.

Why here and not in each route: the long-poll of the sequence-state view and
``POST /api/v1/event?wait=...`` read the same parameter, refuse the same mistakes, and must
both stop waiting when the client hangs up, so its waiter leaves the watch at once instead
of when the wait would have run out.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request

from controlplane.adapters.http.services import Services, WatchApi
from controlplane.application.errors import ControlPlaneError, Rejected
from controlplane.domain.durations import format_duration, parse_duration

MAX_WAIT = 300.0
"""The longest a client may hold a request open: long enough for a typical sequence, short
enough that proxies and load balancers with their usual idle limits do not cut it first."""


class WaitUnavailable(ControlPlaneError):
    """This server was started without a context watch, so it cannot wait."""

    status = 501


def wait_seconds(text: str) -> float | None:
    """Read ``wait`` (``30s``, ``1m``, ``90``); None when absent.

    Raises:
        Rejected: not a duration, or longer than :data:`MAX_WAIT`.
    """
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise Rejected(
            f"query parameter wait: {exc} (a duration such as 30s or 1m, or seconds)"
        ) from None
    if seconds > MAX_WAIT:
        raise Rejected(f"query parameter wait: at most {format_duration(MAX_WAIT)}, got {text!r}")
    return seconds


def watch_of(services: Services) -> WatchApi:
    if services.watch is None:
        raise WaitUnavailable("waiting for a sequence is not available on this server")
    return services.watch


async def wait_ended(request: Request, watch: WatchApi, keptn_context: str, seconds: float) -> bool:
    """Wait for the context's end; False when the time ran out or the client went away."""
    waiting = asyncio.ensure_future(watch.wait_ended(keptn_context, seconds))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, gone):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return waiting.done() and not waiting.cancelled() and waiting.result()


async def _disconnected(request: Request) -> None:
    """Return when the client hangs up (the request body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
