"""The HTTP client side of webhook push: one pooled ``httpx`` client for every delivery.

Keeping connections alive matters for latency: a receiver that gets many events pays for
its TCP (and TLS) handshake once, not per event. Every failure a receiver can cause (refused
connection, timeout, garbage answer) comes back as a :class:`DeliveryResult`, never as an
exception, because the dispatcher decides what a failure means.
"""

from __future__ import annotations

import time

import httpx

import controlplane
from controlplane.application.webhooks import DeliveryResult, WebhookRequest

_USER_AGENT = f"controlplane/{controlplane.__version__} (webhook)"


class HttpxWebhookSender:
    def __init__(self, *, max_connections: int = 100) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"user-agent": _USER_AGENT},
            follow_redirects=False,
        )

    async def send(self, request: WebhookRequest, *, time_limit: float) -> DeliveryResult:
        started = time.perf_counter()
        try:
            response = await self._client.post(
                request.url, content=request.body, headers=dict(request.headers), timeout=time_limit
            )
        except httpx.TimeoutException:
            return DeliveryResult(None, f"no answer within {time_limit:g}s", _since(started))
        except httpx.HTTPError as exc:
            return DeliveryResult(None, f"{type(exc).__name__}: {exc}", _since(started))
        reason = "" if response.is_success else _excerpt(response)
        return DeliveryResult(response.status_code, reason, _since(started))

    async def close(self) -> None:
        await self._client.aclose()


def _since(started: float) -> float:
    return time.perf_counter() - started


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200]
