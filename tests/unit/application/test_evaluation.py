"""The built-in quality gate's orchestration: configuration, sources, history, events.

The gate's rules themselves (criteria, scores, messages) are tested in
tests/unit/domain/test_quality_gate.py; here the sources and stores are small fakes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from controlplane.adapters.files import YamlDocuments
from controlplane.application.envelope import Envelope, parse_time
from controlplane.application.evaluation import (
    GET_SLI_FINISHED,
    SOURCE,
    EvaluationSettings,
    Evaluator,
    task_name,
    trigger_request,
)
from controlplane.application.ports import PastEvaluation, Resource, SourceFailure
from controlplane.domain.execution import derived_id
from controlplane.domain.timeframes import InvalidTimeframe
from controlplane.testing import InMemoryResourceStore
from tests.unit.application.fakes import FakeSettle as Settle

NOW = 1_795_255_200.0  # 2026-11-21T10:00:00Z
CONTEXT = "0e4f5b8c-6a1d-4c2e-9b7a-3d2c1b0a9f8e"

PHOTO_GATE = {
    "indicators": {
        "gps": "extract-metadata.hasGps",
        "edited": "extract-metadata.edited",
        "distance_km": "geolookup.distanceKm",
    },
    "objectives": [
        {"sli": "gps", "displayName": "GPS", "key_sli": True, "pass": [{"criteria": ["=1"]}]},
        {"sli": "edited", "pass": [{"criteria": ["=0"]}]},
        {
            "sli": "distance_km",
            "pass": [{"criteria": ["<=25"]}],
            "warning": [{"criteria": ["<=100"]}],
        },
    ],
    "total_score": {"pass": "90%", "warning": "60%"},
}

SLO_YAML = """\
spec_version: "1.0"
comparison:
  compare_with: several_results
  include_result_with_score: pass
  number_of_comparison_results: 2
  aggregate_function: avg
objectives:
  - sli: response_time_p95
    pass:
      - criteria: ["<=+10%", "<600"]
total_score:
  pass: "90%"
"""

SLI_YAML = """\
spec_version: "1.0"
prometheus:
  url: http://prometheus.test:9090
  auth: {type: bearer, secret: PROM_TOKEN}
indicators:
  response_time_p95: 'p95{service="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS]'
"""


def triggered(task: str = "evaluation", **data: Any) -> Envelope:
    return Envelope(
        id="trig-1",
        source="shipyard-controller",
        type=f"sh.keptn.event.{task}.triggered",
        time="2026-11-21T10:00:00.000Z",
        data={"project": "shop", "stage": "dev", "service": "carts", **data},
        keptn_context=CONTEXT,
        gitcommitid="c0ffee",
    )


class Resources(InMemoryResourceStore):
    def put(self, uri: str, content: str, stage: str = "", service: str = "") -> None:
        self.files[("shop", stage, service, uri)] = Resource("shop", stage, service, uri, content)


class History:
    def __init__(self, past: Sequence[PastEvaluation] = ()) -> None:
        self.past = list(past)
        self.asked: list[tuple[str, str, str, tuple[str, ...], int]] = []

    async def past_evaluations(
        self, project: str, stage: str, service: str, *, results: Sequence[str], limit: int
    ) -> list[PastEvaluation]:
        self.asked.append((project, stage, service, tuple(results), limit))
        return self.past[:limit]


class Sources:
    def __init__(self) -> None:
        self.prometheus: dict[str, float | Exception] = {}
        self.json: dict[str, Any] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.delay = 0.0

    async def query_prometheus(
        self,
        url: str,
        query: str,
        *,
        at: float,
        headers: Mapping[str, str],
        time_limit: float,
    ) -> float:
        self.calls.append(("prometheus", url, {"query": query, "at": at, "headers": headers}))
        await asyncio.sleep(self.delay)
        answer = self.prometheus.get(query, SourceFailure(f"{url}: no data for {query}"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def fetch_json(
        self,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        body: str | None,
        time_limit: float,
    ) -> Any:
        self.calls.append(("http", url, {"method": method, "headers": headers, "body": body}))
        await asyncio.sleep(self.delay)
        answer = self.json.get(url)
        if answer is None:
            raise SourceFailure(f"{url}: HTTP 503")
        return answer


class Secrets:
    def __init__(self, **values: str) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)


class Publisher:
    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.sent = asyncio.Event()

    async def submit(self, events: Sequence[Envelope]) -> None:
        self.published.extend(events)
        self.sent.set()

    def of_type(self, suffix: str) -> list[Envelope]:
        return [event for event in self.published if event.type.endswith(suffix)]


class Gate:
    """An evaluator with its fakes at hand."""

    def __init__(self, past: Sequence[PastEvaluation] = (), **settings: Any) -> None:
        self.resources = Resources()
        self.history = History(past)
        self.sources = Sources()
        self.secrets = Secrets(PROM_TOKEN="s3cret", STOCK="user:pw")
        self.publisher = Publisher()
        self.evaluator = Evaluator(
            resources=self.resources,
            history=self.history,
            sources=self.sources,
            secrets=self.secrets,
            documents=YamlDocuments(),
            events=self.publisher,
            settings=EvaluationSettings(**settings),
            clock=lambda: NOW,
            new_id=iter(f"id-{n}" for n in range(1000)).__next__,
        )

    async def answer(self, event: Envelope) -> dict[str, Any]:
        finished = await self.evaluator.answer(event)
        return dict(finished.data)


def photo(**outputs: Any) -> dict[str, Any]:
    metadata = {"hasGps": True, "edited": False}
    metadata.update(outputs.pop("metadata", {}))
    return {
        "evaluate": PHOTO_GATE,
        "extract-metadata": metadata,
        "geolookup": {"distanceKm": outputs.pop("distance", 4.2)},
    }


# ---------------------------------------------------------------------- events


async def test_an_inline_gate_over_task_outputs_passes_with_started_and_finished() -> None:
    gate = Gate()
    event = triggered("evaluate", **photo())

    data = await gate.answer(event)

    started, finished = gate.publisher.published
    assert started.type == "sh.keptn.event.evaluate.started"
    assert finished.type == "sh.keptn.event.evaluate.finished"
    for answer in (started, finished):
        assert (answer.triggered_id, answer.keptn_context) == ("trig-1", CONTEXT)
        assert answer.source == SOURCE
        assert answer.gitcommitid == "c0ffee"
    assert started.id == derived_id("trig-1", "evaluate", "started")
    assert finished.id == derived_id("trig-1", "evaluate", "finished")
    assert (data["status"], data["result"]) == ("succeeded", "pass")
    evaluation = data["evaluation"]
    assert (evaluation["result"], evaluation["score"]) == ("pass", 100)
    assert isinstance(evaluation["score"], int)  # printed 100, as Keptn's Go did
    assert [item["status"] for item in evaluation["indicatorResults"]] == ["pass"] * 3
    assert [item["value"]["value"] for item in evaluation["indicatorResults"]] == [1, 0, 4.2]
    assert evaluation["comparedEvents"] == []
    assert evaluation["gitCommit"] == "c0ffee"
    # The window defaults to the five minutes before the evaluation.
    assert parse_time(evaluation["timeEnd"]) == NOW
    assert parse_time(evaluation["timeStart"]) == NOW - 300
    quoted = base64.b64decode(evaluation["sloFileContent"]).decode()
    assert "objectives:" in quoted
    assert "total_score:" in quoted


async def test_an_edited_photo_gets_a_warning_and_a_missing_gps_fails_the_key_objective() -> None:
    gate = Gate()

    edited = await gate.answer(triggered("evaluate", **photo(metadata={"edited": True})))
    no_gps = await gate.answer(
        triggered("evaluate", **photo(metadata={"hasGps": False}, distance=None))
    )

    assert edited["result"] == "warning"
    assert edited["evaluation"]["score"] == pytest.approx(200 / 3)
    assert edited["message"] == (
        "Evaluation returned a warning: the calculated score of 66.66666666666666 is close"
        " to the warning target value of 60"
    )
    assert no_gps["result"] == "fail"
    distance = no_gps["evaluation"]["indicatorResults"][2]
    assert distance["status"] == "fail"
    assert distance["value"]["success"] is False
    assert "geolookup.distanceKm" in distance["value"]["message"]
    assert no_gps["message"].startswith("Evaluation failed")


async def test_the_alias_and_keptns_name_both_answer_as_their_own_task() -> None:
    assert task_name("sh.keptn.event.evaluation.triggered") == "evaluation"
    assert task_name("sh.keptn.event.evaluate.triggered") == "evaluate"
    assert task_name("sh.keptn.event.evaluation.finished") is None
    assert task_name("sh.keptn.event.dev.evaluation.triggered") is None
    gate = Gate()

    await gate.answer(triggered("evaluation", evaluation=PHOTO_GATE, **photo()))

    assert [event.type for event in gate.publisher.published] == [
        "sh.keptn.event.evaluation.started",
        "sh.keptn.event.evaluation.finished",
    ]


# ---------------------------------------------------------------------- configuration


async def test_stored_files_query_prometheus_with_placeholders_and_the_secret() -> None:
    gate = Gate()
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)  # project level
    query = 'p95{service="carts",stage="dev"}[600s]'
    gate.sources.prometheus[query] = 420.0
    event = triggered(evaluation={"timeframe": "10m"})

    data = await gate.answer(event)

    assert data["result"] == "pass"
    ((kind, url, call),) = gate.sources.calls
    assert (kind, url) == ("prometheus", "http://prometheus.test:9090")
    assert call["query"] == query
    assert call["at"] == NOW
    assert call["headers"] == {"Authorization": "Bearer s3cret"}
    assert base64.b64decode(data["evaluation"]["sloFileContent"]).decode() == SLO_YAML
    # comparison: pass results only, two of them
    assert gate.history.asked == [("shop", "dev", "carts", ("pass",), 2)]


async def test_the_service_slo_wins_over_the_project_one_and_sli_layers_merge() -> None:
    gate = Gate()
    gate.resources.put("slo.yaml", "objectives: [{sli: other, pass: [{criteria: ['<1']}]}]")
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)
    gate.resources.put(
        "sli.yaml",
        "indicators:\n  response_time_p95: {source: data, path: load.p95}\n",
        stage="dev",
    )

    data = await gate.answer(triggered(load={"p95": 120}))

    assert gate.sources.calls == []  # the stage's data source replaced the project's query
    assert data["evaluation"]["indicatorResults"][0]["value"]["value"] == 120
    assert data["result"] == "pass"


async def test_relative_criteria_compare_with_past_evaluations() -> None:
    past = [
        PastEvaluation(
            "old-1", [{"value": {"metric": "response_time_p95", "value": 400, "success": True}}]
        ),
        PastEvaluation(
            "old-2", [{"value": {"metric": "response_time_p95", "value": 500, "success": True}}]
        ),
    ]
    gate = Gate(past)
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)
    gate.sources.prometheus['p95{service="carts",stage="dev"}[300s]'] = 520.0

    data = await gate.answer(triggered())

    # average of 400 and 500 is 450; +10% allows 495, so 520 violates it
    result = data["evaluation"]["indicatorResults"][0]
    assert result["value"]["comparedValue"] == 450
    assert result["passTargets"][0] == {"criteria": "<=+10%", "targetValue": 495, "violated": True}
    assert data["evaluation"]["comparedEvents"] == ["old-1", "old-2"]
    assert data["result"] == "fail"


async def test_no_sli_configuration_at_all_is_keptns_no_provider_pass() -> None:
    gate = Gate()
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")

    data = await gate.answer(triggered())

    assert (data["status"], data["result"], data["evaluation"]["score"]) == (
        "succeeded",
        "pass",
        0,
    )
    assert data["message"] == (
        "no evaluation performed by lighthouse because no SLI-provider configured for project shop"
    )


async def test_no_slo_is_keptns_no_slo_pass() -> None:
    gate = Gate()
    gate.resources.put("sli.yaml", SLI_YAML)

    data = await gate.answer(triggered())

    assert data["message"] == (
        "no evaluation performed by lighthouse because no SLO file configured for project shop"
    )
    assert data["result"] == "pass"


@pytest.mark.parametrize(
    ("slo_text", "expected"),
    [
        ("objectives: [", "slo.yaml (project shop, stage dev, service carts):1: not valid YAML"),
        ("objectives:\n  - sli: x\n    weight: heavy\n", "objectives[0].weight"),
    ],
)
async def test_a_broken_slo_ends_errored_naming_the_file_and_the_field(
    slo_text: str, expected: str
) -> None:
    gate = Gate()
    gate.resources.put("sli.yaml", SLI_YAML)
    gate.resources.put("slo.yaml", slo_text, stage="dev", service="carts")

    data = await gate.answer(triggered())

    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["message"].startswith("could not read the quality gate of service carts: ")
    assert expected in data["message"]


async def test_a_bad_timeframe_ends_errored_with_the_reason() -> None:
    gate = Gate()

    data = await gate.answer(triggered(evaluation={"start": "yesterday", "end": "today"}))

    assert (data["status"], data["result"]) == ("errored", "fail")
    assert "evaluation.start" in data["message"]


async def test_an_event_without_a_service_ends_errored() -> None:
    gate = Gate()
    event = triggered()
    event = event.evolve(data={"project": "shop", "stage": "dev"})

    data = await gate.answer(event)

    assert (data["status"], data["result"]) == ("errored", "fail")
    assert "project, stage and service" in data["message"]


# ---------------------------------------------------------------------- sources failing


async def test_a_failing_source_fails_its_objective_with_the_cause() -> None:
    gate = Gate()
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)

    data = await gate.answer(triggered())

    result = data["evaluation"]["indicatorResults"][0]
    assert result["status"] == "fail"
    assert result["value"]["success"] is False
    assert result["value"]["message"].startswith("http://prometheus.test:9090: no data for p95")
    assert (data["status"], data["result"]) == ("succeeded", "fail")


async def test_a_slow_source_is_cut_off_at_its_time_limit() -> None:
    gate = Gate(source_timeout=0.05)
    gate.sources.delay = 5.0
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)

    data = await asyncio.wait_for(gate.answer(triggered()), timeout=3.0)

    message = data["evaluation"]["indicatorResults"][0]["value"]["message"]
    assert message == "the prometheus source gave no value within 0.05s"
    assert data["result"] == "fail"


async def test_an_http_source_with_basic_auth_and_a_path_into_its_answer() -> None:
    gate = Gate()
    gate.resources.put(
        "sli.yaml",
        "indicators:\n"
        "  stock:\n"
        "    source: http\n"
        "    url: http://stock.test/items?service=$SERVICE\n"
        "    path: items.0.count\n"
        "    auth: {type: basic, secret: STOCK}\n",
    )
    gate.resources.put(
        "slo.yaml",
        "objectives: [{sli: stock, pass: [{criteria: ['>=10']}]}]\ntotal_score: {pass: '90%'}\n",
    )
    gate.sources.json["http://stock.test/items?service=carts"] = {"items": [{"count": 12}]}

    data = await gate.answer(triggered())

    (call,) = gate.sources.calls
    assert call[2]["headers"] == {"Authorization": "Basic " + base64.b64encode(b"user:pw").decode()}
    assert data["result"] == "pass"


async def test_a_missing_secret_fails_the_objective_naming_the_secret() -> None:
    gate = Gate()
    gate.secrets.values.clear()
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)

    data = await gate.answer(triggered())

    message = data["evaluation"]["indicatorResults"][0]["value"]["message"]
    assert "'PROM_TOKEN' is not set" in message
    assert "CONTROLPLANE_SECRET_PROM_TOKEN" in message
    assert gate.sources.calls == []


async def test_an_indicator_without_a_source_fails_with_a_hint() -> None:
    gate = Gate()
    gate.resources.put("sli.yaml", SLI_YAML)
    gate.resources.put(
        "slo.yaml",
        "objectives: [{sli: nowhere, pass: [{criteria: ['<1']}]}]\ntotal_score: {pass: '90%'}",
    )

    data = await gate.answer(triggered())

    message = data["evaluation"]["indicatorResults"][0]["value"]["message"]
    assert message.startswith("no source is configured for indicator nowhere")


# ---------------------------------------------------------------------- get-sli providers

PROVIDER_SLI = "provider: dynatrace\nindicators: {}\n"
PROVIDER_SLO = """\
filter: {mz_id: "4711"}
objectives:
  - sli: throughput
  - sli: error_rate
    pass: [{criteria: ["<1"]}]
total_score: {pass: "90%"}
"""


async def provider_answer(gate: Gate, data: Mapping[str, Any]) -> dict[str, Any]:
    """Run an evaluation and answer its get-sli request with ``data``."""
    gate.resources.put("sli.yaml", PROVIDER_SLI)
    gate.resources.put("slo.yaml", PROVIDER_SLO)
    running = asyncio.create_task(
        gate.answer(triggered(deployment={"deploymentNames": ["canary"]}))
    )
    async with asyncio.timeout(3.0):
        while not gate.publisher.of_type("get-sli.triggered"):
            await gate.publisher.sent.wait()
            gate.publisher.sent.clear()
    (request,) = gate.publisher.of_type("get-sli.triggered")
    gate.evaluator.on_answer(
        Envelope(
            id="sli-answer",
            source="dynatrace-service",
            type=GET_SLI_FINISHED,
            time="2026-11-21T10:00:01.000Z",
            data={"project": "shop", "stage": "dev", "service": "carts", **data},
            keptn_context=CONTEXT,
            triggered_id=request.id,
        )
    )
    return await asyncio.wait_for(running, timeout=3.0)


async def test_a_get_sli_provider_is_asked_over_events_as_keptn_did() -> None:
    gate = Gate()

    data = await provider_answer(
        gate,
        {
            "status": "succeeded",
            "result": "pass",
            "get-sli": {
                "indicatorValues": [
                    {"metric": "throughput", "value": 180, "success": True},
                    {"metric": "error_rate", "value": 0.2, "success": True},
                ]
            },
        },
    )

    (request,) = gate.publisher.of_type("get-sli.triggered")
    assert request.triggered_id == ""
    assert request.keptn_context == CONTEXT
    assert request.data["get-sli"] == {
        "sliProvider": "dynatrace",
        "start": "2026-11-21T09:55:00.000Z",
        "end": "2026-11-21T10:00:00.000Z",
        "indicators": ["throughput", "error_rate"],
        "customFilters": [{"key": "mz_id", "value": "4711"}],
    }
    assert request.data["deployment"] == "canary"
    assert data["result"] == "pass"
    assert [item["status"] for item in data["evaluation"]["indicatorResults"]] == [
        "info",
        "pass",
    ]


async def test_a_provider_answering_fail_fails_the_event_but_keeps_the_score() -> None:
    gate = Gate()

    data = await provider_answer(
        gate,
        {
            "status": "succeeded",
            "result": "fail",
            "message": "quota exceeded",
            "get-sli": {"indicatorValues": [{"metric": "error_rate", "value": 0.1}]},
        },
    )

    assert data["result"] == "fail"
    assert data["evaluation"]["result"] == "pass"
    assert data["evaluation"]["score"] == 100
    assert data["message"] == "lighthouse failed because SLI failed with message quota exceeded"


async def test_a_provider_that_errors_or_aborts_ends_the_evaluation_errored() -> None:
    errored = await provider_answer(Gate(), {"status": "errored", "message": "token expired"})
    aborted = await provider_answer(Gate(), {"status": "aborted"})

    assert (errored["status"], errored["result"]) == ("errored", "fail")
    assert errored["message"] == (
        "evaluation performed by lighthouse received an unexpected error: token expired"
    )
    assert aborted["message"] == "evaluation performed by lighthouse was aborted"


async def test_a_silent_provider_times_out_instead_of_holding_the_sequence() -> None:
    gate = Gate(get_sli_timeout=0.05)
    gate.resources.put("sli.yaml", PROVIDER_SLI)
    gate.resources.put("slo.yaml", PROVIDER_SLO)

    data = await asyncio.wait_for(gate.answer(triggered()), timeout=3.0)

    result = data["evaluation"]["indicatorResults"][1]
    assert result["value"]["message"] == (
        "the 'dynatrace' provider sent no get-sli.finished within 0.05s"
    )
    assert data["result"] == "fail"


async def test_answers_to_someone_elses_request_are_ignored() -> None:
    gate = Gate()
    gate.evaluator.on_answer(
        Envelope(
            id="x",
            source="other",
            type=GET_SLI_FINISHED,
            time="2026-11-21T10:00:01.000Z",
            data={},
            triggered_id="not-ours",
        )
    )
    assert gate.publisher.published == []


# ---------------------------------------------------------------------- from the bus


async def test_a_consumed_event_is_acknowledged_after_both_answers_are_out() -> None:
    gate = Gate()
    ack = Settle()

    await gate.evaluator.receive(triggered("evaluate", **photo()), ack)
    await asyncio.wait_for(ack.settled.wait(), timeout=3.0)

    assert ack.outcomes == [("processed", None)]
    assert len(gate.publisher.published) == 2


async def test_an_internal_failure_is_retried_then_answered_errored() -> None:
    gate = Gate(attempts=3)

    async def broken(*args: Any, **kwargs: Any) -> list[PastEvaluation]:
        raise ConnectionError("database down")

    gate.history.past_evaluations = broken  # type: ignore[method-assign]
    gate.resources.put("slo.yaml", SLO_YAML, stage="dev", service="carts")
    gate.resources.put("sli.yaml", SLI_YAML)
    early, last = Settle(attempt=1), Settle(attempt=3)

    await gate.evaluator.receive(triggered(), early)
    await asyncio.wait_for(early.settled.wait(), timeout=3.0)
    await gate.evaluator.receive(triggered(), last)
    await asyncio.wait_for(last.settled.wait(), timeout=3.0)

    assert early.outcomes == [("retry", 2.0)]
    assert last.outcomes == [("processed", None)]
    finished = gate.publisher.of_type("evaluation.finished")[-1]
    assert (finished.data["status"], finished.data["result"]) == ("errored", "fail")
    assert "after 3 attempts: database down" in finished.data["message"]


async def test_events_that_are_not_evaluation_tasks_are_settled_untouched() -> None:
    gate = Gate()
    ack = Settle()

    await gate.evaluator.receive(triggered("checknumber"), ack)

    assert ack.outcomes == [("processed", None)]
    assert gate.publisher.published == []


# ---------------------------------------------------------------------- the API's trigger


def test_the_evaluation_endpoint_builds_keptns_sequence_trigger() -> None:
    incoming = trigger_request(
        "shop", "dev", "carts", timeframe="10m", labels={"build": "42"}, now=NOW
    )

    assert incoming.attributes["type"] == "sh.keptn.event.dev.evaluation.triggered"
    assert incoming.attributes["source"] == "https://github.com/keptn/keptn/api"
    assert incoming.data == {
        "project": "shop",
        "stage": "dev",
        "service": "carts",
        "labels": {"build": "42"},
        "evaluation": {"start": "2026-11-21T09:50:00.000Z", "end": "2026-11-21T10:00:00.000Z"},
    }


def test_the_evaluation_endpoint_refuses_end_with_timeframe() -> None:
    with pytest.raises(InvalidTimeframe):
        trigger_request(
            "shop",
            "dev",
            "carts",
            start="2026-11-21T09:00:00Z",
            end="2026-11-21T09:30:00Z",
            timeframe="5m",
            now=NOW,
        )
