"""Task services in other languages, end to end: the Node.js push service and the POSIX
shell pull service complete real sequences of a real control plane."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ControlPlane, ServiceProcess, trigger, wait_state

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_SERVICE = ROOT / "examples" / "node-checknumber"
PULL_TASK = ROOT / "examples" / "shell" / "pull-task.sh"
SEED = ROOT / "sequences"
E2E_SHIPYARDS = ROOT / "tests" / "fixtures" / "shipyards"
SECRET = "whsec_" + base64.b64encode(b"a secret of twenty-four.").decode()
CHECKNUMBER_KEYS = {
    "number",
    "valid",
    "possible",
    "e164",
    "international",
    "country",
    "countryCallingCode",
    "region",
    "carrier",
    "numberType",
    "timeZones",
}


async def started_plane(
    e2e_nats: str, database_url: str, tmp_path: Path, sequences: Path
) -> ControlPlane:
    plane = ControlPlane(
        nats_url=e2e_nats, database_url=database_url, sequences=sequences, workdir=tmp_path
    )
    await plane.start()
    return plane


@pytest.fixture
async def seed_plane(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = await started_plane(e2e_nats, database_url, tmp_path, SEED)
    try:
        yield plane
    finally:
        plane.stop()


def node_service(plane: ControlPlane, tmp_path: Path, **env: str) -> ServiceProcess:
    if shutil.which("node") is None or not (NODE_SERVICE / "node_modules").is_dir():
        raise AssertionError(
            "the Node.js example needs node and `npm ci --prefix examples/node-checknumber`"
            " (.ci/run does both)"
        )
    return ServiceProcess(
        ["node", "index.js"],
        cwd=NODE_SERVICE,
        env={
            "CONTROLPLANE_API_URL": plane.url,
            "WEBHOOK_SECRET": SECRET,
            "PORT": "0",
            "PING_INTERVAL_MS": "500",
            **env,
        },
        ready_prefix="checknumber-node listening on",
        log=tmp_path / "node-checknumber.log",
    )


async def finished_event(client: httpx.AsyncClient, context: str, task: str) -> dict[str, Any]:
    response = await client.get(
        "/api/mongodb-datastore/event",
        params={"keptnContext": context, "type": f"sh.keptn.event.{task}.finished"},
    )
    [event] = response.json()["events"]
    found: dict[str, Any] = event
    return found


async def test_the_node_push_service_checks_a_number_for_the_seed_sequence(
    seed_plane: ControlPlane, tmp_path: Path
) -> None:
    async with node_service(seed_plane, tmp_path), seed_plane.client() as client:
        context = await trigger(
            client, "seed", "dev", "sequence-one", "phone", checknumber={"number": "+41446681800"}
        )
        await wait_state(client, "seed", context, "finished")
        answer = await finished_event(client, context, "checknumber")

    assert answer["source"] == "checknumber-node"
    assert answer["data"]["result"] == "pass"
    report = answer["data"]["checknumber"]
    assert set(report) == CHECKNUMBER_KEYS
    assert report["country"] == "CH"
    assert report["numberType"] == "FIXED_LINE"
    assert report["international"] == "+41 44 668 18 00"
    assert report["timeZones"] == ["Europe/Zurich"]


async def test_the_node_service_is_listed_with_its_webhook(
    seed_plane: ControlPlane, tmp_path: Path
) -> None:
    async with node_service(seed_plane, tmp_path) as node, seed_plane.client() as client:
        integration_id = node.ready_line.rsplit("integration ", 1)[1].rstrip(")")
        listed = (await client.get("/api/controlPlane/v1/uniform/registration")).json()
    [integration] = listed
    assert integration["id"] == integration_id
    assert integration["name"] == "checknumber-node"
    assert integration["metadata"]["location"] == "remote-execution-plane"
    [subscription] = integration["subscriptions"]
    assert subscription["event"] == "sh.keptn.event.checknumber.triggered"
    assert subscription["webhook"]["url"].startswith("http://127.0.0.1:")
    assert "secret" not in subscription["webhook"]


async def test_the_shell_pull_service_runs_a_command_as_a_task(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> None:
    plane = await started_plane(e2e_nats, database_url, tmp_path, E2E_SHIPYARDS)
    command = ["jq", "-c", '{words: (.data.text | split(" ") | length)}']
    service = ServiceProcess(
        ["sh", str(PULL_TASK), "work", *command],
        env={"CONTROLPLANE_API_URL": plane.url, "POLL_INTERVAL": "0.2", "PROJECT": "e2e"},
        ready_prefix="pull-task: serving work",
        log=tmp_path / "pull-task.log",
    )
    try:
        async with service, plane.client() as client:
            first = await trigger(client, "e2e", "dev", "single", text="to be or not to be")
            second = await trigger(client, "e2e", "dev", "single", text="hello world")
            await wait_state(client, "e2e", first, "finished")
            await wait_state(client, "e2e", second, "finished")
            answers = [await finished_event(client, c, "work") for c in (first, second)]
            registered = (await client.get("/api/controlPlane/v1/uniform/registration")).json()
    finally:
        plane.stop()

    assert [answer["data"]["work"] for answer in answers] == [{"words": 6}, {"words": 2}]
    assert all(answer["data"]["result"] == "pass" for answer in answers)
    assert all(answer["source"] == "shell-work" for answer in answers)
    assert [integration["name"] for integration in registered] == ["shell-work"]


async def test_a_failing_command_fails_the_task_with_its_error(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> None:
    plane = await started_plane(e2e_nats, database_url, tmp_path, E2E_SHIPYARDS)
    service = ServiceProcess(
        ["sh", str(PULL_TASK), "work", "sh", "-c", "echo 'disk is full' >&2; exit 3"],
        env={"CONTROLPLANE_API_URL": plane.url, "POLL_INTERVAL": "0.2", "REGISTER": "0"},
        ready_prefix="pull-task: serving work",
        log=tmp_path / "pull-task.log",
    )
    try:
        async with service, plane.client() as client:
            context = await trigger(client, "e2e", "dev", "single")
            await wait_state(client, "e2e", context, "finished")
            answer = await finished_event(client, context, "work")
    finally:
        plane.stop()
    assert answer["data"]["result"] == "fail"
    assert "disk is full" in answer["data"]["message"]
