"""Fixtures for the metric sources: a real Prometheus (session) and a JSON source (per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from controlplane.adapters.metric_sources import HttpMetricSources
from tests import fixtures_prometheus
from tests.fixtures_prometheus import JsonSource, RunningPrometheus


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """Prometheus scraping the test's exporter every second, ready once the first scrape is in."""
    try:
        binary = fixtures_prometheus.find_prometheus()
    except fixtures_prometheus.PrometheusUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    workdir = tmp_path_factory.mktemp("prometheus")
    with fixtures_prometheus.running_prometheus(workdir, binary=binary) as server:
        yield server


@pytest.fixture
def json_source() -> Iterator[JsonSource]:
    source = JsonSource()
    source.start()
    try:
        yield source
    finally:
        source.stop()


@pytest.fixture
async def sources() -> AsyncIterator[HttpMetricSources]:
    adapter = HttpMetricSources()
    try:
        yield adapter
    finally:
        await adapter.close()
