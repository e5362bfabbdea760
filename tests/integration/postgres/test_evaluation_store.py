"""The quality gate's storage on real PostgreSQL: configuration files and past evaluations.

Files (``resources``) belong to a project, a stage or a service, are versioned by a counter,
are written all or nothing and go with their project. Past evaluations are the stored
``evaluation.finished`` / ``evaluate.finished`` events, newest first, without the ones an
``evaluation.invalidated`` names; the partial index ``events_evaluations_idx`` keeps that
lookup off the project's other events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from controlplane.adapters.postgres.store import _PAST_EVALUATIONS, PostgresStore
from controlplane.application.envelope import Envelope
from controlplane.application.ports import ProjectRecord, Resource, UnitOfWork
from tests.unit.adapters.postgres_samples import BASE_TIME, envelope

pytestmark = pytest.mark.integration

SHIPYARD = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n"
EVALUATION_FINISHED = "sh.keptn.event.evaluation.finished"
EVALUATE_FINISHED = "sh.keptn.event.evaluate.finished"
INVALIDATED = "sh.keptn.event.evaluation.invalidated"
SLO = "objectives:\n  - sli: p95\n    pass:\n      - criteria: ['<600']\n"
SLI = "indicators:\n  p95: 'histogram_quantile(0.95, x)'\n"


async def make_project(store: PostgresStore, name: str = "shop") -> None:
    await store.create_project(ProjectRecord(name, SHIPYARD, created_at=1.0, updated_at=1.0))


def file(
    uri: str, content: str, *, stage: str = "", service: str = "", at: float = 10.0
) -> Resource:
    return Resource("shop", stage, service, uri, content, updated_at=at)


async def content(store: PostgresStore, stage: str, service: str, uri: str) -> str | None:
    found = await store.get_resource("shop", stage, service, uri)
    return None if found is None else found.content


def level(resources: Sequence[Resource]) -> list[tuple[str, str, int]]:
    return [(r.uri, r.content, r.version) for r in resources]


# resources ---------------------------------------------------------------------------------


async def test_files_at_project_stage_and_service_level(pg_store: PostgresStore) -> None:
    await make_project(pg_store)
    stored = await pg_store.put_resources(
        [
            file("slo.yaml", "project slo"),
            file("sli.yaml", "project sli"),
            file("slo.yaml", "stage slo", stage="dev"),
            file("slo.yaml", "service slo", stage="dev", service="carts"),
            file("prometheus/sli.yaml", "service sli", stage="dev", service="carts"),
        ]
    )
    assert [(r.stage, r.service, r.uri, r.version) for r in stored] == [
        ("", "", "slo.yaml", 1),
        ("", "", "sli.yaml", 1),
        ("dev", "", "slo.yaml", 1),
        ("dev", "carts", "slo.yaml", 1),
        ("dev", "carts", "prometheus/sli.yaml", 1),
    ]
    assert await pg_store.get_resource("shop", "", "", "slo.yaml") == Resource(
        "shop", "", "", "slo.yaml", "project slo", 1, 10.0
    )
    assert await content(pg_store, "dev", "", "slo.yaml") == "stage slo"
    assert await content(pg_store, "dev", "carts", "slo.yaml") == "service slo"
    # A level is exact: no inheritance from the project in the store itself.
    assert await pg_store.get_resource("shop", "dev", "", "sli.yaml") is None
    assert await pg_store.get_resource("shop", "dev", "orders", "slo.yaml") is None
    assert await pg_store.get_resource("other", "", "", "slo.yaml") is None

    # Listing shows exactly one level, ordered by URI.
    assert level(await pg_store.list_resources("shop", "", "")) == [
        ("sli.yaml", "project sli", 1),
        ("slo.yaml", "project slo", 1),
    ]
    assert level(await pg_store.list_resources("shop", "dev", "")) == [("slo.yaml", "stage slo", 1)]
    assert level(await pg_store.list_resources("shop", "dev", "carts")) == [
        ("prometheus/sli.yaml", "service sli", 1),
        ("slo.yaml", "service slo", 1),
    ]
    assert await pg_store.list_resources("shop", "prod", "") == []


async def test_the_files_a_gate_reads_come_from_all_three_levels_at_once(
    pg_store: PostgresStore,
) -> None:
    await make_project(pg_store)
    await pg_store.put_resources(
        [
            file("slo.yaml", "project slo"),
            file("sli.yaml", "project sli"),
            file("notes.md", "not asked for"),
            file("slo.yaml", "stage slo", stage="dev"),
            file("slo.yaml", "other stage", stage="prod"),
            file("slo.yaml", "service slo", stage="dev", service="carts"),
            file("slo.yaml", "other service", stage="dev", service="orders"),
        ]
    )

    found = await pg_store.level_resources("shop", "dev", "carts", ["slo.yaml", "sli.yaml"])

    assert sorted((r.stage, r.service, r.uri, r.content) for r in found) == [
        ("", "", "sli.yaml", "project sli"),
        ("", "", "slo.yaml", "project slo"),
        ("dev", "", "slo.yaml", "stage slo"),
        ("dev", "carts", "slo.yaml", "service slo"),
    ]
    assert await pg_store.level_resources("other", "dev", "carts", ["slo.yaml"]) == []


async def test_replacing_a_file_increases_its_version(pg_store: PostgresStore) -> None:
    await make_project(pg_store)
    [first] = await pg_store.put_resources([file("slo.yaml", SLO, stage="dev", at=10.0)])
    assert (first.version, first.updated_at) == (1, 10.0)
    [second] = await pg_store.put_resources(
        [file("slo.yaml", SLO + "# v2\n", stage="dev", at=20.0)]
    )
    assert (second.version, second.content, second.updated_at) == (2, SLO + "# v2\n", 20.0)
    [third, other] = await pg_store.put_resources(
        [file("slo.yaml", SLO, stage="dev", at=30.0), file("sli.yaml", SLI, stage="dev", at=30.0)]
    )
    assert (third.version, other.version) == (3, 1)
    assert await pg_store.get_resource("shop", "dev", "", "slo.yaml") == third
    # The same URI at another level is another file with its own counter.
    [project_level] = await pg_store.put_resources([file("slo.yaml", SLO)])
    assert project_level.version == 1


async def test_an_upload_is_all_or_nothing(pg_store: PostgresStore) -> None:
    await make_project(pg_store)
    [kept] = await pg_store.put_resources([file("slo.yaml", "original", stage="dev")])
    batch = [
        file("slo.yaml", "replaced", stage="dev", at=50.0),  # would be version 2
        file("sli.yaml", SLI, stage="dev", at=50.0),  # new
        Resource("no-such-project", "", "", "slo.yaml", SLO, updated_at=50.0),
    ]
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pg_store.put_resources(batch)
    assert await pg_store.get_resource("shop", "dev", "", "slo.yaml") == kept
    assert await pg_store.get_resource("shop", "dev", "", "sli.yaml") is None
    assert await pg_store.list_resources("no-such-project", "", "") == []
    # The store is usable afterwards (the transaction was rolled back, the connection freed).
    [again] = await pg_store.put_resources([file("slo.yaml", "replaced", stage="dev")])
    assert again.version == 2


async def test_delete_a_file(pg_store: PostgresStore) -> None:
    await make_project(pg_store)
    await pg_store.put_resources(
        [file("slo.yaml", SLO), file("slo.yaml", SLO, stage="dev"), file("sli.yaml", SLI)]
    )
    assert await pg_store.delete_resource("shop", "", "", "slo.yaml") is True
    assert await pg_store.delete_resource("shop", "", "", "slo.yaml") is False
    assert await pg_store.delete_resource("shop", "", "", "nothing.yaml") is False
    assert await pg_store.get_resource("shop", "", "", "slo.yaml") is None
    assert level(await pg_store.list_resources("shop", "", "")) == [("sli.yaml", SLI, 1)]
    assert level(await pg_store.list_resources("shop", "dev", "")) == [("slo.yaml", SLO, 1)]
    # Written again after a delete, the counter starts over.
    [fresh] = await pg_store.put_resources([file("slo.yaml", SLO)])
    assert fresh.version == 1


async def test_files_go_with_their_project(pg_store: PostgresStore) -> None:
    await make_project(pg_store, "shop")
    await make_project(pg_store, "other")
    await pg_store.put_resources(
        [
            file("slo.yaml", SLO),
            file("slo.yaml", SLO, stage="dev"),
            file("sli.yaml", SLI, stage="dev", service="carts"),
            Resource("other", "", "", "slo.yaml", SLO, updated_at=1.0),
        ]
    )
    assert await pg_store.delete_project("shop") is True
    count = await pg_store.pool.fetchval("SELECT count(*) FROM resources WHERE project = 'shop'")
    assert count == 0
    assert await pg_store.list_resources("shop", "dev", "carts") == []
    assert level(await pg_store.list_resources("other", "", "")) == [("slo.yaml", SLO, 1)]


# past evaluations --------------------------------------------------------------------------


def indicator(metric: str, value: float) -> dict[str, Any]:
    return {
        "score": 1,
        "value": {"metric": metric, "value": value, "success": True, "message": ""},
        "status": "pass",
    }


def finished(
    id: str,
    *,
    service: str = "carts",
    stage: str = "dev",
    project: str = "shop",
    result: str = "pass",
    type: str = EVALUATION_FINISHED,
    results: list[dict[str, Any]] | None = None,
    at: float = 0.0,
) -> Envelope:
    """An ``evaluation.finished`` answering ``trig-<id>``; ``results=None`` leaves them out."""
    evaluation: dict[str, Any] = {"result": result, "score": 100}
    if results is not None:
        evaluation["indicatorResults"] = results
    return envelope(
        id,
        type=type,
        context=f"ctx-{id}",
        project=project,
        stage=stage,
        service=service,
        time=BASE_TIME + at,
        triggered_id=f"trig-{id}",
        source="controlplane/evaluation",
        data={"status": "succeeded", "result": result, "evaluation": evaluation},
    )


def invalidated(id: str, *, naming: str) -> Envelope:
    return envelope(
        id,
        type=INVALIDATED,
        context=f"ctx-{id}",
        project="shop",
        triggered_id=naming,
        source="lighthouse",
        data={"status": "succeeded"},
    )


async def store_events(store: PostgresStore, events: Sequence[Envelope]) -> None:
    """Through the engine's commit, as the gate's own answers are stored; in this order."""
    await store.commit(UnitOfWork(events=[(event, True) for event in events]))


async def past_ids(
    store: PostgresStore,
    service: str = "carts",
    *,
    results: Sequence[str] = (),
    limit: int = 10,
    stage: str = "dev",
    project: str = "shop",
) -> list[str]:
    found = await store.past_evaluations(project, stage, service, results=results, limit=limit)
    return [past.event_id for past in found]


@pytest.fixture
async def history(pg_store: PostgresStore) -> PostgresStore:
    """Evaluations of several services, oldest first; e3 and e7 are ``evaluate.finished``."""
    await store_events(
        pg_store,
        [
            finished("e1", result="pass", results=[indicator("p95", 100.0)], at=1),
            finished("e2", result="fail", results=[indicator("p95", 900.0)], at=2),
            finished("o1", service="orders", result="pass", at=3),
            finished("e3", result="warning", type=EVALUATE_FINISHED, at=4),
            finished("s1", stage="prod", result="pass", at=5),
            finished("x1", project="elsewhere", result="pass", at=6),
        ],
    )
    # A later batch: seq order is commit order, whatever the events' own times say.
    await store_events(
        pg_store,
        [
            envelope("d1", type="sh.keptn.event.deployment.finished", project="shop"),
            finished("e4", result="pass", results=[indicator("p95", 120.0)], at=0.5),
            finished("o2", service="orders", result="fail", at=8),
            finished("e5", result="warning", at=9),
            finished("e6", result="pass", results=[], at=10),
            finished("e7", result="fail", type=EVALUATE_FINISHED, at=11),
        ],
    )
    return pg_store


async def test_newest_first_with_a_limit(history: PostgresStore) -> None:
    assert await past_ids(history) == ["e7", "e6", "e5", "e4", "e3", "e2", "e1"]
    assert await past_ids(history, limit=3) == ["e7", "e6", "e5"]
    assert await past_ids(history, limit=1) == ["e7"]
    assert await past_ids(history, limit=0) == []
    assert await past_ids(history, limit=-1) == []


async def test_scoped_to_project_stage_and_service(history: PostgresStore) -> None:
    assert await past_ids(history, "orders") == ["o2", "o1"]
    assert await past_ids(history, stage="prod") == ["s1"]
    assert await past_ids(history, project="elsewhere") == ["x1"]
    assert await past_ids(history, "nobody") == []
    assert await past_ids(history, stage="") == []


async def test_filtered_by_result(history: PostgresStore) -> None:
    assert await past_ids(history, results=("pass",)) == ["e6", "e4", "e1"]
    assert await past_ids(history, results=("pass", "warning")) == ["e6", "e5", "e4", "e3", "e1"]
    assert await past_ids(history, results=()) == ["e7", "e6", "e5", "e4", "e3", "e2", "e1"]
    assert await past_ids(history, results=("pass",), limit=2) == ["e6", "e4"]
    assert await past_ids(history, "orders", results=("pass",)) == ["o1"]


async def test_indicator_results_come_back_as_stored(history: PostgresStore) -> None:
    found = {
        past.event_id: past.indicator_results
        for past in await history.past_evaluations("shop", "dev", "carts", results=(), limit=10)
    }
    assert found["e1"] == [indicator("p95", 100.0)]
    assert found["e4"] == [indicator("p95", 120.0)]
    assert found["e6"] == []  # stored as an empty list
    assert found["e5"] == []  # not stored at all
    assert found["e3"] == []


async def test_indicator_results_that_are_not_a_list_read_as_none(
    pg_store: PostgresStore,
) -> None:
    odd = finished("n1")
    odd = odd.evolve(data={**odd.data, "evaluation": {"indicatorResults": None}})
    odder = finished("n2")
    odder = odder.evolve(data={**odder.data, "evaluation": {"indicatorResults": {"p95": 1}}})
    await store_events(pg_store, [odd, odder])
    found = await pg_store.past_evaluations("shop", "dev", "carts", results=(), limit=5)
    assert [(past.event_id, past.indicator_results) for past in found] == [("n2", []), ("n1", [])]


async def test_invalidated_by_the_triggered_id(history: PostgresStore) -> None:
    # Keptn's evaluation.invalidated answers the same .triggered event as the .finished.
    await store_events(history, [invalidated("inv-1", naming="trig-e6")])
    assert await past_ids(history) == ["e7", "e5", "e4", "e3", "e2", "e1"]
    assert await past_ids(history, results=("pass",), limit=1) == ["e4"]
    assert await past_ids(history, "orders") == ["o2", "o1"]


async def test_invalidated_by_the_finished_events_own_id(history: PostgresStore) -> None:
    await store_events(history, [invalidated("inv-2", naming="e7")])
    assert await past_ids(history, limit=2) == ["e6", "e5"]


async def test_other_invalidations_change_nothing(history: PostgresStore) -> None:
    await store_events(
        history,
        [
            # Another task's invalidation, and one naming an event that is no evaluation.
            envelope(
                "inv-3",
                type="sh.keptn.event.deployment.invalidated",
                project="shop",
                triggered_id="trig-e7",
            ),
            invalidated("inv-4", naming="d1"),
        ],
    )
    assert await past_ids(history) == ["e7", "e6", "e5", "e4", "e3", "e2", "e1"]


async def test_the_lookup_uses_the_partial_index(pg_store: PostgresStore) -> None:
    """With many other events of the project, the planner walks events_evaluations_idx.

    Thousands of unrelated events of the same project (and stage and service) plus
    evaluations of many other services, then ANALYZE: a plan that reads the project's or
    the type's index would have to filter most of what it reads. The assertion is on the
    plan's shape only, never on timings.
    """
    noise = [
        envelope(
            f"n{i}",
            type=f"sh.keptn.event.task{i % 7}.{('triggered', 'started', 'finished')[i % 3]}",
            context=f"ctx-n{i // 10}",
            project="shop",
            stage="dev",
            service="carts" if i % 2 else f"svc-{i % 50}",
            time=BASE_TIME + i,
        )
        for i in range(4000)
    ]
    evaluations = [
        finished(f"ev{i}", service=f"svc-{i % 100}", result=("pass", "fail")[i % 2], at=i)
        for i in range(400)
    ]
    mine = [finished(f"mine{i}", results=[indicator("p95", float(i))], at=i) for i in range(5)]
    for start in range(0, len(noise), 1000):
        await store_events(pg_store, noise[start : start + 1000])
    await store_events(pg_store, evaluations)
    await store_events(pg_store, mine)
    await pg_store.pool.execute("ANALYZE events")

    for results in (["pass"], []):  # include_result_with_score: pass, and all
        arguments = ("shop", "dev", "carts", results, 3)
        rows = await pg_store.pool.fetch(f"EXPLAIN (FORMAT JSON) {_PAST_EVALUATIONS}", *arguments)
        plan = json.loads(rows[0][0])[0]["Plan"]
        # The evaluations (alias e) are read through the partial index only, be it an index
        # scan or a bitmap scan; the invalidation check (alias i) may use what it likes.
        assert _indexes_reading(plan, "e") == {"events_evaluations_idx"}, plan
        assert not any(
            node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "events"
            for node in _nodes(plan)
        ), plan
    assert await past_ids(pg_store, results=("pass",), limit=3) == ["mine4", "mine3", "mine2"]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def _indexes_reading(plan: dict[str, Any], alias: str) -> set[str]:
    """Names of the indexes through which the plan reads the relation called ``alias``."""
    found: set[str] = set()
    for node in _nodes(plan):
        if node.get("Alias") != alias:
            continue
        if "Index Name" in node:
            found.add(node["Index Name"])
        elif node["Node Type"] == "Bitmap Heap Scan":
            found.update(child["Index Name"] for child in _nodes(node) if "Index Name" in child)
        else:
            found.add(node["Node Type"])  # e.g. a Seq Scan: no index at all
    return found
