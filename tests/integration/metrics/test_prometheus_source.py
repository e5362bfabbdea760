"""``HttpMetricSources.query_prometheus`` against a real Prometheus scraping our exporter."""

from __future__ import annotations

import time

import pytest

from controlplane.adapters.metric_sources import HttpMetricSources
from controlplane.application.ports import SourceFailure
from controlplane.domain import sli_sources
from controlplane.domain.sli import Timeframe
from tests.fixtures_prometheus import JOB, JsonSource, RunningPrometheus, free_port

pytestmark = pytest.mark.integration

GAUGE = "demo_gauge"
COUNTER = "demo_requests_total"


async def query(sources: HttpMetricSources, url: str, expression: str, **options: float) -> float:
    return await sources.query_prometheus(
        url,
        expression,
        at=options.get("at", time.time()),
        headers={},
        time_limit=options.get("time_limit", 5.0),
    )


async def sample_time(prometheus: RunningPrometheus, expression: str) -> float:
    """The timestamp of the newest sample of a one-series ``expression``."""
    vector = await prometheus.wait_for(f"timestamp({expression})", lambda v: len(v) == 1)
    return float(vector[0]["value"][1])


async def test_a_gauge_comes_back_exactly_at_the_time_asked(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    series = f'{GAUGE}{{case="exact"}}'
    prometheus.exporter.set(GAUGE, 42.5, {"case": "exact"})
    await prometheus.wait_for_value(series, 42.5)
    scraped_before_change = await sample_time(prometheus, series)

    prometheus.exporter.set(GAUGE, 17.25, {"case": "exact"})
    await prometheus.wait_for_value(series, 17.25)

    assert await query(sources, prometheus.url, series) == 17.25
    assert await query(sources, prometheus.url, series, at=scraped_before_change) == 42.5


async def test_an_increase_over_the_window_with_keptn_placeholders(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    series = f'{COUNTER}{{case="rate"}}'
    prometheus.exporter.set(COUNTER, 0, {"case": "rate"}, kind="counter")
    await prometheus.wait_for_value(series, 0)
    first = await sample_time(prometheus, series)
    prometheus.exporter.set(COUNTER, 100, {"case": "rate"}, kind="counter")
    await prometheus.wait_for_value(series, 100)
    last = await sample_time(prometheus, series)

    window = Timeframe(start=first - 1.0, end=last + 0.5)
    variables = sli_sources.placeholders(
        project="seed",
        stage="dev",
        service=JOB,
        deployment="direct",
        window=window,
        filters={"case": "rate"},
    )
    template = (
        f'sum(increase({COUNTER}{{job="$SERVICE",stage="$STAGE",case="$CASE"}}[$DURATION_SECONDS]))'
    )
    expanded = sli_sources.expand(template, variables)
    assert "$" not in expanded

    value = await query(sources, prometheus.url, expanded, at=window.end)

    # Prometheus extrapolates towards the window's end, never below the counter's zero.
    assert 100 <= value <= 220
    rate = await query(sources, prometheus.url, expanded.replace("increase", "rate"), at=window.end)
    assert rate == pytest.approx(value / float(variables["DURATION_SECONDS"][:-1]))


async def test_scalars_are_numbers(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    assert await query(sources, prometheus.url, "scalar(vector(2.5)) * 2") == 5.0


async def test_no_data(prometheus: RunningPrometheus, sources: HttpMetricSources) -> None:
    with pytest.raises(SourceFailure, match="no data") as caught:
        await query(sources, prometheus.url, f'{GAUGE}{{case="never-exported"}}')
    assert str(caught.value).startswith(f"{prometheus.url}: ")


async def test_several_series_ask_for_aggregation(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    prometheus.exporter.set(GAUGE, 1, {"case": "multi", "pod": "a"})
    prometheus.exporter.set(GAUGE, 2, {"case": "multi", "pod": "b"})
    series = f'{GAUGE}{{case="multi"}}'
    await prometheus.wait_for(series, lambda vector: len(vector) == 2)

    with pytest.raises(SourceFailure) as caught:
        await query(sources, prometheus.url, series)
    assert str(caught.value) == (
        f"{prometheus.url}: returned 2 series; aggregate them to one, e.g. with sum or avg"
    )
    assert await query(sources, prometheus.url, f"sum({series})") == 3.0


async def test_a_range_vector_asks_for_an_instant_vector(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    with pytest.raises(SourceFailure, match="range vector; ask for an instant vector"):
        await query(sources, prometheus.url, f'up{{job="{JOB}"}}[1m]')


async def test_nan_and_infinity_are_not_values(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    with pytest.raises(SourceFailure, match="returned NaN"):
        await query(sources, prometheus.url, "vector(0) / 0")
    with pytest.raises(SourceFailure, match=r"returned \+Inf, not a finite number"):
        await query(sources, prometheus.url, "vector(1) / 0")


async def test_a_promql_syntax_error_carries_prometheus_words(
    prometheus: RunningPrometheus, sources: HttpMetricSources
) -> None:
    with pytest.raises(SourceFailure) as caught:
        await query(sources, prometheus.url, f"sum(rate({COUNTER}[5m])")
    message = str(caught.value)
    assert message.startswith(f"{prometheus.url}: Prometheus bad_data: ")
    assert "parse error" in message


async def test_a_server_that_is_down_is_named(sources: HttpMetricSources) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceFailure) as caught:
        await query(sources, url, "up")
    assert str(caught.value).startswith(f"{url}: cannot connect")


async def test_credentials_in_the_url_stay_out_of_messages(sources: HttpMetricSources) -> None:
    port = free_port()
    with pytest.raises(SourceFailure) as caught:
        await query(sources, f"http://admin:hunter2@127.0.0.1:{port}/prom", "up")
    assert str(caught.value).startswith(f"http://127.0.0.1:{port}/prom: cannot connect")
    assert "hunter2" not in str(caught.value)


async def test_a_slow_server_hits_the_time_limit(
    json_source: JsonSource, sources: HttpMetricSources
) -> None:
    url = f"{json_source.url}/slow"
    started = time.monotonic()
    with pytest.raises(SourceFailure) as caught:
        await query(sources, url, "up", time_limit=0.5)
    assert str(caught.value) == f"{url}: no answer within 0.5s"
    assert time.monotonic() - started < 3


async def test_something_that_is_not_prometheus(
    json_source: JsonSource, sources: HttpMetricSources
) -> None:
    with pytest.raises(SourceFailure, match=r"HTTP 404: .*no route /html/api/v1/query"):
        await query(sources, f"{json_source.url}/html", "up")
    with pytest.raises(SourceFailure, match=r"not a Prometheus query answer \(application/json\)"):
        await query(sources, f"{json_source.url}/echo", "up")
