"""Rendering the chart with a real ``helm``, validating manifests, finding objects in them."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "controlplane"
CRD = CHART / "crds" / "sequences.controlplane.dev.yaml"
HELM = ROOT / ".cache" / "helm" / "helm"
BIN = Path(sys.executable).parent
KUBE_VERSION = "1.33.0"
RELEASE = "cp"
NAMESPACE = "cp-system"
EXTERNAL_VALUES = Path(__file__).parent / "values-external.yaml"

Manifest = dict[str, Any]


@dataclass
class Helm:
    """The helm binary with its own empty configuration folders."""

    binary: Path
    environment: dict[str, str]

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *map(str, args)],
            capture_output=True,
            text=True,
            env=self.environment,
            cwd=ROOT,
            check=False,
        )

    def template(self, *args: str | Path, crds: bool = False) -> str:
        """The rendered manifests as text; the test fails with helm's message otherwise."""
        command = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
        command += ["--kube-version", KUBE_VERSION, *map(str, args)]
        if crds:
            command.append("--include-crds")
        result = self.run(*command)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def render(self, *args: str | Path) -> list[Manifest]:
        return [doc for doc in yaml.safe_load_all(self.template(*args)) if doc]

    def fails(self, *args: str | Path) -> str:
        """helm's error message for values that must be refused."""
        result = self.run("template", RELEASE, CHART, *map(str, args))
        assert result.returncode != 0, f"helm accepted {args}"
        return result.stderr


def kubernetes_validate(manifests: str) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` of a stream of manifests, as CI pipes them."""
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBE_VERSION, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        check=False,
    )


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {[m['metadata']['name'] for m in manifests]}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> dict[str, Manifest]:
    """``kind/name`` -> pod spec of every workload."""
    return {
        f"{m['kind']}/{m['metadata']['name']}": m["spec"]["template"]["spec"]
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def secret_value(secret: Manifest, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()
