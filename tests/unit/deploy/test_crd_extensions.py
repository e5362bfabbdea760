"""The Sequence CRD keeps our shipyard extensions: a real API server prunes any field its schema
does not list, so each key the operator carries must be in it, with the parser's limits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.adapters.kubernetes import assembly
from tests.unit.deploy.test_crd import validator, version

FULL: dict[str, Any] = {
    "apiVersion": "controlplane.dev/v1alpha1",
    "kind": "Sequence",
    "metadata": {"name": "ship"},
    "spec": {
        "project": "demo",
        "stage": "dev",
        "timeout": "1h30m",
        "concurrency": {"key": "{project}/{stage}/{service}", "limit": 2},
        "loop": True,
        "tasks": [
            {
                "name": "deploy",
                "timeout": {"started": "5m", "finished": "30m", "heartbeat": "1m"},
                "retry": {
                    "attempts": 3,
                    "on": ["fail", "errored", "timeout"],
                    "backoff": {"initial": "10s", "factor": 1.5, "max": "5m", "jitter": 0.2},
                },
                "pauseAfterErrors": 0,
                "callback": False,
            }
        ],
    },
}


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_every_key_the_operator_carries_is_in_the_schema() -> None:
    spec = spec_schema()["properties"]
    task = spec["tasks"]["items"]["properties"]
    assert set(spec) == {
        "project",
        "stage",
        "name",
        "tasks",
        "triggeredOn",
        *assembly.SEQUENCE_KEYS,
    }
    assert set(task) == {"name", *assembly.TASK_KEYS}


def test_a_sequence_using_every_extension_is_accepted() -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(FULL)]
    assert not errors


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (["timeout"], "soon", "does not match"),
        (["concurrency", "limit"], 0, "less than the minimum of 1"),
        (["concurrency", "key"], "", "should be non-empty"),
        (["loop"], "yes", "is not of type 'boolean'"),
        (["tasks", 0, "timeout", "started"], "5 minutes", "does not match"),
        (["tasks", 0, "retry", "attempts"], 0, "less than the minimum of 1"),
        (["tasks", 0, "retry", "attempts"], 101, "greater than the maximum of 100"),
        (["tasks", 0, "retry", "on", 0], "always", "is not one of"),
        (["tasks", 0, "retry", "backoff", "factor"], 0.5, "less than the minimum of 1"),
        (["tasks", 0, "retry", "backoff", "jitter"], 2, "greater than the maximum of 1"),
        (["tasks", 0, "pauseAfterErrors"], -1, "less than the minimum of 0"),
        (["tasks", 0, "callback"], "true", "is not of type 'boolean'"),
    ],
)
def test_each_bad_extension_value_is_refused_at_its_field(
    where: list[str | int], value: object, message: str
) -> None:
    document = copy.deepcopy(FULL)
    node: Any = document["spec"]
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    errors = list(validator().iter_errors(document))
    assert [list(e.absolute_path) for e in errors] == [["spec", *where]]
    assert message in errors[0].message


def test_retry_needs_its_attempts() -> None:
    document = copy.deepcopy(FULL)
    del document["spec"]["tasks"][0]["retry"]["attempts"]
    errors = list(validator().iter_errors(document))
    assert [e.message for e in errors] == ["'attempts' is a required property"]


def test_an_unknown_key_inside_an_extension_is_refused() -> None:
    # kubectl refuses it (strict field validation); an API server would otherwise prune it.
    document = copy.deepcopy(FULL)
    document["spec"]["tasks"][0]["retry"]["backof"] = {"initial": "1s"}
    errors = list(validator().iter_errors(document))
    assert [list(e.absolute_path) for e in errors] == [["spec", "tasks", 0, "retry"]]
    assert "Additional properties are not allowed ('backof'" in errors[0].message
