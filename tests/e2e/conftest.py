from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controlplane.adapters.nats.embedded import EmbeddedNats
from tests.e2e.harness import ControlPlane

SHIPYARDS = Path(__file__).parent.parent / "fixtures" / "shipyards"


@pytest.fixture
def e2e_nats(tmp_path: Path) -> Iterator[str]:
    """A NATS server of the test's own, so no JetStream stream outlives the test."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def control_plane(
    e2e_nats: str, database_url: str, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        nats_url=e2e_nats,
        database_url=database_url,
        sequences=SHIPYARDS,
        workdir=tmp_path,
        extra=("--task-started-timeout", "3s"),
    )
    await plane.start()
    try:
        yield plane
    finally:
        plane.stop()
