"""Exceptions of the task SDK.

Two kinds of exceptions live here. Handlers *raise* the outcome exceptions to end a task
with a non-passing result; the SDK turns them into the task's ``.finished`` event. The SDK
*raises* the others when it is used wrongly or cannot talk to NATS or the control plane API.

Each exception's docstring summary is its default message, so ``raise TaskFailed()`` is
already meaningful. The hierarchy::

    TaskSdkError
    ├── TaskOutcome            a handler ends its task early (carries .message and .data)
    │   ├── TaskFailed         -> .finished  status=succeeded  result=fail
    │   └── TaskErrored        -> .finished  status=errored    result=fail
    ├── InvalidEvent           a received message is not a usable task .triggered event
    ├── InvalidAnswer          an answer would break the Keptn contract (bad status/result)
    ├── AlreadyFinished        a task's .finished event was already sent
    ├── RegistrationError      a task or app name is unusable, a task is registered twice, or
    │                          the control plane refused the integration's registration
    ├── InvalidSignature       a webhook's Standard Webhooks signature is missing, stale or wrong
    └── TransportError         NATS or the control plane API could not be reached
        └── ApiError           the control plane API answered with an error status (.status)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TaskSdkError(Exception):
    """The task SDK reported an error."""

    def __init__(self, message: str | None = None) -> None:
        """Create the error.

        Args:
            message: Human-readable text; defaults to the summary line of the class docstring.
        """
        self.message: str = message if message is not None else _default_message(type(self))
        super().__init__(self.message)


class TaskOutcome(TaskSdkError):
    """The task ended without passing."""

    def __init__(
        self, message: str | None = None, *, data: Mapping[str, Any] | None = None
    ) -> None:
        """Create the outcome.

        Args:
            message: Text for the ``message`` field of the ``.finished`` event; defaults to the
                summary line of the class docstring.
            data: Extra fields merged into the ``.finished`` event's data, for example partial
                task output under the task's name.
        """
        super().__init__(message)
        self.data: Mapping[str, Any] = dict(data or {})


class TaskFailed(TaskOutcome):
    """The task ran and its outcome is a failure.

    The ``.finished`` event reports ``status: succeeded`` and ``result: fail``: the service
    worked correctly and found that the thing it checked does not pass (a failed test, a
    rejected approval). Keptn then follows the sequence's failure path.
    """


class TaskErrored(TaskOutcome):
    """The task could not be carried out.

    The ``.finished`` event reports ``status: errored`` and ``result: fail``: a technical
    problem (an unreachable system, bad configuration) kept the service from doing its work.
    """


class InvalidEvent(TaskSdkError):
    """The message is not a well-formed task .triggered CloudEvent."""


class InvalidAnswer(TaskSdkError):
    """The answer does not follow the Keptn task contract."""


class AlreadyFinished(TaskSdkError):
    """The task's .finished event has already been sent."""


class RegistrationError(TaskSdkError):
    """The task cannot be registered."""


class TransportError(TaskSdkError):
    """The message transport failed."""


class ApiError(TransportError):
    """The control plane API answered with an error."""

    def __init__(self, message: str | None = None, *, status: int) -> None:
        """Create the error.

        Args:
            message: The server's message, or a description of the failed request.
            status: The HTTP status code of the answer.
        """
        super().__init__(message)
        self.status = status


class InvalidSignature(TaskSdkError):
    """The webhook signature is missing, stale or does not match."""


def _default_message(cls: type[TaskSdkError]) -> str:
    doc = cls.__doc__ or cls.__name__
    return doc.strip().splitlines()[0]
