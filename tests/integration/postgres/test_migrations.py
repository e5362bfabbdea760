from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import asyncpg
import pytest

from controlplane.adapters.postgres import migrate as migrations

pytestmark = pytest.mark.integration

# The schema as the catalog sees it, in a form two databases can be compared by.
CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
               column_default, character_maximum_length, numeric_precision
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY tablename, indexname
    """,
    "constraints": """
        SELECT c.conrelid::regclass::text AS table_name, c.conname, c.contype,
               pg_get_constraintdef(c.oid) AS definition
        FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace
        WHERE n.nspname = 'public' ORDER BY 1, 2
    """,
    "sequences": """
        SELECT sequence_name, data_type, start_value, increment FROM information_schema.sequences
        WHERE sequence_schema = 'public' ORDER BY sequence_name
    """,
    "relations": """
        SELECT c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n
            ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' ORDER BY c.relname
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
        ORDER BY 1, 2
    """,
}


async def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            name: [tuple(row) for row in await connection.fetch(query)]
            for name, query in CATALOG_QUERIES.items()
        }
    finally:
        await connection.close()


def schema_sql() -> str:
    package = resources.files("controlplane.adapters.postgres")
    return package.joinpath("schema.sql").read_text(encoding="utf-8")


async def test_migrations_apply_once(empty_database_url: str) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        names = [name for name, _sql in migrations.available()]
        assert names[0] == "0001_initial"
        assert await migrations.migrate(connection) == names
        assert await migrations.migrate(connection) == []
        recorded = await connection.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [row["name"] for row in recorded] == names
    finally:
        await connection.close()


ALL = [
    "0001_initial",
    "0002_integrations",
    "0003_evaluations",
    "0004_schedules",
    "0005_callbacks",
]


async def test_migrate_accepts_a_pool(empty_database_url: str) -> None:
    pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        assert await migrations.migrate(pool) == ALL
        assert await migrations.migrate(pool) == []
    finally:
        await pool.close()


async def test_concurrent_runs_apply_each_migration_once(empty_database_url: str) -> None:
    connections = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in connections))
        assert sorted(results) == [[], [], [], ALL]
        # The lock is released: a later run on any of the sessions does not wait for it.
        held = await connections[0].fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        assert held == 0
    finally:
        for connection in connections:
            await connection.close()


async def test_failed_migration_leaves_nothing(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = migrations.available()
    broken = [*good, ("9999_broken", "CREATE TABLE half_done (x int); SELECT 1/0;")]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    connection = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrations.migrate(connection)
        applied = await connection.fetch("SELECT name FROM schema_migrations")
        assert sorted(row["name"] for row in applied) == ALL
        assert await connection.fetchval("SELECT to_regclass('half_done')") is None
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            == 0
        )
    finally:
        await connection.close()


async def test_schema_sql_equals_the_migrated_schema(
    database_url: str, empty_database_url: str
) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(schema_sql())
    finally:
        await connection.close()
    migrated, declared = await catalog(database_url), await catalog(empty_database_url)
    assert migrated["relations"]  # the comparison below is not between two empty schemas
    for part in CATALOG_QUERIES:
        assert declared[part] == migrated[part], part


async def test_catalog_comparison_notices_a_difference(
    database_url: str, empty_database_url: str
) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            schema_sql().replace("events_triggered_id_idx", "events_triggered_id_ix")
        )
    finally:
        await connection.close()
    assert (await catalog(database_url))["indexes"] != (await catalog(empty_database_url))[
        "indexes"
    ]
