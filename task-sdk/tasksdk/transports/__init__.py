"""Message transports: core NATS for production, in-memory for tests.

A transport moves encoded CloudEvents between subjects; it knows nothing about Keptn. See
:class:`tasksdk.transports.base.Transport` for the interface both implement.
"""

from __future__ import annotations
