"""Errors the application reports to its callers.

Hierarchy::

    ControlPlaneError
    ├── Rejected             the request or event is refused; ``status`` is the HTTP code
    │   ├── InvalidEvent         400: malformed, missing attribute, bad type, not allowed
    │   ├── UnknownProject       404
    │   ├── UnknownTask          404: an answer whose triggeredid names no task
    │   ├── TaskEnded            409: an answer to a task that has already ended
    │   ├── Conflict             409: e.g. a project that exists, an event id reused
    │   └── NotFound             404: anything else that does not exist
    └── Unavailable          503: the engine cannot take work right now (not ready, stopping)

Every adapter maps these in one place (the HTTP adapter's ``problems`` module).
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """The control plane could not do what was asked."""

    status = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class Rejected(ControlPlaneError):
    """The request was refused."""

    status = 400


class InvalidEvent(Rejected):
    """The event is invalid."""

    status = 400


class UnknownProject(Rejected):
    """The project does not exist."""

    status = 404


class UnknownTask(Rejected):
    """No task was triggered with this triggeredid."""

    status = 404


class TaskEnded(Rejected):
    """The task this event answers has already ended."""

    status = 409


class Conflict(Rejected):
    """The request conflicts with the current state."""

    status = 409


class NotFound(Rejected):
    """Not found."""

    status = 404


class Unavailable(ControlPlaneError):
    """The control plane is not ready to take this request."""

    status = 503
