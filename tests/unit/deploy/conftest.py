"""Fixtures of the chart tests: a real ``helm`` and the chart rendered with two sets of values.

``scripts/fetch-helm`` puts the binary into ``.cache/helm/``; when it is missing the session
fetches it once, and fails (never skips) if that does not work, so a machine without it cannot
pass these tests by accident.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.unit.deploy.helpers import EXTERNAL_VALUES, HELM, ROOT, Helm, Manifest


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    if not os.access(HELM, os.X_OK):
        fetched = subprocess.run(
            [str(ROOT / "scripts" / "fetch-helm")], capture_output=True, text=True, check=False
        )
        if fetched.returncode != 0 or not os.access(HELM, os.X_OK):
            pytest.fail(
                f"scripts/fetch-helm could not provide {HELM}:\n{fetched.stdout}{fetched.stderr}"
            )
    home = tmp_path_factory.mktemp("helm-home")
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # No cluster: nothing may reach one, whatever the developer's kubeconfig says.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Helm(HELM, environment)


@pytest.fixture(scope="session")
def default_manifests(helm: Helm) -> list[Manifest]:
    return helm.render()


@pytest.fixture(scope="session")
def external_manifests(helm: Helm) -> list[Manifest]:
    return helm.render("--values", EXTERNAL_VALUES)
