"""The handler logic against in-memory fakes of the control plane and the Kubernetes API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from controlplane.adapters.kubernetes import operator
from controlplane.adapters.kubernetes.api import ControlPlaneUnavailable
from controlplane.adapters.kubernetes.assembly import LAST_VALID_ANNOTATION
from controlplane.adapters.kubernetes.reconcile import Reconciler
from tests.unit.adapters.kubernetes.kit import FakeProjects, FakeSequences, body

DEV = {"project": "demo", "stage": "dev"}
FILE_SHIPYARD = """apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: demo}
spec:
  stages: [{name: dev}]
"""


def clock() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def projects() -> FakeProjects:
    return FakeProjects()


@pytest.fixture
def sequences() -> FakeSequences:
    return FakeSequences(
        body("one", {**DEV, "tasks": [{"name": "a"}]}, created="2026-01-01T00:00:00Z"),
        body("two", {**DEV, "tasks": [{"name": "b"}]}, created="2026-01-01T00:00:01Z"),
    )


@pytest.fixture
def reconciler(projects: FakeProjects, sequences: FakeSequences) -> Reconciler:
    return Reconciler(projects, sequences, clock=clock)


def sequence_names(projects: FakeProjects, project: str = "demo") -> list[str]:
    document = projects.document(project)
    return [seq["name"] for stage in document["spec"]["stages"] for seq in stage["sequences"]]


async def test_sequences_become_one_project_and_say_so(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    assert projects.writes() == [("create", "demo")]
    assert sequence_names(projects) == ["one", "two"]
    for name in ("one", "two"):
        status = sequences.get(name)["status"]
        assert status["project"] == "demo"
        assert status["shipyardVersion"] == 1
        assert status["observedGeneration"] == 1
        assert sequences.ready(name)["reason"] == "Reconciled"
        stored = sequences.get(name)["metadata"]["annotations"][LAST_VALID_ANNOTATION]
        assert json.loads(stored)["name"] == name


async def test_running_again_writes_nothing(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    projects.calls.clear()
    sequences.patches.clear()
    await reconciler.reconcile(sequences.get("two"))
    await reconciler.reconcile(sequences.get("one"))
    assert projects.writes() == []
    assert sequences.patches == []
    assert projects.projects["demo"].revision == 1


async def test_a_change_makes_a_new_version_that_every_status_shows(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    changed = sequences.set_spec("one", {**DEV, "tasks": [{"name": "a"}, {"name": "c"}]})
    await reconciler.reconcile(changed)
    assert projects.writes()[-1] == ("replace", "demo")
    assert sequences.get("one")["status"]["shipyardVersion"] == 2
    assert sequences.get("one")["status"]["observedGeneration"] == 2
    assert sequences.get("two")["status"]["shipyardVersion"] == 2


async def test_an_invalid_change_leaves_the_project_as_it_was(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    before = projects.projects["demo"]
    bad = sequences.set_spec(
        "one",
        {**DEV, "triggeredOn": [{"event": "prod.nothing.finished"}], "tasks": [{"name": "x"}]},
    )
    await reconciler.reconcile(bad)
    assert projects.projects["demo"] == before
    ready = sequences.ready("one")
    assert (ready["status"], ready["reason"]) == ("False", "Invalid")
    assert ready["message"].startswith(
        "spec.triggeredOn[0].event: 'prod.nothing.finished' can never fire: stage 'prod' is not"
        " defined in the shipyard"
    )
    assert "keeps the last valid version" in ready["message"]
    assert sequences.get("one")["status"]["observedGeneration"] == 2
    assert sequences.ready("two")["reason"] == "Reconciled"
    stored = json.loads(sequences.get("one")["metadata"]["annotations"][LAST_VALID_ANNOTATION])
    assert stored["tasks"] == [{"name": "a"}]


async def test_a_deleted_sequence_leaves_the_shipyard_and_the_last_one_the_project(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    await reconciler.reconcile(sequences.remove("one"))
    assert sequence_names(projects) == ["two"]
    sequences.purge("one")
    await reconciler.reconcile(sequences.remove("two"))
    assert "demo" not in projects.projects
    assert projects.writes()[-1] == ("delete", "demo")


async def test_a_project_from_elsewhere_is_left_alone(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    projects.put_text("demo", FILE_SHIPYARD)
    await reconciler.reconcile(sequences.get("one"))
    assert projects.writes() == []
    ready = sequences.ready("one")
    assert (ready["status"], ready["reason"]) == ("False", "ProjectNotManaged")
    assert "was not created by the operator" in ready["message"]
    assert LAST_VALID_ANNOTATION not in sequences.get("one")["metadata"].get("annotations", {})
    sequences.purge("two")
    await reconciler.reconcile(sequences.remove("one"))
    assert projects.projects["demo"].shipyard_yaml == FILE_SHIPYARD


async def test_an_unreachable_control_plane_is_reported_and_raised(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    projects.down = True
    changed = sequences.set_spec("one", {**DEV, "tasks": [{"name": "z"}]})
    with pytest.raises(ControlPlaneUnavailable, match="cannot reach the control plane"):
        await reconciler.reconcile(changed)
    for name in ("one", "two"):
        ready = sequences.ready(name)
        assert (ready["status"], ready["reason"]) == ("False", "ControlPlaneUnavailable")
        assert sequences.get(name)["status"]["shipyardVersion"] == 1
    projects.down = False
    await reconciler.reconcile(changed)
    assert sequences.ready("one")["reason"] == "Reconciled"
    assert sequences.get("one")["status"]["shipyardVersion"] == 2


async def test_moving_a_sequence_updates_both_projects(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    sequences.purge("two")
    moved = sequences.set_spec("one", {**DEV, "project": "other", "tasks": [{"name": "a"}]})
    await reconciler.reconcile(moved)
    assert "demo" not in projects.projects
    assert sequence_names(projects, "other") == ["one"]
    assert sequences.get("one")["status"]["project"] == "other"


async def test_a_sequence_moving_out_leaves_its_old_project_to_the_others(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    await reconciler.reconcile(sequences.get("one"))
    moved = sequences.set_spec("one", {**DEV, "project": "other"})
    await reconciler.reconcile(moved)
    assert sequence_names(projects) == ["two"]
    assert sequence_names(projects, "other") == ["one"]
    assert sequences.get("two")["status"]["shipyardVersion"] == 2


async def test_a_duplicate_names_the_older_resource(
    reconciler: Reconciler, projects: FakeProjects, sequences: FakeSequences
) -> None:
    sequences.add(body("three", {**DEV, "name": "one"}, created="2026-01-01T00:00:02Z"))
    await reconciler.reconcile(sequences.get("three"))
    ready = sequences.ready("three")
    assert ready["reason"] == "Invalid"
    assert "Sequence default/one declared it first" in ready["message"]
    assert sequence_names(projects) == ["one", "two"]


# ---------------------------------------------------------------------- the kopf handler


class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def reconcile(self, body: Any) -> None:
        raise self.error


@pytest.mark.parametrize(("retry", "delay"), [(0, 1.0), (1, 2.0), (3, 8.0), (5, 30.0), (99, 30.0)])
async def test_the_handler_turns_failures_into_retries_with_backoff(
    retry: int, delay: float
) -> None:
    handler = operator.sequence_handler(Failing(ControlPlaneUnavailable("down")))  # type: ignore[arg-type]
    with pytest.raises(kopf.TemporaryError) as caught:
        await handler(body=body("one", DEV), retry=retry)
    assert caught.value.delay == delay
    assert "down" in str(caught.value)


async def test_the_handler_lets_bugs_through() -> None:
    handler = operator.sequence_handler(Failing(KeyError("bug")))  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await handler(body=body("one", DEV), retry=0)


def test_namespaces_are_a_comma_separated_list() -> None:
    assert operator.parse_namespaces("") == []
    assert operator.parse_namespaces(" team-a, team-b ,") == ["team-a", "team-b"]


def test_the_registry_handles_every_sequence_event(reconciler: Reconciler) -> None:
    from controlplane.adapters.kubernetes.cluster import ClusterLogin

    registry = operator.build_registry(reconciler, ClusterLogin())
    assert isinstance(registry, kopf.OperatorRegistry)
    settings = operator.operator_settings(namespaced=False)
    assert settings.peering.standalone
    assert settings.persistence.finalizer == "controlplane.dev/shipyard"
    assert not settings.scanning.disabled
    assert operator.operator_settings(namespaced=True).scanning.disabled
