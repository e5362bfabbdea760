from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controlplane.adapters.nats.embedded import EmbeddedNats
from tests.e2e.harness import ControlPlane
from tests.integration.kubernetes.harness import API_TOKEN, FakeCluster, OperatorProcess


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    """A NATS server of the test's own: the control plane is restarted in some tests."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def sequences_dir(tmp_path: Path) -> Path:
    """The control plane's ``sequences/``: empty unless a test puts a file-based project there."""
    folder = tmp_path / "sequences"
    folder.mkdir()
    return folder


@pytest.fixture
async def control_plane(
    own_nats: str, database_url: str, sequences_dir: Path, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        nats_url=own_nats,
        database_url=database_url,
        sequences=sequences_dir,
        workdir=tmp_path,
        extra=("--api-token", API_TOKEN),
    )
    await plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with FakeCluster.serve() as fake:
        yield fake


@pytest.fixture
async def operator(
    cluster: FakeCluster, control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(
        kubeconfig=cluster.write_kubeconfig(tmp_path / "kubeconfig"),
        api_url=control_plane.url,
        workdir=tmp_path,
        api_token=API_TOKEN,
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
