"""One-time callback links: an outside system completes a task by calling a URL.

A task with ``callback: true`` carries ``data.callback.url`` in its ``.triggered`` event. The
link names the task's ``triggeredid`` and a token, an HMAC of that id under a key only the
control plane holds, so links need no table: any replica can check one, and nobody can forge
a link for another task. The link works once because the task can end only once: after the
first call has finished the task, the next gets 409.

What the caller sends becomes the task's output (its ``.finished`` data), so a human's
approval click or a third party's webhook reaches the next task like any service's answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from controlplane.application.errors import InvalidEvent

PATH = "/callback"
_RESULTS = ("pass", "warning", "fail")
_STATUSES = ("succeeded", "errored", "aborted")


class CallbackLinks:
    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("the callback key must be at least 16 bytes")
        self._key = key
        self._base = base_url.rstrip("/")

    def token(self, triggered_id: str) -> str:
        digest = hmac.new(self._key, triggered_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, triggered_id: str) -> str:
        return f"{self._base}{PATH}/{triggered_id}/{self.token(triggered_id)}"

    def verify(self, triggered_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(triggered_id), token)


def task_output(body: object) -> dict[str, Any]:
    """The ``.finished`` data a callback body asks for; ``pass``/``succeeded`` by default.

    Raises:
        InvalidEvent: the body is not a JSON object, or says an unknown result or status.
    """
    if not isinstance(body, Mapping):
        raise InvalidEvent("a callback body must be a JSON object (it becomes the task's output)")
    output = {str(key): value for key, value in body.items()}
    result = output.setdefault("result", "pass")
    status = output.setdefault("status", "succeeded")
    if result not in _RESULTS:
        raise InvalidEvent(f"result must be one of {', '.join(_RESULTS)}, got {result!r}")
    if status not in _STATUSES:
        raise InvalidEvent(f"status must be one of {', '.join(_STATUSES)}, got {status!r}")
    return output
