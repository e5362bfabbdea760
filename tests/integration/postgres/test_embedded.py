from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from controlplane.adapters.postgres.embedded import (
    SYSTEM_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    wheel_bin_dir,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not tmp_path: as root the server's user must traverse the parents, and pytest keeps
    # its base folder private.
    path = Path(tempfile.mkdtemp(prefix="controlplane-embedded-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bystander() -> Iterator[int]:
    """A live process of the server's own user that is not PostgreSQL.

    PostgreSQL itself ignores a stale pid of another user's process, so only a process it may
    signal shows that the stale file is recognised.
    """
    identity: dict[str, Any] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam(SYSTEM_USER)
        identity = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    process = subprocess.Popen(["sleep", "60"], **identity)
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def psql(dsn: str, sql: str) -> str:
    """Run SQL from another process, as any other client of the server would."""
    completed = subprocess.run(
        [str(wheel_bin_dir() / "psql"), dsn, "-Atc", sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout.strip()


async def test_data_persists_across_restarts(folder: Path) -> None:
    server = EmbeddedPostgres(durable=False)
    try:
        dsn = server.start(folder / "data")
        assert dsn.startswith("postgresql://postgres@127.0.0.1:")
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        finally:
            await connection.close()
        server.stop()
        with pytest.raises(EmbeddedPostgresError):
            _ = server.dsn
        dsn = server.start(folder / "data")
        assert psql(dsn, "SELECT x FROM kept") == "42"
        assert psql(dsn, "SHOW fsync") == "off"
    finally:
        server.stop()
    assert not (folder / "data" / "postmaster.pid").exists()
    server.stop()  # stopping twice is harmless


def test_stale_pid_file_from_a_crash(folder: Path, bystander: int) -> None:
    server = EmbeddedPostgres(durable=False)
    data = folder / "data"
    try:
        server.start(data)
        server.stop()
        # A crash leaves postmaster.pid behind, and its pid may now belong to anything.
        pid_file = data / "postmaster.pid"
        pid_file.write_text(f"{bystander}\n{data}\n1700000000\n5432\n\n127.0.0.1\n\nready\n")
        dsn = server.start(data)
        assert psql(dsn, "SELECT 1") == "1"
        assert pid_file.read_text().split("\n", 1)[0] != str(bystander)
    finally:
        server.stop()


def test_a_server_left_running_is_adopted(folder: Path) -> None:
    first, second = EmbeddedPostgres(durable=False), EmbeddedPostgres(durable=False)
    data = folder / "data"
    try:
        dsn = first.start(data)
        # A new process (the first one "crashed" without stopping it) finds it running.
        assert second.start(data) == dsn
        second.stop()
        assert not (data / "postmaster.pid").exists()
    finally:
        first.stop()
        second.stop()


def test_a_folder_that_is_no_cluster_is_refused(folder: Path) -> None:
    data = folder / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedPostgresError, match="neither empty nor"):
        EmbeddedPostgres(durable=False).start(data)
    assert (data / "notes.txt").read_text() == "mine"
