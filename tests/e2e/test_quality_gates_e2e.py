"""The built-in quality gate end to end: a real control plane, NATS and PostgreSQL.

The seed's photo scenario ends with ``evaluate`` over the example services' outputs; a
stored SLO over an HTTP source compares with past evaluations kept in PostgreSQL (and
forgets invalidated ones); an external SLI provider answers ``get-sli`` over NATS; the CLI
prints the verdict and gates on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from controlplane.examples import services
from tests import fixtures_prometheus
from tests.e2e.harness import ControlPlane, events, eventually, post_event, trigger, wait_state
from tests.fixtures_prometheus import RunningPrometheus

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "sequences"
RESOURCES = "/api/resource-service/v1/project/seed/stage/dev/service/{service}/resource"
EVALUATE = "/api/controlPlane/v1/project/seed/stage/dev/service/{service}/evaluation"


@pytest.fixture
async def seed_plane(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        nats_url=e2e_nats,
        database_url=database_url,
        sequences=SEED,
        workdir=tmp_path,
        extra=("--evaluation-source-timeout", "2s", "--evaluation-get-sli-timeout", "5s"),
    )
    await plane.start()
    try:
        yield plane
    finally:
        plane.stop()


class JsonSource:
    """A tiny HTTP server answering JSON the test sets, and recording what it was asked."""

    def __init__(self) -> None:
        self.answer: Any = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                source.requests.append((self.path, dict(self.headers)))
                body = json.dumps(source.answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: no line on stderr per request."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JsonSource:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def json_source() -> Iterator[JsonSource]:
    with JsonSource() as source:
        yield source


async def finished_evaluation(
    client: httpx.AsyncClient, context: str, task: str = "evaluation"
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        found = await events(client, context, type=f"sh.keptn.event.{task}.finished")
        return found[0] if found else {}

    answer: dict[str, Any] = await eventually(
        probe, timeout=15.0, what=f"{task}.finished in {context}"
    )
    return answer


# ---------------------------------------------------------------------- the photo scenario


async def judge(client: httpx.AsyncClient, service: str, image: str, claim: str) -> str:
    return await trigger(
        client,
        "seed",
        "dev",
        "judge-photo",
        service=service,
        **{"extract-metadata": {"image": image}, "claimedLocation": claim},
    )


async def test_the_photo_scenario_ends_with_a_scored_verdict(
    seed_plane: ControlPlane, e2e_nats: str
) -> None:
    app = services.build_app()
    async with app.connect(e2e_nats), seed_plane.client() as client:
        contexts = {
            "genuine": await judge(client, "photo-1", "paris-gps.jpg", "Paris"),
            "edited": await judge(client, "photo-2", "zurich-edited.jpg", "Zurich"),
            "far": await judge(client, "photo-3", "paris-gps.jpg", "Zurich, CH"),
            "no-gps": await judge(client, "photo-4", "no-gps.jpg", "Paris"),
        }
        verdicts = {
            name: (await finished_evaluation(client, context, "evaluate"))["data"]
            for name, context in contexts.items()
        }
        states = {
            name: await wait_state(client, "seed", context, "finished")
            for name, context in contexts.items()
        }

    summary = {
        name: (data["result"], round(data["evaluation"]["score"], 2))
        for name, data in verdicts.items()
    }
    assert summary == {
        "genuine": ("pass", 100),
        "edited": ("warning", 66.67),
        "far": ("warning", 66.67),
        "no-gps": ("fail", 33.33),
    }
    objectives = [
        item["displayName"] for item in verdicts["genuine"]["evaluation"]["indicatorResults"]
    ]
    assert objectives == [
        "GPS position present",
        "No editing software",
        "Distance to the claimed place (km)",
    ]
    far = verdicts["far"]["evaluation"]["indicatorResults"][2]
    assert far["status"] == "fail"
    assert far["value"]["value"] > 100  # Paris to Zurich is about 490 km
    assert verdicts["no-gps"]["message"].startswith(
        "Evaluation failed due to key_sli objective 'GPS position present'"
    )
    # The sequence's result is the gate's, and the state view shows the latest evaluation.
    genuine_stage = states["genuine"]["stages"][0]
    assert genuine_stage["latestEvaluation"] == {"result": "pass", "score": 100}
    assert states["edited"]["stages"][0]["latestEvaluation"]["result"] == "warning"


# ---------------------------------------------------------------------- stored gates

SLO_RELATIVE = """\
comparison:
  compare_with: single_result
  include_result_with_score: pass
objectives:
  - sli: queue_depth
    displayName: Queue depth
    pass:
      - criteria: ["<=+10%", "<1000"]
total_score:
  pass: "90%"
"""


def sli_http(url: str) -> str:
    return (
        "indicators:\n"
        "  queue_depth:\n"
        "    source: http\n"
        f"    url: {url}/depth?service=$SERVICE\n"
        "    path: queue.depth\n"
    )


async def upload(client: httpx.AsyncClient, service: str, **files: str) -> None:
    body = {
        "resources": [
            {"resourceURI": uri, "resourceContent": base64.b64encode(text.encode()).decode()}
            for uri, text in files.items()
        ]
    }
    response = await client.post(RESOURCES.format(service=service), json=body)
    assert response.status_code == 201, response.text


async def evaluate(client: httpx.AsyncClient, service: str) -> dict[str, Any]:
    response = await client.post(EVALUATE.format(service=service), json={"timeframe": "5m"})
    assert response.status_code == 200, response.text
    context = response.json()["keptnContext"]
    finished = await finished_evaluation(client, context)
    await wait_state(client, "seed", context, "finished")
    return finished


async def test_relative_criteria_use_past_results_and_skip_invalidated_ones(
    seed_plane: ControlPlane, json_source: JsonSource
) -> None:
    async with seed_plane.client() as client:
        await upload(
            client, "queue", **{"slo.yaml": SLO_RELATIVE, "sli.yaml": sli_http(json_source.url)}
        )

        json_source.answer = {"queue": {"depth": 100}}
        first = await evaluate(client, "queue")
        json_source.answer = {"queue": {"depth": 200}}
        second = await evaluate(client, "queue")
        # The first (and only passing) result is invalidated: nothing left to compare with.
        [first_trigger] = await events(
            client, first["shkeptncontext"], type="sh.keptn.event.evaluation.triggered"
        )
        response = await post_event(
            client,
            "sh.keptn.event.evaluation.invalidated",
            {"project": "seed", "stage": "dev", "service": "queue"},
            shkeptncontext=first["shkeptncontext"],
            triggeredid=first_trigger["id"],
        )
        assert response.status_code == 200, response.text
        third = await evaluate(client, "queue")

    assert json_source.requests[0][0] == "/depth?service=queue"
    assert first["data"]["result"] == "pass"
    assert first["data"]["evaluation"]["comparedEvents"] == []
    second_target = second["data"]["evaluation"]["indicatorResults"][0]
    assert second["data"]["evaluation"]["comparedEvents"] == [first["id"]]
    assert second_target["value"]["comparedValue"] == 100
    assert second_target["passTargets"][0] == {
        "criteria": "<=+10%",
        "targetValue": 110,
        "violated": True,
    }
    assert second["data"]["result"] == "fail"
    assert third["data"]["evaluation"]["comparedEvents"] == []
    assert third["data"]["result"] == "pass"


async def test_a_source_that_is_down_fails_the_objective_with_the_cause(
    seed_plane: ControlPlane,
) -> None:
    async with seed_plane.client() as client:
        await upload(
            client,
            "down",
            **{"slo.yaml": SLO_RELATIVE, "sli.yaml": sli_http("http://127.0.0.1:9")},
        )
        verdict = await evaluate(client, "down")

    result = verdict["data"]["evaluation"]["indicatorResults"][0]
    assert result["status"] == "fail"
    assert "127.0.0.1:9" in result["value"]["message"]
    assert verdict["data"]["status"] == "succeeded"
    assert verdict["data"]["result"] == "fail"


# ---------------------------------------------------------------------- an external provider


async def test_an_external_sli_provider_answers_get_sli_over_nats(
    seed_plane: ControlPlane, e2e_nats: str
) -> None:
    connection = await nats.connect(e2e_nats)
    asked: list[dict[str, Any]] = []

    async def provider(msg: Any) -> None:
        request = json.loads(msg.data)
        asked.append(request)
        answer = {
            "specversion": "1.0",
            "id": f"answer-{request['id']}",
            "source": "fake-sli-provider",
            "type": "sh.keptn.event.get-sli.finished",
            "shkeptncontext": request["shkeptncontext"],
            "triggeredid": request["id"],
            "data": {
                **{key: request["data"][key] for key in ("project", "stage", "service")},
                "status": "succeeded",
                "result": "pass",
                "get-sli": {
                    "indicatorValues": [
                        {"metric": "error_rate", "value": 0.5, "success": True, "message": ""}
                    ]
                },
            },
        }
        await connection.publish("sh.keptn.event.get-sli.finished", json.dumps(answer).encode())

    await connection.subscribe("sh.keptn.event.get-sli.triggered", cb=provider)
    try:
        async with seed_plane.client() as client:
            await upload(
                client,
                "api",
                **{
                    "slo.yaml": "objectives:\n  - sli: error_rate\n    pass: [{criteria: ['<1']}]\n"
                    "total_score: {pass: '90%'}\n",
                    "sli.yaml": "provider: fake\nindicators: {}\n",
                },
            )
            verdict = await evaluate(client, "api")
            trace = await events(client, verdict["shkeptncontext"])
    finally:
        await connection.close()

    assert asked[0]["data"]["get-sli"]["sliProvider"] == "fake"
    assert asked[0]["data"]["get-sli"]["indicators"] == ["error_rate"]
    assert verdict["data"]["result"] == "pass"
    assert verdict["data"]["evaluation"]["indicatorResults"][0]["value"]["value"] == 0.5
    # The exchange is kept in the event store, as Keptn's datastore kept it.
    kinds = {event["type"] for event in trace}
    assert {"sh.keptn.event.get-sli.triggered", "sh.keptn.event.get-sli.finished"} <= kinds, kinds


# ---------------------------------------------------------------------- the CLI


async def test_the_cli_prints_the_objectives_and_gates_on_the_result(
    seed_plane: ControlPlane, json_source: JsonSource, tmp_path: Path
) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text(SLO_RELATIVE)
    sli = tmp_path / "sli.yaml"
    sli.write_text(sli_http(json_source.url))
    base = [sys.executable, "-m", "controlplane"]
    url = ["--url", seed_plane.url]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args, *url], capture_output=True, text=True, timeout=60, check=False
        )

    put = await asyncio.to_thread(
        run, "resource", "put", "seed", str(slo), str(sli), "--stage", "dev", "--service", "cli"
    )
    assert put.returncode == 0, put.stderr
    json_source.answer = {"queue": {"depth": 1200}}
    failed = await asyncio.to_thread(run, "evaluate", "seed", "dev", "cli", "--timeframe", "10m")

    assert failed.returncode == 1, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[1].split() == [
        "OBJECTIVE",
        "VALUE",
        "COMPARED",
        "PASS",
        "WARNING",
        "STATUS",
        "SCORE",
    ]
    assert lines[2].split() == [
        "Queue",
        "depth",
        "1200",
        "0",
        "<=+10%=0",
        "<1000=1000!",
        "-",
        "fail",
        "0",
    ]
    assert "score 0: fail" in failed.stdout
    assert "Evaluation failed since the calculated score of 0 is below the target value of 90" in (
        failed.stdout
    )


# ---------------------------------------------------------------------- Prometheus


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[RunningPrometheus]:
    try:
        binary = fixtures_prometheus.find_prometheus()
    except fixtures_prometheus.PrometheusUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    with fixtures_prometheus.running_prometheus(workdir, binary=binary) as server:
        yield server


async def scraped(prometheus: RunningPrometheus, series: str, value: float) -> None:
    async def probe() -> bool:
        found = await asyncio.to_thread(prometheus.query, series)
        return bool(found) and float(found[0]["value"][1]) == value

    await eventually(probe, timeout=20.0, what=f"Prometheus to scrape {series} = {value}")


async def test_a_gate_over_prometheus_follows_the_metric(
    e2e_nats: str, database_url: str, tmp_path: Path, prometheus: RunningPrometheus
) -> None:
    plane = ControlPlane(
        nats_url=e2e_nats,
        database_url=database_url,
        sequences=SEED,
        workdir=tmp_path,
        extra=("--prometheus-url", prometheus.url),
    )
    await plane.start()
    series = 'checkout_latency_ms{service="shop"}'
    try:
        async with plane.client() as client:
            await upload(
                client,
                "shop",
                **{
                    "slo.yaml": "objectives:\n"
                    "  - sli: latency\n"
                    "    pass: [{criteria: ['<500']}]\n"
                    "    warning: [{criteria: ['<800']}]\n"
                    "total_score: {pass: '90%', warning: '50%'}\n",
                    "sli.yaml": "indicators:\n"
                    "  latency: 'max_over_time(checkout_latency_ms{service=\"$SERVICE\"}[1m])'\n",
                },
            )
            prometheus.exporter.set("checkout_latency_ms", 420, {"service": "shop"})
            await scraped(prometheus, series, 420)
            fast = await evaluate(client, "shop")
            prometheus.exporter.set("checkout_latency_ms", 650, {"service": "shop"})
            await scraped(prometheus, series, 650)
            slow = await evaluate(client, "shop")
    finally:
        plane.stop()

    assert fast["data"]["result"] == "pass"
    assert fast["data"]["evaluation"]["indicatorResults"][0]["value"]["value"] == 420
    assert slow["data"]["result"] == "warning"
    assert slow["data"]["evaluation"]["indicatorResults"][0]["value"]["value"] == 650
