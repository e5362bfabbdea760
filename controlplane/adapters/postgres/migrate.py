"""Apply the SQL files of ``migrations/`` in name order, each exactly once per database.

The schema is plain SQL that a reader can review, so the runner only has to remember what it
applied. Each migration runs in its own transaction together with its row in
``schema_migrations``: a migration that fails leaves no trace and is retried on the next run.
Several processes may start at once (API and engine replicas all call :func:`migrate`), so the
runner holds a session advisory lock while it works; the others wait for it, then find nothing
left to do.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

# Any constant works as long as nothing else in the database uses it; this one spells "cpmigr".
_LOCK_KEY = 0x63706D69677200

# Kept identical to the definition in schema.sql (the schema test compares the catalogs).
_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (name)
)
"""

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def available() -> list[tuple[str, str]]:
    """Every migration shipped with the package as ``(name, sql)``, in the order to apply."""
    folder = resources.files(__package__ or __name__).joinpath("migrations")
    found = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


async def migrate(target: asyncpg.Pool[Any] | Connection) -> list[str]:
    """Apply the pending migrations; return their names in the order they were applied."""
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as connection:
            return await _migrate(connection)
    return await _migrate(target)


async def _migrate(connection: Connection) -> list[str]:
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        applied = await _apply_pending(connection)
    except BaseException:
        # The lock ends with the session anyway; do not hide the real error behind this one.
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        raise
    await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def _apply_pending(connection: Connection) -> list[str]:
    await connection.execute(_CREATE_LEDGER)
    done = {row["name"] for row in await connection.fetch("SELECT name FROM schema_migrations")}
    applied: list[str] = []
    for name, sql in available():
        if name in done:
            continue
        async with connection.transaction():
            await connection.execute(sql)
            await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        applied.append(name)
    return applied
