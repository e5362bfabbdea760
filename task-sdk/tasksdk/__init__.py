"""Write Keptn-compatible task services in Python.

A task service registers a handler per task with :class:`TaskApp`; the SDK subscribes to
``sh.keptn.event.<task>.triggered`` on NATS, answers ``.started``, runs the handler and answers
``.finished`` with what it returned. See ``tasksdk.testing`` for running handlers in tests.
"""

from __future__ import annotations

from tasksdk.app import TaskApp
from tasksdk.context import TaskContext
from tasksdk.contract import Result, Status, TriggeredEvent
from tasksdk.errors import (
    AlreadyFinished,
    InvalidAnswer,
    InvalidEvent,
    RegistrationError,
    TaskErrored,
    TaskFailed,
    TaskOutcome,
    TaskSdkError,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyFinished",
    "InvalidAnswer",
    "InvalidEvent",
    "RegistrationError",
    "Result",
    "Status",
    "TaskApp",
    "TaskContext",
    "TaskErrored",
    "TaskFailed",
    "TaskOutcome",
    "TaskSdkError",
    "TransportError",
    "TriggeredEvent",
    "__version__",
]
