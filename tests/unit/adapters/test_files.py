from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controlplane.adapters import files
from controlplane.adapters.files import LoadedFile, YamlShipyardReader, load_with_lines
from controlplane.application.ports import ShipyardReader
from controlplane.domain.errors import InvalidShipyard, Problem

READER = YamlShipyardReader()

VALID = textwrap.dedent("""\
    # A comment first, so that line numbers are not trivially the index.
    apiVersion: spec.keptn.sh/0.2.4
    kind: Shipyard
    metadata:
      name: demo
    spec:
      stages:
        - name: dev
          sequences:
            - name: delivery
              tasks:
                - name: deployment
                  properties:
                    deploymentstrategy: direct
                - name: test
                  triggeredAfter: 10s
            - name: rollback
              triggeredOn:
                - event: dev.delivery.finished
                  selector:
                    match:
                      result: fail
              tasks:
                - name: rollback
        - name: prod
    """)


def problems(text: str, source: str = "demo.yaml") -> list[Problem]:
    with pytest.raises(InvalidShipyard) as caught:
        READER.read(text, source)
    assert caught.value.source == source
    return list(caught.value.problems)


def test_reads_a_valid_shipyard() -> None:
    shipyard = READER.read(VALID, "demo.yaml")
    assert shipyard.name == "demo"
    assert [stage.name for stage in shipyard.stages] == ["dev", "prod"]
    delivery = shipyard.sequence("dev", "delivery")
    assert [task.name for task in delivery.tasks] == ["deployment", "test"]
    assert delivery.tasks[0].properties == {"deploymentstrategy": "direct"}
    assert delivery.tasks[1].triggered_after == 10.0
    assert shipyard.sequence("dev", "rollback").triggered_on[0].match == {"result": "fail"}
    assert shipyard.warnings == ()


def test_satisfies_the_port() -> None:
    reader: ShipyardReader = READER
    assert reader.read(VALID, "x.yaml").stages[0].name == "dev"


def test_line_map_uses_the_domain_paths() -> None:
    _, lines = load_with_lines(VALID)
    assert lines["apiVersion"] == 2
    assert lines["metadata.name"] == 5
    assert lines["spec"] == 6
    assert lines["spec.stages"] == 7
    assert lines["spec.stages[0]"] == 8
    assert lines["spec.stages[0].name"] == 8
    assert lines["spec.stages[0].sequences[0].name"] == 10
    assert lines["spec.stages[0].sequences[0].tasks[1]"] == 15
    assert lines["spec.stages[0].sequences[0].tasks[1].triggeredAfter"] == 16
    assert lines["spec.stages[0].sequences[0].tasks[0].properties.deploymentstrategy"] == 14
    assert lines["spec.stages[0].sequences[1].triggeredOn[0].event"] == 19
    assert lines["spec.stages[0].sequences[1].triggeredOn[0].selector.match.result"] == 22
    assert lines["spec.stages[1].name"] == 25
    assert lines[""] == 2


def test_errors_deep_in_the_tree_have_their_line() -> None:
    text = (
        VALID.replace("- name: test\n", "- name: te.st\n")
        .replace("event: dev.delivery.finished", "event: dev.delivery")
        .replace("- name: prod", "- name: Prod")
    )
    found = problems(text)
    assert [(p.path, p.line) for p in found] == [
        ("spec.stages[0].sequences[0].tasks[1].name", 15),
        ("spec.stages[0].sequences[1].triggeredOn[0].event", 19),
        ("spec.stages[1].name", 25),
    ]
    with pytest.raises(InvalidShipyard) as caught:
        READER.read(text, "demo.yaml")
    message = str(caught.value)
    assert "demo.yaml:15: spec.stages[0].sequences[0].tasks[1].name: task name 'te.st'" in message
    assert "demo.yaml:25: spec.stages[1].name:" in message


def test_a_missing_field_points_at_its_parent() -> None:
    text = VALID.replace("- name: rollback\n          triggeredOn:", "- triggeredOn:")
    [problem] = problems(text)
    assert problem.path == "spec.stages[0].sequences[1].name"
    assert problem.line == 17  # the sequence item that lacks a name


def test_wrong_type_is_reported_at_the_key() -> None:
    text = VALID.replace(
        "properties:\n                deploymentstrategy: direct", "properties: direct"
    )
    [problem] = problems(text)
    assert problem.path == "spec.stages[0].sequences[0].tasks[0].properties"
    assert problem.line == 13
    assert "must be a mapping, got a string" in problem.message


def test_api_version_line() -> None:
    [problem] = problems(VALID.replace("spec.keptn.sh/0.2.4", "spec.keptn.sh/0.1.7"))
    assert (problem.path, problem.line) == ("apiVersion", 2)


def test_warnings_carry_lines() -> None:
    # rollback starting itself is a loop nobody declared: a warning at its trigger.
    text = VALID.replace("triggeredAfter: 10s", "triggeredAfter: soon").replace(
        "event: dev.delivery.finished", "event: dev.rollback.finished"
    )
    shipyard = READER.read(text, "demo.yaml")
    assert shipyard.sequence("dev", "delivery").tasks[1].triggered_after == 0.0
    assert len(shipyard.warnings) == 2
    assert any(
        w.startswith("line 16: spec.stages[0].sequences[0].tasks[1].triggeredAfter")
        for w in shipyard.warnings
    )
    assert any(
        w.startswith("line 19: spec.stages[0].sequences[1].triggeredOn[0].event")
        for w in shipyard.warnings
    )


def test_a_trigger_naming_no_sequence_is_refused_at_its_line() -> None:
    [problem] = problems(VALID.replace("event: dev.delivery.finished", "event: qa.x.finished"))
    assert (problem.path, problem.line) == ("spec.stages[0].sequences[1].triggeredOn[0].event", 19)
    assert "stage 'qa' is not defined" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("apiVersion: spec.keptn.sh/0.2.4\nspec:\n  stages: [dev\n", 4, "expected ',' or ']'"),
        ("apiVersion: spec.keptn.sh/0.2.4\nspec: a: b\n", 2, "mapping values are not allowed"),
        ("apiVersion: x\nspec:\n  stages:\n    - name: dev\n\t- name: prod\n", 5, "'\\t'"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("apiVersion: 'unterminated\n", 2, "found unexpected end of stream"),
        ("a: 1\na: [1, 2\n", 3, "expected ',' or ']'"),
        ("x: !!python/object/apply:os.system ['echo hi']\n", 1, "could not determine"),
        ("a: &x [*x]\n", 1, "recursive data is not allowed"),
        ("a: *nowhere\n", 1, "found undefined alias 'nowhere'"),
    ],
)
def test_yaml_errors_become_invalid_shipyard_with_a_line(
    text: str, line: int, fragment: str
) -> None:
    [problem] = problems(text)
    assert problem.line == line
    assert fragment in problem.message
    with pytest.raises(InvalidShipyard, match=rf"^demo\.yaml:{line}: "):
        READER.read(text, "demo.yaml")


def test_safe_loading_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"x: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(InvalidShipyard):
        READER.read(text, "evil.yaml")
    assert not marker.exists()


def test_empty_or_non_mapping_document() -> None:
    [problem] = problems("")
    assert problem.message == "a shipyard is a mapping, got nothing"
    [problem] = problems("# only a comment\n- a\n- b\n")
    assert (problem.path, problem.line) == ("", 2)
    assert "got a list" in problem.message


def test_alias_expansion_is_bounded() -> None:
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)
    ]
    [problem] = problems("\n".join(levels) + "\n")
    assert "expands to more than" in problem.message


def test_deep_nesting_is_refused() -> None:
    [problem] = problems("a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested too deeply" in problem.message


def test_anchors_and_merge_keys() -> None:
    text = textwrap.dedent("""\
        apiVersion: spec.keptn.sh/0.2.4
        x-task: &slow
          triggeredAfter: 5m
        spec:
          stages:
            - name: dev
              sequences:
                - name: s
                  tasks:
                    - <<: *slow
                      name: wait
                    - <<: *slow
                      name: bad name.
        """)
    [problem] = problems(text)
    assert (problem.path, problem.line) == ("spec.stages[0].sequences[0].tasks[1].name", 13)
    _, lines = load_with_lines(text.replace("bad name.", "ok"))
    # A merged key has the line where it is written (the anchor).
    assert lines["spec.stages[0].sequences[0].tasks[0].triggeredAfter"] == 3
    assert lines["spec.stages[0].sequences[0].tasks[0].name"] == 11
    shipyard = READER.read(text.replace("bad name.", "ok"), "a.yaml")
    assert [t.triggered_after for t in shipyard.sequence("dev", "s").tasks] == [300.0, 300.0]


def test_duplicate_keys_last_one_wins_with_its_line() -> None:
    text = (
        "apiVersion: spec.keptn.sh/0.2.4\n"
        "apiVersion: spec.keptn.sh/0.1\n"
        "spec: {stages: [{name: dev}]}\n"
    )
    [problem] = problems(text)
    assert (problem.path, problem.line) == ("apiVersion", 2)


# ------------------------------------------------------------------- directories


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_directory_keeps_going_past_an_invalid_file(tmp_path: Path) -> None:
    write(tmp_path, "alpha.yaml", VALID)
    broken = write(tmp_path, "broken.yaml", "apiVersion: spec.keptn.sh/0.2.4\nspec: [\n")
    write(tmp_path, "invalid.yml", VALID.replace("- name: prod", "- name: PROD"))
    write(tmp_path, "zeta.yml", VALID)
    write(tmp_path, "notes.txt", "not a shipyard")
    write(tmp_path, ".hidden.yaml", "nope: [")
    (tmp_path / "sub.yaml").mkdir()
    loaded = READER.load_directory(tmp_path)
    assert [(f.project, f.ok) for f in loaded] == [
        ("alpha", True),
        ("broken", False),
        ("invalid", False),
        ("zeta", True),
    ]
    alpha, bad, invalid, zeta = loaded
    assert isinstance(alpha, LoadedFile)
    assert alpha.text == VALID
    assert alpha.error is None
    assert alpha.shipyard is not None
    assert alpha.shipyard.stages[0].name == "dev"
    assert alpha.path == tmp_path / "alpha.yaml"
    assert bad.shipyard is None
    assert bad.error is not None
    assert bad.text.startswith("apiVersion")
    assert bad.error.source == str(broken)
    assert bad.error.problems[0].line == 3
    assert str(bad.error).startswith(f"{broken}:3: invalid YAML")
    assert invalid.error is not None
    assert [(p.path, p.line) for p in invalid.error.problems] == [("spec.stages[1].name", 25)]
    assert zeta.shipyard == alpha.shipyard


def test_load_directory_reports_duplicate_projects_and_unreadable_files(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    write(tmp_path, "demo.yml", VALID)
    (tmp_path / "latin.yaml").write_bytes(b"apiVersion: caf\xe9\n")
    loaded = READER.load_directory(tmp_path)
    assert [(f.path.name, f.ok) for f in loaded] == [
        ("demo.yaml", True),
        ("demo.yml", False),
        ("latin.yaml", False),
    ]
    assert loaded[1].error is not None
    assert "already defined by demo.yaml" in str(loaded[1].error)
    assert loaded[2].error is not None
    assert "cannot read the file" in str(loaded[2].error)


def test_load_empty_directory(tmp_path: Path) -> None:
    assert READER.load_directory(tmp_path) == []
    assert READER.load_directory(str(tmp_path)) == []


def test_module_level_load_directory(tmp_path: Path) -> None:
    write(tmp_path, "seed.yaml", VALID)
    [loaded] = files.load_directory(tmp_path)
    assert loaded.project == "seed"
    assert loaded.ok
