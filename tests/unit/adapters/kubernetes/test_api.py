from __future__ import annotations

import base64
import json

import httpx
import pytest
import yaml

from controlplane.__main__ import _settings, build_parser
from controlplane.adapters.kubernetes.api import ControlPlaneProjects, ControlPlaneUnavailable

SHIPYARD = {"apiVersion": "spec.keptn.sh/0.2.4", "spec": {"stages": [{"name": "dev"}]}}


def client(handler: httpx.MockTransport) -> ControlPlaneProjects:
    http = httpx.AsyncClient(base_url="http://cp", transport=handler, headers={"x-token": "t"})
    return ControlPlaneProjects(http)


async def test_projects_are_sent_as_keptn_expects() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201 if request.method == "POST" else 200, json={})

    projects = client(httpx.MockTransport(answer))
    await projects.create_project("demo", SHIPYARD)
    await projects.replace_project("demo", SHIPYARD)
    await projects.delete_project("demo")
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/controlPlane/v1/project"),
        ("PUT", "/api/controlPlane/v1/project"),
        ("DELETE", "/api/controlPlane/v1/project/demo"),
    ]
    body = json.loads(seen[0].content)
    assert body["name"] == "demo"
    assert yaml.safe_load(base64.b64decode(body["shipyard"])) == SHIPYARD
    assert all(r.headers["x-token"] == "t" for r in seen)


async def test_a_project_is_read_with_its_revision() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/missing"):
            return httpx.Response(
                404, json={"code": 404, "message": "project 'missing' does not exist"}
            )
        return httpx.Response(
            200, json={"projectName": "demo", "shipyard": "spec: {}\n", "shipyardRevision": 4}
        )

    projects = client(httpx.MockTransport(answer))
    found = await projects.get_project("demo")
    assert found is not None
    assert (found.revision, found.document) == (4, {"spec": {}})
    assert await projects.get_project("missing") is None
    await projects.delete_project("missing")  # already gone is fine


async def test_an_error_answer_carries_the_status_and_the_apis_message() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"code": 401, "message": "missing or incorrect API token"})

    with pytest.raises(ControlPlaneUnavailable) as caught:
        await client(httpx.MockTransport(answer)).replace_project("demo", SHIPYARD)
    assert str(caught.value) == (
        "the control plane answered 401 to PUT /api/controlPlane/v1/project:"
        " missing or incorrect API token"
    )
    assert caught.value.status == 401


async def test_an_unreachable_control_plane_says_where() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(
        ControlPlaneUnavailable,
        match=r"cannot reach the control plane at http://cp: connection refused",
    ):
        await client(httpx.MockTransport(refuse)).get_project("demo")


def test_the_operator_command_reads_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLPLANE_API_URL", "http://cp:8080")
    monkeypatch.setenv("CONTROLPLANE_API_TOKEN", "secret")
    args = build_parser().parse_args(["operator", "--namespaces", "a,b", "--liveness-port", "9000"])
    settings = _settings(args)
    assert args.role == "operator"
    assert (settings.api_url, settings.api_token) == ("http://cp:8080", "secret")
    assert (settings.operator_namespaces, settings.operator_liveness_port) == ("a,b", 9000)
