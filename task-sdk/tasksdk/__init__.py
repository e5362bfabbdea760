"""Write Keptn-compatible task services in Python.

A task service registers a handler per task with :class:`TaskApp`; the SDK receives
``sh.keptn.event.<task>.triggered`` (over NATS, by polling the API, or as pushed webhooks),
answers ``.started``, runs the handler and answers ``.finished`` with what it returned. See
``tasksdk.testing`` for running handlers in tests.
"""

from __future__ import annotations

from tasksdk.api import ControlPlaneApi, RetryPolicy
from tasksdk.app import TaskApp
from tasksdk.context import TaskContext
from tasksdk.contract import Result, Status, TriggeredEvent
from tasksdk.errors import (
    AlreadyFinished,
    ApiError,
    InvalidAnswer,
    InvalidEvent,
    InvalidSignature,
    RegistrationError,
    TaskErrored,
    TaskFailed,
    TaskOutcome,
    TaskSdkError,
    TransportError,
)
from tasksdk.registry import Subscription, Webhook

__version__ = "0.2.0"

__all__ = [
    "AlreadyFinished",
    "ApiError",
    "ControlPlaneApi",
    "InvalidAnswer",
    "InvalidEvent",
    "InvalidSignature",
    "RegistrationError",
    "Result",
    "RetryPolicy",
    "Status",
    "Subscription",
    "TaskApp",
    "TaskContext",
    "TaskErrored",
    "TaskFailed",
    "TaskOutcome",
    "TaskSdkError",
    "TransportError",
    "TriggeredEvent",
    "Webhook",
    "__version__",
]
