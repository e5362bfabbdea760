"""PostgreSQL behind the engine's, the definitions' and the read side's ports.

One class serves the three ports because they share the tables and the pool; each method
belongs to exactly one port (see :mod:`controlplane.application.ports`).

:meth:`PostgresStore.commit` is the hot path: every engine batch ends in it, and commits are
the scarce resource (a 2-core machine does about 2k fsynced commits a second). It therefore
writes a whole :class:`~controlplane.application.ports.UnitOfWork` as ONE statement (data-
modifying CTEs, one per table, each taking its rows as arrays: ``INSERT ... SELECT FROM
unnest(...)``), so the cost grows with the bytes written, not with round trips.

The ``outbox`` table is the transactional outbox: an event to publish gets a row there in the
same transaction as the state change that produced it, and keeps it until a later unit of
work lists it in ``published``. The relay therefore publishes at least once, and consumers
de-duplicate by event id. The ``events`` table itself is insert-only.

The engine's commits go through one connection of their own, held for the store's life: a
pooled connection would be reset (four statements) on every release.

Documents are passed to PostgreSQL as text and cast there, and read back as text, so that the
store does not depend on how the pool it was given configured its jsonb codecs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from controlplane.adapters.postgres import codec
from controlplane.application import ports
from controlplane.application.envelope import Envelope, parse_time
from controlplane.domain import eventtypes, integrations
from controlplane.domain.execution import Execution
from controlplane.domain.integrations import Integration

# The literal predicate of the partial index executions_live_idx: the planner uses that index
# only when a query repeats the predicate word for word. Must equal the terminal states.
TERMINAL_STATES = ("finished", "aborted", "timedOut")
_LIVE = "state NOT IN ('finished', 'aborted', 'timedOut')"

# Paths of the datastore filter that have a column of their own (and its index).
_PATH_COLUMNS = {
    "id": "id",
    "source": "source",
    "type": "type",
    "shkeptncontext": "keptn_context",
    "triggeredid": "triggered_id",
    "data.project": "project",
    "data.stage": "stage",
    "data.service": "service",
}

# The common unit of work (no pause changes) as ONE statement: no BEGIN/COMMIT round trips,
# one parse, one fsync. Data-modifying CTEs all run exactly once, in one implicit transaction.
_COMMIT_ONE = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::bool[])
         WITH ORDINALITY
         AS u(id, source, type, time, time_epoch, keptn_context, triggered_id,
              project, stage, service, body, publish, n)
), stored AS (
    INSERT INTO events (id, source, type, time, time_epoch, keptn_context, triggered_id,
                        project, stage, service, body)
    SELECT u.id, u.source, u.type, u.time, u.time_epoch, u.keptn_context, u.triggered_id,
           u.project, u.stage, u.service, u.body::jsonb
    FROM u ORDER BY u.n
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), queued AS (
    INSERT INTO outbox (id)
    SELECT u.id FROM u JOIN stored ON stored.id = u.id
    WHERE u.publish AND u.id <> ALL($24::text[])  -- already published: nothing to queue
    ORDER BY u.n
    RETURNING 1
), saved AS (
INSERT INTO executions (id, project, stage, service, keptn_context, name, state,
                        triggered_at, ended_at, open_task_id, doc)
SELECT u.id, u.project, u.stage, u.service, u.keptn_context, u.name, u.state,
       u.triggered_at, u.ended_at, u.open_task_id, u.doc::jsonb
FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
            $19::text[], $20::float8[], $21::float8[], $22::text[], $23::text[])
     AS u(id, project, stage, service, keptn_context, name, state,
          triggered_at, ended_at, open_task_id, doc)
ON CONFLICT (id) DO UPDATE SET
    project = EXCLUDED.project,
    stage = EXCLUDED.stage,
    service = EXCLUDED.service,
    keptn_context = EXCLUDED.keptn_context,
    name = EXCLUDED.name,
    state = EXCLUDED.state,
    triggered_at = EXCLUDED.triggered_at,
    ended_at = EXCLUDED.ended_at,
    open_task_id = EXCLUDED.open_task_id,
    doc = EXCLUDED.doc,
    updated_at = now()
WHERE executions.doc IS DISTINCT FROM EXCLUDED.doc
    RETURNING 1
), sent AS (
    DELETE FROM outbox WHERE id = ANY($24::text[]) RETURNING 1
)
SELECT (SELECT count(*) FROM queued) + (SELECT count(*) FROM saved)
       + (SELECT count(*) FROM sent)
"""


_FIND_EVENTS = """
SELECT id, source, type, keptn_context FROM events WHERE id = ANY($1::text[])
"""

_REMOVE_PAUSES = """
DELETE FROM pauses AS p
USING unnest($1::text[], $2::text[]) AS u(keptn_context, stage)
WHERE p.keptn_context = u.keptn_context
  AND (u.stage IS NULL OR p.stage = u.stage OR p.stage = '')
"""

_ADD_PAUSES = """
INSERT INTO pauses (keptn_context, stage)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING
"""

_LOAD_LIVE = f"""
SELECT doc::text AS doc FROM executions WHERE {_LIVE} ORDER BY triggered_at, id
"""

_CONTEXTS = """
WITH scoped AS (
    SELECT id, keptn_context, triggered_at, doc,
           min(triggered_at) OVER (PARTITION BY keptn_context) AS first_at,
           first_value(name) OVER (PARTITION BY keptn_context ORDER BY triggered_at, id)
               AS first_name
    FROM executions
    WHERE project = $1 AND (cardinality($2::text[]) = 0 OR keptn_context = ANY($2::text[]))
)
SELECT doc::text AS doc, keptn_context FROM scoped
WHERE $3::text = '' OR first_name = $3::text
ORDER BY first_at DESC, keptn_context DESC, triggered_at, id
"""

_CONTEXT_PAGE = """
WITH firsts AS (
    SELECT keptn_context, min(triggered_at) AS first_at,
           (array_agg(name ORDER BY triggered_at, id))[1] AS first_name
    FROM executions WHERE project = $1
    GROUP BY keptn_context
), matching AS (
    SELECT keptn_context, first_at FROM firsts WHERE $2::text = '' OR first_name = $2::text
), chosen AS (
    SELECT keptn_context, first_at FROM matching
    ORDER BY first_at DESC, keptn_context DESC
    LIMIT $3 OFFSET $4
)
SELECT x.doc::text AS doc, x.keptn_context, (SELECT count(*) FROM matching) AS total
FROM chosen AS c JOIN executions AS x ON x.project = $1 AND x.keptn_context = c.keptn_context
ORDER BY c.first_at DESC, c.keptn_context DESC, x.triggered_at, x.id
"""

_CONTEXT_COUNT = """
SELECT count(*) FROM (
    SELECT (array_agg(name ORDER BY triggered_at, id))[1] AS first_name
    FROM executions WHERE project = $1 GROUP BY keptn_context
) AS firsts WHERE $2::text = '' OR first_name = $2::text
"""

_PROJECT_LIVE = f"""
SELECT doc::text AS doc FROM executions WHERE project = $1 AND {_LIVE} ORDER BY triggered_at, id
"""

_OPEN_TRIGGERED = f"""
SELECT e.body::text AS body, count(*) OVER () AS total
FROM executions AS x JOIN events AS e ON e.id = x.open_task_id
WHERE x.open_task_id IS NOT NULL AND x.{_LIVE}
  AND ($1::text = '' OR e.type = $1::text)
  AND ($2::text = '' OR e.project = $2::text)
  AND ($3::text = '' OR e.stage = $3::text)
  AND ($4::text = '' OR e.service = $4::text)
  AND ($5::text = '' OR e.id = $5::text)
ORDER BY e.seq
"""

_PROJECT_COLUMNS = "name, shipyard_yaml, version, error, origin, created_at, updated_at"

_CREATE_PROJECT = f"""
INSERT INTO projects ({_PROJECT_COLUMNS}) VALUES ($1, $2, 1, $3, $4, $5, $6)
ON CONFLICT (name) DO NOTHING
RETURNING {_PROJECT_COLUMNS}
"""

_REPLACE_PROJECT = f"""
INSERT INTO projects ({_PROJECT_COLUMNS}) VALUES ($1, $2, 1, $3, $4, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    shipyard_yaml = EXCLUDED.shipyard_yaml,
    version = projects.version + 1,
    error = EXCLUDED.error,
    origin = EXCLUDED.origin,
    updated_at = EXCLUDED.updated_at
RETURNING {_PROJECT_COLUMNS}
"""

_RECORD_VERSION = """
INSERT INTO shipyard_versions (name, version, shipyard_yaml, error, origin, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""

_DELETE_PROJECT_PAUSES = """
DELETE FROM pauses WHERE keptn_context IN (
    SELECT keptn_context FROM executions WHERE project = $1
    UNION
    SELECT keptn_context FROM events WHERE project = $1
)
"""


_RESOURCE_COLUMNS = "project, stage, service, uri, content, version, updated_at"

_PUT_RESOURCE = f"""
INSERT INTO resources AS r (project, stage, service, uri, content, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (project, stage, service, uri) DO UPDATE
SET content = excluded.content, updated_at = excluded.updated_at, version = r.version + 1
RETURNING {_RESOURCE_COLUMNS}
"""

# Keptn's lighthouse asked its datastore for the newest evaluation.finished events of the
# service, optionally only those with a pass (or warning) result, leaving out the ones an
# evaluation.invalidated names (by the evaluation's id or by the triggered id they share).
_EVALUATION_TYPES = "('sh.keptn.event.evaluation.finished', 'sh.keptn.event.evaluate.finished')"
_PAST_EVALUATIONS = f"""
SELECT e.id, (e.body #> '{{data,evaluation,indicatorResults}}')::text AS indicator_results
FROM events AS e
WHERE e.type IN {_EVALUATION_TYPES}
  AND e.project = $1 AND e.stage = $2 AND e.service = $3
  AND (cardinality($4::text[]) = 0 OR (e.body #>> '{{data,result}}') = ANY($4::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM events AS i
      WHERE i.triggered_id <> '' AND i.triggered_id IN (e.id, e.triggered_id)
        AND i.type IN ('sh.keptn.event.evaluation.invalidated',
                       'sh.keptn.event.evaluate.invalidated'))
ORDER BY e.seq DESC
LIMIT $5
"""


class UnstorableEvent(ports.UnstorableEvent):
    """The event or execution holds what PostgreSQL cannot store.

    That is a NUL character or a lone surrogate in a string, or NaN or infinity as a number.
    """


class PostgresStore:
    """EngineStore, DefinitionStore and QueryStore over one asyncpg pool.

    The store uses the pool it is given and leaves closing it to its owner; a store made by
    :meth:`connect` owns its pool and closes it in :meth:`close`.
    """

    def __init__(self, pool: asyncpg.Pool[Any], *, owns_pool: bool = False) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self._writer: Any = None
        self._writer_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        return cls(pool, owns_pool=True)

    async def close(self) -> None:
        async with self._writer_lock:
            await self._drop_writer()
        if self._owns_pool:
            await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        return self._pool

    # EngineStore -------------------------------------------------------------------------

    async def load_live_executions(self) -> list[Execution]:
        rows = await self._pool.fetch(_LOAD_LIVE)
        return [codec.decode_execution(json.loads(row["doc"])) for row in rows]

    async def load_pauses(self) -> list[tuple[str, str]]:
        rows = await self._pool.fetch(
            "SELECT keptn_context, stage FROM pauses ORDER BY keptn_context, stage"
        )
        return [(row["keptn_context"], row["stage"]) for row in rows]

    async def find_events(self, ids: Sequence[str]) -> dict[str, ports.StoredEvent]:
        if not ids:
            return {}
        # The engine asks right before it commits: use its own connection, not the pool.
        async with self._writer_connection() as connection:
            rows = await connection.fetch(_FIND_EVENTS, list(ids))
        return {
            row["id"]: ports.StoredEvent(
                row["id"], row["source"], row["type"], row["keptn_context"]
            )
            for row in rows
        }

    async def commit(self, work: ports.UnitOfWork) -> None:
        """Write the whole unit of work in one transaction, or nothing of it.

        Order matters where two parts touch the same rows: an event stored and listed in
        ``published`` in the same unit of work never enters the outbox. Pauses are added
        before removals are applied, so a pause and a resume of the same context in one batch
        leave it running; a removal for one stage also ends a pause of the whole context
        (resuming a stage resumes it, as the engine does).

        Raises:
            UnstorableEvent: an event or execution holds text PostgreSQL refuses; nothing is
                written.
        """
        if not work:
            return
        events = _event_columns(work.events) if work.events else None
        executions = _execution_columns(work.executions.values()) if work.executions else None
        async with self._writer_connection() as connection:
            await self._write(connection, work, events, executions)

    @contextlib.asynccontextmanager
    async def _writer_connection(self) -> AsyncIterator[Any]:
        """The engine's own connection, one user at a time; replaced when it breaks."""
        async with self._writer_lock:
            if self._writer is None or self._writer.is_closed():
                self._writer = await self._pool.acquire()
            try:
                yield self._writer
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                await self._drop_writer()
                raise

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await self._pool.release(writer)
            except Exception:  # a broken connection: the pool discards it
                writer.terminate()

    async def _write(
        self,
        connection: Any,
        work: ports.UnitOfWork,
        events: list[list[Any]] | None,
        executions: list[list[Any]] | None,
    ) -> None:
        arguments = (
            *(events if events is not None else [[] for _ in range(12)]),
            *(executions if executions is not None else [[] for _ in range(11)]),
            list(work.published),
        )
        if not (work.pauses_added or work.pauses_removed):
            await connection.fetchval(_COMMIT_ONE, *arguments)
            return
        async with connection.transaction():  # pauses are rare: two more statements then
            await connection.fetchval(_COMMIT_ONE, *arguments)
            if work.pauses_added:
                contexts, stages = _pairs(work.pauses_added)
                await connection.execute(_ADD_PAUSES, contexts, stages)
            if work.pauses_removed:
                contexts, stages = _pairs(work.pauses_removed)
                await connection.execute(_REMOVE_PAUSES, contexts, stages)

    async def unpublished(self, limit: int) -> list[Envelope]:
        rows = await self._pool.fetch(
            "SELECT e.body::text AS body FROM outbox AS o JOIN events AS e ON e.id = o.id"
            " ORDER BY o.seq LIMIT $1",
            limit,
        )
        return [Envelope.from_json(json.loads(row["body"])) for row in rows]

    async def delete_project_data(self, project: str) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_DELETE_PROJECT_PAUSES, project)
            await connection.execute("DELETE FROM executions WHERE project = $1", project)
            await connection.execute("DELETE FROM events WHERE project = $1", project)

    async def key(self, name: str, make: bytes) -> bytes:
        """The stored key ``name``; ``make`` becomes it if none is stored yet (first one wins)."""
        await self._pool.execute(
            "INSERT INTO control_plane_keys (name, value) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            make,
        )
        value = await self._pool.fetchval(
            "SELECT value FROM control_plane_keys WHERE name = $1", name
        )
        return bytes(value)

    # DefinitionStore ---------------------------------------------------------------------

    async def list_projects(self) -> list[ports.ProjectRecord]:
        rows = await self._pool.fetch(f"SELECT {_PROJECT_COLUMNS} FROM projects ORDER BY name")
        return [_project(row) for row in rows]

    async def get_project(self, name: str) -> ports.ProjectRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE name = $1", name
        )
        return None if row is None else _project(row)

    async def create_project(self, record: ports.ProjectRecord) -> ports.ProjectRecord:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(_CREATE_PROJECT, *_project_values(record))
            if row is None:
                raise ports.ProjectExists(record.name)
            stored = _project(row)
            await connection.execute(_RECORD_VERSION, *_version_values(stored))
        return stored

    async def replace_project(self, record: ports.ProjectRecord) -> ports.ProjectRecord:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(_REPLACE_PROJECT, *_project_values(record))
            assert row is not None  # an upsert always returns its row
            stored = _project(row)
            await connection.execute(_RECORD_VERSION, *_version_values(stored))
        return stored

    async def delete_project(self, name: str) -> bool:
        deleted = await self._pool.fetchval(
            "DELETE FROM projects WHERE name = $1 RETURNING true", name
        )
        return bool(deleted)

    # IntegrationStore --------------------------------------------------------------------

    async def load_integrations(self) -> list[Integration]:
        rows = await self._pool.fetch("SELECT doc::text AS doc, last_seen FROM integrations")
        return [
            integrations.from_document(json.loads(row["doc"]), row["last_seen"]) for row in rows
        ]

    async def save_integration(self, integration: Integration) -> None:
        await self._pool.execute(
            """
            INSERT INTO integrations AS i (id, name, doc, last_seen) VALUES ($1, $2, $3::jsonb, $4)
            ON CONFLICT (id) DO UPDATE
            SET name = excluded.name, doc = excluded.doc, last_seen = excluded.last_seen,
                updated_at = now()
            """,
            integration.id,
            integration.name,
            json.dumps(integrations.to_document(integration)),
            integration.last_seen,
        )

    async def save_last_seen(self, seen: Mapping[str, float]) -> None:
        if not seen:
            return
        await self._pool.execute(
            """
            UPDATE integrations AS i SET last_seen = s.last_seen
            FROM unnest($1::text[], $2::float8[]) AS s(id, last_seen)
            WHERE i.id = s.id AND i.last_seen < s.last_seen
            """,
            list(seen),
            list(seen.values()),
        )

    async def delete_integrations(self, ids: Sequence[str]) -> None:
        if ids:
            await self._pool.execute(
                "DELETE FROM integrations WHERE id = ANY($1::text[])", list(ids)
            )

    # ResourceStore -----------------------------------------------------------------------

    async def get_resource(
        self, project: str, stage: str, service: str, uri: str
    ) -> ports.Resource | None:
        row = await self._pool.fetchrow(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources"
            " WHERE project = $1 AND stage = $2 AND service = $3 AND uri = $4",
            project,
            stage,
            service,
            uri,
        )
        return None if row is None else ports.Resource(**row)

    async def list_resources(self, project: str, stage: str, service: str) -> list[ports.Resource]:
        rows = await self._pool.fetch(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources"
            " WHERE project = $1 AND stage = $2 AND service = $3 ORDER BY uri",
            project,
            stage,
            service,
        )
        return [ports.Resource(**row) for row in rows]

    async def level_resources(
        self, project: str, stage: str, service: str, uris: Sequence[str]
    ) -> list[ports.Resource]:
        rows = await self._pool.fetch(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources"
            " WHERE project = $1 AND uri = ANY($4::text[])"
            " AND ((stage = '' AND service = '') OR (stage = $2 AND service IN ('', $3)))",
            project,
            stage,
            service,
            list(uris),
        )
        return [ports.Resource(**row) for row in rows]

    async def put_resources(self, resources: Sequence[ports.Resource]) -> list[ports.Resource]:
        stored: list[ports.Resource] = []
        async with self._pool.acquire() as connection, connection.transaction():
            for resource in resources:
                row = await connection.fetchrow(
                    _PUT_RESOURCE,
                    resource.project,
                    resource.stage,
                    resource.service,
                    resource.uri,
                    resource.content,
                    resource.updated_at,
                )
                assert row is not None  # an upsert always returns its row
                stored.append(ports.Resource(**row))
        return stored

    async def delete_resource(self, project: str, stage: str, service: str, uri: str) -> bool:
        deleted = await self._pool.fetchval(
            "DELETE FROM resources WHERE project = $1 AND stage = $2 AND service = $3"
            " AND uri = $4 RETURNING true",
            project,
            stage,
            service,
            uri,
        )
        return bool(deleted)

    # EvaluationHistory -------------------------------------------------------------------

    async def past_evaluations(
        self, project: str, stage: str, service: str, *, results: Sequence[str], limit: int
    ) -> list[ports.PastEvaluation]:
        rows = await self._pool.fetch(
            _PAST_EVALUATIONS, project, stage, service, list(results), max(limit, 0)
        )
        return [
            ports.PastEvaluation(row["id"], _json_list(row["indicator_results"])) for row in rows
        ]

    async def shipyard_versions(self, name: str) -> list[ports.ProjectRecord]:
        """Every stored version of a project's shipyard, oldest first (for audits and tests)."""
        rows = await self._pool.fetch(
            """
            SELECT name, shipyard_yaml, version, error, origin,
                   created_at, created_at AS updated_at
            FROM shipyard_versions WHERE name = $1 ORDER BY version
            """,
            name,
        )
        return [_project(row) for row in rows]

    # QueryStore --------------------------------------------------------------------------

    async def contexts(
        self, project: str, *, keptn_contexts: Sequence[str] = (), name: str = ""
    ) -> list[list[Execution]]:
        """Executions grouped by keptnContext: newest context first, oldest stage first.

        A context is newer than another when its earliest execution was triggered later.
        ``name`` keeps the contexts whose first execution runs that sequence (the name Keptn's
        sequence-state view shows), with all their executions.
        """
        rows = await self._pool.fetch(_CONTEXTS, project, list(keptn_contexts), name)
        return _by_context(rows)

    async def context_page(
        self, project: str, *, name: str, limit: int | None, offset: int
    ) -> tuple[list[list[Execution]], int]:
        """A page of contexts chosen in SQL, so a long history is never read whole."""
        rows = await self._pool.fetch(_CONTEXT_PAGE, project, name, limit, offset)
        if not rows:  # past the end (or nothing at all): the count still matters for paging
            total = await self._pool.fetchval(_CONTEXT_COUNT, project, name)
            return [], int(total or 0)
        return _by_context(rows), int(rows[0]["total"])

    async def live_executions(self, project: str) -> list[Execution]:
        rows = await self._pool.fetch(_PROJECT_LIVE, project)
        return [codec.decode_execution(json.loads(row["doc"])) for row in rows]

    async def pauses(self, keptn_contexts: Sequence[str]) -> dict[str, set[str]]:
        """The paused stages of these contexts (``""`` = the whole context).

        Contexts without a pause are left out.
        """
        if not keptn_contexts:
            return {}
        rows = await self._pool.fetch(
            "SELECT keptn_context, stage FROM pauses WHERE keptn_context = ANY($1::text[])",
            list(keptn_contexts),
        )
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row["keptn_context"], set()).add(row["stage"])
        return found

    async def events(self, where: ports.EventFilter, *, limit: int, offset: int) -> ports.Page:
        """Stored CloudEvents matching ``where``, newest first.

        ``from_time`` and ``before_time`` are exclusive bounds on the event's ``time``; they
        compare instants when both sides parse as times, and strings otherwise.
        """
        query = _Query()
        query.filter_events(where)
        sql = (
            "SELECT e.body::text AS body, count(*) OVER () AS total FROM events AS e"
            f" WHERE {query.where()} ORDER BY e.seq DESC"
        )
        return await self._page(sql, query.params, limit=limit, offset=offset)

    async def events_by_type(
        self,
        type: str,
        *,
        match: Mapping[str, Sequence[str]],
        exclude_invalidated: bool,
        from_time: str,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Keptn's datastore query: events of one type whose paths hold one of the values.

        A path is dotted into the stored CloudEvent (``data.evaluation.result``); an empty
        list of values matches nothing. ``exclude_invalidated`` drops events that an
        ``<task>.invalidated`` event refers to, by its ``triggeredid`` naming either the
        event's id or the event's own ``triggeredid`` (the datastore accepted both).
        ``limit`` of zero or less means no limit.
        """
        query = _Query()
        query.conditions.append(f"e.type = {query.add(type)}")
        for path, values in match.items():
            query.match_path(path, values)
        if from_time:
            query.after(from_time)
        if exclude_invalidated:
            query.not_invalidated(_invalidated_type(type))
        sql = f"SELECT e.body::text AS body FROM events AS e WHERE {query.where()}"
        sql += " ORDER BY e.seq DESC"
        if limit > 0:
            sql += f" LIMIT {query.add(limit)}"
        rows = await self._pool.fetch(sql, *query.params)
        return [json.loads(row["body"]) for row in rows]

    async def open_triggered(
        self,
        type: str,
        *,
        project: str,
        stage: str,
        service: str,
        event_id: str,
        limit: int,
        offset: int,
    ) -> ports.Page:
        """The ``.triggered`` events that live executions sent and still wait on, oldest first.

        Parked tasks (delayed, waiting for a slot, paused) are not open: their event has not
        been sent yet. An empty filter argument does not filter.
        """
        params = [type, project, stage, service, event_id]
        return await self._page(_OPEN_TRIGGERED, params, limit=limit, offset=offset)

    async def _page(
        self, sql: str, params: Sequence[object], *, limit: int, offset: int
    ) -> ports.Page:
        """One page of ``sql``, which selects ``body`` and ``count(*) OVER () AS total``."""
        limit, offset = max(limit, 0), max(offset, 0)
        paged = f"{sql} LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}"
        rows = await self._pool.fetch(paged, *params, limit, offset)
        items = [json.loads(row["body"]) for row in rows]
        if rows:
            total = int(rows[0]["total"])
        else:
            # An empty page has no row to carry the total on.
            counted = await self._pool.fetchval(f"SELECT count(*) FROM ({sql}) AS matched", *params)
            total = int(counted)
        end = offset + len(items)
        return ports.Page(items, total, end if limit > 0 and end < total else None)


class _Query:
    """A WHERE clause under construction, with its numbered parameters."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[object] = []

    def add(self, value: object) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def where(self) -> str:
        return " AND ".join(self.conditions) or "true"

    def equal(self, column: str, value: str) -> None:
        if value:
            self.conditions.append(f"e.{column} = {self.add(value)}::text")

    def filter_events(self, where: ports.EventFilter) -> None:
        if where.keptn_contexts:
            self.conditions.append(
                f"e.keptn_context = ANY({self.add(list(where.keptn_contexts))}::text[])"
            )
        self.equal("type", where.type)
        self.equal("project", where.project)
        self.equal("stage", where.stage)
        self.equal("service", where.service)
        self.equal("id", where.event_id)
        self.equal("source", where.source)
        if where.from_time:
            self.after(where.from_time)
        if where.before_time:
            self.before(where.before_time)
        if where.root_only:
            self.conditions.append(
                "NOT EXISTS (SELECT 1 FROM events AS p"
                " WHERE p.keptn_context = e.keptn_context AND p.seq < e.seq)"
            )

    def after(self, bound: str) -> None:
        self._time("> ", bound)

    def before(self, bound: str) -> None:
        self._time("< ", bound)

    def _time(self, operator: str, bound: str) -> None:
        epoch = _epoch(bound)
        if epoch is None:
            self.conditions.append(f"e.time {operator}{self.add(bound)}::text")
        else:
            self.conditions.append(f"e.time_epoch {operator}{self.add(epoch)}::float8")

    def match_path(self, path: str, values: Sequence[str]) -> None:
        wanted = self.add([str(value) for value in values])
        column = _PATH_COLUMNS.get(path)
        if column is not None:
            self.conditions.append(f"e.{column} = ANY({wanted}::text[])")
        else:
            steps = self.add(path.split("."))
            self.conditions.append(f"(e.body #>> {steps}::text[]) = ANY({wanted}::text[])")

    def not_invalidated(self, invalidated_type: str | None) -> None:
        if invalidated_type is None:
            kind = "i.type LIKE '%.invalidated'"
        else:
            kind = f"i.type = {self.add(invalidated_type)}::text"
        self.conditions.append(
            "NOT EXISTS (SELECT 1 FROM events AS i WHERE i.triggered_id <> ''"
            " AND i.triggered_id IN (e.id, e.triggered_id)"
            f" AND {kind})"
        )


def _invalidated_type(type: str) -> str | None:
    """The ``.invalidated`` type of the same task, or None when ``type`` names no task."""
    try:
        parsed = eventtypes.parse(type)
    except eventtypes.EventTypeError:
        return None
    if isinstance(parsed, eventtypes.TaskEventType):
        return eventtypes.task(parsed.task, eventtypes.Phase.INVALIDATED)
    return None


def _epoch(text: str) -> float | None:
    try:
        return parse_time(text)
    except (ValueError, OverflowError):
        return None


# JSON's escape for NUL, not preceded by an escaped backslash (``\\u0000`` is a backslash
# followed by the text "u0000", which PostgreSQL stores fine).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _dump(document: Any, what: str, event_id: str) -> str:
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity: JSON has no words for them
        raise UnstorableEvent(
            f"{what} holds a number JSON cannot express: {exc}", event_id=event_id
        ) from exc
    # jsonb refuses NUL, and a lone surrogate cannot be sent as UTF-8; fail before the
    # transaction starts, naming the culprit, rather than abort the whole batch obscurely.
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise UnstorableEvent(
            f"{what} contains a NUL character, which PostgreSQL cannot store", event_id=event_id
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnstorableEvent(
            f"{what} contains text that is not valid Unicode", event_id=event_id
        ) from exc
    return text


def _event_columns(events: Iterable[tuple[Envelope, bool]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(12)]
    seen: set[str] = set()
    for envelope, publish in events:
        if envelope.id in seen:
            continue  # the first copy wins, as it would against a row already stored
        seen.add(envelope.id)
        row = (
            envelope.id,
            envelope.source,
            envelope.type,
            envelope.time,
            _epoch(envelope.time),
            envelope.keptn_context,
            envelope.triggered_id,
            envelope.project,
            envelope.stage,
            envelope.service,
            _dump(envelope.to_json(), f"event {envelope.id!r}", envelope.id),
            publish,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _by_context(rows: Iterable[Mapping[str, Any]]) -> list[list[Execution]]:
    """Rows ordered by context into one list of executions per context."""
    groups: list[list[Execution]] = []
    previous: str | None = None
    for row in rows:
        if row["keptn_context"] != previous:
            groups.append([])
            previous = row["keptn_context"]
        groups[-1].append(codec.decode_execution(json.loads(row["doc"])))
    return groups


def open_task_id(execution: Execution) -> str | None:
    """The id of the ``.triggered`` event a live execution has sent and waits on, if any."""
    current = execution.current
    if execution.state.terminal or current is None or current.sent_at is None:
        return None
    return current.triggered_id


def _execution_columns(executions: Iterable[Execution]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(11)]
    # In id order, so that concurrent commits lock shared rows in the same order and cannot
    # deadlock on them.
    for execution in sorted(executions, key=lambda item: item.id):
        scope = execution.scope
        row = (
            execution.id,
            scope.project,
            scope.stage,
            scope.service,
            scope.keptn_context,
            execution.name,
            execution.state.value,
            execution.triggered_at,
            execution.ended_at,
            open_task_id(execution),
            _dump(codec.encode_execution(execution), f"execution {execution.id!r}", execution.id),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _pairs(pairs: Iterable[tuple[str, str | None]]) -> tuple[list[str], list[str | None]]:
    contexts: list[str] = []
    stages: list[str | None] = []
    for context, stage in pairs:
        contexts.append(context)
        stages.append(stage)
    return contexts, stages


def _project(row: Mapping[str, Any]) -> ports.ProjectRecord:
    return ports.ProjectRecord(
        name=row["name"],
        shipyard_yaml=row["shipyard_yaml"],
        version=row["version"],
        error=row["error"],
        origin=row["origin"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _project_values(record: ports.ProjectRecord) -> tuple[object, ...]:
    now = time.time()
    return (
        record.name,
        record.shipyard_yaml,
        record.error,
        record.origin,
        record.created_at or now,
        record.updated_at or now,
    )


def _version_values(stored: ports.ProjectRecord) -> tuple[object, ...]:
    return (
        stored.name,
        stored.version,
        stored.shipyard_yaml,
        stored.error,
        stored.origin,
        stored.updated_at,
    )


def _json_list(text: str | None) -> list[Any]:
    value = json.loads(text) if text else None
    return value if isinstance(value, list) else []


# =========================================================================================
# Schedules: claimed slots, first sightings and API-defined schedules (ScheduleStore port).
#
# A class of its own over the same pool: the scheduler runs in `serve` and in its own role,
# and its few statements share nothing with the engine's hot path.
# =========================================================================================

_SCHEDULE_STATES = """
WITH seen AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS s(project, schedule, fingerprint)
), changed AS (
    INSERT INTO schedule_state AS st (project, schedule, fingerprint, first_seen)
    SELECT s.project, s.schedule, s.fingerprint, $4 FROM seen AS s
    JOIN projects AS p ON p.name = s.project
    ON CONFLICT (project, schedule) DO UPDATE
        SET fingerprint = excluded.fingerprint, first_seen = excluded.first_seen
        WHERE st.fingerprint <> excluded.fingerprint
    RETURNING st.project, st.schedule, st.first_seen
)
SELECT s.project, s.schedule, coalesce(c.first_seen, st.first_seen) AS first_seen,
       last.slot AS last_slot, coalesce(last.keptn_context, '') AS last_context
FROM seen AS s
LEFT JOIN changed AS c ON c.project = s.project AND c.schedule = s.schedule
LEFT JOIN schedule_state AS st ON st.project = s.project AND st.schedule = s.schedule
LEFT JOIN LATERAL (
    SELECT l.slot, l.keptn_context FROM schedule_slots AS l
    WHERE l.project = s.project AND l.schedule = s.schedule
    ORDER BY l.slot DESC LIMIT 1
) AS last ON true
WHERE coalesce(c.first_seen, st.first_seen) IS NOT NULL
"""

_CLAIM_SLOTS = """
INSERT INTO schedule_slots (project, schedule, slot, keptn_context, event, claimed_by)
SELECT c.project, c.schedule, c.slot, c.keptn_context, c.event::jsonb, $6
FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[])
     AS c(project, schedule, slot, keptn_context, event)
JOIN projects AS p ON p.name = c.project
ON CONFLICT (project, schedule, slot) DO NOTHING
RETURNING project, schedule, slot
"""

_MARK_PUBLISHED = """
UPDATE schedule_slots AS s SET published = true
FROM unnest($1::text[], $2::text[], $3::float8[]) AS m(project, schedule, slot)
WHERE s.project = m.project AND s.schedule = m.schedule AND s.slot = m.slot AND NOT s.published
"""

_PRUNE_CLAIMS = """
DELETE FROM schedule_slots AS s
WHERE s.published AND s.claimed_at < now() - make_interval(secs => $1)
  AND EXISTS (
      SELECT 1 FROM schedule_slots AS later
      WHERE later.project = s.project AND later.schedule = s.schedule AND later.slot > s.slot
  )
"""


class PostgresScheduleStore:
    """:class:`~controlplane.application.ports.ScheduleStore` on PostgreSQL.

    Claims are one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for a whole batch of
    slots: the rows returned are the slots this replica won. Times of claims use the
    database's clock, so replicas with skewed clocks agree on what is stale.
    """

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def schedule_states(
        self, seen: Sequence[tuple[str, str, str]], now: float
    ) -> list[ports.ScheduleState]:
        if not seen:
            return []
        projects, names, fingerprints = (list(column) for column in zip(*seen, strict=True))
        rows = await self._pool.fetch(_SCHEDULE_STATES, projects, names, fingerprints, now)
        return [
            ports.ScheduleState(
                row["project"],
                row["schedule"],
                row["first_seen"],
                row["last_slot"],
                row["last_context"],
            )
            for row in rows
        ]

    async def forget_schedule_states(self, keys: Sequence[tuple[str, str]]) -> None:
        if not keys:
            return
        await self._pool.execute(
            "DELETE FROM schedule_state AS st USING unnest($1::text[], $2::text[]) AS k(p, s)"
            " WHERE st.project = k.p AND st.schedule = k.s",
            [project for project, _ in keys],
            [schedule for _, schedule in keys],
        )

    async def claim_slots(
        self, claims: Sequence[ports.SlotClaim], claimed_by: str
    ) -> list[ports.SlotClaim]:
        if not claims:
            return []
        rows = await self._pool.fetch(
            _CLAIM_SLOTS,
            [claim.project for claim in claims],
            [claim.schedule for claim in claims],
            [claim.slot for claim in claims],
            [claim.event.keptn_context for claim in claims],
            [json.dumps(claim.event.to_json()) for claim in claims],
            claimed_by,
        )
        won = {(row["project"], row["schedule"], row["slot"]) for row in rows}
        return [claim for claim in claims if (claim.project, claim.schedule, claim.slot) in won]

    async def mark_published(self, claims: Sequence[ports.SlotClaim]) -> None:
        if claims:
            await self._pool.execute(
                _MARK_PUBLISHED,
                [claim.project for claim in claims],
                [claim.schedule for claim in claims],
                [claim.slot for claim in claims],
            )

    async def unpublished_claims(self, older_than: float, limit: int) -> list[ports.SlotClaim]:
        rows = await self._pool.fetch(
            "SELECT project, schedule, slot, event::text AS event FROM schedule_slots"
            " WHERE NOT published AND claimed_at < now() - make_interval(secs => $1)"
            " ORDER BY claimed_at, project, schedule, slot LIMIT $2",
            float(older_than),
            limit,
        )
        return [
            ports.SlotClaim(
                row["project"],
                row["schedule"],
                row["slot"],
                Envelope.from_json(json.loads(row["event"])),
            )
            for row in rows
        ]

    async def prune_claims(self, older_than: float) -> int:
        status = await self._pool.execute(_PRUNE_CLAIMS, float(older_than))
        return int(status.split()[-1])

    async def last_slots(self, project: str) -> dict[str, tuple[float, str]]:
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (schedule) schedule, slot, keptn_context FROM schedule_slots"
            " WHERE project = $1 ORDER BY schedule, slot DESC",
            project,
        )
        return {row["schedule"]: (row["slot"], row["keptn_context"]) for row in rows}

    async def list_api_schedules(self, project: str | None = None) -> list[ports.StoredSchedule]:
        rows = await self._pool.fetch(
            "SELECT project, name, doc::text AS doc, updated_at FROM schedules"
            " WHERE $1::text IS NULL OR project = $1 ORDER BY project, name",
            project,
        )
        return [
            ports.StoredSchedule(
                row["project"], row["name"], json.loads(row["doc"]), row["updated_at"]
            )
            for row in rows
        ]

    async def put_api_schedule(self, schedule: ports.StoredSchedule) -> bool:
        try:
            created = await self._pool.fetchval(
                """
                INSERT INTO schedules AS s (project, name, doc, updated_at)
                VALUES ($1, $2, $3::jsonb, $4)
                ON CONFLICT (project, name) DO UPDATE
                SET doc = excluded.doc, updated_at = excluded.updated_at
                RETURNING (xmax = 0)
                """,
                schedule.project,
                schedule.name,
                json.dumps(dict(schedule.document)),
                schedule.updated_at,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise ports.NoSuchProject(schedule.project) from exc
        return bool(created)

    async def delete_api_schedule(self, project: str, name: str) -> bool:
        deleted = await self._pool.fetchval(
            "DELETE FROM schedules WHERE project = $1 AND name = $2 RETURNING true", project, name
        )
        return bool(deleted)
