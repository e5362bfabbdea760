from __future__ import annotations

import argparse
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane import cli
from controlplane.adapters.kubernetes import assembly
from controlplane.adapters.kubernetes.assembly import Verdict, assemble, managed_by_operator
from tests.unit.adapters.kubernetes.kit import resource

DEV = {"project": "demo", "stage": "dev"}


def stages(result: assembly.Assembly, project: str = "demo") -> list[tuple[str, list[str]]]:
    document: Any = result.shipyards[project]
    return [
        (stage["name"], [sequence["name"] for sequence in stage["sequences"]])
        for stage in document["spec"]["stages"]
    ]


def verdict(result: assembly.Assembly, name: str, namespace: str = "default") -> Verdict:
    return result.verdicts[namespace, name]


# ---------------------------------------------------------------------- what validate says

_PROBLEM_LINE = re.compile(r"^.*?:\d+: (?P<path>[^:]+): (?P<message>.*)$")
_WARNING_LINE = re.compile(r"^.*?: warning: line \d+: (?P<path>[^:]+): (?P<message>.*)$")


def validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """The problem and warning messages ``controlplane validate`` prints for ``document``."""
    path = tmp_path / "shipyard.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    capsys.readouterr()
    cli.run_validate(argparse.Namespace(files=[str(path)]))
    problems: list[str] = []
    warnings: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        if warning := _WARNING_LINE.match(line):
            warnings.append(warning["message"])
        elif problem := _PROBLEM_LINE.match(line):
            problems.append(problem["message"])
    return problems, warnings


def file_for(*sequences: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """The shipyard a person would write by hand for these (stage, sequence) pairs."""
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for stage, sequence in sequences:
        by_stage.setdefault(stage, []).append(sequence)
    return {
        "apiVersion": "spec.keptn.sh/0.2.4",
        "kind": "Shipyard",
        "metadata": {"name": "demo"},
        "spec": {"stages": [{"name": name, "sequences": seqs} for name, seqs in by_stage.items()]},
    }


def messages(found: Verdict) -> list[str]:
    """The problems without the resource field in front."""
    return [problem.split(": ", 1)[1] for problem in found.problems]


# ---------------------------------------------------------------------- order


def test_stages_follow_their_triggers_and_sequences_go_by_name() -> None:
    resources = [
        resource(
            "rollout", {**DEV, "stage": "prod", "triggeredOn": [{"event": "staging.ship.finished"}]}
        ),
        resource(
            "ship", {**DEV, "stage": "staging", "triggeredOn": [{"event": "dev.ship.finished"}]}
        ),
        resource("ship-dev", {**DEV, "name": "ship"}),
        resource("b-first", {**DEV, "name": "beta"}),
        resource("a-second", {**DEV, "name": "alpha"}),
    ]
    result = assemble(resources)
    assert stages(result) == [
        ("dev", ["alpha", "beta", "ship"]),
        ("staging", ["ship"]),
        ("prod", ["rollout"]),
    ]


def test_unlinked_stages_are_ordered_by_name() -> None:
    resources = [resource(name, {**DEV, "stage": name}) for name in ("zeta", "alpha", "beta")]
    assert [name for name, _ in stages(assemble(resources))] == ["alpha", "beta", "zeta"]


def test_a_loop_between_stages_is_entered_at_its_first_name_after_the_free_stages() -> None:
    resources = [
        resource("z", {**DEV, "stage": "zeta"}),
        resource("y", {**DEV, "stage": "beta", "triggeredOn": [{"event": "alpha.x.finished"}]}),
        resource("x", {**DEV, "stage": "alpha", "triggeredOn": [{"event": "beta.y.finished"}]}),
        resource("w", {**DEV, "stage": "gamma", "triggeredOn": [{"event": "beta.y.finished"}]}),
    ]
    result = assemble(resources)
    assert [name for name, _ in stages(result)] == ["zeta", "alpha", "beta", "gamma"]


def test_the_order_of_the_listing_does_not_matter() -> None:
    resources = [
        resource(f"seq-{index}", {**DEV, "stage": f"stage-{index % 3}", "tasks": [{"name": "t"}]})
        for index in range(9)
    ]
    expected = assemble(resources).shipyards
    shuffled = list(resources)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert assemble(shuffled).shipyards == expected


def test_the_shipyard_is_keptns_format_with_the_operators_mark() -> None:
    result = assemble([resource("hello", {**DEV, "tasks": [{"name": "greet"}]})])
    document = result.shipyards["demo"]
    assert document == {
        "apiVersion": "spec.keptn.sh/0.2.4",
        "kind": "Shipyard",
        "metadata": {
            "name": "demo",
            "labels": {"app.kubernetes.io/managed-by": "controlplane-operator"},
        },
        "spec": {
            "stages": [
                {"name": "dev", "sequences": [{"name": "hello", "tasks": [{"name": "greet"}]}]}
            ]
        },
    }
    assert managed_by_operator(document)
    assert not managed_by_operator({"metadata": {"name": "demo"}})
    assert not managed_by_operator("text")


# ---------------------------------------------------------------------- what is carried


def test_properties_delays_and_selectors_are_carried() -> None:
    spec = {
        **DEV,
        "stage": "staging",
        "name": "delivery",
        "triggeredOn": [
            {"event": "dev.delivery.finished", "selector": {"match": {"result": "fail"}}}
        ],
        "tasks": [
            {
                "name": "deployment",
                "properties": {"strategy": {"kind": "blue_green", "steps": [1, 2]}},
            },
            {"name": "evaluation", "triggeredAfter": "2m"},
        ],
    }
    result = assemble(
        [resource("staging-delivery", spec), resource("dev-delivery", {**DEV, "name": "delivery"})]
    )
    staging = result.shipyards["demo"]["spec"]["stages"][1]
    assert staging == {
        "name": "staging",
        "sequences": [
            {
                "name": "delivery",
                "triggeredOn": [
                    {"event": "dev.delivery.finished", "selector": {"match": {"result": "fail"}}}
                ],
                "tasks": [
                    {
                        "name": "deployment",
                        "properties": {"strategy": {"kind": "blue_green", "steps": [1, 2]}},
                    },
                    {"name": "evaluation", "triggeredAfter": "2m"},
                ],
            }
        ],
    }
    assert all(v.valid for v in result.verdicts.values())


def test_the_sequence_name_defaults_to_the_resource_name() -> None:
    result = assemble(
        [resource("from-metadata", DEV), resource("other", {**DEV, "name": "from-spec"})]
    )
    assert stages(result) == [("dev", ["from-metadata", "from-spec"])]


def test_resources_being_deleted_are_left_out() -> None:
    result = assemble([resource("gone", DEV, deleting=True), resource("kept", DEV)])
    assert stages(result) == [("dev", ["kept"])]
    assert ("default", "gone") not in result.verdicts


def test_a_project_without_resources_has_no_shipyard() -> None:
    assert assemble([resource("gone", DEV, deleting=True)]).shipyards == {}


def test_projects_are_assembled_apart() -> None:
    result = assemble([resource("a", DEV), resource("b", {**DEV, "project": "other"})])
    assert sorted(result.shipyards) == ["demo", "other"]
    assert stages(result, "other") == [("dev", ["b"])]


# ---------------------------------------------------------------------- duplicates


def test_the_younger_of_two_resources_declaring_one_sequence_is_invalid() -> None:
    older = resource(
        "older", {**DEV, "name": "ship", "tasks": [{"name": "old"}]}, created="2026-01-01T00:00:00Z"
    )
    younger = resource(
        "younger",
        {**DEV, "name": "ship", "tasks": [{"name": "new"}]},
        created="2026-01-02T00:00:00Z",
    )
    result = assemble([younger, older])
    assert verdict(result, "older").valid
    assert verdict(result, "younger").problems == (
        "spec.name: sequence 'ship' is defined twice in this stage;"
        " Sequence default/older declared it first",
    )
    assert verdict(result, "younger").applied is None
    assert result.shipyards["demo"]["spec"]["stages"][0]["sequences"] == [
        {"name": "ship", "tasks": [{"name": "old"}]}
    ]


def test_same_age_duplicates_are_decided_by_namespace_then_name() -> None:
    first = resource("b", {**DEV, "name": "ship"}, namespace="alpha")
    second = resource("a", {**DEV, "name": "ship"}, namespace="beta")
    result = assemble([second, first])
    assert verdict(result, "b", "alpha").valid
    assert "Sequence alpha/b declared it first" in verdict(result, "a", "beta").problems[0]


def test_the_same_sequence_name_in_another_stage_or_project_is_no_duplicate() -> None:
    result = assemble(
        [
            resource("a", {**DEV, "name": "ship"}),
            resource("b", {**DEV, "name": "ship", "stage": "prod"}),
            resource("c", {**DEV, "name": "ship", "project": "other"}),
        ]
    )
    assert all(v.valid for v in result.verdicts.values())


# ---------------------------------------------------------------------- triggeredOn targets


def test_a_trigger_naming_a_missing_sequence_makes_the_resource_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        **DEV,
        "stage": "prod",
        "triggeredOn": [{"event": "staging.ship.finished"}],
        "tasks": [{"name": "t"}],
    }
    result = assemble([resource("ok", DEV), resource("waits", spec)])
    found = verdict(result, "waits")
    assert found.problems == (
        "spec.triggeredOn[0].event: 'staging.ship.finished' can never fire: stage 'staging' is"
        " not defined in the shipyard",
    )
    assert found.applied is None
    assert stages(result) == [("dev", ["ok"])]
    refused, _ = validate(
        tmp_path,
        capsys,
        file_for(
            ("dev", {"name": "ok"}),
            ("prod", {"name": "waits", **{k: spec[k] for k in ("triggeredOn", "tasks")}}),
        ),
    )
    assert messages(found) == refused


def test_a_trigger_on_the_implicit_evaluation_sequence_is_fine() -> None:
    result = assemble(
        [
            resource("a", DEV),
            resource(
                "b", {**DEV, "stage": "prod", "triggeredOn": [{"event": "dev.evaluation.finished"}]}
            ),
        ]
    )
    assert all(v.valid for v in result.verdicts.values())


def test_a_resource_triggered_by_a_never_valid_one_is_invalid_too() -> None:
    broken = resource("broken", {**DEV, "tasks": [{"name": "a.b"}]})
    follower = resource(
        "follower", {**DEV, "stage": "prod", "triggeredOn": [{"event": "dev.broken.finished"}]}
    )
    result = assemble([broken, follower])
    assert not verdict(result, "broken").valid
    assert verdict(result, "follower").problems == (
        "spec.triggeredOn[0].event: 'dev.broken.finished' can never fire: stage 'dev' is not"
        " defined in the shipyard",
    )
    assert result.shipyards == {}


def test_a_follower_of_a_broken_resource_with_a_last_valid_spec_stays_valid() -> None:
    last_valid = {**DEV, "name": "broken", "tasks": [{"name": "fine"}]}
    broken = resource("broken", {**DEV, "tasks": [{"name": "a.b"}]}, last_valid=last_valid)
    follower = resource(
        "follower", {**DEV, "stage": "prod", "triggeredOn": [{"event": "dev.broken.finished"}]}
    )
    result = assemble([broken, follower])
    assert verdict(result, "follower").valid
    assert stages(result) == [("dev", ["broken"]), ("prod", ["follower"])]


# ---------------------------------------------------------------------- invalid specs


INVALID_SPECS: dict[str, dict[str, Any]] = {
    "stage name": {"stage": "Dev"},
    "task without a name": {"tasks": [{"properties": {"a": 1}}]},
    "task name with dots": {"tasks": [{"name": "deploy.now"}]},
    "tasks not a list": {"tasks": "deployment"},
    "task not a mapping": {"tasks": ["deployment"]},
    "properties not a mapping": {"tasks": [{"name": "t", "properties": ["x"]}]},
    "malformed trigger": {"triggeredOn": [{"event": "dev.finished"}]},
    "selector not a mapping": {"triggeredOn": [{"event": "dev.other.finished", "selector": "x"}]},
    "sequence name with a space": {"name": "my sequence"},
}


@pytest.mark.parametrize("case", sorted(INVALID_SPECS))
def test_problems_carry_validates_messages(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = INVALID_SPECS[case]
    spec = {**DEV, "name": "seq", **changes}
    found = verdict(assemble([resource("seq", spec)]), "seq")
    sequence = {key: spec[key] for key in ("name", "tasks", "triggeredOn") if key in spec}
    problems, _ = validate(tmp_path, capsys, file_for((spec["stage"], sequence)))
    assert problems, "validate should refuse this too"
    assert messages(found) == problems
    assert found.applied is None


def test_problem_fields_are_the_resources_own() -> None:
    found = verdict(
        assemble([resource("seq", {**DEV, "tasks": [{"name": "ok"}, {"name": "x.y"}]})]), "seq"
    )
    assert found.problems == (
        "spec.tasks[1].name: task name 'x.y' must not contain dots (they separate event types)",
    )
    stage = verdict(assemble([resource("seq", {**DEV, "stage": "Dev"})]), "seq")
    assert stage.problems[0].startswith("spec.stage: stage name 'Dev' must be lowercase")
    named = verdict(assemble([resource("a.b", DEV)]), "a.b")
    assert named.problems[0].startswith("metadata.name: sequence name 'a.b' must not contain dots")


def test_a_spec_without_project_or_stage_says_so() -> None:
    found = verdict(assemble([resource("seq", {"tasks": []})]), "seq")
    assert found.problems == (
        "spec.project: every Sequence needs the name of its project",
        "spec.stage: every stage needs a non-empty name",
    )
    bad = verdict(assemble([resource("seq", {"project": "Demo", "stage": "dev"})]), "seq")
    assert bad.problems[0].startswith("spec.project: project name 'Demo' must be 1 to 200")


def test_an_unparsable_delay_is_a_warning_as_in_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {**DEV, "tasks": [{"name": "t", "triggeredAfter": "soon"}]}
    found = verdict(assemble([resource("seq", spec)]), "seq")
    assert found.valid
    _, warnings = validate(
        tmp_path, capsys, file_for(("dev", {"name": "seq", "tasks": spec["tasks"]}))
    )
    assert [w.split(": ", 1)[1] for w in found.warnings] == warnings
    assert found.warnings[0].startswith("spec.tasks[0].triggeredAfter: ")


# ---------------------------------------------------------------------- the last valid spec


def test_an_invalid_update_keeps_the_last_valid_spec_running() -> None:
    last_valid = {**DEV, "name": "seq", "tasks": [{"name": "deploy"}]}
    current = {**DEV, "tasks": [{"name": "deploy"}, {"name": "bad.name"}]}
    result = assemble([resource("seq", current, last_valid=last_valid)])
    found = verdict(result, "seq")
    assert not found.valid
    assert found.applied is not None
    assert found.applied.as_spec() == last_valid
    assert result.shipyards["demo"]["spec"]["stages"][0]["sequences"] == [
        {"name": "seq", "tasks": [{"name": "deploy"}]}
    ]


def test_a_valid_spec_wins_over_the_last_valid_one() -> None:
    last_valid = {**DEV, "name": "seq", "tasks": [{"name": "old"}]}
    result = assemble([resource("seq", {**DEV, "tasks": [{"name": "new"}]}, last_valid=last_valid)])
    found = verdict(result, "seq")
    assert found.valid
    assert found.applied is not None
    assert found.applied.entry["tasks"] == [{"name": "new"}]


def test_moving_to_another_project_leaves_the_old_one() -> None:
    last_valid = {**DEV, "project": "old", "name": "seq"}
    result = assemble([resource("seq", {**DEV, "project": "new"}, last_valid=last_valid)])
    assert sorted(result.shipyards) == ["new"]


def test_an_invalid_move_keeps_the_sequence_in_the_old_project() -> None:
    last_valid = {**DEV, "project": "old", "name": "seq"}
    current = {**DEV, "project": "new", "tasks": "nope"}
    result = assemble([resource("seq", current, last_valid=last_valid)])
    assert sorted(result.shipyards) == ["old"]
    assert not verdict(result, "seq").valid


def test_a_last_valid_spec_that_now_collides_is_dropped() -> None:
    older = resource("older", {**DEV, "name": "ship"}, created="2026-01-01T00:00:00Z")
    younger = resource(
        "younger",
        {**DEV, "name": "x.y"},
        created="2026-01-02T00:00:00Z",
        last_valid={**DEV, "name": "ship"},
    )
    result = assemble([older, younger])
    found = verdict(result, "younger")
    assert found.problems[0].startswith("spec.name: sequence name 'x.y' must not contain dots")
    assert found.applied is None
    assert stages(result) == [("dev", ["ship"])]


def test_an_annotation_that_is_not_json_is_ignored() -> None:
    item = resource("seq", DEV)
    assert item.last_valid is None
    from tests.unit.adapters.kubernetes.kit import body

    raw = body("seq", DEV)
    raw["metadata"]["annotations"] = {assembly.LAST_VALID_ANNOTATION: "{not json"}
    assert assembly.SequenceResource.from_body(raw).last_valid is None


def test_from_body_reads_what_the_operator_needs() -> None:
    item = resource(
        "seq",
        {**DEV, "project": "new"},
        generation=4,
        last_valid={**DEV, "project": "old"},
        status={"project": "older"},
    )
    assert item.key == ("default", "seq")
    assert item.generation == 4
    assert item.projects() == {"new", "old", "older"}
