from __future__ import annotations

import time

import pytest

from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.ports import ProjectExists, ProjectRecord

pytestmark = pytest.mark.integration

YAML_1 = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n"
YAML_2 = YAML_1 + "# second\n"


async def test_create_and_read(pg_store: PostgresStore) -> None:
    before = time.time()
    stored = await pg_store.create_project(ProjectRecord("sockshop", YAML_1, origin="file:a.yaml"))
    assert (stored.name, stored.shipyard_yaml, stored.version) == ("sockshop", YAML_1, 1)
    assert (stored.error, stored.origin) == ("", "file:a.yaml")
    assert before <= stored.created_at == stored.updated_at <= time.time()
    assert await pg_store.get_project("sockshop") == stored
    assert await pg_store.get_project("nothing") is None


async def test_given_times_and_version_one(pg_store: PostgresStore) -> None:
    record = ProjectRecord("p", YAML_1, version=7, error="bad", created_at=1.5, updated_at=2.5)
    stored = await pg_store.create_project(record)
    assert stored == ProjectRecord("p", YAML_1, 1, "bad", "api", 1.5, 2.5)


async def test_duplicate_create_is_refused(pg_store: PostgresStore) -> None:
    first = await pg_store.create_project(ProjectRecord("sockshop", YAML_1))
    with pytest.raises(ProjectExists):
        await pg_store.create_project(ProjectRecord("sockshop", YAML_2))
    assert await pg_store.get_project("sockshop") == first
    assert [v.version for v in await pg_store.shipyard_versions("sockshop")] == [1]


async def test_replace_bumps_the_version_and_keeps_history(pg_store: PostgresStore) -> None:
    created = await pg_store.create_project(ProjectRecord("p", YAML_1, created_at=10.0))
    second = await pg_store.replace_project(
        ProjectRecord("p", YAML_2, error="invalid", origin="file:x", updated_at=20.0)
    )
    assert second == ProjectRecord("p", YAML_2, 2, "invalid", "file:x", 10.0, 20.0)
    third = await pg_store.replace_project(ProjectRecord("p", YAML_1, updated_at=30.0))
    assert (third.version, third.created_at, third.updated_at) == (3, 10.0, 30.0)
    assert await pg_store.get_project("p") == third
    history = await pg_store.shipyard_versions("p")
    assert [(v.version, v.shipyard_yaml, v.error) for v in history] == [
        (1, YAML_1, ""),
        (2, YAML_2, "invalid"),
        (3, YAML_1, ""),
    ]
    assert created.version == 1


async def test_replace_creates_a_missing_project(pg_store: PostgresStore) -> None:
    stored = await pg_store.replace_project(ProjectRecord("new", YAML_1, version=5))
    assert stored.version == 1
    assert await pg_store.list_projects() == [stored]


async def test_list_and_delete(pg_store: PostgresStore) -> None:
    for name in ("b", "a", "c"):
        await pg_store.create_project(ProjectRecord(name, YAML_1))
    await pg_store.replace_project(ProjectRecord("b", YAML_2))
    assert [p.name for p in await pg_store.list_projects()] == ["a", "b", "c"]
    assert await pg_store.delete_project("b") is True
    assert await pg_store.delete_project("b") is False
    assert [p.name for p in await pg_store.list_projects()] == ["a", "c"]
    assert await pg_store.shipyard_versions("b") == []
    again = await pg_store.create_project(ProjectRecord("b", YAML_2))
    assert again.version == 1
