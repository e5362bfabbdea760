from __future__ import annotations

import base64
import math
from typing import Any

import pytest

from controlplane.domain.errors import DomainError
from controlplane.domain.sli import IndicatorValue, Timeframe
from controlplane.domain.sli_sources import (
    Auth,
    IndicatorSpec,
    InvalidSLI,
    PrometheusServer,
    SliConfig,
    expand,
    merge_sli,
    parse_sli,
    placeholders,
    value_at,
)

# Keptn's prometheus-service sli.yaml, as its tutorials ship it.
KEPTN_SLI: dict[str, Any] = {
    "spec_version": "1.0",
    "indicators": {
        "response_time_p95": (
            "histogram_quantile(0.95, sum by(le) (rate(http_response_time_milliseconds_bucket"
            '{handler="ItemsController.addToCart",job="$SERVICE-$PROJECT-$STAGE"}'
            "[$DURATION_SECONDS])))"
        ),
        "error_rate": (
            'sum(rate(http_requests_total{job="$SERVICE-$PROJECT-$STAGE",status!~"2.."}'
            '[$DURATION_SECONDS]))/sum(rate(http_requests_total{job="$SERVICE-$PROJECT-$STAGE"}'
            "[$DURATION_SECONDS]))"
        ),
    },
}

FULL: dict[str, Any] = {
    "spec_version": "1.0",
    "source": "prometheus",
    "provider": "dynatrace",
    "prometheus": {
        "url": "http://prometheus:9090",
        "auth": {"type": "bearer", "secret": "PROM_TOKEN"},
        "headers": {"X-Scope-OrgID": "team-a"},
    },
    "indicators": {
        "p95": "histogram_quantile(0.95, rate(x[$DURATION_SECONDS]))",
        "gps_present": {"source": "data", "path": "extract-metadata.gps.present"},
        "stock": {
            "source": "http",
            "url": "http://127.0.0.1:9000/stock?from=$START",
            "path": "items.0.count",
            "method": "get",
            "headers": {},
            "body": None,
            "auth": {"type": "bearer", "secret": "STOCK"},
        },
        "errors": {
            "source": "prometheus",
            "query": "sum(rate(errors[$DURATION_SECONDS]))",
            "url": "http://other:9090",
        },
        "lcp": {"source": "get-sli"},
    },
}


def problems(document: Any, default_source: str = "prometheus") -> list[str]:
    with pytest.raises(InvalidSLI) as caught:
        parse_sli(document, default_source=default_source)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def one_problem(document: Any, default_source: str = "prometheus") -> str:
    found = problems(document, default_source)
    assert len(found) == 1, found
    return found[0]


def sli(**indicators: Any) -> dict[str, Any]:
    return {"indicators": indicators}


# --- parsing ---------------------------------------------------------------------------------


def test_keptn_sli_yaml_is_accepted_unchanged() -> None:
    config = parse_sli(KEPTN_SLI, default_source="prometheus")
    assert list(config.indicators) == ["response_time_p95", "error_rate"]
    spec = config.indicators["error_rate"]
    assert spec == IndicatorSpec(
        "error_rate", "prometheus", query=KEPTN_SLI["indicators"]["error_rate"]
    )
    assert config.provider == ""
    assert config.prometheus is None


def test_unquoted_spec_version_is_the_same_version() -> None:
    assert parse_sli({"spec_version": 1.0, "indicators": {}}, default_source="data") == SliConfig()


def test_the_full_format() -> None:
    config = parse_sli(FULL, default_source="data")
    assert config.provider == "dynatrace"
    assert config.prometheus == PrometheusServer(
        "http://prometheus:9090", Auth("bearer", "PROM_TOKEN"), {"X-Scope-OrgID": "team-a"}
    )
    assert config.indicators == {
        "p95": IndicatorSpec(
            "p95", "prometheus", query="histogram_quantile(0.95, rate(x[$DURATION_SECONDS]))"
        ),
        "gps_present": IndicatorSpec("gps_present", "data", path="extract-metadata.gps.present"),
        "stock": IndicatorSpec(
            "stock",
            "http",
            url="http://127.0.0.1:9000/stock?from=$START",
            path="items.0.count",
            method="GET",
            auth=Auth("bearer", "STOCK"),
        ),
        "errors": IndicatorSpec(
            "errors",
            "prometheus",
            query="sum(rate(errors[$DURATION_SECONDS]))",
            url="http://other:9090",
        ),
        "lcp": IndicatorSpec("lcp", "get-sli"),
    }


@pytest.mark.parametrize(
    ("source", "text", "expected"),
    [
        ("data", "task.value", IndicatorSpec("x", "data", path="task.value")),
        ("prometheus", "up", IndicatorSpec("x", "prometheus", query="up")),
        ("http", "http://h/v", IndicatorSpec("x", "http", url="http://h/v")),
        ("get-sli", "lcp", IndicatorSpec("x", "get-sli", query="lcp")),
    ],
)
def test_a_plain_string_fills_the_main_field_of_the_default_source(
    source: str, text: str, expected: IndicatorSpec
) -> None:
    assert parse_sli(sli(x=text), default_source=source).indicators["x"] == expected


def test_the_files_source_beats_the_callers_default() -> None:
    config = parse_sli(
        {"source": "data", "indicators": {"a": "task.a", "b": {"path": "task.b"}}},
        default_source="prometheus",
    )
    assert config.indicators["a"] == IndicatorSpec("a", "data", path="task.a")
    assert config.indicators["b"] == IndicatorSpec("b", "data", path="task.b")


def test_empty_documents() -> None:
    assert parse_sli(None, default_source="data") == SliConfig()
    assert parse_sli({}, default_source="data") == SliConfig()
    assert parse_sli({"indicators": None, "provider": None}, default_source="data") == SliConfig()


def test_an_unknown_default_source_is_the_callers_bug() -> None:
    with pytest.raises(ValueError, match="default_source"):
        parse_sli({}, default_source="graphite")


def test_http_details() -> None:
    config = parse_sli(
        sli(
            s={
                "source": "http",
                "url": "https://h/v",
                "method": "post",
                "headers": {"X-Tenant": 42, "Accept": "application/json"},
                "body": {"q": ["a", 1]},
                "auth": {"type": "basic", "secret": "stock.user"},
            }
        ),
        default_source="data",
    )
    assert config.indicators["s"] == IndicatorSpec(
        "s",
        "http",
        url="https://h/v",
        method="POST",
        headers={
            "X-Tenant": "42",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
        body='{"q":["a",1]}',
        auth=Auth("basic", "stock.user"),
    )


def test_a_given_content_type_is_kept_and_a_string_body_is_sent_as_it_is() -> None:
    spec = parse_sli(
        sli(
            s={
                "source": "http",
                "url": "http://h",
                "method": "PUT",
                "headers": {"content-type": "text/csv"},
                "body": [1],
            },
            t={"source": "http", "url": "http://h", "method": "POST", "body": "a,b"},
        ),
        default_source="data",
    ).indicators
    assert spec["s"].headers == {"content-type": "text/csv"}
    assert spec["t"].body == "a,b"
    assert spec["t"].headers == {}


def test_a_prometheus_indicator_may_name_its_own_server() -> None:
    spec = parse_sli(
        sli(
            e={
                "query": "up",
                "url": "http://other:9090",
                "auth": {"type": "bearer", "secret": "OTHER"},
                "headers": {"X-Scope-OrgID": "b"},
            }
        ),
        default_source="prometheus",
    ).indicators["e"]
    assert spec.url == "http://other:9090"
    assert spec.auth == Auth("bearer", "OTHER")
    assert spec.headers == {"X-Scope-OrgID": "b"}


def test_get_sli_may_keep_a_query() -> None:
    config = parse_sli(
        {"source": "get-sli", "provider": "dynatrace", "indicators": {"lcp": "builtin:lcp"}},
        default_source="prometheus",
    )
    assert config.indicators["lcp"] == IndicatorSpec("lcp", "get-sli", query="builtin:lcp")
    assert config.provider == "dynatrace"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (["a"], ": must be a mapping, not a list"),
        ({"spec_version": "0.1"}, "spec_version: must be \"1.0\", not '0.1'"),
        (
            {"indicator": {}},
            "indicator: unknown field (known: spec_version, source, provider, "
            "prometheus, indicators)",
        ),
        (
            {"source": "graphite"},
            "source: must be one of data, prometheus, http, get-sli, not 'graphite'",
        ),
        ({"provider": 3}, "provider: must be a string, not the number 3"),
        ({"prometheus": "http://p"}, "prometheus: must be a mapping, not a string"),
        ({"prometheus": {}}, "prometheus.url: required"),
        (
            {"prometheus": {"url": "p:9090"}},
            "prometheus.url: must start with http:// or https://, not 'p:9090'",
        ),
        (
            {"prometheus": {"url": "http://p", "token": "x"}},
            "prometheus.token: unknown field (known: url, auth, headers)",
        ),
        (
            {"prometheus": {"url": "http://p", "auth": "x"}},
            "prometheus.auth: must be a mapping with type and secret, not a string",
        ),
        (
            {"prometheus": {"url": "http://p", "auth": {"type": "oauth", "secret": "S"}}},
            "prometheus.auth.type: must be one of bearer, basic, not 'oauth'",
        ),
        (
            {"prometheus": {"url": "http://p", "auth": {"type": "bearer"}}},
            "prometheus.auth.secret: required: the name of a control plane secret",
        ),
        (
            {"prometheus": {"url": "http://p", "auth": {"type": "bearer", "secret": "../etc"}}},
            "prometheus.auth.secret: must be a secret's name (letters, digits, '-', '_', '.'), "
            "not '../etc'",
        ),
        (
            {
                "prometheus": {
                    "url": "http://p",
                    "auth": {"type": "bearer", "secret": "S", "token": "t"},
                }
            },
            "prometheus.auth.token: unknown field (known: type, secret)",
        ),
        (
            {"prometheus": {"url": "http://p", "headers": ["a"]}},
            "prometheus.headers: must be a mapping of names to values, not a list",
        ),
        (
            {"prometheus": {"url": "http://p", "headers": {"X-A": {"b": 1}}}},
            "prometheus.headers.X-A: must be a string, not a mapping",
        ),
        (
            {"prometheus": {"url": "http://p", "headers": {"X-A": True}}},
            "prometheus.headers.X-A: must be a string, not the boolean true",
        ),
        ({"indicators": ["a"]}, "indicators: must be a mapping of names to queries, not a list"),
        (sli(x=3), "indicators.x: must be a string or a mapping, not the number 3"),
        (
            sli(x={"source": "jmx"}),
            "indicators.x.source: must be one of data, prometheus, http, get-sli, not 'jmx'",
        ),
        (
            sli(x={"source": "data"}),
            "indicators.x.path: required: a dotted path such as task.field.0.value",
        ),
        (sli(x={"source": "data", "path": "a..b"}), "indicators.x.path: has an empty part: 'a..b'"),
        (
            sli(x={"source": "data", "path": "a", "query": "q"}),
            "indicators.x.query: unknown field (known: source, path)",
        ),
        (sli(x={"source": "prometheus"}), "indicators.x.query: required for source prometheus"),
        (
            sli(x={"source": "prometheus", "query": "  "}),
            "indicators.x.query: required for source prometheus",
        ),
        (
            sli(x={"query": "up", "auth": {"type": "bearer", "secret": "S"}}),
            "indicators.x.auth: only together with url (else prometheus.*)",
        ),
        (
            sli(x={"query": "up", "headers": {}}),
            "indicators.x.headers: only together with url (else prometheus.*)",
        ),
        (
            sli(x={"query": "up", "path": "a"}),
            "indicators.x.path: unknown field (known: source, query, url, auth, headers)",
        ),
        (sli(stock={"source": "http"}), "indicators.stock.url: required for source http"),
        (
            sli(stock={"source": "http", "url": "ftp://h"}),
            "indicators.stock.url: must start with http:// or https://, not 'ftp://h'",
        ),
        (
            sli(stock={"source": "http", "url": 5}),
            "indicators.stock.url: must be a string, not the number 5",
        ),
        (
            sli(stock={"source": "http", "url": "http://h", "method": "HEAD"}),
            "indicators.stock.method: must be one of GET, POST, PUT, PATCH, DELETE, not 'HEAD'",
        ),
        (
            sli(stock={"source": "http", "url": "http://h", "body": 3}),
            "indicators.stock.body: must be a string, a mapping or a list, not the number 3",
        ),
        (
            sli(stock={"source": "http", "url": "http://h", "path": ".a"}),
            "indicators.stock.path: has an empty part: '.a'",
        ),
        (
            sli(stock={"source": "http", "url": "http://h", "query": "q"}),
            "indicators.stock.query: unknown field (known: source, url, path, method, headers, "
            "body, auth)",
        ),
        (
            sli(lcp={"source": "get-sli", "url": "http://h"}),
            "indicators.lcp.url: unknown field (known: source, query)",
        ),
        ({"indicators": {"": "up"}}, "indicators.: the name must be a non-empty string"),
        ({"indicators": {7: "up"}}, "indicators.7: the name must be a non-empty string"),
    ],
)
def test_every_problem_names_its_field(document: Any, expected: str) -> None:
    assert one_problem(document) == expected


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "spec_version": "2",
            "indicators": {"a": {"source": "http"}, "b": {"source": "data"}, "c": "up"},
        }
    )
    assert [line.split(":")[0] for line in found] == [
        "spec_version",
        "indicators.a.url",
        "indicators.b.path",
    ]


def test_invalid_sli_is_a_domain_error_with_a_readable_message() -> None:
    with pytest.raises(DomainError) as caught:
        parse_sli(sli(stock={"source": "http"}), default_source="data")
    assert str(caught.value) == "indicators.stock.url: required for source http"
    assert isinstance(caught.value, InvalidSLI)
    named = InvalidSLI(caught.value.problems, source="sli.yaml")
    assert str(named) == "sli.yaml: indicators.stock.url: required for source http"


# --- auth headers ----------------------------------------------------------------------------


def test_auth_headers() -> None:
    assert Auth("bearer", "T").header("abc") == {"Authorization": "Bearer abc"}
    basic = Auth("basic", "U").header("user:pa:ss")
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"user:pa:ss").decode()}


# --- merging ---------------------------------------------------------------------------------


def test_merge_layers_indicators_by_name_and_settings_when_given() -> None:
    project = parse_sli(
        {
            "provider": "dynatrace",
            "prometheus": {"url": "http://project:9090"},
            "indicators": {"a": "up", "b": "down"},
        },
        default_source="prometheus",
    )
    service = parse_sli(
        {"prometheus": {"url": "http://service:9090"}, "indicators": {"b": "sideways", "c": "x"}},
        default_source="prometheus",
    )
    inline = parse_sli({"indicators": {"c": "task.c"}}, default_source="data")

    merged = merge_sli(merge_sli(project, service), inline)

    assert {name: (s.source, s.query or s.path) for name, s in merged.indicators.items()} == {
        "a": ("prometheus", "up"),
        "b": ("prometheus", "sideways"),
        "c": ("data", "task.c"),
    }
    assert merged.provider == "dynatrace"
    assert merged.prometheus == PrometheusServer("http://service:9090")
    assert merge_sli(SliConfig(), SliConfig()) == SliConfig()
    assert merge_sli(service, SliConfig(provider="p")).provider == "p"


# --- placeholders ----------------------------------------------------------------------------

WINDOW = Timeframe(start=1_700_000_000.7, end=1_700_000_300.7)


def variables(filters: dict[str, str] | None = None) -> dict[str, str]:
    return placeholders(
        project="seed",
        stage="dev",
        service="phone",
        deployment="canary",
        window=WINDOW,
        filters=filters or {},
    )


def test_placeholders() -> None:
    assert variables() == {
        "PROJECT": "seed",
        "STAGE": "dev",
        "SERVICE": "phone",
        "DEPLOYMENT": "canary",
        "DURATION_SECONDS": "300s",
        "START": "2023-11-14T22:13:20Z",
        "END": "2023-11-14T22:18:20Z",
        "START_EPOCH": "1700000000",
        "END_EPOCH": "1700000300",
    }


def test_duration_is_whole_seconds() -> None:
    almost = Timeframe(start=0.0, end=299.9999)
    found = placeholders(
        project="p", stage="s", service="v", deployment="", window=almost, filters={}
    )
    assert found["DURATION_SECONDS"] == "300s"


def test_filters_are_reachable_as_given_and_uppercased_without_quotes() -> None:
    found = variables({"handler": "Items'Controller\"", "service": "carts"})
    assert found["handler"] == found["HANDLER"] == "ItemsController"
    # As in Keptn, a filter wins over the built-in name.
    assert found["SERVICE"] == "carts"


def test_expand_a_keptn_query() -> None:
    query = KEPTN_SLI["indicators"]["error_rate"]
    expanded = expand(query, variables())
    assert "$" not in expanded
    assert 'job="phone-seed-dev"' in expanded
    assert "[300s]" in expanded


def test_expand_prefers_longer_names() -> None:
    template = "from=$START&s=$START_EPOCH&e=$END_EPOCH&to=$END"
    assert expand(template, variables()) == (
        "from=2023-11-14T22:13:20Z&s=1700000000&e=1700000300&to=2023-11-14T22:18:20Z"
    )


def test_expand_does_not_rescan_values_and_keeps_unknown_names() -> None:
    found = expand("$A $B $UNKNOWN $", {"A": "$B", "B": "b"})
    assert found == "$B b $UNKNOWN $"
    assert expand("$A", {}) == "$A"


# --- value_at --------------------------------------------------------------------------------

DATA: dict[str, Any] = {
    "extract-metadata": {"gps": {"lat": 47.3, "missing": None}, "camera": "X100"},
    "items": [{"count": "n/a"}, {"count": " 12.5 "}, {"count": 7}],
    "flags": {"yes": True, "no": False},
    "odd": {"nan": math.nan, "inf": "inf", "list": [1], "map": {"a": 1}},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("extract-metadata.gps.lat", 47.3),
        ("items.1.count", 12.5),
        ("items.2.count", 7.0),
        ("flags.yes", 1.0),
        ("flags.no", 0.0),
    ],
)
def test_value_at_reads_numbers(path: str, value: float) -> None:
    assert value_at(DATA, path, metric="m") == IndicatorValue("m", value)


def test_value_at_the_whole_document() -> None:
    assert value_at(3, "", metric="m") == IndicatorValue("m", 3.0)
    assert value_at("x", "", metric="m") == IndicatorValue.failed(
        "m", "the answer is 'x', not a number"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "extract-metadata.gps.present",
            "extract-metadata.gps.present not found: 'gps' has no key 'present'",
        ),
        (
            "checknumber.country",
            "checknumber.country not found: the document has no key 'checknumber'",
        ),
        ("items.0.count", "items.0.count is 'n/a', not a number"),
        ("items.3.count", "items.3.count not found: 'items' has no index 3 (length 3)"),
        ("items.first", "items.first not found: 'items' is a list, so 'first' must be an index"),
        (
            "extract-metadata.camera.model",
            "extract-metadata.camera.model not found: 'camera' is 'X100', which has no 'model'",
        ),
        ("extract-metadata.gps.missing", "extract-metadata.gps.missing is null, not a number"),
        ("odd.nan", "odd.nan is nan, not a finite number"),
        ("odd.inf", "odd.inf is 'inf', not a finite number"),
        ("odd.list", "odd.list is a list, not a number"),
        ("odd.map", "odd.map is a mapping, not a number"),
    ],
)
def test_value_at_explains_failures(path: str, message: str) -> None:
    assert value_at(DATA, path, metric="m") == IndicatorValue.failed("m", message)


def test_value_at_shortens_long_values() -> None:
    found = value_at({"a": "x" * 500}, "a", metric="m")
    assert not found.success
    assert len(found.message) < 100
    assert found.message.endswith("..., not a number")
