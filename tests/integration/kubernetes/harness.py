"""A fake Kubernetes API (kmock) that holds Sequences, and the operator as a real process.

:class:`FakeCluster` serves kmock's ``KubernetesEmulator`` on a loopback port, declares what
kopf needs to start (namespaces, CRDs, events) and the ``Sequence`` resource with its status
subresource, and acts like ``kubectl`` over HTTP: create, change and delete Sequences, read
them back. kmock keeps no ``generation`` or ``creationTimestamp``, so the helpers set them
the way the API server would (a spec change bumps the generation).

:class:`OperatorProcess` runs ``python -m controlplane operator`` with a kubeconfig that
points at the fake cluster, and is ready when kopf's liveness endpoint answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import yaml

from tests.e2e.harness import eventually, free_port

SEQUENCES = "/apis/controlplane.dev/v1alpha1/namespaces/{namespace}/sequences"
API_TOKEN = "operator-test-token"


class FakeCluster:
    """kmock's Kubernetes emulator with the Sequence resource, driven like kubectl."""

    def __init__(self, emulator: kmock.KubernetesEmulator, url: str) -> None:
        self.emulator = emulator
        self.url = url.rstrip("/")
        self._clock = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    @classmethod
    @contextlib.asynccontextmanager
    async def serve(cls) -> AsyncIterator[FakeCluster]:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            declare_resources(emulator)
            yield cls(emulator, str(server.url))

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10.0)

    def _next_timestamp(self) -> str:
        # Each new resource is a second younger than the one before: a stable age order.
        self._clock += datetime.timedelta(seconds=1)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    async def create(self, name: str, spec: dict[str, Any], namespace: str = "default") -> None:
        body = {
            "apiVersion": "controlplane.dev/v1alpha1",
            "kind": "Sequence",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{namespace}-{name}",
                # kmock does not version objects; kopf's patches test this field, so set one.
                "resourceVersion": "1",
                "generation": 1,
                "creationTimestamp": self._next_timestamp(),
            },
            "spec": spec,
        }
        async with self._client() as client:
            response = await client.post(SEQUENCES.format(namespace=namespace), json=body)
        assert response.is_success, response.text

    async def replace_spec(
        self, name: str, spec: dict[str, Any], namespace: str = "default"
    ) -> int:
        """Set a new spec (fields left out are removed) and bump the generation; return it."""
        current = await self.get(name, namespace)
        assert current is not None, f"no Sequence {namespace}/{name}"
        generation = int(current["metadata"].get("generation", 1)) + 1
        removed = {key: None for key in current.get("spec", {}) if key not in spec}
        patch = {"metadata": {"generation": generation}, "spec": {**removed, **spec}}
        async with self._client() as client:
            response = await client.patch(
                f"{SEQUENCES.format(namespace=namespace)}/{name}",
                json=patch,
                headers={"content-type": "application/merge-patch+json"},
            )
        assert response.is_success, response.text
        return generation

    async def delete(self, name: str, namespace: str = "default") -> None:
        async with self._client() as client:
            response = await client.delete(f"{SEQUENCES.format(namespace=namespace)}/{name}")
        assert response.is_success, response.text

    async def get(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        async with self._client() as client:
            response = await client.get(f"{SEQUENCES.format(namespace=namespace)}/{name}")
        if response.status_code == 404:
            return None
        assert response.is_success, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ready(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """The Ready condition of a Sequence (empty when there is none yet)."""
        return ready_condition(await self.get(name, namespace) or {})

    async def wait_ready(
        self,
        name: str,
        *,
        reason: str = "Reconciled",
        generation: int | None = None,
        namespace: str = "default",
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Wait until the Sequence's status shows ``reason`` (for ``generation``, if given)."""

        async def probe() -> dict[str, Any]:
            body = await self.get(name, namespace) or {}
            status = body.get("status", {})
            condition = ready_condition(body)
            if condition.get("reason") != reason:
                return {}
            if generation is not None and status.get("observedGeneration") != generation:
                return {}
            return dict(status)

        what = f"Sequence {namespace}/{name} to show {reason}"
        found: dict[str, Any] = await eventually(probe, timeout=timeout, what=what)
        return found


def ready_condition(body: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition in a Sequence's status (empty when there is none yet)."""
    for condition in body.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            found: dict[str, Any] = condition
            return found
    return {}


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """What kopf looks up before it watches anything, and the Sequence resource itself."""
    every_verb = {"get", "list", "watch", "create", "update", "patch", "delete"}
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs=every_verb
    )
    emulator.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs=every_verb
    )
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs=every_verb,
    )
    emulator.resources["controlplane.dev/v1alpha1/sequences"] = kmock.ResourceInfo(
        kind="Sequence",
        singular="sequence",
        namespaced=True,
        verbs=every_verb,
        subresources={"status"},
    )


class OperatorProcess:
    """``python -m controlplane operator`` against the fake cluster and a control plane."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        api_url: str,
        workdir: Path,
        namespaces: str = "",
        api_token: str | None = None,
    ) -> None:
        self.liveness_port = free_port()
        self.log = workdir / f"operator-{self.liveness_port}.log"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
        self._env.update(
            KUBECONFIG=str(kubeconfig),
            CONTROLPLANE_API_URL=api_url,
            CONTROLPLANE_OPERATOR_NAMESPACES=namespaces,
            CONTROLPLANE_OPERATOR_LIVENESS_PORT=str(self.liveness_port),
        )
        if api_token:
            self._env["CONTROLPLANE_API_TOKEN"] = api_token
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "controlplane", "operator", "--log-level", "info"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=self._env)
        async with httpx.AsyncClient(timeout=2.0) as client:

            async def alive() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"operator exited:\n{self.tail()}")
                try:
                    url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                    return (await client.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(alive, timeout=timeout, what="the operator's liveness endpoint")

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    async def stop(self) -> int | None:
        """SIGTERM, as Kubernetes stops a pod; kill after 15 s. Returns the exit code.

        Waits in a thread: the fake cluster runs on this event loop, and the operator may
        still talk to it while it stops.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5)
        return self.process.returncode


class ProjectReader:
    """Reads projects from the control plane's API, with the token the tests run it with."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def get(self, name: str) -> dict[str, Any] | None:
        async with httpx.AsyncClient(
            base_url=self._url, headers={"x-token": API_TOKEN}, timeout=10.0
        ) as client:
            response = await client.get(f"/api/controlPlane/v1/project/{name}")
        if response.status_code == 404:
            return None
        assert response.is_success, response.text
        body: dict[str, Any] = response.json()
        return body

    async def document(self, name: str) -> dict[str, Any]:
        project = await self.get(name)
        assert project is not None, f"no project {name!r}"
        document: dict[str, Any] = yaml.safe_load(project["shipyard"])
        return document

    async def sequences(self, name: str) -> list[tuple[str, str]]:
        """(stage, sequence) of every sequence in the project's shipyard, in its order."""
        document = await self.document(name)
        return [
            (stage["name"], sequence["name"])
            for stage in document["spec"]["stages"]
            for sequence in stage.get("sequences") or []
        ]
