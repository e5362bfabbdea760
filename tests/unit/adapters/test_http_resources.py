"""Configuration files (Keptn's resource service) and the evaluation endpoint over HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controlplane.adapters.files import YamlDocuments
from controlplane.adapters.http import create_app
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.resources import Resources
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
    InMemoryResourceStore,
)

SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shop}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{name: deployment}]
"""
SERVICE = "/api/resource-service/v1/project/shop/stage/dev/service/carts/resource"
SLO = b"""\
objectives:
  - sli: response_time
    pass: [{criteria: ["<600"]}]
total_score: {pass: "90%"}
"""
SLI = b"indicators:\n  response_time: 'histogram_quantile(0.95, rate(x[5m]))'\n"


def encoded(content: bytes) -> str:
    return base64.b64encode(content).decode()


class Setup:
    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.definitions = FakeDefinitions()
        self.definitions.add("shop", SHIPYARD)
        self.files = InMemoryResourceStore()
        self.app = create_app(
            engine=self.engine,
            definitions=self.definitions,
            queries=Queries(InMemoryQueryStore()),
            registry=Registry(InMemoryIntegrationStore(), ttl=600),
            api_token=None,
            resource_files=Resources(self.files, self.definitions, YamlDocuments()),
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
    message: str = response.json()["message"]
    return message


def files(*pairs: tuple[str, bytes]) -> dict[str, Any]:
    return {
        "resources": [
            {"resourceURI": uri, "resourceContent": encoded(content)} for uri, content in pairs
        ]
    }


async def test_files_are_stored_per_service_read_back_and_versioned(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(SERVICE, json=files(("slo.yaml", SLO), ("sli.yaml", SLI)))
    assert created.status_code == 201, created.text
    updated = await client.put(f"{SERVICE}/slo.yaml", json={"resourceContent": encoded(SLO)})
    assert updated.status_code == 200, updated.text
    assert updated.json()["commitID"] == "2"

    fetched = await client.get(f"{SERVICE}/slo.yaml")
    listed = await client.get(SERVICE)

    assert fetched.status_code == 200
    assert base64.b64decode(fetched.json()["resourceContent"]) == SLO
    assert fetched.json()["metadata"]["version"] == "2"
    assert [item["resourceURI"] for item in listed.json()["resources"]] == [
        "sli.yaml",
        "slo.yaml",
    ]
    assert listed.json()["totalCount"] == 2


async def test_project_and_stage_levels_are_separate_and_the_old_prefix_works(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    project = "/api/configuration-service/v1/project/shop/resource"
    stage = "/api/resource-service/v1/project/shop/stage/dev/resource"

    assert (await client.post(project, json=files(("sli.yaml", SLI)))).status_code == 201
    assert (await client.post(stage, json=files(("notes/readme.md", b"hi")))).status_code == 201

    assert sorted(setup.files.files) == [
        ("shop", "", "", "sli.yaml"),
        ("shop", "dev", "", "notes/readme.md"),
    ]
    nested = await client.get(f"{stage}/notes/readme.md")
    assert base64.b64decode(nested.json()["resourceContent"]) == b"hi"
    assert (await client.get(f"{SERVICE}/sli.yaml")).status_code == 404


async def test_a_broken_slo_is_refused_naming_the_field_and_nothing_is_stored(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    bad = b"objectives:\n  - sli: x\n    weight: heavy\n"

    response = await client.post(SERVICE, json=files(("sli.yaml", SLI), ("slo.yaml", bad)))

    message = problem(response, 400)
    assert message.startswith("slo.yaml: ")
    assert "objectives[0].weight" in message
    assert setup.files.files == {}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"objectives: [", "slo.yaml: slo.yaml:1: not valid YAML"),
        (b"- just\n- a list\n", "slo.yaml: slo.yaml: must be a YAML mapping"),
        (
            b"objectives:\n  - sli: x\n    pass: [{criteria: ['<<5']}]\n",
            "slo.yaml: objectives[0].pass[0].criteria[0]",
        ),
    ],
)
async def test_unreadable_gate_files_are_refused(
    client: httpx.AsyncClient, content: bytes, expected: str
) -> None:
    message = problem(await client.post(SERVICE, json=files(("slo.yaml", content))), 400)

    assert message.startswith(expected)


async def test_a_bad_sli_file_is_refused_with_its_path(client: httpx.AsyncClient) -> None:
    bad = b"indicators:\n  stock: {source: http}\n"

    message = problem(await client.post(SERVICE, json=files(("sli.yaml", bad))), 400)

    assert message.startswith("sli.yaml: ")
    assert "indicators.stock.url" in message


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        (SERVICE.replace("shop", "nope"), files(("a.txt", b"x")), 404, "project 'nope'"),
        (SERVICE.replace("/dev/", "/prod/"), files(("a.txt", b"x")), 404, "no stage 'prod'"),
        (SERVICE, files(("../escape.txt", b"x")), 400, "resource URI '../escape.txt'"),
        (SERVICE, files(("bin.dat", b"\xff\xfe")), 400, "bin.dat: not UTF-8 text"),
        (
            SERVICE,
            {"resources": [{"resourceURI": "a.txt", "resourceContent": "%%%"}]},
            400,
            "a.txt: resourceContent must be base64",
        ),
        (SERVICE, {"resources": []}, 400, "resources"),
    ],
)
async def test_bad_uploads_get_a_clear_client_error(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, expected: str
) -> None:
    message = problem(await client.post(path, json=body), status)

    assert expected in message


async def test_missing_files_are_404_and_deletes_remove_them(client: httpx.AsyncClient) -> None:
    assert (await client.post(SERVICE, json=files(("sli.yaml", SLI)))).status_code == 201

    deleted = await client.delete(f"{SERVICE}/sli.yaml")
    again = await client.delete(f"{SERVICE}/sli.yaml")

    assert deleted.status_code == 200
    assert "sli.yaml does not exist in project shop, stage dev, service carts" in problem(
        again, 404
    )


# ---------------------------------------------------------------------- evaluation endpoint

EVALUATE = "/api/controlPlane/v1/project/shop/stage/dev/service/carts/evaluation"


async def test_the_evaluation_endpoint_triggers_the_stages_evaluation_sequence(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    response = await client.post(
        EVALUATE,
        json={
            "start": "2026-11-21T09:00:00Z",
            "timeframe": "10m",
            "labels": {"build": "7"},
            "gitcommitid": "abc",
        },
    )

    assert response.status_code == 200, response.text
    (event,) = setup.engine.admitted
    assert response.json() == {"keptnContext": event.keptn_context}
    assert event.type == "sh.keptn.event.dev.evaluation.triggered"
    assert event.source == "https://github.com/keptn/keptn/api"
    assert event.gitcommitid == "abc"
    assert event.data["evaluation"] == {
        "start": "2026-11-21T09:00:00.000Z",
        "end": "2026-11-21T09:10:00.000Z",
    }
    assert event.data["labels"] == {"build": "7"}


async def test_the_evaluation_endpoint_works_without_a_body(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    response = await client.post(EVALUATE)

    assert response.status_code == 200, response.text
    (event,) = setup.engine.admitted
    assert set(event.data["evaluation"]) == {"start", "end"}


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        (EVALUATE, {"end": "2026-11-21T09:00:00Z"}, 400, "start"),
        (EVALUATE, {"start": "2026-11-21T09:00:00Z"}, 400, "timeframe"),
        (
            EVALUATE,
            {"start": "2026-11-21T09:00:00Z", "end": "2026-11-21T09:30:00Z", "timeframe": "5m"},
            400,
            "timeframe",
        ),
        (EVALUATE, {"start": "last tuesday", "timeframe": "5m"}, 400, "last tuesday"),
        (EVALUATE, {"timeframe": "soon"}, 400, "soon"),
        (EVALUATE.replace("shop", "nope"), {}, 404, "project 'nope'"),
        (EVALUATE.replace("/dev/", "/prod/"), {}, 404, "no stage 'prod'"),
    ],
)
async def test_the_evaluation_endpoint_refuses_bad_windows_and_unknown_scopes(
    client: httpx.AsyncClient,
    setup: Setup,
    path: str,
    body: dict[str, Any],
    status: int,
    expected: str,
) -> None:
    message = problem(await client.post(path, json=body), status)

    assert expected in message
    assert setup.engine.admitted == []
