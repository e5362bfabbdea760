"""Sequence bodies as the API server returns them, and in-memory fakes of both APIs."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import yaml

from controlplane.adapters.kubernetes.api import (
    ControlPlaneUnavailable,
    ProjectState,
    render_shipyard,
)
from controlplane.adapters.kubernetes.assembly import LAST_VALID_ANNOTATION, SequenceResource


def body(
    name: str,
    spec: Mapping[str, Any],
    *,
    created: str = "2026-01-01T00:00:00Z",
    namespace: str = "default",
    generation: int = 1,
    last_valid: Mapping[str, Any] | None = None,
    deleting: bool = False,
    status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "generation": generation,
        "creationTimestamp": created,
    }
    if last_valid is not None:
        metadata["annotations"] = {LAST_VALID_ANNOTATION: json.dumps(last_valid)}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        metadata["finalizers"] = ["controlplane.dev/shipyard"]
    result: dict[str, Any] = {"metadata": metadata, "spec": dict(spec)}
    if status is not None:
        result["status"] = dict(status)
    return result


def resource(name: str, spec: Mapping[str, Any], **options: Any) -> SequenceResource:
    return SequenceResource.from_body(body(name, spec, **options))


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386, as the API server applies ``application/merge-patch+json``."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = {}
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeProjects:
    """The control plane's project endpoints in memory; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.projects: dict[str, ProjectState] = {}
        self.calls: list[tuple[str, str]] = []
        self.down = False

    def put_text(self, name: str, text: str) -> None:
        """A project that came from elsewhere (a file, the API)."""
        revision = self.projects[name].revision + 1 if name in self.projects else 1
        self.projects[name] = ProjectState(name, text, revision)

    def document(self, name: str) -> Any:
        return yaml.safe_load(self.projects[name].shipyard_yaml)

    def writes(self) -> list[tuple[str, str]]:
        return [call for call in self.calls if call[0] != "get"]

    def _check(self, call: str, name: str) -> None:
        if self.down:
            raise ControlPlaneUnavailable("cannot reach the control plane at http://cp: refused")
        self.calls.append((call, name))

    async def get_project(self, name: str) -> ProjectState | None:
        self._check("get", name)
        return self.projects.get(name)

    async def create_project(self, name: str, shipyard: Mapping[str, Any]) -> None:
        self._check("create", name)
        assert name not in self.projects
        self.put_text(name, render_shipyard(shipyard))

    async def replace_project(self, name: str, shipyard: Mapping[str, Any]) -> None:
        self._check("replace", name)
        assert name in self.projects
        self.put_text(name, render_shipyard(shipyard))

    async def delete_project(self, name: str) -> None:
        self._check("delete", name)
        self.projects.pop(name, None)


class FakeSequences:
    """Sequences in memory, patched with merge-patch semantics."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
        self.patches: list[tuple[str, str, str]] = []

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        self.bodies[item["metadata"]["namespace"], item["metadata"]["name"]] = item
        return item

    def get(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.bodies[namespace, name]

    def ready(self, name: str, namespace: str = "default") -> dict[str, Any]:
        conditions = self.get(name, namespace).get("status", {}).get("conditions", [])
        found: dict[str, Any] = next(c for c in conditions if c["type"] == "Ready")
        return found

    def set_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        item = self.get(name)
        item["spec"] = dict(spec)
        item["metadata"]["generation"] += 1
        return item

    def remove(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """Mark for deletion (finalizer still in place), as the API server does first."""
        item = self.get(name, namespace)
        item["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        return item

    def purge(self, name: str, namespace: str = "default") -> None:
        del self.bodies[namespace, name]

    async def list_sequences(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(item) for item in self.bodies.values()]

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append(("status", namespace, name))
        item = self.bodies.get((namespace, name))
        if item is not None:
            merge_patch(item, {"status": status})

    async def patch_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        self.patches.append(("annotations", namespace, name))
        item = self.bodies.get((namespace, name))
        if item is not None:
            merge_patch(item, {"metadata": {"annotations": annotations}})
