"""The assembly carries our shipyard extensions, and checks triggers against the whole project."""

from __future__ import annotations

from typing import Any

import yaml

from controlplane.adapters.kubernetes.api import render_shipyard
from controlplane.adapters.kubernetes.assembly import Assembly, Verdict, assemble
from controlplane.domain.extensions import Concurrency
from controlplane.domain.shipyard import parse_shipyard
from tests.unit.adapters.kubernetes.kit import resource

DEV = {"project": "demo", "stage": "dev"}
SEQUENCE_KEYS: dict[str, Any] = {
    "timeout": "1h",
    "concurrency": {"key": "{project}/{stage}", "limit": 2},
    "loop": False,
}
TASK_KEYS: dict[str, Any] = {
    "timeout": {"started": "5m", "finished": "30m", "heartbeat": "1m"},
    "retry": {
        "attempts": 3,
        "on": ["errored", "timeout"],
        "backoff": {"initial": "10s", "factor": 2, "max": "5m", "jitter": 0.1},
    },
    "pauseAfterErrors": 2,
    "callback": True,
}


def verdict(result: Assembly, name: str) -> Verdict:
    return result.verdicts["default", name]


def only_sequence(result: Assembly) -> dict[str, Any]:
    document: Any = result.shipyards["demo"]
    (stage,) = document["spec"]["stages"]
    (sequence,) = stage["sequences"]
    return dict(sequence)


def test_sequence_and_task_keys_are_carried_as_they_are() -> None:
    spec = {**DEV, **SEQUENCE_KEYS, "tasks": [{"name": "deploy", **TASK_KEYS}]}
    result = assemble([resource("ship", spec)])
    assert verdict(result, "ship").valid, verdict(result, "ship").problems
    assert only_sequence(result) == {
        "name": "ship",
        "tasks": [{"name": "deploy", **TASK_KEYS}],
        **SEQUENCE_KEYS,
    }
    shipyard = parse_shipyard(yaml.safe_load(render_shipyard(result.shipyards["demo"])))
    sequence = shipyard.sequence("dev", "ship")
    assert sequence.timeout == 3600.0
    assert sequence.concurrency == Concurrency("{project}/{stage}", 2)
    (task,) = sequence.tasks
    assert task.timeout is not None
    assert (task.timeout.started, task.timeout.finished, task.timeout.heartbeat) == (
        300.0,
        1800.0,
        60.0,
    )
    assert task.retry is not None
    assert task.retry.attempts == 3
    assert task.retry.backoff.jitter == 0.1
    assert (task.pause_after_errors, task.callback) == (2, True)


def test_keys_left_out_stay_out() -> None:
    # A resource written before these keys existed gives the same shipyard text as before.
    result = assemble([resource("ship", {**DEV, "tasks": [{"name": "deploy"}]})])
    assert only_sequence(result) == {"name": "ship", "tasks": [{"name": "deploy"}]}


def test_a_bad_extension_value_is_invalid_at_the_resources_field() -> None:
    spec = {**DEV, "tasks": [{"name": "deploy", "retry": {"attempts": 0}}]}
    found = verdict(assemble([resource("ship", spec)]), "ship")
    assert len(found.problems) == 1
    assert found.problems[0].startswith("spec.tasks[0].retry.attempts: ")
    assert found.applied is None


def test_loop_is_carried_and_checked_against_the_project() -> None:
    loops = {**DEV, "loop": True, "triggeredOn": [{"event": "dev.heal.finished"}]}
    result = assemble([resource("heal", {**loops, "tasks": [{"name": "fix"}]})])
    assert only_sequence(result)["loop"] is True
    assert verdict(result, "heal").valid
    assert verdict(result, "heal").warnings == ()


def test_a_loop_across_resources_is_a_warning_on_the_one_that_closes_it() -> None:
    result = assemble(
        [
            resource("a", {**DEV, "triggeredOn": [{"event": "dev.b.finished"}]}),
            resource("b", {**DEV, "triggeredOn": [{"event": "dev.a.finished"}]}),
        ]
    )
    assert verdict(result, "a").valid
    assert verdict(result, "b").valid
    (warning,) = verdict(result, "a").warnings
    assert warning.startswith("spec.triggeredOn[0].event: triggeredOn links form a loop,")
    assert "dev.a → dev.b → dev.a" in warning
    assert verdict(result, "b").warnings == ()
    assert set(result.shipyards) == {"demo"}


def test_a_declared_loop_across_resources_is_no_warning() -> None:
    result = assemble(
        [
            resource("a", {**DEV, "triggeredOn": [{"event": "dev.b.finished"}]}),
            resource("b", {**DEV, "loop": True, "triggeredOn": [{"event": "dev.a.finished"}]}),
        ]
    )
    assert all(v.valid and not v.warnings for v in result.verdicts.values())


def test_a_trigger_naming_a_stage_that_could_never_exist_is_invalid() -> None:
    spec = {**DEV, "stage": "prod", "triggeredOn": [{"event": "Dev.ship.finished"}]}
    found = verdict(assemble([resource("ok", DEV), resource("follows", spec)]), "follows")
    assert found.problems == (
        "spec.triggeredOn[0].event: 'Dev.ship.finished' can never fire: stage 'Dev' is not"
        " defined in the shipyard",
    )


def test_a_self_trigger_needs_no_other_resource() -> None:
    spec = {
        **DEV,
        "triggeredOn": [{"event": "dev.again.finished", "selector": {"match": {"result": "fail"}}}],
    }
    found = verdict(assemble([resource("again", spec)]), "again")
    assert found.valid
    (warning,) = found.warnings
    assert "dev.again → dev.again" in warning
