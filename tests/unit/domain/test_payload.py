from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain import payload
from controlplane.domain.execution import Answer, TaskOutcome, aggregate
from controlplane.domain.shipyard import Task
from tests.unit.domain.domain_kit import SCOPE, new

SCOPE_DATA = {"project": SCOPE.project, "stage": SCOPE.stage, "service": SCOPE.service}


# ------------------------------------------------------------------------ merge


@pytest.mark.parametrize(
    ("base", "update", "merged"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
        ({"a": "old"}, {"a": "new"}, {"a": "new"}),
        # Lists: the update's items first, then the base's (Keptn issue #7627).
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3, 1, 2]}),
        ({"l": []}, {"l": [3]}, {"l": [3]}),
        # Type mismatch: the update wins.
        ({"a": {"x": 1}}, {"a": "flat"}, {"a": "flat"}),
        ({"a": "flat"}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        ({"a": [1]}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        ({"a": None}, {"a": [1]}, {"a": [1]}),
        ({"a": 1}, {"a": None}, {"a": None}),
        ({}, {}, {}),
    ],
)
def test_merge(base: dict[str, Any], update: dict[str, Any], merged: dict[str, Any]) -> None:
    assert payload.merge(base, update) == merged


def test_merge_with_nothing_as_base() -> None:
    assert payload.merge(None, {"a": [1]}) == {"a": [1]}


def test_merge_never_mutates_and_never_aliases() -> None:
    base = {"a": {"x": [1]}, "keep": {"k": 1}}
    update = {"a": {"x": [2], "y": {"z": 1}}}
    merged = payload.merge(base, update)
    assert base == {"a": {"x": [1]}, "keep": {"k": 1}}
    assert update == {"a": {"x": [2], "y": {"z": 1}}}
    merged["a"]["y"]["z"] = 99
    merged["keep"]["k"] = 99
    merged["a"]["x"].append(3)
    assert update["a"]["y"] == {"z": 1}
    assert base["keep"] == {"k": 1}
    assert base["a"]["x"] == [1]


def test_deep_copy_is_deep() -> None:
    original = {"a": {"b": [1, {"c": 2}]}}
    copied = payload.deep_copy(original)
    copied["a"]["b"][1]["c"] = 3
    assert original == {"a": {"b": [1, {"c": 2}]}}


# --------------------------------------------- GetNextTriggeredEventData vectors


def outcome(
    name: str, data: dict[str, Any], result: str = "pass", status: str = "succeeded"
) -> TaskOutcome:
    return TaskOutcome(name, f"id-{name}", result, status, data)


def test_v1_properties_fill_the_task_slot_and_no_result_status() -> None:
    execution = new(
        Task("mytask", properties={"deploymentstrategy": "direct"}),
        data={"mytask": {"deploymentstrategy": ""}},
    )
    assert execution.task_payload(0) == {
        **SCOPE_DATA,
        "mytask": {"deploymentstrategy": "direct"},
    }


def test_v1_input_result_and_status_flow_into_the_first_task() -> None:
    execution = new("approval", data={"result": "warning", "status": "succeeded"})
    assert execution.task_payload(0) == {**SCOPE_DATA, "result": "warning", "status": "succeeded"}


V2_TASKS = (
    Task("mytask", properties={"foo": "bar"}),
    Task("my-second-task", properties={"foo": "bar"}),
)
V2_INPUT = {"configurationChange": {"image": "1.0"}}


def test_v2_first_task() -> None:
    execution = new(*V2_TASKS, data=V2_INPUT)
    assert execution.task_payload(0) == {
        **SCOPE_DATA,
        "configurationChange": {"image": "1.0"},
        "mytask": {"foo": "bar"},
    }


def test_v3_second_task_gets_previous_output_and_last_result() -> None:
    execution = new(*V2_TASKS, data=V2_INPUT).evolve(
        previous=(outcome("mytask", {"mytask": {"bar": "foo"}}),)
    )
    assert execution.task_payload(1) == {
        **SCOPE_DATA,
        "configurationChange": {"image": "1.0"},
        "mytask": {"bar": "foo"},
        "my-second-task": {"foo": "bar"},
        "result": "pass",
        "status": "succeeded",
    }


def test_v4_lists_new_first_and_message_blanked() -> None:
    execution = new(
        "deployment",
        "test",
        "my-second-task",
        data={
            "configurationChange": {"image": "1.0"},
            "deployment": {
                "deploymentURIsLocal": None,
                "deploymentURIsPublic": ["http://carts.sockshop-dev.svc.cluster.local:80"],
            },
            "test": {"start": "1", "end": "2"},
        },
    ).evolve(
        previous=(
            outcome(
                "deployment",
                {
                    "deployment": {
                        "deploymentURIsLocal": ["http://carts.sockshop-dev:80"],
                        "deploymentURIsPublic": [
                            "http://carts.sockshop-staging.svc.cluster.local:80"
                        ],
                    },
                    "message": "task finished",
                },
            ),
            outcome("test", {"test": {"start": "3", "end": "4"}, "message": "task finished"}),
        )
    )
    assert execution.task_payload(2) == {
        **SCOPE_DATA,
        "configurationChange": {"image": "1.0"},
        "deployment": {
            "deploymentURIsLocal": ["http://carts.sockshop-dev:80"],
            "deploymentURIsPublic": [
                "http://carts.sockshop-staging.svc.cluster.local:80",
                "http://carts.sockshop-dev.svc.cluster.local:80",
            ],
        },
        "test": {"start": "3", "end": "4"},
        "result": "pass",
        "status": "succeeded",
        "message": "",
    }


def test_result_and_status_are_those_of_the_last_task() -> None:
    execution = new("a", "b", "c").evolve(
        previous=(
            outcome("a", {"result": "pass"}, "warning", "succeeded"),
            outcome("b", {}, "pass", "aborted"),
        )
    )
    data = execution.next_payload()
    assert (data["result"], data["status"]) == ("pass", "aborted")


def test_scope_overrides_input_and_labels_flow() -> None:
    execution = new(
        "a",
        data={
            "project": "other",
            "stage": "x",
            "service": "y",
            "labels": {"build": "42"},
            "custom": 1,
        },
    )
    assert execution.task_payload(0) == {**SCOPE_DATA, "labels": {"build": "42"}, "custom": 1}


def test_properties_win_over_input_and_previous_output() -> None:
    execution = new(
        "a",
        Task("b", properties={"k": "shipyard", "nested": {"x": 1}}),
        data={"b": {"k": "input", "other": 1}},
    ).evolve(previous=(outcome("a", {"b": {"k": "a-output", "nested": {"y": 2}}}),))
    assert execution.task_payload(1)["b"] == {
        "k": "shipyard",
        "other": 1,
        "nested": {"y": 2, "x": 1},
    }
    # next_payload (what chaining carries) has no next-task properties.
    assert execution.next_payload()["b"] == {"k": "a-output", "other": 1, "nested": {"y": 2}}


def test_payload_does_not_change_the_execution() -> None:
    execution = new(Task("a", properties={"p": [1]}), data={"a": {"p": [0]}, "l": [1]})
    data = execution.task_payload(0)
    data["a"]["p"].append(5)
    data["l"].append(2)
    assert execution.input == {"a": {"p": [0]}, "l": [1]}
    assert execution.sequence.tasks[0].properties == {"p": [1]}
    assert execution.task_payload(0)["a"] == {"p": [1, 0]}


# ----------------------------------------------------------------- aggregation


def fin(result: str, status: str, event_id: str = "", **data: Any) -> Answer:
    return Answer(
        event_id or f"{result}-{status}", True, "svc", {"result": result, "status": status, **data}
    )


@pytest.mark.parametrize(
    ("answers", "result", "status"),
    [
        ([fin("pass", "succeeded")], "pass", "succeeded"),
        ([fin("pass", "succeeded", "1"), fin("pass", "succeeded", "2")], "pass", "succeeded"),
        ([fin("pass", "succeeded"), fin("fail", "succeeded")], "fail", "succeeded"),
        ([fin("pass", "succeeded"), fin("warning", "succeeded")], "warning", "succeeded"),
        ([fin("pass", "succeeded"), fin("fail", "errored")], "fail", "errored"),
        ([fin("pass", "succeeded"), fin("fail", "some status")], "fail", "unknown"),
        ([fin("pass", "succeeded"), fin("unknown result", "succeeded")], "fail", "succeeded"),
        ([fin("pass", "succeeded"), fin("pass", "aborted")], "pass", "aborted"),
        # Beyond the table: empty values, precedence, unknown forces fail.
        ([fin("", "succeeded")], "fail", "succeeded"),
        ([fin("pass", "")], "fail", "unknown"),
        ([fin("warning", "succeeded"), fin("pass", "unknown")], "fail", "unknown"),
        ([fin("pass", "aborted"), fin("pass", "errored")], "pass", "errored"),
        ([fin("pass", "aborted"), fin("pass", "weird")], "pass", "aborted"),
        ([fin("warning", "succeeded"), fin("fail", "succeeded")], "fail", "succeeded"),
    ],
)
def test_aggregate_table(answers: list[Answer], result: str, status: str) -> None:
    started = [Answer(f"s{i}", False) for i in range(len(answers))]
    outcome = aggregate("deployment", "tid", (*started, *answers))
    assert (outcome.result, outcome.status) == (result, status)
    assert (outcome.name, outcome.triggered_id) == ("deployment", "tid")


@pytest.mark.parametrize(
    ("result", "status", "stops"),
    [
        ("pass", "succeeded", False),
        ("warning", "succeeded", False),
        ("pass", "aborted", False),
        ("fail", "succeeded", True),
        ("pass", "errored", True),
        ("fail", "unknown", True),
    ],
)
def test_which_outcomes_stop_the_sequence(result: str, status: str, stops: bool) -> None:
    assert TaskOutcome("t", "id", result, status).stops_sequence is stops


def test_aggregate_merges_the_data_of_every_finished_event() -> None:
    outcome = aggregate(
        "deployment",
        "tid",
        (
            Answer("s1", False),
            fin("pass", "succeeded", "f1", deploymentURI="http://x"),
            fin("pass", "succeeded", "f2", otherProperty="y"),
        ),
    )
    assert outcome.data == {
        "result": "pass",
        "status": "succeeded",
        "deploymentURI": "http://x",
        "otherProperty": "y",
    }


def test_aggregate_merge_does_not_depend_on_arrival_order() -> None:
    one = fin("pass", "succeeded", "f1", deployment={"names": ["a"]}, k="one")
    two = fin("warning", "succeeded", "f2", deployment={"names": ["b"]}, k="two")
    assert aggregate("t", "i", (one, two)) == aggregate("t", "i", (two, one))
