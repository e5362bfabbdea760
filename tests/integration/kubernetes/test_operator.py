"""The operator as a real process: kopf's runtime, a real control plane, a fake cluster.

``controlplane operator`` runs as a child process with a kubeconfig that points at kmock's
``KubernetesEmulator``, and talks to a real control plane process (real NATS, real
PostgreSQL) through its HTTP API with a token. The tests change Sequences the way kubectl
would and wait, with deadlines, for the final state: handlers may run more than once, so only
the end result is asserted.

What this does **not** prove, because kmock is not a Kubernetes API server:

- the CRD's OpenAPI schema: kmock accepts any body, so pruning, defaults, required fields and
  type checks of the chart's CRD are not exercised (a spec the real API server would refuse
  reaches the operator here);
- RBAC: no permission is checked; the chart's Role must allow get/list/watch/patch on
  ``sequences`` and ``sequences/status``, and create on ``events``;
- concurrency control: kmock has no real ``resourceVersion``, so conflicts and optimistic
  locking never happen; nor does it bump ``metadata.generation`` or set
  ``creationTimestamp`` (the harness does that);
- the status subresource's isolation: a patch to ``/status`` may change anything here;
- watch bookmarks, expiry (410 Gone) and re-listing, server-side apply, admission webhooks,
  and the in-cluster service-account login.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ControlPlane, eventually
from tests.integration.kubernetes.harness import (
    API_TOKEN,
    FakeCluster,
    OperatorProcess,
    ProjectReader,
    ready_condition,
)

pytestmark = pytest.mark.integration

DEV = {"project": "demo", "stage": "dev"}


async def shows_revision(
    cluster: FakeCluster, projects: ProjectReader, *names: str, project: str = "demo"
) -> int:
    """Wait until every named Sequence is Ready at the project's current revision."""

    async def probe() -> int:
        # Each object is read once, the Sequences before the project: the operator writes the
        # project first, so a status naming the project's current revision is not stale.
        bodies = [await cluster.get(name) or {} for name in names]
        current = await projects.get(project)
        if current is None:
            return 0
        for body in bodies:
            status = body.get("status", {})
            if ready_condition(body).get("reason") != "Reconciled":
                return 0
            if status.get("shipyardVersion") != current["shipyardRevision"]:
                return 0
            if status.get("observedGeneration") != body["metadata"]["generation"]:
                return 0
        revision: int = current["shipyardRevision"]
        return revision

    what = f"{', '.join(names)} to be Ready at the current revision of {project}"
    revision: int = await eventually(probe, timeout=30.0, what=what)
    return revision


@pytest.fixture
def projects(control_plane: ControlPlane) -> ProjectReader:
    return ProjectReader(control_plane.url)


async def test_sequences_become_a_project_and_changes_new_versions(
    cluster: FakeCluster, operator: OperatorProcess, projects: ProjectReader
) -> None:
    await cluster.create("deliver", {**DEV, "tasks": [{"name": "deploy", "properties": {"x": 1}}]})
    await cluster.create(
        "promote",
        {
            **DEV,
            "stage": "prod",
            "triggeredOn": [{"event": "dev.deliver.finished"}],
            "tasks": [{"name": "release", "triggeredAfter": "1s"}],
        },
    )
    first = await shows_revision(cluster, projects, "deliver", "promote")
    assert await projects.sequences("demo") == [("dev", "deliver"), ("prod", "promote")]
    document = await projects.document("demo")
    assert document["spec"]["stages"][1]["sequences"][0] == {
        "name": "promote",
        "triggeredOn": [{"event": "dev.deliver.finished"}],
        "tasks": [{"name": "release", "triggeredAfter": "1s"}],
    }
    body = await cluster.get("deliver")
    assert body is not None
    assert "controlplane.dev/shipyard" in body["metadata"]["finalizers"]

    generation = await cluster.replace_spec(
        "deliver", {**DEV, "tasks": [{"name": "deploy"}, {"name": "test"}]}
    )
    assert generation == 2
    second = await shows_revision(cluster, projects, "deliver", "promote")
    assert second > first
    document = await projects.document("demo")
    assert document["spec"]["stages"][0]["sequences"][0]["tasks"] == [
        {"name": "deploy"},
        {"name": "test"},
    ]


async def test_an_invalid_spec_is_reported_and_the_project_keeps_running(
    cluster: FakeCluster, operator: OperatorProcess, projects: ProjectReader
) -> None:
    await cluster.create("deliver", {**DEV, "tasks": [{"name": "deploy"}]})
    revision = await shows_revision(cluster, projects, "deliver")
    before = await projects.get("demo")

    generation = await cluster.replace_spec(
        "deliver",
        {**DEV, "triggeredOn": [{"event": "staging.nothing.finished"}], "tasks": [{"name": "x"}]},
    )
    status = await cluster.wait_ready("deliver", reason="Invalid", generation=generation)
    message = status["conditions"][0]["message"]
    assert message.startswith(
        "spec.triggeredOn[0].event: 'staging.nothing.finished' can never fire: stage 'staging'"
        " is not defined in the shipyard"
    )
    assert status["conditions"][0]["status"] == "False"
    after = await projects.get("demo")
    assert after is not None
    assert before is not None
    assert (after["shipyardRevision"], after["shipyard"]) == (revision, before["shipyard"])

    await cluster.replace_spec("deliver", {**DEV, "tasks": [{"name": "deploy"}, {"name": "y"}]})
    assert await shows_revision(cluster, projects, "deliver") == revision + 1


async def test_deleting_removes_the_sequence_and_the_last_one_the_project(
    cluster: FakeCluster, operator: OperatorProcess, projects: ProjectReader
) -> None:
    await cluster.create("one", DEV)
    await cluster.create("two", DEV)
    await shows_revision(cluster, projects, "one", "two")

    await cluster.delete("one")

    async def one_is_gone() -> bool:
        return await cluster.get("one") is None and await projects.sequences("demo") == [
            ("dev", "two")
        ]

    await eventually(one_is_gone, timeout=20.0, what="Sequence one to leave shipyard and cluster")
    await shows_revision(cluster, projects, "two")

    await cluster.delete("two")

    async def project_is_gone() -> bool:
        return await cluster.get("two") is None and await projects.get("demo") is None

    await eventually(project_is_gone, timeout=20.0, what="the project to be deleted")


async def test_a_project_from_a_file_is_never_taken_over(
    cluster: FakeCluster, sequences_dir: Path, tmp_path: Path, control_plane: ControlPlane
) -> None:
    # The file must be there before the control plane starts: write it, then restart.
    (sequences_dir / "filed.yaml").write_text(
        "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: filed}\n"
        "spec:\n  stages:\n    - name: dev\n      sequences: [{name: from-file}]\n"
    )
    control_plane.stop()
    await control_plane.start()
    projects = ProjectReader(control_plane.url)
    before = await projects.get("filed")
    assert before is not None
    operator = OperatorProcess(
        kubeconfig=cluster.write_kubeconfig(tmp_path / "kubeconfig"),
        api_url=control_plane.url,
        workdir=tmp_path,
        api_token=API_TOKEN,
    )
    await operator.start()
    try:
        await cluster.create("intruder", {"project": "filed", "stage": "dev"})
        status = await cluster.wait_ready("intruder", reason="ProjectNotManaged")
        assert "was not created by the operator" in status["conditions"][0]["message"]
        await cluster.delete("intruder")
        await eventually(lambda: _absent(cluster, "intruder"), timeout=20.0, what="intruder to go")
        assert await projects.get("filed") == before
    finally:
        await operator.stop()


async def _absent(cluster: FakeCluster, name: str) -> bool:
    return await cluster.get(name) is None


async def test_an_unreachable_control_plane_is_shown_and_then_recovered(
    cluster: FakeCluster,
    operator: OperatorProcess,
    control_plane: ControlPlane,
    projects: ProjectReader,
) -> None:
    await cluster.create("deliver", {**DEV, "tasks": [{"name": "deploy"}]})
    revision = await shows_revision(cluster, projects, "deliver")

    control_plane.stop()
    generation = await cluster.replace_spec("deliver", {**DEV, "tasks": [{"name": "other"}]})
    status = await cluster.wait_ready(
        "deliver", reason="ControlPlaneUnavailable", generation=generation
    )
    assert "cannot reach the control plane" in status["conditions"][0]["message"]
    assert status["shipyardVersion"] == revision

    await control_plane.start()
    assert await shows_revision(cluster, projects, "deliver") == revision + 1


async def test_an_operator_restart_makes_no_new_version(
    cluster: FakeCluster,
    operator: OperatorProcess,
    control_plane: ControlPlane,
    projects: ProjectReader,
    tmp_path: Path,
) -> None:
    await cluster.create("one", DEV)
    await cluster.create("two", {**DEV, "stage": "prod"})
    revision = await shows_revision(cluster, projects, "one", "two")
    statuses = [await _status(cluster, name) for name in ("one", "two")]

    assert await operator.stop() == 0
    restarted = OperatorProcess(
        kubeconfig=tmp_path / "kubeconfig",
        api_url=control_plane.url,
        workdir=tmp_path,
        api_token=API_TOKEN,
    )
    await restarted.start()
    try:

        async def resumed_both() -> bool:
            return restarted.tail(200_000).count("Handler 'resume' succeeded") >= 2

        await eventually(resumed_both, timeout=20.0, what="both Sequences to be resumed")
        current = await projects.get("demo")
        assert current is not None
        assert current["shipyardRevision"] == revision
        assert [await _status(cluster, name) for name in ("one", "two")] == statuses
    finally:
        await restarted.stop()


async def _status(cluster: FakeCluster, name: str) -> dict[str, Any]:
    body = await cluster.get(name)
    assert body is not None
    status: dict[str, Any] = body["status"]
    return status


async def test_only_the_watched_namespaces_count(
    cluster: FakeCluster, control_plane: ControlPlane, projects: ProjectReader, tmp_path: Path
) -> None:
    operator = OperatorProcess(
        kubeconfig=cluster.write_kubeconfig(tmp_path / "kubeconfig"),
        api_url=control_plane.url,
        workdir=tmp_path,
        api_token=API_TOKEN,
        namespaces="team-a, team-c",
    )
    await operator.start()
    try:
        await cluster.create("ignored", {**DEV, "name": "from-b"}, namespace="team-b")
        await cluster.create("watched", {**DEV, "name": "from-a"}, namespace="team-a")
        await cluster.wait_ready("watched", namespace="team-a")
        assert await projects.sequences("demo") == [("dev", "from-a")]
        ignored = await cluster.get("ignored", namespace="team-b")
        assert ignored is not None
        assert "status" not in ignored
        assert "finalizers" not in ignored["metadata"]
    finally:
        await operator.stop()
