"""Awaiting a sequence over HTTP: the long-poll, ``POST /api/v1/event?wait=`` and the SSE stream.

The app runs against fakes and a real :class:`ContextWatch`; the test plays the engine by
calling ``watch.committed(...)`` and by choosing which contexts are running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controlplane.adapters.http import create_app
from controlplane.adapters.http.routes import events as event_routes
from controlplane.application.envelope import Envelope
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.watch import ContextWatch
from controlplane.domain.execution import Execution, Scope, State, TaskOutcome
from controlplane.domain.shipyard import Sequence, Task
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
    stored_event,
)
from tests.unit.adapters.test_http_api import CONTEXT, SHIPYARD, TOKEN, TRIGGER, problem

SEQUENCES = "/api/controlPlane/v1/sequence/sockshop"
STREAM = "/api/v1/event/stream"


@dataclass
class RunningEngine(FakeEngine):
    """The fake engine plus the synchronous ``running`` the watch and the stream ask."""

    live: set[str] = field(default_factory=set)

    def running(self, keptn_context: str) -> bool:
        return keptn_context in self.live


class Setup:
    def __init__(self, *, token: str | None = None, with_watch: bool = True) -> None:
        self.engine = RunningEngine()
        self.definitions = FakeDefinitions()
        self.definitions.add("sockshop", SHIPYARD)
        self.store = InMemoryQueryStore()
        self.watch = ContextWatch(self.store, queue_size=8)
        self.watch.attach(self.engine.running)
        self.app: FastAPI = create_app(
            engine=self.engine,
            definitions=self.definitions,
            queries=Queries(self.store),
            registry=Registry(InMemoryIntegrationStore()),
            api_token=token,
            watch=self.watch if with_watch else None,
        )

    def end(self, context: str = CONTEXT, *events: Envelope) -> None:
        """Play the engine: commit ``events`` and report the context ended."""
        self.engine.live.discard(context)
        self.watch.committed(list(events), [context])


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


async def in_background(
    request: Awaitable[httpx.Response], setup: Setup
) -> asyncio.Task[httpx.Response]:
    """Start ``request`` and return once it is waiting on the watch."""
    task = asyncio.ensure_future(request)
    await until(lambda: setup.watch.watched > 0 or task.done())
    assert not task.done(), task.result().text
    return task


def execution(
    stage: str,
    *,
    at: float,
    state: State = State.FINISHED,
    result: str = "pass",
    status: str = "succeeded",
    message: str = "",
    outputs: tuple[TaskOutcome, ...] = (),
) -> Execution:
    return Execution(
        id=f"{CONTEXT}-{stage}",
        scope=Scope("sockshop", stage, "carts", CONTEXT),
        sequence=Sequence("delivery", (Task("deployment"), Task("test"))),
        input={"configurationChange": {"image": "carts:1"}},
        triggered_at=at,
        task_started_timeout=600.0,
        state=state,
        status=status if state.terminal else "",
        result=result if state.terminal else "",
        message=message,
        ended_at=at + 1 if state.terminal else None,
        previous=outputs,
    )


def live_event(n: int, type_: str = "sh.keptn.event.deployment.started") -> Envelope:
    return Envelope(
        id=f"live-{n}",
        source="test",
        type=type_,
        time="2024-01-31T10:00:05.000Z",
        data={"project": "sockshop", "stage": "dev", "service": "carts"},
        keptn_context=CONTEXT,
    )


def seed_events(setup: Setup, count: int) -> list[dict[str, Any]]:
    stored = [
        stored_event(
            "sh.keptn.event.dev.delivery.triggered" if n == 0 else "deployment.started",
            keptn_context=CONTEXT,
            time=f"2024-01-31T10:00:0{n}.000Z",
            data={"project": "sockshop", "stage": "dev", "service": "carts"},
            id=f"stored-{n}",
        )
        for n in range(count)
    ]
    setup.store.stored_events.extend(stored)
    return stored


def frames(body: str) -> list[dict[str, str]]:
    """Parse an SSE body into its events (comments kept as {"comment": ...})."""
    parsed = []
    for block in body.split("\n\n"):
        if not block:
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            frame["comment" if name == "" else name] = value
        parsed.append(frame)
    return parsed


# ------------------------------------------------------------------ the wait parameter


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        ("soon", "query parameter wait"),
        ("-5", "query parameter wait"),
        ("10x", "query parameter wait"),
        ("6m", "at most 5m"),
        ("301", "at most 5m"),
    ],
)
async def test_a_bad_wait_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, setup: Setup, wait: str, expected: str
) -> None:
    setup.engine.live.add(CONTEXT)
    poll = await client.get(SEQUENCES, params={"keptnContext": CONTEXT, "wait": wait})
    assert expected in problem(poll, 400)
    post = await client.post("/api/v1/event", params={"wait": wait}, json=TRIGGER)
    assert expected in problem(post, 400)
    assert setup.engine.received == []  # refused before anything was stored


@pytest.mark.parametrize("contexts", ["", f"{CONTEXT},other"])
async def test_long_poll_needs_exactly_one_context(
    client: httpx.AsyncClient, contexts: str
) -> None:
    response = await client.get(SEQUENCES, params={"keptnContext": contexts, "wait": "10s"})
    assert "exactly one keptnContext" in problem(response, 400)


async def test_long_poll_of_an_unknown_project_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/controlPlane/v1/sequence/nope", params={"keptnContext": CONTEXT, "wait": "1s"}
    )
    problem(response, 404)


async def test_without_a_watch_waiting_is_501_and_the_rest_works() -> None:
    setup = Setup(with_watch=False)
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        post = await client.post("/api/v1/event", params={"wait": "5s"}, json=TRIGGER)
        assert "not available" in problem(post, 501)
        assert setup.engine.received == []
        poll = await client.get(SEQUENCES, params={"keptnContext": CONTEXT, "wait": "5s"})
        problem(poll, 501)
        problem(await client.get(STREAM, params={"keptnContext": CONTEXT}), 501)
        plain = await client.get(SEQUENCES, params={"keptnContext": CONTEXT})
        assert plain.status_code == 200


# ------------------------------------------------------------------ long-poll


async def test_long_poll_answers_as_soon_as_the_context_ends(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.engine.live.add(CONTEXT)
    setup.store.executions.append(execution("dev", at=1.0, state=State.STARTED))
    poll = await in_background(
        client.get(SEQUENCES, params={"keptnContext": CONTEXT, "wait": "5m"}), setup
    )
    setup.store.executions[0] = execution("dev", at=1.0)
    setup.end()
    async with asyncio.timeout(5):
        response = await poll
    assert response.status_code == 200, response.text
    [state] = response.json()["states"]
    assert state["state"] == "finished"
    assert setup.watch.watched == 0


async def test_long_poll_that_runs_out_shows_the_current_state(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.engine.live.add(CONTEXT)
    setup.store.executions.append(execution("dev", at=1.0, state=State.STARTED))
    response = await client.get(SEQUENCES, params={"keptnContext": CONTEXT, "wait": "50ms"})
    assert response.status_code == 200, response.text
    assert response.json()["states"][0]["state"] == "started"
    assert setup.watch.watched == 0


async def test_long_poll_of_a_context_that_is_not_running_answers_at_once(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.store.executions.append(execution("dev", at=1.0))
    async with asyncio.timeout(5):
        response = await client.get(SEQUENCES, params={"keptnContext": CONTEXT, "wait": "5m"})
    assert response.json()["states"][0]["state"] == "finished"


async def test_a_client_that_hangs_up_leaves_no_waiter_behind(setup: Setup) -> None:
    setup.engine.live.add(CONTEXT)
    hang_up = asyncio.Event()
    sent: list[dict[str, Any]] = []
    requests = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        message = next(requests, None)
        if message is not None:
            return message
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": SEQUENCES,
        "raw_path": SEQUENCES.encode(),
        "query_string": f"keptnContext={CONTEXT}&wait=5m".encode(),
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    call = asyncio.ensure_future(setup.app(scope, receive, send))
    await until(lambda: setup.watch.watched == 1)
    hang_up.set()
    async with asyncio.timeout(5):
        await call
    assert setup.watch.watched == 0


# ------------------------------------------------------------------ POST ?wait


async def test_post_with_wait_returns_the_final_result(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.engine.live.add(CONTEXT)
    post = await in_background(
        client.post("/api/v1/event", params={"wait": "30s"}, json=TRIGGER), setup
    )
    outputs = (
        TaskOutcome("deployment", "d-1", "pass", "succeeded", {"deployment": {"uri": "x"}}),
        TaskOutcome("test", "t-1", "warning", "succeeded", {"test": {"score": 80}}),
    )
    setup.store.executions.append(
        execution("dev", at=1.0, result="warning", message="slow", outputs=outputs)
    )
    setup.end()
    async with asyncio.timeout(5):
        response = await post
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "keptnContext": CONTEXT,
        "finished": True,
        "state": "finished",
        "result": "warning",
        "status": "succeeded",
        "message": "slow",
        "data": {
            "configurationChange": {"image": "carts:1"},
            "project": "sockshop",
            "stage": "dev",
            "service": "carts",
            "deployment": {"uri": "x"},
            "test": {"score": 80},
            "result": "warning",
            "status": "succeeded",
        },
    }


async def test_post_with_wait_answers_202_when_the_wait_runs_out(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.engine.live.add(CONTEXT)
    response = await client.post("/api/v1/event", params={"wait": "20ms"}, json=TRIGGER)
    assert response.status_code == 202, response.text
    assert response.json() == {"keptnContext": CONTEXT, "finished": False}
    assert len(setup.engine.admitted) == 1
    assert setup.watch.watched == 0


async def test_post_with_wait_of_an_answer_does_not_wait(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.engine.live.add(CONTEXT)
    answer = {
        **TRIGGER,
        "id": "a-1",
        "type": "sh.keptn.event.deployment.started",
        "triggeredid": "t-1",
    }
    async with asyncio.timeout(5):
        response = await client.post("/api/v1/event", params={"wait": "5m"}, json=answer)
    assert response.status_code == 200, response.text
    assert response.json() == {"keptnContext": CONTEXT}


async def test_post_without_wait_is_unchanged(client: httpx.AsyncClient, setup: Setup) -> None:
    setup.engine.live.add(CONTEXT)
    response = await client.post("/api/v1/event", json=TRIGGER)
    assert response.status_code == 200
    assert response.json() == {"keptnContext": CONTEXT}


async def test_openapi_documents_the_await_shapes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/api/v1/event"]["post"]
    assert any(p["name"] == "wait" for p in post["parameters"])
    assert "202" in post["responses"]
    assert "SequenceOutcome" in json.dumps(post["responses"]["200"])
    stream = spec["paths"][STREAM]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]


# ------------------------------------------------------------------ the event stream


async def test_stream_of_an_unknown_context_is_404(client: httpx.AsyncClient, setup: Setup) -> None:
    response = await client.get(STREAM, params={"keptnContext": CONTEXT})
    assert CONTEXT in problem(response, 404)
    assert setup.watch.watched == 0


async def test_stream_of_an_ended_context_replays_it_and_ends(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    stored = seed_events(setup, 3)
    setup.store.executions.append(execution("dev", at=1.0))
    response = await client.get(STREAM, params={"keptnContext": CONTEXT})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    sent = frames(response.text)
    assert [frame["id"] for frame in sent[:-1]] == [event["id"] for event in stored]
    assert sent[0]["event"] == "sh.keptn.event.dev.delivery.triggered"
    assert json.loads(sent[1]["data"]) == stored[1]
    assert sent[-1]["event"] == "end"
    assert json.loads(sent[-1]["data"]) == {
        "keptnContext": CONTEXT,
        "state": "finished",
        "reason": "ended",
    }


async def test_stream_follows_live_events_without_repeats_until_the_end(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    stored = seed_events(setup, 2)
    setup.engine.live.add(CONTEXT)
    setup.store.executions.append(execution("dev", at=1.0, state=State.STARTED))
    stream = await in_background(client.get(STREAM, params={"keptnContext": CONTEXT}), setup)
    # A stored event committed again (it raced the read) is not sent twice.
    repeat = Envelope.from_json(stored[1])
    setup.watch.committed([repeat, live_event(1)], [])
    setup.store.executions[0] = execution("dev", at=1.0)
    setup.end(CONTEXT, live_event(2, "sh.keptn.event.dev.delivery.finished"))
    async with asyncio.timeout(5):
        response = await stream
    sent = frames(response.text)
    assert [frame.get("id") for frame in sent] == ["stored-0", "stored-1", "live-1", "live-2", None]
    assert sent[3]["event"] == "sh.keptn.event.dev.delivery.finished"
    assert json.loads(sent[2]["data"]) == live_event(1).to_json()
    assert json.loads(sent[-1]["data"])["state"] == "finished"
    assert setup.watch.watched == 0


async def test_stream_resumes_after_last_event_id(client: httpx.AsyncClient, setup: Setup) -> None:
    seed_events(setup, 4)
    response = await client.get(
        STREAM, params={"keptnContext": CONTEXT}, headers={"Last-Event-ID": "stored-1"}
    )
    assert [frame.get("id") for frame in frames(response.text)] == ["stored-2", "stored-3", None]
    unknown = await client.get(
        STREAM, params={"keptnContext": CONTEXT}, headers={"Last-Event-ID": "elsewhere"}
    )
    assert len(frames(unknown.text)) == 5  # an id it does not know: everything


async def test_a_stream_that_falls_behind_ends_with_overflow(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    seed_events(setup, 1)
    setup.engine.live.add(CONTEXT)
    stream = await in_background(client.get(STREAM, params={"keptnContext": CONTEXT}), setup)
    # The test client reads nothing until the end, so a burst over the queue size cuts it off.
    setup.watch.committed([live_event(n) for n in range(20)], [])
    async with asyncio.timeout(5):
        response = await stream
    sent = frames(response.text)
    end = json.loads(sent[-1]["data"])
    assert end["reason"] == "overflow"
    assert setup.watch.watched == 0


async def test_quiet_stream_sends_keep_alives_and_notices_a_silent_end(
    client: httpx.AsyncClient, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_routes, "KEEP_ALIVE_SECONDS", 0.01)
    seed_events(setup, 1)
    setup.engine.live.add(CONTEXT)
    stream = await in_background(client.get(STREAM, params={"keptnContext": CONTEXT}), setup)
    # Timers fire in order: the stream's 10 ms keep-alive comes before this 50 ms sleep ends.
    await asyncio.sleep(0.05)
    setup.engine.live.discard(CONTEXT)  # e.g. its project was deleted: no commit says so
    async with asyncio.timeout(5):
        response = await stream
    sent = frames(response.text)
    assert {"comment": "keep-alive"} in sent
    assert sent[-1]["event"] == "end"


async def test_stream_needs_the_token_like_every_api_path() -> None:
    setup = Setup(token=TOKEN)
    seed_events(setup, 1)
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        problem(await client.get(STREAM, params={"keptnContext": CONTEXT}), 401)
        allowed = await client.get(
            STREAM, params={"keptnContext": CONTEXT}, headers={"x-token": TOKEN}
        )
        assert allowed.status_code == 200


async def test_stream_needs_a_context(client: httpx.AsyncClient) -> None:
    assert "keptnContext" in problem(await client.get(STREAM), 400)


async def test_watch_close_ends_streams_and_waits(client: httpx.AsyncClient, setup: Setup) -> None:
    seed_events(setup, 1)
    setup.engine.live.add(CONTEXT)
    stream = await in_background(client.get(STREAM, params={"keptnContext": CONTEXT}), setup)
    setup.watch.close()
    async with asyncio.timeout(5):
        response = await stream
    assert json.loads(frames(response.text)[-1]["data"])["reason"] == "closed"
    post = await client.post("/api/v1/event", params={"wait": "5m"}, json=TRIGGER)
    assert post.status_code == 202


async def test_a_stream_that_never_starts_leaves_no_subscriber_behind(setup: Setup) -> None:
    seed_events(setup, 1)
    setup.engine.live.add(CONTEXT)

    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client is gone before the first byte")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": STREAM,
        "raw_path": STREAM.encode(),
        "query_string": f"keptnContext={CONTEXT}".encode(),
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    with contextlib.suppress(Exception):
        await setup.app(scope, receive, send)
    assert setup.watch.watched == 0
