"""The Dockerfile and the shell scripts: linted, and the cluster scripts' steps in order.

The cluster scripts (deploy/k3d.sh, kind.sh, minikube.sh) cannot run here (no Docker, no
cluster), so they run against stand-ins for docker, k3d, kind, minikube, helm, kubectl, curl
and the controlplane CLI that record their arguments: what is checked is which commands the
scripts run, in which order, with which flags, and that a failing smoke test still tears the
cluster down.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.helpers import BIN, ROOT

SCRIPTS = [*sorted((ROOT / "deploy").glob("*.sh")), ROOT / "scripts" / "fetch-helm"]


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = run(BIN / "hadolint", ROOT / "Dockerfile", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_finds_nothing(script: Path) -> None:
    result = run(BIN / "shellcheck", "--external-sources", script, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_of_the_whole_set_as_ci_runs_it() -> None:
    result = run(BIN / "shellcheck", *SCRIPTS, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_stages() -> list[list[list[str]]]:
    """Each stage's instructions as word lists, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[list[str]]] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "FROM":
            stages.append([])
        if words and stages:
            stages[-1].append(words)
    return stages


def test_the_image_runs_as_a_fixed_non_root_user_without_a_healthcheck() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2
    final = stages[-1]
    instructions = [words[0] for words in final]
    assert "HEALTHCHECK" not in {w[0] for stage in stages for w in stage}
    users = [words[1] for words in final if words[0] == "USER"]
    assert users == ["10001:10001"]
    assert instructions[-3:] == ["EXPOSE", "ENTRYPOINT", "CMD"]
    assert final[-2][1:] == ["[controlplane]"]  # the JSON form, its quotes removed by shlex
    assert final[-1][1:] == ["[serve]"]
    assert next(w[1] for w in final if w[0] == "COPY") == "--from=build"
    base = {stage[0][1] for stage in stages}
    assert base == {"${PYTHON_IMAGE}"}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "\nARG PYTHON_IMAGE=python:3.11-slim-bookworm\n" in dockerfile


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    """.dockerignore lets in only named paths: a COPY of anything else would fail the build."""
    allowed = [
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for stage in dockerfile_stages():
        for words in stage:
            if words[0] != "COPY" or words[1].startswith("--from"):
                continue
            for source in words[1:-1]:
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(f"{a}/") for a in allowed), source


def test_fetch_helm_is_idempotent() -> None:
    first = run(ROOT / "scripts" / "fetch-helm", cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("v4."), first.stdout
    assert os.access(ROOT / ".cache" / "helm" / "kubectl", os.X_OK)


# --- the cluster scripts against stand-ins ---------------------------------------------------

STAND_IN = """#!/bin/sh
# Records its name and arguments, answers what the scripts read.
printf '%s\\n' "$(basename "$0") $*" >> "$STAND_IN_LOG"
case "$(basename "$0") $*" in
    "k3d cluster get"*) exit 1 ;;
    "kubectl "*"get secret"*) printf 'czNjcjN0' ;;
    "curl "*registration*) printf '[{"name": "controlplane-examples"}]' ;;
    "controlplane "*) exit "${STAND_IN_TRIGGER_EXIT:-0}" ;;
esac
exit 0
"""
TOOLS = ("docker", "k3d", "kind", "minikube", "helm", "kubectl", "curl", "controlplane")


def run_script(
    tmp_path: Path, script: str, action: str, **environment: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir(exist_ok=True)
    for tool in TOOLS:
        path = stand_ins / tool
        path.write_text(STAND_IN)
        path.chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    system = ":".join(
        str(Path(shutil.which(tool) or "/bin/sh").parent) for tool in ("bash", "base64", "grep")
    )
    env = {
        "PATH": f"{stand_ins}:{system}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STAND_IN_LOG": str(log),
        "CONTROLPLANE_CLI": str(stand_ins / "controlplane"),
        **environment,
    }
    result = run(ROOT / "deploy" / script, action, env=env, cwd=tmp_path)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def index_of(calls: list[str], prefix: str) -> int:
    matches = [i for i, call in enumerate(calls) if call.startswith(prefix)]
    assert matches, f"no call starting with {prefix!r} in {calls}"
    return matches[0]


PLATFORMS = {
    "k3d.sh": (
        "k3d cluster create controlplane --wait",
        "k3d image import controlplane:dev --cluster controlplane",
        "k3d cluster delete controlplane",
        "k3d-controlplane",
    ),
    "kind.sh": (
        "kind create cluster --name controlplane",
        "kind load docker-image controlplane:dev --name controlplane",
        "kind delete cluster --name controlplane",
        "kind-controlplane",
    ),
    "minikube.sh": (
        "minikube start --profile controlplane",
        "minikube image load controlplane:dev --profile controlplane",
        "minikube delete --profile controlplane",
        "controlplane",
    ),
}


@pytest.mark.parametrize("script", PLATFORMS, ids=PLATFORMS.keys())
def test_all_creates_builds_loads_installs_smoke_tests_and_deletes(
    tmp_path: Path, script: str
) -> None:
    create, load, delete, context = PLATFORMS[script]
    result, calls = run_script(tmp_path, script, "all")
    assert result.returncode == 0, result.stderr
    steps = [
        create,
        f"docker build --tag controlplane:dev {ROOT}",
        load,
        f"helm --kube-context {context} upgrade --install controlplane {ROOT}/helm/controlplane",
        f"kubectl --context {context} -n controlplane wait --for=condition=Ready pod",
        "curl -fsS http://127.0.0.1:18080/health",
        "controlplane trigger --url http://127.0.0.1:18080 --token s3cr3t seed dev sequence-one"
        " --service phone",
        f"kubectl --context {context} -n controlplane apply -f {ROOT}/deploy/examples/",
        f"kubectl --context {context} -n controlplane wait --for=condition=Ready sequence",
        "controlplane trigger --url http://127.0.0.1:18080 --token s3cr3t demo dev sequence-one",
        delete,
    ]
    positions = [index_of(calls, step) for step in steps]
    assert positions == sorted(positions), calls
    # In the background: when it logs its call is up to the scheduler.
    index_of(
        calls, f"kubectl --context {context} -n controlplane port-forward service/controlplane"
    )
    install = calls[index_of(calls, steps[3])]
    for flag in (
        "--namespace controlplane --create-namespace",
        "--set image.repository=controlplane --set image.tag=dev",
        "--set image.pullPolicy=Never",
        "--wait --timeout 10m",
    ):
        assert flag in install
    # Every kubectl and helm call names the cluster's context, never the current one.
    for call in calls:
        if call.startswith("kubectl "):
            assert call.startswith(f"kubectl --context {context} "), call
        if call.startswith("helm "):
            assert call.startswith(f"helm --kube-context {context} "), call


@pytest.mark.parametrize("script", PLATFORMS, ids=PLATFORMS.keys())
def test_a_failing_smoke_test_fails_the_run_and_still_deletes_the_cluster(
    tmp_path: Path, script: str
) -> None:
    result, calls = run_script(tmp_path, script, "all", STAND_IN_TRIGGER_EXIT="1")
    assert result.returncode != 0
    assert calls[-1] == PLATFORMS[script][2]
    assert not any(" demo dev " in call for call in calls)


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    result, calls = run_script(
        tmp_path,
        "kind.sh",
        "up",
        CLUSTER="ci",
        RELEASE="cp",
        NAMESPACE="cp-system",
        IMAGE="registry.local/controlplane:abc123",
        HELM_ARGS="--set examples.enabled=false",
    )
    assert result.returncode == 0, result.stderr
    install = calls[index_of(calls, "helm --kube-context kind-ci upgrade --install cp ")]
    assert "--namespace cp-system" in install
    assert "--set image.repository=registry.local/controlplane --set image.tag=abc123" in install
    assert install.endswith("--set examples.enabled=false")
    index_of(calls, "kind load docker-image registry.local/controlplane:abc123 --name ci")


def test_the_smoke_test_alone_uses_the_release_names(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, "k3d.sh", "smoke", RELEASE="cp", NAMESPACE="ns")
    assert result.returncode == 0, result.stderr
    index_of(calls, "kubectl --context k3d-controlplane -n ns get secret cp-controlplane-api-token")
    index_of(calls, "kubectl --context k3d-controlplane -n ns port-forward service/cp-controlplane")
    assert not any(call.startswith(("k3d ", "docker ")) for call in calls)


@pytest.mark.parametrize("script", PLATFORMS, ids=PLATFORMS.keys())
def test_an_unknown_action_prints_the_usage(tmp_path: Path, script: str) -> None:
    result, calls = run_script(tmp_path, script, "deploy")
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "up|smoke|down|all" in result.stderr
    assert calls == []
