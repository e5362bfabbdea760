from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings

from controlplane.adapters.postgres import codec
from controlplane.adapters.postgres.store import PostgresStore, UnstorableEvent
from controlplane.application.envelope import Envelope
from controlplane.application.ports import StoredEvent, UnitOfWork
from controlplane.domain.execution import Execution, State
from tests.unit.adapters import postgres_samples as samples
from tests.unit.adapters.postgres_samples import envelope, execution

pytestmark = pytest.mark.integration


async def stored_docs(store: PostgresStore) -> dict[str, Execution]:
    rows = await store.pool.fetch("SELECT doc::text AS doc FROM executions")
    found = [codec.decode_execution(json.loads(row["doc"])) for row in rows]
    return {item.id: item for item in found}


async def test_empty_unit_of_work_is_a_no_op(pg_store: PostgresStore) -> None:
    await pg_store.commit(UnitOfWork())
    assert await pg_store.load_live_executions() == []
    assert await pg_store.load_pauses() == []


async def test_commit_round_trips_executions_events_and_pauses(pg_store: PostgresStore) -> None:
    live = execution("x-live", task_id="t-1")
    done = execution("x-done", state=State.FINISHED, ended_at=samples.BASE_TIME + 9)
    events = [envelope("e-1"), envelope("e-2", type="sh.keptn.event.deployment.started")]
    await pg_store.commit(
        UnitOfWork(
            events=[(events[0], True), (events[1], False)],
            executions={live.id: live, done.id: done},
            pauses_added=[("ctx-1", ""), ("ctx-2", "dev")],
        )
    )
    assert await pg_store.load_live_executions() == [live]
    assert await stored_docs(pg_store) == {live.id: live, done.id: done}
    assert await pg_store.load_pauses() == [("ctx-1", ""), ("ctx-2", "dev")]
    assert await pg_store.find_events(["e-1", "e-2", "missing"]) == {
        "e-1": StoredEvent("e-1", "shipyard-controller", events[0].type, "ctx-1"),
        "e-2": StoredEvent("e-2", "shipyard-controller", events[1].type, "ctx-1"),
    }
    assert await pg_store.unpublished(10) == [events[0]]
    assert await pg_store.find_events([]) == {}


async def test_events_are_stored_as_their_cloudevent_json(pg_store: PostgresStore) -> None:
    event = envelope(
        "e-1", triggered_id="t-0", data={"result": "pass", "labels": {"x": "y"}}
    ).evolve(gitcommitid="abc", extensions={"myext": "v"})
    await pg_store.commit(UnitOfWork(events=[(event, False)]))
    row = await pg_store.pool.fetchrow("SELECT * FROM events WHERE id = 'e-1'")
    assert row is not None
    assert json.loads(row["body"]) == event.to_json()
    assert (row["source"], row["type"], row["time"]) == (event.source, event.type, event.time)
    assert (row["keptn_context"], row["triggered_id"]) == ("ctx-1", "t-0")
    assert (row["project"], row["stage"], row["service"]) == ("sockshop", "dev", "carts")
    assert row["time_epoch"] == pytest.approx(samples.BASE_TIME)
    assert await pg_store.pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_executions_are_updated_in_place(pg_store: PostgresStore) -> None:
    first = execution("x-1", task_id="t-1", sent=False)
    await pg_store.commit(UnitOfWork(executions={first.id: first}))
    assert await open_task(pg_store, "x-1") is None
    sent = execution("x-1", task_id="t-1")
    await pg_store.commit(UnitOfWork(executions={sent.id: sent}))
    assert await open_task(pg_store, "x-1") == "t-1"
    finished = sent.evolve(state=State.FINISHED, ended_at=samples.BASE_TIME + 5)
    await pg_store.commit(UnitOfWork(executions={finished.id: finished}))
    assert await stored_docs(pg_store) == {"x-1": finished}
    assert await pg_store.load_live_executions() == []
    row = await pg_store.pool.fetchrow("SELECT state, ended_at, open_task_id FROM executions")
    assert row is not None
    assert tuple(row) == ("finished", samples.BASE_TIME + 5, None)


async def open_task(store: PostgresStore, execution_id: str) -> str | None:
    found: str | None = await store.pool.fetchval(
        "SELECT open_task_id FROM executions WHERE id = $1", execution_id
    )
    return found


async def test_duplicate_events_are_ignored(pg_store: PostgresStore) -> None:
    original = envelope("e-1", data={"n": 1})
    await pg_store.commit(UnitOfWork(events=[(original, False)]))
    repeat = envelope("e-1", data={"n": 2})
    twice = envelope("e-2")
    await pg_store.commit(
        UnitOfWork(events=[(repeat, True), (twice, False), (twice.evolve(source="b"), True)])
    )
    stored = await pg_store.events_by_type(
        original.type,
        match={"data.project": ["sockshop"]},
        exclude_invalidated=False,
        from_time="",
        limit=0,
    )
    assert [(event["id"], event["source"]) for event in stored] == [
        ("e-2", "shipyard-controller"),
        ("e-1", "shipyard-controller"),
    ]
    assert stored[1]["data"]["n"] == 1
    assert await pg_store.unpublished(10) == []  # the repeats' publish flags were ignored too


async def test_outbox_is_cleared_by_published(pg_store: PostgresStore) -> None:
    events = [envelope(f"e-{n}") for n in range(5)]
    await pg_store.commit(UnitOfWork(events=[(event, True) for event in events]))
    assert await pg_store.unpublished(3) == events[:3]
    await pg_store.commit(UnitOfWork(published=["e-0", "e-2", "unknown"]))
    assert await pg_store.unpublished(10) == [events[1], events[3], events[4]]
    # Stored and published in the same unit of work: inserted first, then cleared.
    late = envelope("e-9")
    await pg_store.commit(UnitOfWork(events=[(late, True)], published=["e-9", "e-1"]))
    assert await pg_store.unpublished(10) == [events[3], events[4]]


async def test_pause_removal(pg_store: PostgresStore) -> None:
    await pg_store.commit(
        UnitOfWork(
            pauses_added=[
                ("a", ""),
                ("a", "dev"),
                ("a", "prod"),
                ("b", ""),
                ("b", "dev"),
                ("c", "dev"),
                ("c", "prod"),
            ]
        )
    )
    # None ends every pause of the context; a stage ends that stage and the whole-context one.
    await pg_store.commit(UnitOfWork(pauses_removed=[("a", None), ("b", "dev"), ("c", "dev")]))
    assert await pg_store.load_pauses() == [("c", "prod")]
    # Added and removed in one unit of work: additions first, as the engine's memory has it.
    await pg_store.commit(
        UnitOfWork(pauses_added=[("d", "dev"), ("e", "")], pauses_removed=[("d", None)])
    )
    assert await pg_store.load_pauses() == [("c", "prod"), ("e", "")]


async def test_a_failing_commit_writes_nothing(pg_store: PostgresStore) -> None:
    good = envelope("e-1")
    live = execution("x-1")
    poisoned = envelope("e-2", data={"text": "nul \x00 here"})
    with pytest.raises(UnstorableEvent, match="e-2"):
        await pg_store.commit(
            UnitOfWork(events=[(good, True), (poisoned, True)], executions={live.id: live})
        )
    assert await pg_store.find_events(["e-1", "e-2"]) == {}
    assert await pg_store.load_live_executions() == []


@pytest.mark.parametrize("data", [{"bad": "\ud800"}, {"bad": float("nan")}, {"bad": float("inf")}])
async def test_unstorable_values_are_named(
    pg_store: PostgresStore, data: dict[str, object]
) -> None:
    with pytest.raises(UnstorableEvent, match="e-1"):
        await pg_store.commit(UnitOfWork(events=[(envelope("e-1", data=data), True)]))


async def test_delete_project_data(pg_store: PostgresStore) -> None:
    mine = execution("x-1", context="ctx-1")
    other = execution("x-2", project="other", context="ctx-2")
    await pg_store.commit(
        UnitOfWork(
            events=[
                (envelope("e-1", context="ctx-1"), True),
                (envelope("e-3", context="ctx-3"), False),  # an event with no execution
                (envelope("e-2", project="other", context="ctx-2"), True),
            ],
            executions={mine.id: mine, other.id: other},
            pauses_added=[("ctx-1", ""), ("ctx-2", ""), ("ctx-3", "dev")],
        )
    )
    await pg_store.delete_project_data("sockshop")
    assert await pg_store.load_live_executions() == [other]
    assert set(await pg_store.find_events(["e-1", "e-2", "e-3"])) == {"e-2"}
    assert await pg_store.load_pauses() == [("ctx-2", "")]
    assert [event.id for event in await pg_store.unpublished(10)] == ["e-2"]


async def test_generated_executions_survive_the_database(pg_store: PostgresStore) -> None:
    generated: dict[str, Execution] = {}

    @settings(max_examples=60, database=None, deadline=None)
    @given(samples.executions)
    def collect(item: Execution) -> None:
        generated[f"{len(generated)}:{item.id}"] = item.evolve(id=f"{len(generated)}:{item.id}")

    collect()
    await pg_store.commit(UnitOfWork(executions=generated))
    assert await stored_docs(pg_store) == generated
    live = {key: item for key, item in generated.items() if not item.state.terminal}
    assert {item.id: item for item in await pg_store.load_live_executions()} == live


async def test_envelopes_from_the_outbox_equal_what_was_committed(
    pg_store: PostgresStore,
) -> None:
    event = Envelope(
        id="e-1",
        source="src",
        type="sh.keptn.event.dev.delivery.triggered",
        time="2024-01-02T03:04:05.678Z",
        data={"project": "p", "nested": {"list": [1, 2.5, None, True, "ü"]}},
        keptn_context="ctx",
        gitcommitid="c1",
        extensions={"custom": {"k": "v"}},
    )
    await pg_store.commit(UnitOfWork(events=[(event, True)]))
    assert await pg_store.unpublished(1) == [event]


async def test_concurrent_commits_of_the_same_executions(pg_store: PostgresStore) -> None:
    # Large enough for the two statements to overlap; in opposite orders, so that a store
    # that locked rows in the order given would deadlock.
    ids = [f"x-{n:04}" for n in range(1000)]
    first = {i: execution(i, triggered_at=1.0) for i in ids}
    second = {i: execution(i, triggered_at=2.0) for i in reversed(ids)}
    async with pg_store.pool.acquire(), pg_store.pool.acquire():
        pass  # two connections ready, so neither commit waits for a connect
    for _ in range(3):
        await asyncio.gather(
            pg_store.commit(UnitOfWork(executions=first)),
            pg_store.commit(UnitOfWork(executions=second)),
        )
        winners = {item.triggered_at for item in (await stored_docs(pg_store)).values()}
        assert len(winners) == 1  # one whole unit of work or the other, never a mix
