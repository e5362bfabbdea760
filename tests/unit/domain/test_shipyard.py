from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.errors import InvalidShipyard, Problem, UnknownSequence
from controlplane.domain.shipyard import (
    Sequence,
    Shipyard,
    Stage,
    Task,
    Trigger,
    parse_shipyard,
)


def doc(*stages: dict[str, Any], version: str = "spec.keptn.sh/0.2.4") -> dict[str, Any]:
    return {
        "apiVersion": version,
        "kind": "Shipyard",
        "metadata": {"name": "shipyard-sockshop"},
        "spec": {"stages": list(stages)},
    }


def problems(document: object, lines: dict[str, int] | None = None) -> list[Problem]:
    with pytest.raises(InvalidShipyard) as caught:
        parse_shipyard(document, source="shipyard.yaml", lines=lines)
    return list(caught.value.problems)


def one_problem(document: object, lines: dict[str, int] | None = None) -> Problem:
    found = problems(document, lines)
    assert len(found) == 1, found
    return found[0]


SOCKSHOP: dict[str, Any] = doc(
    {
        "name": "dev",
        "sequences": [
            {
                "name": "delivery",
                "tasks": [
                    {"name": "deployment", "properties": {"deploymentstrategy": "direct"}},
                    {"name": "test", "properties": {"teststrategy": "functional"}},
                    {"name": "evaluation"},
                    {"name": "release"},
                ],
            },
            {"name": "delivery-direct", "tasks": [{"name": "deployment"}, {"name": "release"}]},
        ],
    },
    {
        "name": "staging",
        "sequences": [
            {
                "name": "delivery",
                "triggeredOn": [{"event": "dev.delivery.finished"}],
                "tasks": [
                    {
                        "name": "deployment",
                        "properties": {"deploymentstrategy": "blue_green_service"},
                    },
                    {"name": "test", "triggeredAfter": "2h30m"},
                    {"name": "evaluation", "triggeredAfter": "10s"},
                    {"name": "release"},
                ],
            },
            {
                "name": "rollback",
                "triggeredOn": [
                    {
                        "event": "staging.delivery.finished",
                        "selector": {"match": {"result": "fail"}},
                    }
                ],
                "tasks": [{"name": "rollback"}],
            },
        ],
    },
    {"name": "production"},
)


# ------------------------------------------------------------------ valid shipyards


@pytest.mark.parametrize("version", ["0.2.0", "0.2.1", "0.2.2", "0.2.3", "0.2.4", "0.3.0", "1.0"])
def test_accepts_keptn_api_versions(version: str) -> None:
    shipyard = parse_shipyard(doc({"name": "dev"}, version=f"spec.keptn.sh/{version}"))
    assert shipyard.api_version == f"spec.keptn.sh/{version}"
    assert [stage.name for stage in shipyard.stages] == ["dev"]


def test_parses_a_sockshop_shipyard() -> None:
    shipyard = parse_shipyard(SOCKSHOP)
    assert shipyard.name == "shipyard-sockshop"
    assert shipyard.warnings == ()
    assert [stage.name for stage in shipyard.stages] == ["dev", "staging", "production"]
    dev = shipyard.sequence("dev", "delivery")
    assert [task.name for task in dev.tasks] == ["deployment", "test", "evaluation", "release"]
    assert dev.tasks[0].properties == {"deploymentstrategy": "direct"}
    assert dev.tasks[2].properties is None
    assert dev.triggered_on == ()
    staging = shipyard.sequence("staging", "delivery")
    assert staging.triggered_on == (Trigger("dev", "delivery", None),)
    assert staging.triggered_on[0].event == "dev.delivery.finished"
    assert staging.tasks[1].triggered_after == 9000.0
    assert staging.tasks[2].triggered_after == 10.0
    assert staging.tasks[0].triggered_after == 0.0
    rollback = shipyard.sequence("staging", "rollback")
    assert rollback.triggered_on == (Trigger("staging", "delivery", {"result": "fail"}),)
    # A stage without sequences is fine (Keptn integration tests rely on it).
    assert shipyard.stage("production") == Stage("production", ())


def test_kind_and_metadata_are_not_checked() -> None:
    document = {"apiVersion": "spec.keptn.sh/0.2.0", "spec": {"stages": [{"name": "dev"}]}}
    shipyard = parse_shipyard(document)
    assert shipyard.name == ""


def test_duplicate_task_names_are_allowed_and_kept() -> None:
    shipyard = parse_shipyard(
        doc({"name": "dev", "sequences": [{"name": "s", "tasks": [{"name": "t"}, {"name": "t"}]}]})
    )
    assert [task.name for task in shipyard.sequence("dev", "s").tasks] == ["t", "t"]


def test_sequence_without_tasks_parses() -> None:
    # Keptn fails such a sequence when it is triggered, not when the shipyard is stored.
    shipyard = parse_shipyard(doc({"name": "dev", "sequences": [{"name": "empty"}]}))
    assert shipyard.sequence("dev", "empty").tasks == ()


@pytest.mark.parametrize("name", ["dev", "a", "dev2", "hardening-1", "prod-eu-west"])
def test_stage_names_following_the_entity_rule(name: str) -> None:
    assert parse_shipyard(doc({"name": name})).stages[0].name == name


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("10s", 10.0),
        ("1m", 60.0),
        ("2h30m", 9000.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("30", 30.0),
        (45, 45.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_triggered_after_go_durations(raw: object, seconds: float) -> None:
    task: dict[str, Any] = {"name": "t"}
    if raw is not None:
        task["triggeredAfter"] = raw
    shipyard = parse_shipyard(doc({"name": "dev", "sequences": [{"name": "s", "tasks": [task]}]}))
    assert shipyard.sequence("dev", "s").tasks[0].triggered_after == seconds
    assert shipyard.warnings == ()


# ------------------------------------------------------------ implicit evaluation


def test_every_stage_has_an_implicit_evaluation_sequence() -> None:
    shipyard = parse_shipyard(SOCKSHOP)
    for stage in ("dev", "staging", "production"):
        evaluation = shipyard.sequence(stage, "evaluation")
        assert evaluation == Sequence("evaluation", (Task("evaluation"),))


def test_user_defined_evaluation_overrides_the_implicit_one() -> None:
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {"name": "evaluation", "tasks": [{"name": "get-sli"}, {"name": "evaluation"}]}
                ],
            },
            {"name": "prod"},
        )
    )
    assert [t.name for t in shipyard.sequence("dev", "evaluation").tasks] == [
        "get-sli",
        "evaluation",
    ]
    assert [t.name for t in shipyard.sequence("prod", "evaluation").tasks] == ["evaluation"]


def test_unknown_stage_or_sequence() -> None:
    shipyard = parse_shipyard(SOCKSHOP)
    with pytest.raises(UnknownSequence, match="stage 'qa' is not defined"):
        shipyard.sequence("qa", "delivery")
    with pytest.raises(UnknownSequence, match="'remediation' is not defined in stage 'dev'"):
        shipyard.sequence("dev", "remediation")
    # The implicit evaluation needs an existing stage.
    with pytest.raises(UnknownSequence, match="stage 'qa'"):
        shipyard.sequence("qa", "evaluation")


# -------------------------------------------------------------------- error paths


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        ([1, 2], "", "a shipyard is a mapping, got a list"),
        ("text", "", "a shipyard is a mapping, got a string"),
        (None, "", "a shipyard is a mapping, got nothing"),
    ],
)
def test_document_must_be_a_mapping(document: object, path: str, fragment: str) -> None:
    problem = one_problem(document)
    assert (problem.path, problem.message) == (path, fragment)


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        (None, "must be 'spec.keptn.sh/<version>'"),
        ("0.2.4", "must be 'spec.keptn.sh/<version>'"),
        ("keptn.sh/0.2.4", "must be 'spec.keptn.sh/<version>'"),
        (2, "must be 'spec.keptn.sh/<version>'"),
        ("spec.keptn.sh/latest", "does not end in a semantic version"),
        ("spec.keptn.sh/", "does not end in a semantic version"),
        ("spec.keptn.sh/0.1.7", "version must be 0.2 or newer"),
        ("spec.keptn.sh/0", "version must be 0.2 or newer"),
    ],
)
def test_api_version_errors(version: object, fragment: str) -> None:
    document = doc({"name": "dev"})
    if version is None:
        del document["apiVersion"]
    else:
        document["apiVersion"] = version
    problem = one_problem(document)
    assert problem.path == "apiVersion"
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        (None, "spec", "is required and must be a mapping with 'stages'"),
        ([], "spec", "is required"),
        ({}, "spec.stages", "must be a non-empty list of stages"),
        ({"stages": []}, "spec.stages", "must be a non-empty list"),
        ({"stages": {"name": "dev"}}, "spec.stages", "must be a non-empty list"),
    ],
)
def test_spec_and_stage_list_errors(spec: object, path: str, fragment: str) -> None:
    document: dict[str, Any] = {"apiVersion": "spec.keptn.sh/0.2.4"}
    if spec is not None:
        document["spec"] = spec
    problem = one_problem(document)
    assert problem.path == path
    assert fragment in problem.message


STAGE_ERRORS: list[tuple[list[Any], str, str]] = [
    (["dev"], "spec.stages[0]", "a stage is a mapping with 'name' and 'sequences', got a string"),
    ([{"name": "dev"}, {}], "spec.stages[1].name", "every stage needs a non-empty name"),
    ([{"name": ""}], "spec.stages[0].name", "every stage needs a non-empty name"),
    ([{"name": 7}], "spec.stages[0].name", "every stage needs a non-empty name"),
    ([{"name": "Dev"}], "spec.stages[0].name", "must be lowercase letters, digits and dashes"),
    ([{"name": "dev-"}], "spec.stages[0].name", "not end with a dash"),
    ([{"name": "1dev"}], "spec.stages[0].name", "start with a letter"),
    ([{"name": "dev_1"}], "spec.stages[0].name", "lowercase letters"),
    ([{"name": "dev.eu"}], "spec.stages[0].name", "must not contain dots"),
    ([{"name": "dev"}, {"name": "dev"}], "spec.stages[1].name", "stage 'dev' is defined twice"),
    (
        [{"name": "dev", "sequences": "delivery"}],
        "spec.stages[0].sequences",
        "must be a list, got a string",
    ),
    (
        [{"name": "dev", "sequences": {"name": "x"}}],
        "spec.stages[0].sequences",
        "must be a list, got a mapping",
    ),
    (
        [{"name": "dev", "sequences": ["delivery"]}],
        "spec.stages[0].sequences[0]",
        "a sequence is a mapping with 'name' and 'tasks'",
    ),
    (
        [{"name": "dev", "sequences": [{"tasks": []}]}],
        "spec.stages[0].sequences[0].name",
        "every sequence needs a non-empty name",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "a.b"}]}],
        "spec.stages[0].sequences[0].name",
        "sequence name 'a.b' must not contain dots",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s"}, {"name": "s"}]}],
        "spec.stages[0].sequences[1].name",
        "sequence 's' is defined twice in this stage",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "tasks": "deploy"}]}],
        "spec.stages[0].sequences[0].tasks",
        "must be a list, got a string",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "tasks": ["deploy"]}]}],
        "spec.stages[0].sequences[0].tasks[0]",
        "a task is a mapping with 'name', got a string",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "tasks": [{"name": "a"}, {}]}]}],
        "spec.stages[0].sequences[0].tasks[1].name",
        "every task needs a non-empty name",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "tasks": [{"name": "de.ploy"}]}]}],
        "spec.stages[0].sequences[0].tasks[0].name",
        "task name 'de.ploy' must not contain dots",
    ),
    (
        [
            {
                "name": "dev",
                "sequences": [{"name": "s", "tasks": [{"name": "t", "properties": [1]}]}],
            }
        ],
        "spec.stages[0].sequences[0].tasks[0].properties",
        "must be a mapping, got a list",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "triggeredOn": "dev.x.finished"}]}],
        "spec.stages[0].sequences[0].triggeredOn",
        "must be a list, got a string",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "triggeredOn": ["dev.x.finished"]}]}],
        "spec.stages[0].sequences[0].triggeredOn[0]",
        "must be a mapping with 'event'",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "triggeredOn": [{"event": "dev.x"}]}]}],
        "spec.stages[0].sequences[0].triggeredOn[0].event",
        "must read '<stage>.<sequence>.finished', got 'dev.x'",
    ),
    (
        [
            {
                "name": "dev",
                "sequences": [{"name": "s", "triggeredOn": [{"event": "dev.x.triggered"}]}],
            }
        ],
        "spec.stages[0].sequences[0].triggeredOn[0].event",
        "must read",
    ),
    (
        [
            {
                "name": "dev",
                "sequences": [{"name": "s", "triggeredOn": [{"event": "dev..finished"}]}],
            }
        ],
        "spec.stages[0].sequences[0].triggeredOn[0].event",
        "must read",
    ),
    (
        [{"name": "dev", "sequences": [{"name": "s", "triggeredOn": [{}]}]}],
        "spec.stages[0].sequences[0].triggeredOn[0].event",
        "got None",
    ),
    (
        [
            {
                "name": "dev",
                "sequences": [
                    {"name": "s", "triggeredOn": [{"event": "dev.s.finished", "selector": "fail"}]}
                ],
            }
        ],
        "spec.stages[0].sequences[0].triggeredOn[0].selector",
        "must be a mapping with 'match'",
    ),
    (
        [
            {
                "name": "dev",
                "sequences": [
                    {
                        "name": "s",
                        "triggeredOn": [{"event": "dev.s.finished", "selector": {"match": "x"}}],
                    }
                ],
            }
        ],
        "spec.stages[0].sequences[0].triggeredOn[0].selector.match",
        "must be a mapping, got a string",
    ),
]


@pytest.mark.parametrize(("stages", "path", "fragment"), STAGE_ERRORS)
def test_error_paths(stages: list[Any], path: str, fragment: str) -> None:
    document = doc()
    document["spec"]["stages"] = stages
    problem = one_problem(document)
    assert problem.path == path
    assert fragment in problem.message
    assert problem.line is None  # no line map given


def test_every_problem_is_reported_at_once() -> None:
    document = doc(
        {"name": "Dev"},
        {"name": "qa", "sequences": [{"name": "", "tasks": [{"name": "t", "properties": 3}]}]},
        version="spec.keptn.sh/0.1.0",
    )
    found = problems(document)
    assert [p.path for p in found] == [
        "apiVersion",
        "spec.stages[0].name",
        "spec.stages[1].sequences[0].name",
        "spec.stages[1].sequences[0].tasks[0].properties",
    ]


def test_problems_carry_lines_from_the_line_map() -> None:
    lines = {
        "": 1,
        "apiVersion": 1,
        "spec": 4,
        "spec.stages": 5,
        "spec.stages[0]": 6,
        "spec.stages[0].name": 6,
        "spec.stages[0].sequences": 7,
        "spec.stages[0].sequences[0]": 8,
        "spec.stages[0].sequences[0].name": 8,
        "spec.stages[0].sequences[0].tasks": 9,
        "spec.stages[0].sequences[0].tasks[0]": 10,
        "spec.stages[0].sequences[0].tasks[0].name": 10,
    }
    document = doc(
        {"name": "dev", "sequences": [{"name": "s", "tasks": [{"name": "t", "properties": "x"}]}]}
    )
    problem = one_problem(document, lines)
    assert problem.path == "spec.stages[0].sequences[0].tasks[0].properties"
    # The property itself has no line in the map: the nearest enclosing node's line is used.
    assert problem.line == 10
    with pytest.raises(InvalidShipyard) as caught:
        parse_shipyard(document, source="shipyard.yaml", lines=lines)
    assert str(caught.value) == (
        "shipyard.yaml:10: spec.stages[0].sequences[0].tasks[0].properties:"
        " must be a mapping, got a string"
    )
    assert caught.value.source == "shipyard.yaml"

    document = doc({"name": "Dev"})
    assert one_problem(document, lines).line == 6
    document = doc({"name": "dev"}, version="nope")
    assert one_problem(document, lines).line == 1


def test_problem_render() -> None:
    assert Problem("a.b", "bad", 3).render("f.yaml") == "f.yaml:3: a.b: bad"
    assert Problem("a.b", "bad", 3).render() == "line 3: a.b: bad"
    assert Problem("a.b", "bad").render("f.yaml") == "f.yaml: a.b: bad"
    assert Problem("", "bad").render() == "bad"


# ------------------------------------------------------------------------- warnings


def test_a_trigger_naming_no_sequence_is_refused_with_its_path() -> None:
    # Keptn took these silently and they never fired; they can only be typos.
    lines = {
        "spec.stages[0].sequences[0].triggeredOn[0].event": 12,
        "spec.stages[0].sequences[0].triggeredOn[2].event": 14,
    }
    found = problems(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {
                        "name": "s",
                        "triggeredOn": [
                            {"event": "qa.delivery.finished"},
                            {"event": "dev.evaluation.finished"},  # the implicit one exists
                            {"event": "dev.nope.finished"},
                        ],
                        "tasks": [{"name": "t"}],
                    }
                ],
            }
        ),
        lines=lines,
    )
    assert found == [
        Problem(
            "spec.stages[0].sequences[0].triggeredOn[0].event",
            "'qa.delivery.finished' can never fire: stage 'qa' is not defined in the shipyard",
            12,
        ),
        Problem(
            "spec.stages[0].sequences[0].triggeredOn[2].event",
            "'dev.nope.finished' can never fire: sequence 'nope' is not defined in stage 'dev'",
            14,
        ),
    ]


@pytest.mark.parametrize("raw", ["ten minutes", "10x", "-5s", "-3", "1.2.3s"])
def test_bad_triggered_after_is_a_warning_and_no_delay(raw: str) -> None:
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {
                        "name": "s",
                        "tasks": [
                            {"name": "ok", "triggeredAfter": "5s"},
                            {"name": "t", "triggeredAfter": raw},
                        ],
                    }
                ],
            }
        ),
        lines={"spec.stages[0].sequences[0].tasks[1].triggeredAfter": 9},
    )
    tasks = shipyard.sequence("dev", "s").tasks
    assert tasks[0].triggered_after == 5.0
    assert tasks[1].triggered_after == 0.0
    assert len(shipyard.warnings) == 1
    assert shipyard.warnings[0].startswith(
        "line 9: spec.stages[0].sequences[0].tasks[1].triggeredAfter: "
    )
    assert "without delay" in shipyard.warnings[0]


def test_warnings_do_not_affect_equality() -> None:
    a = Shipyard("spec.keptn.sh/0.2.4", "x", (Stage("dev"),), warnings=("w",))
    b = Shipyard("spec.keptn.sh/0.2.4", "x", (Stage("dev"),))
    assert a == b


# ----------------------------------------------------------- selectors and chaining


@pytest.mark.parametrize(
    ("match", "result", "last_task", "fires"),
    [
        # No selector: pass or warning (Keptn's code; the docs said only pass).
        (None, "pass", "release", True),
        (None, "warning", "release", True),
        (None, "fail", "release", False),
        # Literal comparison of "result".
        ({"result": "fail"}, "fail", "release", True),
        ({"result": "fail"}, "pass", "release", False),
        ({"result": "pass"}, "warning", "release", False),
        # The docs' "failed" never matches a real result.
        ({"result": "failed"}, "fail", "release", False),
        # "<lastTask>.result" only for the task that ended the sequence.
        ({"evaluation.result": "fail"}, "fail", "evaluation", True),
        ({"evaluation.result": "fail"}, "fail", "deployment", False),
        ({"deployment.result": "fail"}, "fail", "evaluation", False),
        # Other keys are ignored; an empty match never fires.
        ({"status": "errored"}, "fail", "release", False),
        ({}, "pass", "release", False),
    ],
)
def test_trigger_fires_on(
    match: dict[str, str] | None, result: str, last_task: str, fires: bool
) -> None:
    assert Trigger("dev", "delivery", match).fires_on(result, last_task) is fires


def chaining(*targets: tuple[str, str, dict[str, str] | None]) -> Shipyard:
    """A shipyard whose sequences are triggered on dev.artifact-delivery.finished."""
    stages: dict[str, list[dict[str, Any]]] = {
        "dev": [
            {"name": "artifact-delivery", "tasks": [{"name": "deployment"}, {"name": "evaluation"}]}
        ]
    }
    for stage, sequence, match in targets:
        trigger: dict[str, Any] = {"event": "dev.artifact-delivery.finished"}
        if match is not None:
            trigger["selector"] = {"match": match}
        stages.setdefault(stage, []).append(
            {"name": sequence, "triggeredOn": [trigger], "tasks": [{"name": "deployment"}]}
        )
    return parse_shipyard(doc(*({"name": k, "sequences": v} for k, v in stages.items())))


def names(fired: list[tuple[Stage, Sequence]]) -> list[str]:
    return [f"{stage.name}.{sequence.name}" for stage, sequence in fired]


def test_get_task_sequences_by_trigger_vector_1() -> None:
    shipyard = chaining(("hardening", "artifact-delivery", None))
    assert names(shipyard.triggered_by("dev", "artifact-delivery", "pass", "evaluation")) == [
        "hardening.artifact-delivery"
    ]


def test_get_task_sequences_by_trigger_vector_2() -> None:
    shipyard = chaining(
        ("hardening", "artifact-delivery", None),
        ("hardening", "artifact-delivery-2", {"result": "fail"}),
        ("production", "artifact-delivery", None),
        ("production", "artifact-delivery-2", {"result": "fail"}),
    )
    assert names(shipyard.triggered_by("dev", "artifact-delivery", "fail", "evaluation")) == [
        "hardening.artifact-delivery-2",
        "production.artifact-delivery-2",
    ]
    assert names(shipyard.triggered_by("dev", "artifact-delivery", "pass", "evaluation")) == [
        "hardening.artifact-delivery",
        "production.artifact-delivery",
    ]


def test_get_task_sequences_by_trigger_vector_3() -> None:
    shipyard = chaining(
        ("hardening", "artifact-delivery", None),
        ("hardening", "artifact-delivery-2", {"evaluation.result": "fail"}),
        ("production", "artifact-delivery", None),
        ("production", "artifact-delivery-2", {"deployment.result": "fail"}),
    )
    assert names(shipyard.triggered_by("dev", "artifact-delivery", "fail", "evaluation")) == [
        "hardening.artifact-delivery-2"
    ]


def test_triggered_by_only_matches_the_named_sequence_and_fires_once() -> None:
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {"name": "delivery", "tasks": [{"name": "t"}]},
                    {"name": "other", "tasks": [{"name": "t"}]},
                ],
            },
            {
                "name": "prod",
                "sequences": [
                    {
                        "name": "delivery",
                        # Two triggers that both match: the sequence is still started once.
                        "triggeredOn": [
                            {"event": "dev.delivery.finished"},
                            {
                                "event": "dev.delivery.finished",
                                "selector": {"match": {"result": "pass"}},
                            },
                        ],
                        "tasks": [{"name": "t"}],
                    }
                ],
            },
        )
    )
    assert names(shipyard.triggered_by("dev", "delivery", "pass", "t")) == ["prod.delivery"]
    assert shipyard.triggered_by("dev", "other", "pass", "t") == []
    assert shipyard.triggered_by("prod", "delivery", "pass", "t") == []


def test_sequence_loop_on_its_own_finished_event() -> None:
    # __main_SequenceLoop: delivery re-triggers itself when mytask fails.
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {
                        "name": "delivery",
                        "triggeredOn": [
                            {
                                "event": "dev.delivery.finished",
                                "selector": {"match": {"mytask.result": "fail"}},
                            }
                        ],
                        "tasks": [{"name": "mytask"}, {"name": "othertask"}],
                    }
                ],
            }
        )
    )
    assert names(shipyard.triggered_by("dev", "delivery", "fail", "mytask")) == ["dev.delivery"]
    assert shipyard.triggered_by("dev", "delivery", "fail", "othertask") == []
    # Valid, as in Keptn, but a loop nobody declared is worth a warning.
    (warning,) = shipyard.warnings
    assert warning.startswith("spec.stages[0].sequences[0].triggeredOn[0].event: ")
    assert "dev.delivery → dev.delivery" in warning


def test_a_loop_declared_with_loop_true_is_no_warning() -> None:
    # Needs the parser to read `loop` on a sequence.
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {
                        "name": "delivery",
                        "loop": True,
                        "triggeredOn": [
                            {
                                "event": "dev.delivery.finished",
                                "selector": {"match": {"mytask.result": "fail"}},
                            }
                        ],
                        "tasks": [{"name": "mytask"}],
                    }
                ],
            }
        )
    )
    assert shipyard.warnings == ()


def test_notify_success_and_failure() -> None:
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {"name": "delivery", "tasks": [{"name": "t"}]},
                    {
                        "name": "notify-success",
                        "triggeredOn": [{"event": "dev.delivery.finished"}],
                        "tasks": [{"name": "n"}],
                    },
                    {
                        "name": "notify-failure",
                        "triggeredOn": [
                            {
                                "event": "dev.delivery.finished",
                                "selector": {"match": {"result": "fail"}},
                            }
                        ],
                        "tasks": [{"name": "n"}],
                    },
                ],
            }
        )
    )
    assert names(shipyard.triggered_by("dev", "delivery", "pass", "t")) == ["dev.notify-success"]
    assert names(shipyard.triggered_by("dev", "delivery", "warning", "t")) == ["dev.notify-success"]
    assert names(shipyard.triggered_by("dev", "delivery", "fail", "t")) == ["dev.notify-failure"]


def test_selector_values_are_compared_as_strings() -> None:
    shipyard = parse_shipyard(
        doc(
            {
                "name": "dev",
                "sequences": [
                    {"name": "s", "tasks": [{"name": "t"}]},
                    {
                        "name": "n",
                        "triggeredOn": [
                            {"event": "dev.s.finished", "selector": {"match": {"result": "pass"}}},
                        ],
                        "tasks": [{"name": "t"}],
                    },
                    {
                        "name": "m",
                        "triggeredOn": [
                            {
                                "event": "dev.s.finished",
                                "selector": {},
                            },  # no match: like no selector
                        ],
                        "tasks": [{"name": "t"}],
                    },
                ],
            }
        )
    )
    assert shipyard.sequence("dev", "n").triggered_on[0].match == {"result": "pass"}
    assert shipyard.sequence("dev", "m").triggered_on[0].match is None


def test_missing_names_are_not_reported_as_duplicates() -> None:
    document = doc({}, {}, {"name": "dev", "sequences": [{}, {}]})
    assert [(p.path, p.message) for p in problems(document)] == [
        ("spec.stages[0].name", "every stage needs a non-empty name"),
        ("spec.stages[1].name", "every stage needs a non-empty name"),
        ("spec.stages[2].sequences[0].name", "every sequence needs a non-empty name"),
        ("spec.stages[2].sequences[1].name", "every sequence needs a non-empty name"),
    ]


# ------------------------------------------------------------------ inline quality gates


def gate(task: str, properties: dict[str, Any]) -> dict[str, Any]:
    return doc(
        {
            "name": "dev",
            "sequences": [{"name": "gate", "tasks": [{"name": task, "properties": properties}]}],
        }
    )


GATE_PATH = "spec.stages[0].sequences[0].tasks[0].properties"


@pytest.mark.parametrize("task", ["evaluation", "evaluate"])
def test_an_inline_gate_is_checked_with_field_paths(task: str) -> None:
    found = problems(
        gate(
            task,
            {
                "indicators": {"stock": {"source": "http"}},
                "objectives": [{"sli": "stock", "pass": [{"criteria": ["<<5"]}]}],
                "total_score": {"pass": "ninety"},
            },
        )
    )

    paths = sorted(problem.path for problem in found)
    assert paths == [
        f"{GATE_PATH}.indicators.stock.url",
        f"{GATE_PATH}.objectives[0].pass[0].criteria[0]",
        f"{GATE_PATH}.total_score.pass",
    ]


def test_a_good_inline_gate_and_other_tasks_properties_pass() -> None:
    shipyard = parse_shipyard(
        gate(
            "evaluate",
            {
                "indicators": {"gps": "extract-metadata.hasGps"},
                "objectives": [{"sli": "gps", "pass": [{"criteria": ["=1"]}]}],
                "total_score": {"pass": "90%"},
            },
        )
    )
    # Properties of other tasks are theirs to read: nothing is checked.
    parse_shipyard(gate("deployment", {"objectives": "anything", "indicators": 3}))

    assert shipyard.stages[0].sequences[0].tasks[0].properties is not None
