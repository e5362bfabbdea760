"""The Sequence CRD: a valid, structural CustomResourceDefinition whose schema accepts the
examples in deploy/examples/ and rejects each invalid fixture, as the API server would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controlplane.adapters.files import YamlShipyardReader
from tests.unit.deploy.helpers import CRD, ROOT, Manifest, kubernetes_validate

EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "fixtures" / "k8s").glob("invalid-*.yaml"))


def load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def crd() -> Manifest:
    (document,) = load_all(CRD)
    return document


def version() -> Manifest:
    (served,) = crd()["spec"]["versions"]
    return served


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """The API server's reading of a structural schema, as JSON Schema.

    Only what this CRD uses: an object with ``properties`` and without
    ``x-kubernetes-preserve-unknown-fields`` allows no other fields (the API server prunes
    them, and kubectl's default strict field validation refuses them); the other
    ``x-kubernetes-*`` keys do not constrain a single object.
    """
    result = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node:
        result["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            result.setdefault("additionalProperties", False)
    if isinstance(node.get("items"), dict):
        result["items"] = to_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = to_json_schema(node["additionalProperties"])
    return result


def validator() -> jsonschema.Draft7Validator:
    schema = copy.deepcopy(to_json_schema(version()["schema"]["openAPIV3Schema"]))
    names = crd()["spec"]["names"]
    group = crd()["spec"]["group"]
    schema["properties"]["apiVersion"]["const"] = f"{group}/{version()['name']}"
    schema["properties"]["kind"]["const"] = names["kind"]
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_crd_is_a_valid_custom_resource_definition() -> None:
    result = kubernetes_validate(CRD.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource customresourcedefinition/sequences.controlplane.dev" in (
        result.stdout
    )


def test_the_crd_names_follow_the_contract() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "sequences.controlplane.dev"
    assert spec["group"] == "controlplane.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "Sequence",
        "listKind": "SequenceList",
        "plural": "sequences",
        "singular": "sequence",
        "shortNames": ["cpseq"],
    }
    served = version()
    assert (served["name"], served["served"], served["storage"]) == ("v1alpha1", True, True)
    assert served["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in served["additionalPrinterColumns"]}
    assert columns == {
        "Project": ".spec.project",
        "Stage": ".spec.stage",
        "Tasks": ".spec.tasks[*].name",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
        "Age": ".metadata.creationTimestamp",
    }


def test_the_schema_is_structural() -> None:
    """Every node has a type, except inside fields kept as they are; as apiextensions v1 needs."""

    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, f"{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        assert not ("properties" in node and "additionalProperties" in node), path

    schema = version()["schema"]["openAPIV3Schema"]
    walk(schema, "")
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["project", "stage", "tasks"]
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "shipyardVersion", "project", "conditions"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    task = spec["properties"]["tasks"]["items"]["properties"]
    assert task["properties"]["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted(path: Path) -> None:
    documents = load_all(path)
    assert documents
    check = validator()
    for document in documents:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(document)]
        assert not errors, f"{path.name} {document['metadata']['name']}: {errors}"


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("unknown-field", ["spec"], "Additional properties are not allowed ('stages'"),
        ("missing-stage", ["spec"], "'stage' is a required property"),
        ("task-name", ["spec", "tasks", 0, "name"], "'Check_Number' does not match"),
        ("triggered-on", ["spec", "triggeredOn", 0, "event"], "does not match"),
        ("no-tasks", ["spec", "tasks"], "[] should be non-empty"),
        ("triggered-after", ["spec", "tasks", 0, "triggeredAfter"], "does not match"),
    ],
)
def test_each_invalid_fixture_is_rejected_for_its_reason(
    name: str, path: list[str | int], message: str
) -> None:
    (document,) = load_all(ROOT / "tests" / "fixtures" / "k8s" / f"invalid-{name}.yaml")
    errors = list(validator().iter_errors(document))
    assert [list(e.absolute_path) for e in errors] == [path]
    assert message in errors[0].message


def test_every_invalid_fixture_is_covered() -> None:
    assert {p.stem.removeprefix("invalid-") for p in INVALID} == {
        "unknown-field",
        "missing-stage",
        "task-name",
        "triggered-on",
        "no-tasks",
        "triggered-after",
    }


@pytest.mark.parametrize("text", ["10s", "1m30s", "2h", "250ms", "1.5h"])
def test_go_durations_are_accepted(text: str) -> None:
    (document,) = load_all(ROOT / "deploy" / "examples" / "sequence-one.yaml")
    document["spec"]["tasks"][0]["triggeredAfter"] = text
    assert not list(validator().iter_errors(document))


def shipyards(documents: list[Manifest]) -> dict[str, str]:
    """The shipyard each project's Sequences add up to (stages in order of appearance)."""
    projects: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for document in documents:
        spec = document["spec"]
        sequence: dict[str, Any] = {
            "name": spec.get("name", document["metadata"]["name"]),
            "tasks": spec["tasks"],
        }
        if "triggeredOn" in spec:
            sequence["triggeredOn"] = spec["triggeredOn"]
        stages = projects.setdefault(spec["project"], {})
        stages.setdefault(spec["stage"], []).append(sequence)
    return {
        project: yaml.safe_dump(
            {
                "apiVersion": "spec.keptn.sh/0.2.4",
                "kind": "Shipyard",
                "metadata": {"name": project},
                "spec": {
                    "stages": [{"name": n, "sequences": s} for n, s in stages.items()],
                },
            }
        )
        for project, stages in projects.items()
    }


def test_the_examples_make_a_shipyard_the_control_plane_accepts() -> None:
    documents = [document for path in EXAMPLES for document in load_all(path)]
    names = [(d["metadata"]["name"]) for d in documents]
    assert len(names) == len(set(names)), "metadata.name repeats in one namespace"
    (text,) = shipyards(documents).values()
    shipyard = YamlShipyardReader().read(text, "demo.yaml")
    assert shipyard.warnings == ()
    stages = {stage.name: stage for stage in shipyard.stages}
    assert list(stages) == ["dev", "staging"]
    dev = {sequence.name: sequence for sequence in stages["dev"].sequences}
    assert [task.name for task in dev["sequence-one"].tasks] == ["checknumber"]
    assert [task.name for task in dev["judge-photo"].tasks] == [
        "extract-metadata",
        "geolookup",
        "evaluate",
    ]
    staging = {sequence.name: sequence for sequence in stages["staging"].sequences}
    assert staging["delivery"].triggered_on
    assert staging["rollback"].triggered_on
    selectors = [document["spec"].get("triggeredOn", []) for document in documents]
    assert any("selector" in trigger for triggers in selectors for trigger in triggers)
