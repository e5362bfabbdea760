from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controlplane.adapters.http import create_app
from controlplane.application.errors import (
    ControlPlaneError,
    NotFound,
    TaskEnded,
    Unavailable,
    UnknownProject,
    UnknownTask,
)
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.domain.execution import EventRef, Execution, Scope, StageView, State
from controlplane.domain.shipyard import Sequence, Task
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
    stored_event,
)

TOKEN = "s3cret"
CONTEXT = "5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f"
OTHER = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: shipyard-sockshop
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks:
            - name: deployment
            - name: test
    - name: staging
      sequences:
        - name: delivery
          triggeredOn:
            - event: dev.delivery.finished
          tasks:
            - name: deployment
"""
TRIGGER: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "https://example.com/cli",
    "type": "sh.keptn.event.dev.delivery.triggered",
    "shkeptncontext": CONTEXT,
    "data": {"project": "sockshop", "stage": "dev", "service": "carts"},
}


class Setup:
    def __init__(self, *, token: str | None = None) -> None:
        self.engine = FakeEngine()
        self.definitions = FakeDefinitions()
        self.definitions.add("sockshop", SHIPYARD)
        self.store = InMemoryQueryStore()
        self.registry = Registry(InMemoryIntegrationStore())
        self.app: FastAPI = create_app(
            engine=self.engine,
            definitions=self.definitions,
            queries=Queries(self.store),
            registry=self.registry,
            api_token=token,
        )


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    message: str = body["message"]
    return message


# ------------------------------------------------------------------ POST /api/v1/event


async def test_structured_mode_event_is_handed_to_the_engine(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    response = await client.post(
        "/api/v1/event",
        content=json.dumps({**TRIGGER, "time": "2024-01-31T10:00:00.000Z"}),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"keptnContext": CONTEXT}
    [raw] = setup.engine.received
    assert raw.attributes["type"] == TRIGGER["type"]
    assert raw.attributes["id"] == "e-1"
    assert raw.attributes["shkeptncontext"] == CONTEXT
    assert raw.attributes["time"] == "2024-01-31T10:00:00Z"
    assert "data" not in raw.attributes
    assert raw.data == TRIGGER["data"]


async def test_binary_mode_event_reads_ce_headers(client: httpx.AsyncClient, setup: Setup) -> None:
    response = await client.post(
        "/api/v1/event",
        content=json.dumps(TRIGGER["data"]),
        headers={
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "b-1",
            "ce-source": "https://example.com/x",
            "ce-type": "sh.keptn.event.dev.delivery.triggered",
            "ce-shkeptncontext": CONTEXT,
            "ce-time": "2024-01-31T10:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"keptnContext": CONTEXT}
    [raw] = setup.engine.received
    assert raw.attributes["id"] == "b-1"
    assert raw.attributes["datacontenttype"] == "application/json"
    assert raw.attributes["time"] == "2024-01-31T10:00:00Z"
    assert raw.data == TRIGGER["data"]


async def test_plain_json_event_as_keptn_clients_send_it(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    event = {**TRIGGER, "contenttype": "application/json", "type": "dev.delivery.triggered"}
    del event["shkeptncontext"]
    response = await client.post("/api/v1/event", json=event)
    assert response.status_code == 200, response.text
    [raw] = setup.engine.received
    assert raw.attributes["contenttype"] == "application/json"
    [admitted] = setup.engine.admitted
    assert admitted.type == "sh.keptn.event.dev.delivery.triggered"
    assert response.json() == {"keptnContext": admitted.keptn_context}


async def test_binary_mode_without_body_passes_no_data(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    response = await client.post(
        "/api/v1/event",
        headers={"ce-type": "sh.keptn.log.error", "ce-source": "x", "ce-specversion": "1.0"},
    )
    assert response.status_code == 200, response.text
    assert setup.engine.received[0].data is None


async def test_event_over_the_size_limit_is_413(client: httpx.AsyncClient, setup: Setup) -> None:
    big = {**TRIGGER, "data": {**TRIGGER["data"], "blob": "x" * 70_000}}
    message = problem(await client.post("/api/v1/event", json=big), 413)
    assert "64 KiB" in message
    assert setup.engine.received == []


async def test_size_limit_holds_without_content_length(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "sh.keptn.log.error", "data": {"blob": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}}'

    response = await client.post(
        "/api/v1/event", content=chunks(), headers={"content-type": "application/json"}
    )
    problem(response, 413)
    assert setup.engine.received == []


async def test_event_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    event = {**TRIGGER, "data": {**TRIGGER["data"], "blob": ""}}
    padding = 65536 - len(json.dumps(event).encode())
    event["data"]["blob"] = "x" * padding
    body = json.dumps(event).encode()
    assert len(body) == 65536
    response = await client.post(
        "/api/v1/event", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b'{"type": ', {"content-type": "application/json"}, "not valid JSON"),
        (b"", {"content-type": "application/json"}, "empty"),
        (b"[1, 2]", {"content-type": "application/json"}, "JSON object"),
        (b'{"type": "x", "data": NaN}', {"content-type": "application/json"}, "NaN"),
        (b"\xff\xfe{}", {"content-type": "application/cloudevents+json"}, "JSON"),
        (b"[" * 50_000, {"content-type": "application/json"}, "too deeply"),
        (
            b'{"type": "sh.keptn.log.error", "time": "yesterday"}',
            {"content-type": "application/json"},
            "CloudEvent",
        ),
        (
            b'{"type": "sh.keptn.log.error", "data_base64": "aGVsbG8="}',
            {"content-type": "application/json"},
            "data_base64",
        ),
        (
            b'{"oops',
            {"content-type": "application/json", "ce-type": "sh.keptn.log.error"},
            "event data is not valid JSON",
        ),
    ],
)
async def test_malformed_events_are_400(
    client: httpx.AsyncClient, setup: Setup, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    message = problem(await client.post("/api/v1/event", content=body, headers=headers), 400)
    assert fragment in message
    assert setup.engine.admitted == []


async def test_bad_content_length_is_400(setup: Setup) -> None:
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/event",
        "raw_path": b"/api/v1/event",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"ten"), (b"content-type", b"application/json")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    await setup.app(scope, receive, send)
    assert messages[0]["status"] == 400
    assert b"Content-Length" in messages[1]["body"]


async def test_engine_ingest_rules_answer_400(client: httpx.AsyncClient) -> None:
    task_trigger = {**TRIGGER, "type": "sh.keptn.event.deployment.triggered"}
    message = problem(await client.post("/api/v1/event", json=task_trigger), 400)
    assert "cannot send a task .triggered" in message
    no_type = {key: value for key, value in TRIGGER.items() if key != "type"}
    assert "'type'" in problem(await client.post("/api/v1/event", json=no_type), 400)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownProject("project 'nope' does not exist"), 404),
        (UnknownTask(), 404),
        (TaskEnded(), 409),
        (Unavailable("starting"), 503),
    ],
)
async def test_engine_rejections_keep_their_status(
    client: httpx.AsyncClient, setup: Setup, error: ControlPlaneError, status: int
) -> None:
    setup.engine.fail_with = error
    response = await client.post("/api/v1/event", json=TRIGGER)
    assert problem(response, status) == str(error)
    if status == 503:
        assert response.headers["retry-after"] == "1"


async def test_unexpected_error_is_a_generic_500(
    client: httpx.AsyncClient, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(raw: object) -> str:
        raise RuntimeError("database password is hunter2")

    setup.engine.ingest = broken  # type: ignore[method-assign]
    message = problem(await client.post("/api/v1/event", json=TRIGGER), 500)
    assert "hunter2" not in message
    assert "internal error" in message
    assert any(record.exc_info for record in caplog.records)


# ------------------------------------------------------------------ token


ROUTES = [
    ("POST", "/api/v1/event"),
    ("GET", "/api/controlPlane/v1/sequence/sockshop"),
    ("POST", f"/api/controlPlane/v1/sequence/sockshop/{CONTEXT}/control"),
    ("GET", "/api/controlPlane/v1/event/triggered/sh.keptn.event.approval.triggered"),
    ("GET", "/api/mongodb-datastore/event?project=sockshop"),
    ("GET", "/api/mongodb-datastore/event/type/sh.keptn.event.evaluation.finished"),
    ("GET", "/api/controlPlane/v1/project"),
    ("POST", "/api/controlPlane/v1/project"),
    ("PUT", "/api/controlPlane/v1/project"),
    ("GET", "/api/controlPlane/v1/project/sockshop"),
    ("DELETE", "/api/controlPlane/v1/project/sockshop"),
    ("GET", "/api/no/such/route"),
]


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[httpx.AsyncClient, Setup]]:
    setup = Setup(token=TOKEN)
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http, setup


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
async def test_every_api_route_needs_the_token(
    guarded: tuple[httpx.AsyncClient, Setup], method: str, path: str, token: str | None
) -> None:
    http, setup = guarded
    headers = {} if token is None else {"x-token": token}
    response = await http.request(method, path, headers=headers, json=TRIGGER)
    assert response.json() == {"code": 401, "message": "missing or incorrect API token"}
    assert response.status_code == 401
    assert setup.engine.received == []
    assert "sockshop" in setup.definitions.records


@pytest.mark.parametrize(("method", "path"), ROUTES[:-1])
async def test_the_right_token_passes(
    guarded: tuple[httpx.AsyncClient, Setup], method: str, path: str
) -> None:
    http, _ = guarded
    response = await http.request(method, path, headers={"x-token": TOKEN}, json=TRIGGER)
    assert response.status_code != 401


@pytest.mark.parametrize("path", ["/health", "/docs", "/openapi.json"])
async def test_health_and_docs_stay_open(
    guarded: tuple[httpx.AsyncClient, Setup], path: str
) -> None:
    http, _ = guarded
    assert (await http.get(path)).status_code == 200


# ------------------------------------------------------------------ health and errors


async def test_health_follows_engine_readiness(client: httpx.AsyncClient, setup: Setup) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    setup.engine.ready = False
    problem(await client.get("/health"), 503)


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    problem(await client.get("/api/nothing/here"), 404)
    problem(await client.delete("/api/v1/event"), 405)


# ------------------------------------------------------------------ projects


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_create_project(client: httpx.AsyncClient, setup: Setup) -> None:
    response = await client.post(
        "/api/controlPlane/v1/project", json={"name": "shop", "shipyard": encoded(SHIPYARD)}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {}
    assert setup.definitions.records["shop"].shipyard_yaml == SHIPYARD


async def test_create_existing_project_is_409(client: httpx.AsyncClient) -> None:
    body = {"name": "sockshop", "shipyard": encoded(SHIPYARD)}
    assert "already exists" in problem(
        await client.post("/api/controlPlane/v1/project", json=body), 409
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "shop", "shipyard": "not base64!"}, "base64"),
        ({"name": "shop", "shipyard": base64.b64encode(b"\xff\xfe").decode()}, "UTF-8"),
        ({"name": "shop", "shipyard": encoded("apiVersion: 1\n")}, "apiVersion"),
        ({"name": "shop", "shipyard": encoded("spec: [\n")}, "invalid shipyard"),
        ({"name": "Shop!", "shipyard": encoded(SHIPYARD)}, "project name"),
        ({"name": "shop"}, "body field shipyard"),
        ({"name": 5, "shipyard": encoded(SHIPYARD)}, "body field name"),
    ],
)
async def test_bad_project_bodies_are_400(
    client: httpx.AsyncClient, setup: Setup, body: dict[str, Any], fragment: str
) -> None:
    message = problem(await client.post("/api/controlPlane/v1/project", json=body), 400)
    assert fragment in message
    assert "shop" not in setup.definitions.records


async def test_malformed_project_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/controlPlane/v1/project",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert "body is not valid JSON" in problem(response, 400)


async def test_replace_project(client: httpx.AsyncClient, setup: Setup) -> None:
    changed = SHIPYARD.replace("name: test", "name: tests")
    response = await client.put(
        "/api/controlPlane/v1/project", json={"name": "sockshop", "shipyard": encoded(changed)}
    )
    assert response.status_code == 200, response.text
    assert setup.definitions.records["sockshop"].shipyard_yaml == changed
    missing = {"name": "nope", "shipyard": encoded(SHIPYARD)}
    problem(await client.put("/api/controlPlane/v1/project", json=missing), 404)


async def test_get_project_in_keptn_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/controlPlane/v1/project/sockshop")
    assert response.status_code == 200
    assert response.json() == {
        "projectName": "sockshop",
        "shipyard": SHIPYARD,
        "shipyardVersion": "spec.keptn.sh/0.2.4",
        "shipyardRevision": 1,
        "creationDate": "1700000000000000000",
        "stages": [
            {"stageName": "dev", "services": []},
            {"stageName": "staging", "services": []},
        ],
    }
    problem(await client.get("/api/controlPlane/v1/project/nope"), 404)


async def test_invalid_project_file_shows_shipyard_error(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.definitions.add("broken", "spec: 1\n", error="sequences/broken.yaml:1: spec: bad")
    body = (await client.get("/api/controlPlane/v1/project/broken")).json()
    assert body["shipyardError"] == "sequences/broken.yaml:1: spec: bad"
    assert body["stages"] == []
    listed = (await client.get("/api/controlPlane/v1/project")).json()
    assert [p["projectName"] for p in listed["projects"]] == ["broken", "sockshop"]
    assert listed["totalCount"] == 2
    assert listed["nextPageKey"] == "0"
    assert "shipyardError" not in listed["projects"][1]


async def test_list_projects_pages(client: httpx.AsyncClient, setup: Setup) -> None:
    setup.definitions.add("another", SHIPYARD)
    first = (await client.get("/api/controlPlane/v1/project?pageSize=1")).json()
    assert [p["projectName"] for p in first["projects"]] == ["another"]
    assert first["nextPageKey"] == "1"
    second = (await client.get("/api/controlPlane/v1/project?pageSize=1&nextPageKey=1")).json()
    assert [p["projectName"] for p in second["projects"]] == ["sockshop"]
    assert second["nextPageKey"] == "0"


async def test_delete_project(client: httpx.AsyncClient, setup: Setup) -> None:
    response = await client.delete("/api/controlPlane/v1/project/sockshop")
    assert response.status_code == 200
    assert "sockshop" in response.json()["message"]
    assert "sockshop" not in setup.definitions.records
    problem(await client.delete("/api/controlPlane/v1/project/sockshop"), 404)


# ------------------------------------------------------------------ sequence states


def execution(
    context: str,
    stage: str,
    *,
    at: float,
    state: State = State.STARTED,
    status: str = "",
    view: StageView | None = None,
    service: str = "carts",
    ended_at: float | None = None,
) -> Execution:
    return Execution(
        id=f"{context}-{stage}",
        scope=Scope("sockshop", stage, service, context),
        sequence=Sequence("delivery", (Task("deployment"), Task("test"))),
        input={},
        triggered_at=at,
        task_started_timeout=600.0,
        state=state,
        status=status,
        ended_at=ended_at,
        view=view or StageView(),
    )


async def test_sequence_state_shape(client: httpx.AsyncClient, setup: Setup) -> None:
    dev_view = StageView(
        latest_event=EventRef("sh.keptn.event.dev.delivery.finished", "f-1", 1_700_000_010.5),
        latest_failed_event=EventRef("sh.keptn.event.test.finished", "t-1", 1_700_000_009.0),
        latest_evaluation={"result": "pass", "score": 100},
        image="docker.io/carts:1",
    )
    setup.store.executions = [
        execution(
            CONTEXT,
            "dev",
            at=1_700_000_000.0,
            state=State.FINISHED,
            status="succeeded",
            view=dev_view,
            ended_at=1_700_000_010.5,
        ),
        execution(CONTEXT, "staging", at=1_700_000_011.0),
    ]
    response = await client.get(f"/api/controlPlane/v1/sequence/sockshop?keptnContext={CONTEXT}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "states": [
            {
                "name": "delivery",
                "service": "carts",
                "project": "sockshop",
                "time": "2023-11-14T22:13:20.000Z",
                "shkeptncontext": CONTEXT,
                "state": "started",
                "problemTitle": "",
                "stages": [
                    {
                        "name": "dev",
                        "image": "docker.io/carts:1",
                        "state": "succeeded",
                        "latestEvaluation": {"result": "pass", "score": 100.0},
                        "latestEvent": {
                            "type": "sh.keptn.event.dev.delivery.finished",
                            "id": "f-1",
                            "time": "2023-11-14T22:13:30.500Z",
                        },
                        "latestFailedEvent": {
                            "type": "sh.keptn.event.test.finished",
                            "id": "t-1",
                            "time": "2023-11-14T22:13:29.000Z",
                        },
                    },
                    {
                        "name": "staging",
                        "image": "",
                        "state": "triggered",
                        "latestEvaluation": None,
                        "latestEvent": None,
                        "latestFailedEvent": None,
                    },
                ],
            }
        ],
        "nextPageKey": 0,
        "totalCount": 1,
    }


async def test_queued_sequence_shows_waiting_even_when_filtered(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    setup.store.executions = [
        execution(OTHER, "dev", at=1.0, state=State.STARTED),
        execution(CONTEXT, "dev", at=2.0, state=State.TRIGGERED),
    ]
    everything = (await client.get("/api/controlPlane/v1/sequence/sockshop")).json()
    assert [s["state"] for s in everything["states"]] == ["waiting", "started"]
    only = await client.get(f"/api/controlPlane/v1/sequence/sockshop?keptnContext={CONTEXT}")
    assert [s["state"] for s in only.json()["states"]] == ["waiting"]


async def test_paused_and_ended_contexts(client: httpx.AsyncClient, setup: Setup) -> None:
    setup.store.executions = [
        execution(OTHER, "dev", at=1.0, state=State.ABORTED, status="aborted", ended_at=3.0),
        execution(CONTEXT, "dev", at=2.0, state=State.PAUSED),
    ]
    setup.store.paused = {(CONTEXT, "")}
    body = (await client.get("/api/controlPlane/v1/sequence/sockshop")).json()
    assert [(s["shkeptncontext"], s["state"]) for s in body["states"]] == [
        (CONTEXT, "paused"),
        (OTHER, "aborted"),
    ]
    assert body["states"][1]["stages"][0]["state"] == "aborted"
    filtered = (await client.get("/api/controlPlane/v1/sequence/sockshop?state=aborted")).json()
    assert [s["shkeptncontext"] for s in filtered["states"]] == [OTHER]
    assert filtered["totalCount"] == 1


async def test_sequence_states_page(client: httpx.AsyncClient, setup: Setup) -> None:
    setup.store.executions = [
        execution(f"ctx-{n}", "dev", at=float(n), service=f"s{n}") for n in range(5)
    ]
    first = (await client.get("/api/controlPlane/v1/sequence/sockshop?pageSize=2")).json()
    assert [s["shkeptncontext"] for s in first["states"]] == ["ctx-4", "ctx-3"]
    assert (first["nextPageKey"], first["totalCount"]) == (2, 5)
    last = (
        await client.get("/api/controlPlane/v1/sequence/sockshop?pageSize=2&nextPageKey=4")
    ).json()
    assert [s["shkeptncontext"] for s in last["states"]] == ["ctx-0"]
    assert last["nextPageKey"] == 0


async def test_sequence_state_errors(client: httpx.AsyncClient) -> None:
    assert "nope" in problem(await client.get("/api/controlPlane/v1/sequence/nope"), 404)
    assert "state must be one of" in problem(
        await client.get("/api/controlPlane/v1/sequence/sockshop?state=running"), 400
    )
    assert "pageSize" in problem(
        await client.get("/api/controlPlane/v1/sequence/sockshop?pageSize=many"), 400
    )
    assert "fromTime" in problem(
        await client.get("/api/controlPlane/v1/sequence/sockshop?fromTime=noon"), 400
    )


# ------------------------------------------------------------------ control


async def test_control_reaches_the_engine(client: httpx.AsyncClient, setup: Setup) -> None:
    url = f"/api/controlPlane/v1/sequence/sockshop/{CONTEXT}/control"
    response = await client.post(url, json={"state": "pause", "stage": "dev"})
    assert response.status_code == 200
    assert response.json() == {}
    assert (await client.post(url, json={"state": "abort"})).status_code == 200
    assert [(c.action, c.stage) for c in setup.engine.controls] == [("pause", "dev"), ("abort", "")]


async def test_control_errors(client: httpx.AsyncClient, setup: Setup) -> None:
    url = f"/api/controlPlane/v1/sequence/sockshop/{CONTEXT}/control"
    assert "body field state" in problem(await client.post(url, json={"state": "stop"}), 400)
    problem(await client.post(url, content=b"{", headers={"content-type": "application/json"}), 400)
    problem(
        await client.post(
            f"/api/controlPlane/v1/sequence/nope/{CONTEXT}/control", json={"state": "pause"}
        ),
        404,
    )
    setup.engine.fail_with = NotFound("no running sequence")
    assert problem(await client.post(url, json={"state": "resume"}), 404) == "no running sequence"


# ------------------------------------------------------------------ events


def trace(setup: Setup) -> list[dict[str, Any]]:
    data = {"project": "sockshop", "stage": "dev", "service": "carts"}
    events = [
        stored_event(
            "dev.delivery.triggered",
            id="s-1",
            keptn_context=CONTEXT,
            time="2024-01-31T10:00:00.000Z",
            data=data,
        ),
        stored_event(
            "approval.triggered",
            id="a-1",
            keptn_context=CONTEXT,
            time="2024-01-31T10:00:01.000Z",
            data=data,
        ),
        stored_event(
            "approval.triggered",
            id="a-2",
            keptn_context=OTHER,
            time="2024-01-31T10:00:02.000Z",
            data={**data, "stage": "staging"},
        ),
        stored_event(
            "evaluation.finished",
            id="v-1",
            keptn_context=CONTEXT,
            time="2024-01-31T10:00:03.000Z",
            data={**data, "result": "pass", "status": "succeeded"},
        ),
        stored_event(
            "evaluation.finished",
            id="v-2",
            keptn_context=OTHER,
            time="2024-01-31T10:00:04.000Z",
            data={**data, "result": "fail", "status": "succeeded"},
        ),
    ]
    setup.store.stored_events = events
    return events


async def test_open_triggered_events(client: httpx.AsyncClient, setup: Setup) -> None:
    trace(setup)
    response = await client.get(
        "/api/controlPlane/v1/event/triggered/approval.triggered?project=sockshop&stage=dev"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["id"] for e in body["events"]] == ["a-1"]
    assert (body["nextPageKey"], body["totalCount"]) == ("0", 1)
    everything = await client.get(
        "/api/controlPlane/v1/event/triggered/sh.keptn.event.approval.triggered?pageSize=1"
    )
    assert everything.json()["nextPageKey"] == "1"
    problem(await client.get("/api/controlPlane/v1/event/triggered/x.triggered?project=no"), 404)
    problem(await client.get("/api/controlPlane/v1/event/triggered/x.triggered?pageSize=51"), 400)


async def test_datastore_events_newest_first(client: httpx.AsyncClient, setup: Setup) -> None:
    trace(setup)
    body = (await client.get(f"/api/mongodb-datastore/event?keptnContext={CONTEXT}")).json()
    assert [e["id"] for e in body["events"]] == ["v-1", "a-1", "s-1"]
    assert (body["totalCount"], body["pageSize"], body["nextPageKey"]) == (3, 20, "0")
    paged = await client.get(
        "/api/mongodb-datastore/event?project=sockshop&pageSize=2&type=evaluation.finished"
    )
    assert [e["id"] for e in paged.json()["events"]] == ["v-2", "v-1"]
    after = await client.get(
        "/api/mongodb-datastore/event?project=sockshop&fromTime=2024-01-31T10:00:02Z"
    )
    assert [e["id"] for e in after.json()["events"]] == ["v-2", "v-1"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("", "keptnContext or project"),
        ("?project=sockshop&pageSize=0", "pageSize"),
        ("?project=sockshop&pageSize=101", "pageSize"),
        ("?project=sockshop&nextPageKey=abc", "nextPageKey"),
        ("?project=sockshop&beforeTime=soon", "beforeTime"),
    ],
)
async def test_datastore_event_errors(client: httpx.AsyncClient, query: str, fragment: str) -> None:
    message = problem(await client.get(f"/api/mongodb-datastore/event{query}"), 400)
    assert fragment in message


async def test_datastore_events_by_type_filter(client: httpx.AsyncClient, setup: Setup) -> None:
    trace(setup)
    url = "/api/mongodb-datastore/event/type/sh.keptn.event.evaluation.finished"
    response = await client.get(
        url, params={"filter": "data.project:sockshop AND data.result:pass,warning"}
    )
    assert response.status_code == 200, response.text
    assert [e["id"] for e in response.json()["events"]] == ["v-1"]
    both = await client.get(url, params={"filter": "data.project:sockshop", "limit": 1})
    assert [e["id"] for e in both.json()["events"]] == ["v-2"]
    by_context = await client.get(url, params={"filter": f"shkeptncontext:{OTHER}"})
    assert [e["id"] for e in by_context.json()["events"]] == ["v-2"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "query parameter filter"),
        ({"filter": "data.stage:dev"}, "data.project or shkeptncontext"),
        ({"filter": "data.project"}, "path:value"),
        ({"filter": "data.project:"}, "path:value"),
        ({"filter": "data.project:a,,b"}, "path:value"),
        ({"filter": "data.project:a AND "}, "path:value"),
        ({"filter": "data.project:a AND data.project:b"}, "twice"),
        ({"filter": "data['x']:a AND data.project:a"}, "path:value"),
        ({"filter": "data.project:a", "limit": 101}, "limit"),
        ({"filter": "data.project:a", "fromTime": "later"}, "fromTime"),
    ],
)
async def test_datastore_filter_errors(
    client: httpx.AsyncClient, params: dict[str, Any], fragment: str
) -> None:
    url = "/api/mongodb-datastore/event/type/sh.keptn.event.evaluation.finished"
    assert fragment in problem(await client.get(url, params=params), 400)


async def test_openapi_documents_the_keptn_paths(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {
        "/api/v1/event",
        "/api/controlPlane/v1/sequence/{project}",
        "/api/controlPlane/v1/sequence/{project}/{keptnContext}/control",
        "/api/controlPlane/v1/event/triggered/{eventType}",
        "/api/mongodb-datastore/event",
        "/api/mongodb-datastore/event/type/{eventType}",
        "/api/controlPlane/v1/project",
        "/api/controlPlane/v1/project/{project}",
        "/health",
    } <= set(paths)
