from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml

from controlplane.adapters.http import create_app
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.domain import graph
from controlplane.domain.shipyard import parse_shipyard
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
)

SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: sockshop
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
CHART = graph.mermaid(parse_shipyard(yaml.safe_load(SHIPYARD)))
URL = "/api/controlPlane/v1/project/sockshop/diagram"


@pytest.fixture
def definitions() -> FakeDefinitions:
    definitions = FakeDefinitions()
    definitions.add("sockshop", SHIPYARD)
    return definitions


@pytest.fixture
async def client(definitions: FakeDefinitions) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        engine=FakeEngine(),
        definitions=definitions,
        queries=Queries(InMemoryQueryStore()),
        registry=Registry(InMemoryIntegrationStore()),
        api_token=None,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    message: str = body["message"]
    return message


async def test_the_diagram_is_mermaid_text_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get(URL)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == CHART
    assert response.text.startswith("flowchart LR\n")
    assert '-->|"pass|warning"|' in response.text


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"accept": "application/json"}, {}),
        ({"accept": "text/plain;q=0.5, application/json"}, {}),
        ({"accept": "text/plain"}, {"format": "json"}),
    ],
)
async def test_json_when_asked_for(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get(URL, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"mermaid": CHART}


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"accept": "*/*"}, {}),
        ({"accept": "text/plain, application/json"}, {}),  # a tie goes to text
        ({"accept": "application/json"}, {"format": "text"}),
    ],
)
async def test_text_otherwise(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get(URL, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == CHART


async def test_an_unknown_format_is_400(client: httpx.AsyncClient) -> None:
    assert "format" in problem(await client.get(URL, params={"format": "svg"}), 400)


async def test_an_unknown_project_is_404(client: httpx.AsyncClient) -> None:
    message = problem(await client.get("/api/controlPlane/v1/project/nope/diagram"), 404)
    assert message == "project 'nope' does not exist"


async def test_an_invalid_stored_shipyard_is_409_with_the_reason(
    client: httpx.AsyncClient, definitions: FakeDefinitions
) -> None:
    definitions.add("broken", "spec: 1\n", error="sequences/broken.yaml:1: spec: bad")
    message = problem(await client.get("/api/controlPlane/v1/project/broken/diagram"), 409)
    assert message == (
        "project 'broken' has an invalid shipyard: sequences/broken.yaml:1: spec: bad"
    )


async def test_a_replaced_shipyard_is_drawn_anew(client: httpx.AsyncClient) -> None:
    shipyard = SHIPYARD.replace(
        "            - name: test\n", "            - name: test\n            - name: release\n"
    )
    body = {"name": "sockshop", "shipyard": base64.b64encode(shipyard.encode()).decode()}
    assert (await client.put("/api/controlPlane/v1/project", json=body)).status_code == 200
    assert "deployment → test → release" in (await client.get(URL)).text


async def test_the_api_refuses_a_trigger_naming_no_sequence_with_its_path(
    client: httpx.AsyncClient,
) -> None:
    shipyard = SHIPYARD.replace("dev.delivery.finished", "dev.deliver.finished")
    body = {"name": "typo", "shipyard": base64.b64encode(shipyard.encode()).decode()}
    message = problem(await client.post("/api/controlPlane/v1/project", json=body), 400)
    assert "spec.stages[1].sequences[0].triggeredOn[0].event" in message
    assert "sequence 'deliver' is not defined in stage 'dev'" in message
