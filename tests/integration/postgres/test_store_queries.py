from __future__ import annotations

from typing import Any

import pytest

from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.envelope import format_time
from controlplane.application.ports import EventFilter, Page, UnitOfWork
from controlplane.domain.execution import State
from tests.unit.adapters.postgres_samples import BASE_TIME, envelope, execution

pytestmark = pytest.mark.integration

DELIVERY = "sh.keptn.event.dev.delivery.triggered"
DEPLOY = "sh.keptn.event.deployment.triggered"
DEPLOYED = "sh.keptn.event.deployment.finished"
EVALUATED = "sh.keptn.event.evaluation.finished"
INVALIDATED = "sh.keptn.event.evaluation.invalidated"


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def page_ids(page: Page) -> tuple[list[str], int, int | None]:
    return ids(page.items), page.total, page.next_offset


# contexts and pauses -------------------------------------------------------------------------


@pytest.fixture
async def contexts_store(pg_store: PostgresStore) -> PostgresStore:
    runs = [
        execution("a1", context="ctx-a", triggered_at=100.0, state=State.FINISHED),
        execution("a2", context="ctx-a", stage="staging", name="rollback", triggered_at=200.0),
        execution("b1", context="ctx-b", name="evaluation", triggered_at=150.0),
        execution("c1", context="ctx-c", triggered_at=50.0),
        execution("c0", context="ctx-c", stage="hardening", triggered_at=60.0),
        execution("d1", context="ctx-d", project="other", triggered_at=500.0),
    ]
    await pg_store.commit(UnitOfWork(executions={run.id: run for run in runs}))
    return pg_store


async def context_ids(store: PostgresStore, **kwargs: Any) -> list[list[str]]:
    kwargs.setdefault("keptn_contexts", ())
    kwargs.setdefault("name", "")
    groups = await store.contexts("sockshop", **kwargs)
    return [[run.id for run in group] for group in groups]


async def test_contexts_newest_first_stages_oldest_first(contexts_store: PostgresStore) -> None:
    assert await context_ids(contexts_store) == [["b1"], ["a1", "a2"], ["c1", "c0"]]
    groups = await contexts_store.contexts("sockshop", keptn_contexts=(), name="")
    assert groups[1][1] == execution(
        "a2", context="ctx-a", stage="staging", name="rollback", triggered_at=200.0
    )
    assert await contexts_store.contexts("nobody", keptn_contexts=(), name="") == []


async def test_contexts_filters(contexts_store: PostgresStore) -> None:
    assert await context_ids(contexts_store, keptn_contexts=["ctx-c", "ctx-a", "ctx-d"]) == [
        ["a1", "a2"],
        ["c1", "c0"],
    ]
    # The name is the one of the context's first sequence, as Keptn's view shows it.
    assert await context_ids(contexts_store, name="delivery") == [["a1", "a2"], ["c1", "c0"]]
    assert await context_ids(contexts_store, name="rollback") == []
    assert await context_ids(contexts_store, name="evaluation", keptn_contexts=["ctx-b"]) == [
        ["b1"]
    ]


async def test_context_page_is_chosen_in_the_database(contexts_store: PostgresStore) -> None:
    async def page(**kwargs: Any) -> tuple[list[list[str]], int]:
        kwargs.setdefault("name", "")
        groups, total = await contexts_store.context_page("sockshop", **kwargs)
        return [[run.id for run in group] for group in groups], total

    assert await page(limit=None, offset=0) == ([["b1"], ["a1", "a2"], ["c1", "c0"]], 3)
    assert await page(limit=1, offset=1) == ([["a1", "a2"]], 3)
    assert await page(limit=2, offset=5) == ([], 3)
    assert await page(name="delivery", limit=1, offset=0) == ([["a1", "a2"]], 2)
    assert await page(name="rollback", limit=5, offset=0) == ([], 0)


async def test_live_executions_of_a_project(contexts_store: PostgresStore) -> None:
    live = await contexts_store.live_executions("sockshop")
    assert sorted(run.id for run in live) == ["a2", "b1", "c0", "c1"]
    assert await contexts_store.live_executions("nobody") == []


async def test_pauses_of_contexts(pg_store: PostgresStore) -> None:
    await pg_store.commit(
        UnitOfWork(pauses_added=[("ctx-a", ""), ("ctx-a", "dev"), ("ctx-b", "prod"), ("z", "")])
    )
    assert await pg_store.pauses(["ctx-a", "ctx-b", "ctx-none"]) == {
        "ctx-a": {"", "dev"},
        "ctx-b": {"prod"},
    }
    assert await pg_store.pauses([]) == {}


# events ------------------------------------------------------------------------------------


@pytest.fixture
async def events_store(pg_store: PostgresStore) -> PostgresStore:
    events = [
        envelope("e1", type=DELIVERY, context="ctx-1", time=100.0),
        envelope("e2", type=DEPLOY, context="ctx-1", time=110.0),
        envelope("e3", type=DEPLOYED, context="ctx-1", time=120.0, source="helm-service"),
        envelope("e4", type=DELIVERY, context="ctx-2", time=130.0, service="orders"),
        envelope("e5", type=DEPLOY, context="ctx-2", time=140.0, stage="staging"),
        envelope("e6", type=DELIVERY, context="ctx-3", time=150.0, project="other"),
    ]
    await pg_store.commit(UnitOfWork(events=[(event, False) for event in events]))
    return pg_store


async def find(store: PostgresStore, limit: int = 20, offset: int = 0, **kwargs: Any) -> Page:
    return await store.events(EventFilter(**kwargs), limit=limit, offset=offset)


async def test_events_newest_first_with_paging(events_store: PostgresStore) -> None:
    everything = ["e5", "e4", "e3", "e2", "e1"]
    assert page_ids(await find(events_store, project="sockshop")) == (everything, 5, None)
    assert page_ids(await find(events_store, 2, project="sockshop")) == (["e5", "e4"], 5, 2)
    assert page_ids(await find(events_store, 2, 2, project="sockshop")) == (["e3", "e2"], 5, 4)
    assert page_ids(await find(events_store, 2, 4, project="sockshop")) == (["e1"], 5, None)
    assert page_ids(await find(events_store, 2, 9, project="sockshop")) == ([], 5, None)
    assert page_ids(await find(events_store, project="nobody")) == ([], 0, None)
    page = await find(events_store, 1, event_id="e3")
    assert page.items == [
        envelope("e3", type=DEPLOYED, context="ctx-1", time=120.0, source="helm-service").to_json()
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"keptn_contexts": ("ctx-1",)}, ["e3", "e2", "e1"]),
        ({"keptn_contexts": ("ctx-1", "ctx-3")}, ["e6", "e3", "e2", "e1"]),
        ({"type": DEPLOY}, ["e5", "e2"]),
        ({"type": DEPLOY, "project": "sockshop", "stage": "dev"}, ["e2"]),
        ({"service": "orders"}, ["e4"]),
        ({"source": "helm-service"}, ["e3"]),
        ({"event_id": "e6"}, ["e6"]),
        ({"project": "sockshop", "from_time": format_time(110.0)}, ["e5", "e4", "e3"]),
        ({"project": "sockshop", "before_time": format_time(130.0)}, ["e3", "e2", "e1"]),
        ({"from_time": format_time(100.0), "before_time": format_time(140.0)}, ["e4", "e3", "e2"]),
        # Instants, not strings, are compared: 00:01:55+00:00 written as 01:01:55+01:00.
        ({"from_time": "1970-01-01T01:01:55+01:00"}, ["e6", "e5", "e4", "e3"]),
        # A bound that is no time at all is compared as text.
        ({"from_time": "zzz"}, []),
        ({"project": "sockshop", "root_only": True}, ["e4", "e1"]),
        ({"root_only": True}, ["e6", "e4", "e1"]),
        ({"root_only": True, "type": DEPLOY}, []),
    ],
)
async def test_event_filters(
    events_store: PostgresStore, where: dict[str, Any], expected: list[str]
) -> None:
    page = await find(events_store, **where)
    assert (ids(page.items), page.total) == (expected, len(expected))


# events_by_type ----------------------------------------------------------------------------


@pytest.fixture
async def evaluations_store(pg_store: PostgresStore) -> PostgresStore:
    def evaluation(id: str, result: str, score: int, time: float, **kwargs: Any) -> Any:
        data = {"result": result, "evaluation": {"result": result, "score": score}}
        return envelope(id, type=EVALUATED, time=time, data=data, **kwargs)

    events = [
        evaluation("f1", "pass", 100, 100.0, triggered_id="t1"),
        evaluation("f2", "fail", 10, 110.0, triggered_id="t2"),
        evaluation("f3", "warning", 60, 120.0, triggered_id="t3", context="ctx-2"),
        evaluation("f4", "pass", 100, 130.0, triggered_id="t4", project="other"),
        evaluation("f5", "pass", 90, 140.0, triggered_id="t5", stage="staging"),
        # Keptn 0.8+: the .invalidated answers the same .triggered as the .finished.
        envelope("i1", type=INVALIDATED, triggered_id="t2", time=150.0),
        # Keptn 0.7: it names the .finished event itself.
        envelope("i2", type=INVALIDATED, triggered_id="f5", time=160.0),
        # Another task's invalidation does not count.
        envelope("i3", type="sh.keptn.event.deployment.invalidated", triggered_id="t1"),
    ]
    await pg_store.commit(UnitOfWork(events=[(event, False) for event in events]))
    return pg_store


async def by_type(
    store: PostgresStore,
    match: dict[str, list[str]],
    *,
    exclude_invalidated: bool = False,
    from_time: str = "",
    limit: int = 20,
    type: str = EVALUATED,
) -> list[str]:
    found = await store.events_by_type(
        type,
        match=match,
        exclude_invalidated=exclude_invalidated,
        from_time=from_time,
        limit=limit,
    )
    return ids(found)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"data.project": ["sockshop"]}, ["f5", "f3", "f2", "f1"]),
        ({"data.project": ["sockshop"], "data.stage": ["dev"]}, ["f3", "f2", "f1"]),
        ({"data.project": ["sockshop"], "data.result": ["pass", "warning"]}, ["f5", "f3", "f1"]),
        ({"data.project": ["sockshop"], "data.evaluation.result": ["fail"]}, ["f2"]),
        ({"data.project": ["other", "sockshop"], "data.evaluation.score": ["100"]}, ["f4", "f1"]),
        ({"shkeptncontext": ["ctx-2"]}, ["f3"]),
        ({"triggeredid": ["t1", "t4"]}, ["f4", "f1"]),
        ({"data.project": ["sockshop"], "data.no.such.path": ["x"]}, []),
        ({"data.project": []}, []),
    ],
)
async def test_events_by_type_match(
    evaluations_store: PostgresStore, match: dict[str, list[str]], expected: list[str]
) -> None:
    assert await by_type(evaluations_store, match) == expected


async def test_events_by_type_options(evaluations_store: PostgresStore) -> None:
    scope = {"data.project": ["sockshop"]}
    assert await by_type(evaluations_store, scope, exclude_invalidated=True) == ["f3", "f1"]
    assert await by_type(evaluations_store, scope, from_time=format_time(110.0)) == ["f5", "f3"]
    assert await by_type(evaluations_store, scope, limit=2) == ["f5", "f3"]
    assert await by_type(evaluations_store, scope, limit=0) == ["f5", "f3", "f2", "f1"]
    assert await by_type(evaluations_store, scope, type=INVALIDATED) == ["i2", "i1"]
    everything = await evaluations_store.events_by_type(
        EVALUATED, match=scope, exclude_invalidated=False, from_time="", limit=1
    )
    assert everything[0]["data"]["evaluation"] == {"result": "pass", "score": 90}


# open_triggered ----------------------------------------------------------------------------


@pytest.fixture
async def open_store(pg_store: PostgresStore) -> PostgresStore:
    runs = [
        execution("x1", task_id="t-1", context="c1"),
        execution("x2", task_id="t-2", sent=False, context="c2"),  # parked
        execution("x3", task_id="t-3", state=State.FINISHED, context="c3"),
        execution("x4", task_id="t-4", context="c4"),
        execution("x5", task_id="t-5", project="other", context="c5"),
        execution("x6", task_id="t-6", stage="staging", context="c6"),
        execution("x7", task_id="t-7", service="orders", context="c7"),
    ]
    events = [
        envelope("t-1", type=DEPLOY, context="c1"),
        envelope("t-2", type=DEPLOY, context="c2"),
        envelope("t-3", type=DEPLOY, context="c3"),
        envelope("t-4", type="sh.keptn.event.test.triggered", context="c4"),
        envelope("t-5", type=DEPLOY, project="other", context="c5"),
        envelope("t-6", type=DEPLOY, stage="staging", context="c6"),
        envelope("t-7", type=DEPLOY, service="orders", context="c7"),
        envelope("t-8", type=DEPLOY, context="c8"),  # no execution waits on it
    ]
    await pg_store.commit(
        UnitOfWork(
            events=[(event, True) for event in events], executions={run.id: run for run in runs}
        )
    )
    return pg_store


async def open_ids(store: PostgresStore, limit: int = 20, offset: int = 0, **kwargs: str) -> Any:
    arguments = {"project": "", "stage": "", "service": "", "event_id": ""} | kwargs
    page = await store.open_triggered(DEPLOY, limit=limit, offset=offset, **arguments)
    return page_ids(page)


async def test_open_triggered(open_store: PostgresStore) -> None:
    assert await open_ids(open_store) == (["t-1", "t-5", "t-6", "t-7"], 4, None)
    assert await open_ids(open_store, project="sockshop") == (["t-1", "t-6", "t-7"], 3, None)
    assert await open_ids(open_store, stage="staging") == (["t-6"], 1, None)
    assert await open_ids(open_store, service="orders") == (["t-7"], 1, None)
    assert await open_ids(open_store, event_id="t-5") == (["t-5"], 1, None)
    assert await open_ids(open_store, event_id="t-2") == ([], 0, None)
    assert await open_ids(open_store, 2, 1) == (["t-5", "t-6"], 4, 3)
    assert await open_ids(open_store, 2, 8) == ([], 4, None)
    page = await open_store.open_triggered(
        "sh.keptn.event.test.triggered",
        project="",
        stage="",
        service="",
        event_id="",
        limit=5,
        offset=0,
    )
    assert page.items == [
        envelope("t-4", type="sh.keptn.event.test.triggered", context="c4").to_json()
    ]


async def test_answered_tasks_are_no_longer_open(open_store: PostgresStore) -> None:
    finished = execution("x1", task_id="t-1", context="c1", state=State.FINISHED)
    sent = execution("x2", task_id="t-2", context="c2")
    await open_store.commit(UnitOfWork(executions={"x1": finished, "x2": sent}))
    assert await open_ids(open_store) == (["t-2", "t-5", "t-6", "t-7"], 4, None)


async def test_time_epoch_is_null_for_unparsable_times(pg_store: PostgresStore) -> None:
    odd = envelope("e-odd").evolve(time="yesterday")
    await pg_store.commit(UnitOfWork(events=[(odd, False)]))
    assert await pg_store.pool.fetchval("SELECT time_epoch FROM events") is None
    page = await pg_store.events(
        EventFilter(project="sockshop", from_time=format_time(BASE_TIME)), limit=5, offset=0
    )
    assert page.items == []
    page = await pg_store.events(EventFilter(project="sockshop"), limit=5, offset=0)
    assert ids(page.items) == ["e-odd"]
