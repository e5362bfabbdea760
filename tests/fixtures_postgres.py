"""PostgreSQL for tests: one server per session, one fresh database per test.

Migrating a database takes longer than copying one, so the session migrates a template
database once and every test gets ``CREATE DATABASE ... TEMPLATE`` of it: full isolation
(each test may commit, truncate or drop what it likes) for a few milliseconds. The databases
are dropped ``WITH (FORCE)``, which also ends connections a test forgot to close.

The server is an :class:`~controlplane.adapters.postgres.embedded.EmbeddedPostgres` in a
temporary folder, stopped at the end of the session, unless ``--pg-dsn`` (or the environment
variable ``TEST_PG_DSN``) names a running server to use instead; its DSN must be a URL
(``postgresql://user@host:port/postgres``) of a role that may create databases.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from controlplane.adapters.postgres.embedded import EmbeddedPostgres
from controlplane.adapters.postgres.migrate import migrate
from controlplane.adapters.postgres.store import PostgresStore


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-dsn",
        default=None,
        help="URL of a running PostgreSQL server to test against (default: $TEST_PG_DSN, or"
        " start an embedded one)",
    )


def with_database(dsn: str, database: str) -> str:
    """The same server URL, naming another database."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise pytest.UsageError(f"--pg-dsn must be a postgresql:// URL, got {dsn!r}")
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of the session's server (its maintenance database)."""
    given = request.config.getoption("--pg-dsn") or os.environ.get("TEST_PG_DSN")
    if given:
        yield str(given)
        return
    folder = Path(tempfile.mkdtemp(prefix="controlplane-pg-"))
    server = EmbeddedPostgres(durable=False)
    try:
        yield server.start(folder / "data")
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
async def postgres_admin(postgres_server: str) -> AsyncIterator[asyncpg.Connection]:
    """A session-long connection to the maintenance database, for CREATE/DROP DATABASE."""
    connection = await asyncpg.connect(postgres_server)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def postgres_template(
    postgres_server: str, postgres_admin: asyncpg.Connection
) -> AsyncIterator[str]:
    """The name of a migrated database that tests copy; unique, so sessions may share a server."""
    name = f"cp_template_{uuid.uuid4().hex[:12]}"
    await postgres_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        connection = await asyncpg.connect(with_database(postgres_server, name))
        try:
            await migrate(connection)
        finally:
            await connection.close()  # a template must have no connections when copied
        yield name
    finally:
        await postgres_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_database(admin: asyncpg.Connection, template: str = "template0") -> str:
    name = f"cp_test_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


async def drop_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(
    postgres_server: str, postgres_admin: asyncpg.Connection, postgres_template: str
) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own, dropped afterwards."""
    name = await create_database(postgres_admin, postgres_template)
    try:
        yield with_database(postgres_server, name)
    finally:
        await drop_database(postgres_admin, name)


@pytest.fixture
async def empty_database_url(
    postgres_server: str, postgres_admin: asyncpg.Connection
) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = await create_database(postgres_admin)
    try:
        yield with_database(postgres_server, name)
    finally:
        await drop_database(postgres_admin, name)


@pytest.fixture
async def pg_store(database_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.connect(database_url, min_size=1, max_size=4)
    try:
        yield store
    finally:
        await store.close()
