from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasksdk import InvalidAnswer, InvalidEvent, Result, Status, contract
from tasksdk.contract import Phase, TriggeredEvent

NOW = datetime(2022, 1, 26, 10, 5, 53, 931_456, tzinfo=UTC)


def triggered(**overrides: object) -> TriggeredEvent:
    event = contract.triggered_event(
        "deployment",
        project="sockshop",
        stage="dev",
        service="carts",
        data={"deployment": {"deploymentstrategy": "direct"}},
        labels={"owner": "team-a"},
        event_id="T1",
        shkeptncontext="C1",
        gitcommitid="abc123",
        now=NOW,
    )
    event.update(overrides)
    return TriggeredEvent.from_json(json.dumps(event))


@pytest.mark.parametrize(
    ("task", "phase", "expected"),
    [
        ("deployment", Phase.TRIGGERED, "sh.keptn.event.deployment.triggered"),
        ("get-sli", Phase.STARTED, "sh.keptn.event.get-sli.started"),
        ("test", Phase.STATUS_CHANGED, "sh.keptn.event.test.status.changed"),
        ("evaluation", Phase.FINISHED, "sh.keptn.event.evaluation.finished"),
    ],
)
def test_event_type_round_trips(task: str, phase: Phase, expected: str) -> None:
    assert contract.event_type(task, phase) == expected
    assert contract.parse_event_type(expected) == (task, phase)


@pytest.mark.parametrize(
    "raw",
    [
        "deployment.triggered",
        "sh.keptn.event.dev.delivery.triggered",
        "sh.keptn.event.deployment.done",
        "sh.keptn.event..triggered",
        "sh.keptn.log.error",
    ],
)
def test_parse_event_type_rejects_non_task_types(raw: str) -> None:
    with pytest.raises(InvalidEvent):
        contract.parse_event_type(raw)


@pytest.mark.parametrize("name", ["", "a.b", "a b", "*", "a>"])
def test_event_type_rejects_unusable_task_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid task name"):
        contract.event_type(name, Phase.STARTED)


def test_time_uses_keptn_format_in_utc() -> None:
    assert contract.format_time(NOW) == "2022-01-26T10:05:53.931Z"
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert contract.format_time(plus_two) == "2022-01-26T10:05:53.931Z"
    assert contract.format_time(NOW.replace(tzinfo=None)) == "2022-01-26T10:05:53.931Z"


def test_parses_a_triggered_event() -> None:
    event = triggered()

    assert event.id == "T1"
    assert event.type == "sh.keptn.event.deployment.triggered"
    assert event.task == "deployment"
    assert event.source == "shipyard-controller"
    assert event.shkeptncontext == "C1"
    assert event.gitcommitid == "abc123"
    assert event.time == "2022-01-26T10:05:53.931Z"
    assert (event.project, event.stage, event.service) == ("sockshop", "dev", "carts")
    assert event.labels == {"owner": "team-a"}
    assert event.data["deployment"] == {"deploymentstrategy": "direct"}


def test_triggered_event_data_is_read_only() -> None:
    event = triggered()
    with pytest.raises(TypeError):
        event.data["project"] = "other"  # type: ignore[index]


def test_missing_data_reads_as_empty() -> None:
    event = triggered(data=None)
    assert event.data == {}
    assert (event.project, event.stage, event.service, event.labels) == ("", "", "", None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not a JSON CloudEvent"),
        (b"[1, 2]", "not an object"),
        (b"\xff\xfe", "not a JSON CloudEvent"),
    ],
)
def test_rejects_payloads_that_are_not_json_objects(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        TriggeredEvent.from_json(payload)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"id": ""}, "'id'"),
        ({"shkeptncontext": None}, "'shkeptncontext'"),
        ({"type": "sh.keptn.event.deployment.finished"}, "not a .triggered event"),
        ({"type": "sh.keptn.event.dev.delivery.triggered"}, "not a task event type"),
        ({"data": [1]}, "not a JSON object"),
        ({"data": {"project": 1}}, "data.project is not a string"),
    ],
)
def test_rejects_unusable_triggered_events(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        triggered(**overrides)


def test_started_answer_has_the_keptn_envelope() -> None:
    answer = contract.started_event(triggered(), source="my-service", now=NOW)

    assert uuid.UUID(answer.pop("id")).version == 4
    assert answer == {
        "specversion": "1.0",
        "source": "my-service",
        "type": "sh.keptn.event.deployment.started",
        "time": "2022-01-26T10:05:53.931Z",
        "datacontenttype": "application/json",
        "shkeptncontext": "C1",
        "triggeredid": "T1",
        "gitcommitid": "abc123",
        "shkeptnspecversion": "0.2.4",
        "data": {
            "project": "sockshop",
            "stage": "dev",
            "service": "carts",
            "labels": {"owner": "team-a"},
        },
    }


def test_answers_get_new_ids() -> None:
    event = triggered()
    first = contract.started_event(event, source="s")
    second = contract.started_event(event, source="s")
    assert len({first["id"], second["id"], event.id}) == 3


def test_answer_omits_absent_gitcommitid_and_labels() -> None:
    answer = contract.started_event(triggered(gitcommitid=None, data={}), source="s")
    assert "gitcommitid" not in answer
    assert "labels" not in answer["data"]


def test_finished_defaults_to_succeeded_and_pass() -> None:
    data = contract.finished_event(triggered(), source="s", data={"x": 1})["data"]
    assert (data["status"], data["result"], data["x"]) == ("succeeded", "pass", 1)


def test_finished_treats_empty_status_and_result_as_missing() -> None:
    data = contract.finished_event(triggered(), source="s", data={"status": "", "result": ""})[
        "data"
    ]
    assert (data["status"], data["result"]) == ("succeeded", "pass")


def test_finished_keeps_given_values_as_plain_strings() -> None:
    data = contract.finished_event(
        triggered(), source="s", data={"status": Status.ERRORED, "result": "warning"}
    )["data"]
    assert (data["status"], data["result"]) == ("errored", "warning")
    assert type(data["status"]) is str


@pytest.mark.parametrize(
    ("data", "field"),
    [({"result": "failed"}, "result"), ({"status": "ok"}, "status"), ({"result": 1}, "result")],
)
def test_finished_rejects_values_outside_the_contract(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidAnswer, match=f"invalid {field}"):
        contract.finished_event(triggered(), source="s", data=data)


def test_the_scope_always_comes_from_the_trigger() -> None:
    data = contract.finished_event(
        triggered(),
        source="s",
        data={"project": "elsewhere", "labels": {"owner": "me"}, "result": Result.FAIL},
    )["data"]
    assert data["project"] == "sockshop"
    assert data["labels"] == {"owner": "me"}


def test_status_changed_carries_the_message() -> None:
    answer = contract.status_changed_event(
        triggered(), source="s", message="half way", data={"percent": 50}
    )
    assert answer["type"] == "sh.keptn.event.deployment.status.changed"
    assert answer["data"]["message"] == "half way"
    assert answer["data"]["percent"] == 50


def test_encode_decode_round_trip() -> None:
    answer = contract.started_event(triggered(), source="s")
    assert contract.decode(contract.encode(answer)) == answer


def test_encode_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        contract.encode({"data": {"when": NOW}})
    with pytest.raises(ValueError, match="JSON"):
        contract.encode({"data": {"score": float("nan")}})


def test_encode_writes_any_mapping_as_an_object() -> None:
    event = triggered()
    assert contract.decode(contract.encode({"data": event.data}))["data"]["project"] == "sockshop"
