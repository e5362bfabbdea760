"""Our optional shipyard keys: parsed into the model, and every bad value named by its path."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain import extensions
from controlplane.domain.errors import InvalidShipyard
from controlplane.domain.extensions import Backoff, Concurrency, Retry, TaskTimeouts
from controlplane.domain.shipyard import Shipyard, parse_shipyard

TASK = "spec.stages[0].sequences[0].tasks[0]"
SEQ = "spec.stages[0].sequences[0]"


def shipyard(task: dict[str, Any] | None = None, **sequence: Any) -> dict[str, Any]:
    return {
        "apiVersion": "spec.keptn.sh/0.2.4",
        "kind": "Shipyard",
        "metadata": {"name": "demo"},
        "spec": {
            "stages": [
                {
                    "name": "dev",
                    "sequences": [
                        {
                            "name": "delivery",
                            "tasks": [{"name": "deploy", **(task or {})}],
                            **sequence,
                        }
                    ],
                }
            ]
        },
    }


def parsed(task: dict[str, Any] | None = None, **sequence: Any) -> Shipyard:
    return parse_shipyard(shipyard(task, **sequence))


def problems(task: dict[str, Any] | None = None, **sequence: Any) -> list[str]:
    with pytest.raises(InvalidShipyard) as caught:
        parse_shipyard(shipyard(task, **sequence))
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_a_keptn_shipyard_gets_keptns_behaviour() -> None:
    sequence = parsed().stages[0].sequences[0]
    task = sequence.tasks[0]
    assert (task.timeout, task.retry, task.pause_after_errors, task.callback) == (
        None,
        None,
        0,
        False,
    )
    assert (sequence.timeout, sequence.concurrency, sequence.loop) == (None, None, False)


def test_every_key_is_parsed() -> None:
    sequence = (
        parsed(
            {
                "timeout": {"started": "1m", "finished": "30m", "heartbeat": "2m"},
                "retry": {
                    "attempts": 3,
                    "on": ["fail", "timeout"],
                    "backoff": {"initial": "10s", "factor": 3, "max": "5m", "jitter": 0.25},
                },
                "pauseAfterErrors": 2,
                "callback": True,
            },
            timeout="2h",
            concurrency={"key": "{project}/{labels.team}", "limit": 4},
            loop=True,
        )
        .stages[0]
        .sequences[0]
    )
    task = sequence.tasks[0]
    assert task.timeout == TaskTimeouts(60.0, 1800.0, 120.0)
    assert task.retry == Retry(3, frozenset({"fail", "timeout"}), Backoff(10.0, 3.0, 300.0, 0.25))
    assert (task.pause_after_errors, task.callback) == (2, True)
    assert sequence.timeout == 7200.0
    assert sequence.concurrency == Concurrency("{project}/{labels.team}", 4)
    assert sequence.loop


def test_defaults_fill_what_is_left_out() -> None:
    task = parsed({"timeout": "45s", "retry": {"attempts": 2}}).stages[0].sequences[0].tasks[0]
    assert task.timeout == TaskTimeouts(finished=45.0)
    assert task.retry == Retry(2, frozenset({"errored", "timeout"}), Backoff())
    limited = parsed(concurrency={"limit": 3}).stages[0].sequences[0]
    assert limited.concurrency == Concurrency("{project}/{stage}/{service}", 3)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"timeout": {"started": "soon"}}, f"{TASK}.timeout.started: 'soon' is not a duration"),
        ({"timeout": {"finished": "0s"}}, f"{TASK}.timeout.finished: must be longer than zero"),
        ({"timeout": {"sometime": "1m"}}, f"{TASK}.timeout.sometime: is not a known key"),
        ({"timeout": ["1m"]}, f"{TASK}.timeout: must be a duration or a mapping"),
        ({"retry": {"attempts": 0}}, f"{TASK}.retry.attempts: must be from 1 to 100, got 0"),
        ({"retry": {"attempts": -3}}, f"{TASK}.retry.attempts: must be from 1 to 100, got -3"),
        ({"retry": {"attempts": 10**9}}, f"{TASK}.retry.attempts: must be from 1 to 100"),
        ({"retry": {"attempts": "3"}}, f"{TASK}.retry.attempts: must be a whole number"),
        ({"retry": {"attempts": True}}, f"{TASK}.retry.attempts: must be a whole number"),
        ({"retry": {}}, f"{TASK}.retry.attempts: is required"),
        ({"retry": 3}, f"{TASK}.retry: must be a mapping with 'attempts'"),
        ({"retry": {"attempts": 2, "on": ["crash"]}}, f"{TASK}.retry.on[0]: must be one of"),
        ({"retry": {"attempts": 2, "on": []}}, f"{TASK}.retry.on: must be a list drawn from"),
        (
            {"retry": {"attempts": 2, "backoff": {"factor": 0.5}}},
            f"{TASK}.retry.backoff.factor: must be from 1 to 100",
        ),
        (
            {"retry": {"attempts": 2, "backoff": {"jitter": 2}}},
            f"{TASK}.retry.backoff.jitter: must be from 0 to 1",
        ),
        (
            {"retry": {"attempts": 2, "backoff": {"initial": "1m", "max": "10s"}}},
            f"{TASK}.retry.backoff.max: must not be shorter than initial",
        ),
        ({"pauseAfterErrors": -1}, f"{TASK}.pauseAfterErrors: must be from 0 to 100"),
        ({"callback": "yes"}, f"{TASK}.callback: must be true or false"),
    ],
)
def test_a_bad_task_key_is_named_with_its_path(task: dict[str, Any], expected: str) -> None:
    found = problems(task)
    assert any(problem.startswith(expected) for problem in found), found


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ({"timeout": "forever"}, f"{SEQ}.timeout: 'forever' is not a duration"),
        ({"timeout": -5}, f"{SEQ}.timeout: negative duration"),
        ({"concurrency": {"limit": 0}}, f"{SEQ}.concurrency.limit: must be from 1 to 10000"),
        ({"concurrency": {"key": ""}}, f"{SEQ}.concurrency.key: must be a non-empty template"),
        ({"concurrency": {"key": "{a b}"}}, f"{SEQ}.concurrency.key: {{a b}} in '{{a b}}'"),
        ({"concurrency": {"key": "{service!r}"}}, f"{SEQ}.concurrency.key: {{service}}"),
        ({"concurrency": {"key": "{unclosed"}}, f"{SEQ}.concurrency.key: '{{unclosed' is not"),
        ({"concurrency": "one"}, f"{SEQ}.concurrency: must be a mapping"),
        ({"loop": "yes"}, f"{SEQ}.loop: must be true or false"),
    ],
)
def test_a_bad_sequence_key_is_named_with_its_path(sequence: dict[str, Any], expected: str) -> None:
    found = problems(**sequence)
    assert any(problem.startswith(expected) for problem in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = problems({"retry": {"attempts": 0}, "callback": 1}, timeout="x")
    assert len(found) == 3


@pytest.mark.parametrize(
    ("template", "data", "key"),
    [
        ("{project}/{stage}/{service}", {"project": "p", "stage": "s", "service": "v"}, "p/s/v"),
        ("{labels.team}-x", {"labels": {"team": "red"}}, "red-x"),
        ("{n}", {"n": 7}, "7"),
        ("fixed", {}, "fixed"),
    ],
)
def test_a_key_is_rendered_from_the_data(template: str, data: dict[str, Any], key: str) -> None:
    assert extensions.render_key(template, data) == key


@pytest.mark.parametrize(
    "data",
    [{}, {"labels": {}}, {"labels": "red"}, {"labels": {"team": ""}}, {"labels": {"team": {}}}],
)
def test_a_key_field_the_data_lacks_is_named(data: dict[str, Any]) -> None:
    with pytest.raises(KeyError, match=r"labels\.team"):
        extensions.render_key("{labels.team}", data)
