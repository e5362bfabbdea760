"""The API token check: every ``/api`` path needs header ``x-token`` equal to the token.

Why middleware and not a route dependency: it also covers ``/api`` paths that match no
route, so without the token nothing can be learned about the API (not even which paths
exist), while ``/health`` and the OpenAPI pages stay open for probes and people.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from controlplane.adapters.http.problems import problem

HEADER = b"x-token"
MESSAGE = "missing or incorrect API token"


def protected(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


class TokenCheck:
    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and protected(scope["path"]) and not self._allowed(scope):
            await problem(401, MESSAGE)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        sent = next((value for name, value in scope["headers"] if name == HEADER), b"")
        return hmac.compare_digest(sent, self._token)
