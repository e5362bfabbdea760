"""Integrations: parsing with field paths, matching, ids, keys and the storage form."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.domain import integrations
from controlplane.domain.errors import DomainError
from controlplane.domain.integrations import (
    Integration,
    InvalidIntegration,
    Metadata,
    Subscription,
    SubscriptionFilter,
    Webhook,
)

SECRET = "a-long-enough-secret"
KEY = bytes(range(24))
WHSEC = "whsec_" + base64.b64encode(KEY).decode()

REGISTRATION: dict[str, Any] = {
    "name": "checknumber-node",
    "metadata": {
        "hostname": "laptop",
        "integrationversion": "1.0.0",
        "distributorversion": "",
        "location": "remote-execution-plane",
        "kubernetesmetadata": {"namespace": "default", "podname": "pod-1", "deploymentname": "d"},
    },
    "subscriptions": [
        {
            "event": "sh.keptn.event.checknumber.triggered",
            "filter": {"projects": ["seed"], "stages": [], "services": []},
            "webhook": {
                "url": "http://127.0.0.1:9001/events",
                "mode": "structured",
                "secret": WHSEC,
            },
        }
    ],
    "expires": True,
}


def problems_of(body: object, *, path: str = "") -> tuple[str, ...]:
    with pytest.raises(InvalidIntegration) as caught:
        integrations.parse_subscription(body, "sub-1", path=path)
    return caught.value.problems


def registration_problems(body: object) -> tuple[str, ...]:
    with pytest.raises(InvalidIntegration) as caught:
        integrations.parse_registration(body)
    return caught.value.problems


# ------------------------------------------------------------------------------ ids and keys


def test_integration_id_is_keptns_sha1_of_name_namespace_hostname() -> None:
    expected = hashlib.sha1(b"checknumber-node-default-laptop").hexdigest()
    assert integrations.integration_id("checknumber-node", "default", "laptop") == expected
    assert len(expected) == 40


def test_integration_id_is_stable_and_tells_hosts_apart() -> None:
    first = integrations.integration_id("svc", "ns", "host-a")
    assert integrations.integration_id("svc", "ns", "host-a") == first
    assert integrations.integration_id("svc", "ns", "host-b") != first
    assert integrations.integration_id("svc", "other", "host-a") != first
    assert integrations.integration_id("svc", "", "") == hashlib.sha1(b"svc--").hexdigest()


def test_signing_key_decodes_standard_webhooks_secrets() -> None:
    assert integrations.signing_key(WHSEC) == KEY
    assert Webhook("http://h/", WHSEC).key == KEY


def test_signing_key_of_a_plain_secret_is_its_utf8_bytes() -> None:
    assert integrations.signing_key(SECRET) == SECRET.encode()
    assert integrations.signing_key("geheimnis-über-16") == "geheimnis-über-16".encode()


# ------------------------------------------------------------------------------ registration


def test_parse_registration_reads_keptns_body() -> None:
    name, metadata, subscriptions, expires = integrations.parse_registration(REGISTRATION)
    assert name == "checknumber-node"
    assert metadata == Metadata(
        hostname="laptop",
        integrationversion="1.0.0",
        distributorversion="",
        location="remote-execution-plane",
        namespace="default",
        podname="pod-1",
        deploymentname="d",
    )
    assert subscriptions == REGISTRATION["subscriptions"]
    assert expires is True


def test_a_registration_needs_only_a_name() -> None:
    assert integrations.parse_registration({"name": "svc"}) == ("svc", Metadata(), [], True)
    assert integrations.parse_registration({"name": "svc", "expires": False})[3] is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "name: is required"),
        ({"name": ""}, "name: is required"),
        ({"name": "  "}, "name: is required"),
        ({"name": 7}, "name: is required"),
        ({"name": "my service"}, "name: 'my service' may not contain whitespace, '*' or '>'"),
        ({"name": "svc*"}, "name: 'svc*' may not contain"),
        ({"name": "svc>"}, "name: 'svc>' may not contain"),
        ({"name": "s", "metadata": []}, "metadata: must be an object"),
        ({"name": "s", "metadata": {"hostname": 1}}, "metadata.hostname: must be a string"),
        (
            {"name": "s", "metadata": {"kubernetesmetadata": "default"}},
            "metadata.kubernetesmetadata: must be an object",
        ),
        (
            {"name": "s", "metadata": {"kubernetesmetadata": {"namespace": ["a"]}}},
            "metadata.kubernetesmetadata.namespace: must be a string",
        ),
        ({"name": "s", "subscriptions": {}}, "subscriptions: must be a list"),
        ({"name": "s", "subscriptions": [{}, "x"]}, "subscriptions[1]: must be an object"),
        ({"name": "s", "expires": "no"}, "expires: must be true or false"),
    ],
)
def test_registration_problems_name_the_field(body: object, expected: str) -> None:
    problems = registration_problems(body)
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize("body", [[REGISTRATION], "svc", None, 3])
def test_a_registration_must_be_an_object(body: object) -> None:
    assert registration_problems(body) == ("the body must be a JSON object",)


def test_every_registration_problem_is_reported_at_once() -> None:
    problems = registration_problems(
        {"name": "a b", "metadata": {"hostname": 3}, "subscriptions": 1, "expires": 0}
    )
    assert [problem.split(":")[0] for problem in problems] == [
        "name",
        "metadata.hostname",
        "subscriptions",
        "expires",
    ]


def test_invalid_integration_is_a_domain_error_listing_every_problem() -> None:
    error = InvalidIntegration(["a: x", "b: y"])
    assert isinstance(error, DomainError)
    assert str(error) == "a: x; b: y"


# ------------------------------------------------------------------------------ subscriptions


def test_parse_subscription_builds_it_under_the_given_id() -> None:
    subscription = integrations.parse_subscription(REGISTRATION["subscriptions"][0], "sub-1")
    assert subscription == Subscription(
        id="sub-1",
        event="sh.keptn.event.checknumber.triggered",
        filter=SubscriptionFilter(projects=("seed",)),
        webhook=Webhook("http://127.0.0.1:9001/events", WHSEC, "structured"),
    )


def test_short_event_types_are_stored_in_full() -> None:
    subscription = integrations.parse_subscription({"event": "checknumber.triggered"}, "s")
    assert subscription.event == "sh.keptn.event.checknumber.triggered"
    assert subscription.filter == SubscriptionFilter()
    assert subscription.webhook is None


def test_nats_wildcards_are_allowed_without_a_webhook() -> None:
    assert integrations.parse_subscription({"event": ">"}, "s").event == "sh.keptn.event.>"
    assert integrations.parse_subscription({"event": "*.finished"}, "s").event == (
        "sh.keptn.event.*.finished"
    )


def test_a_webhook_may_use_a_wildcard_that_only_matches_triggered_types() -> None:
    body = {"event": "*.triggered", "webhook": {"url": "https://h/x", "secret": SECRET}}
    subscription = integrations.parse_subscription(body, "s")
    assert subscription.event == "sh.keptn.event.*.triggered"
    assert subscription.webhook == Webhook("https://h/x", SECRET, "structured")


def test_binary_mode_is_kept() -> None:
    body = {
        "event": "a.triggered",
        "webhook": {"url": "http://h", "secret": SECRET, "mode": "binary"},
    }
    webhook = integrations.parse_subscription(body, "s").webhook
    assert webhook is not None
    assert webhook.mode == "binary"


def test_filter_lists_drop_repeats_and_keep_order() -> None:
    body = {
        "event": "a.triggered",
        "filter": {"projects": ["p2", "p1", "p2"], "stages": ["dev"], "services": ["s", "s"]},
    }
    assert integrations.parse_subscription(body, "s").filter == SubscriptionFilter(
        ("p2", "p1"), ("dev",), ("s",)
    )


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ({}, "event", "is required"),
        ({"event": ""}, "event", "is required"),
        ({"event": 5}, "event", "is required"),
        ({"event": "a..triggered"}, "event", "empty segment"),
        ({"event": "a.>.triggered"}, "event", "'>' may only be the last segment"),
        ({"event": "a.triggered", "filter": []}, "filter", "must be an object"),
        ({"event": "a.triggered", "filter": {"projects": "p"}}, "filter.projects", "list"),
        ({"event": "a.triggered", "filter": {"stages": [""]}}, "filter.stages", "non-empty"),
        ({"event": "a.triggered", "filter": {"stages": [1]}}, "filter.stages", "list"),
        (
            {"event": "a.triggered", "filter": {"projects": [], "services": ["carts"]}},
            "filter.services",
            "must also name its stages",
        ),
        ({"event": "a.triggered", "webhook": "http://h"}, "webhook", "must be an object"),
        ({"event": "a.triggered", "webhook": {"secret": SECRET}}, "webhook.url", "http"),
        (
            {"event": "a.triggered", "webhook": {"url": "ftp://h/x", "secret": SECRET}},
            "webhook.url",
            "http:// or https://",
        ),
        (
            {"event": "a.triggered", "webhook": {"url": "http:///path", "secret": SECRET}},
            "webhook.url",
            "with a host",
        ),
        (
            {"event": "a.triggered", "webhook": {"url": "http://[::1", "secret": SECRET}},
            "webhook.url",
            "http:// or https://",
        ),
        (
            {"event": "a.triggered", "webhook": {"url": "http://h", "secret": SECRET, "mode": "x"}},
            "webhook.mode",
            "'structured' or 'binary'",
        ),
        ({"event": "a.triggered", "webhook": {"url": "http://h"}}, "webhook.secret", "required"),
        (
            {"event": "a.triggered", "webhook": {"url": "http://h", "secret": "x" * 15}},
            "webhook.secret",
            "at least 16 characters",
        ),
        (
            {
                "event": "a.triggered",
                "webhook": {"url": "http://h", "secret": "whsec_!!!!!!!!!!!!"},
            },
            "webhook.secret",
            "base64",
        ),
        (
            {"event": "a.finished", "webhook": {"url": "http://h", "secret": SECRET}},
            "event",
            "only .triggered event types can be pushed",
        ),
        (
            {"event": ">", "webhook": {"url": "http://h", "secret": SECRET}},
            "event",
            "only .triggered event types can be pushed",
        ),
    ],
)
def test_subscription_problems_name_the_field(body: object, path: str, expected: str) -> None:
    problems = problems_of(body)
    assert any(p.startswith(f"{path}: ") and expected in p for p in problems), problems


def test_subscription_paths_carry_the_given_prefix() -> None:
    body = {"event": "a.triggered", "webhook": {"url": "http://h", "secret": "short"}}
    problems = problems_of(body, path="subscriptions[2]")
    assert len(problems) == 1
    assert problems[0].startswith("subscriptions[2].webhook.secret: is required")


@pytest.mark.parametrize("body", [[], "a.triggered", None])
def test_a_subscription_must_be_an_object(body: object) -> None:
    assert problems_of(body) == ("must be an object",)
    assert problems_of(body, path="subscriptions[0]") == ("subscriptions[0]: must be an object",)


def test_every_subscription_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "event": "a b",
            "filter": {"services": ["x"]},
            "webhook": {"url": "mailto:x", "mode": "push", "secret": ""},
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "event",
        "filter.services",
        "webhook.url",
        "webhook.mode",
        "webhook.secret",
    ]


# ------------------------------------------------------------------------------ matching


def test_a_subscription_matches_its_event_pattern_and_filter() -> None:
    subscription = Subscription(
        "s",
        "sh.keptn.event.*.triggered",
        SubscriptionFilter(("seed",), ("dev", "prod"), ("phone",)),
    )
    task = "sh.keptn.event.checknumber.triggered"
    assert subscription.matches(task, "seed", "dev", "phone")
    assert subscription.matches(task, "seed", "prod", "phone")
    assert not subscription.matches(task, "other", "dev", "phone")
    assert not subscription.matches(task, "seed", "staging", "phone")
    assert not subscription.matches(task, "seed", "dev", "carts")
    assert not subscription.matches("sh.keptn.event.checknumber.finished", "seed", "dev", "phone")


def test_an_empty_filter_admits_every_scope() -> None:
    subscription = Subscription("s", "sh.keptn.event.checknumber.triggered")
    assert subscription.matches("sh.keptn.event.checknumber.triggered", "any", "thing", "")
    assert subscription.matches("sh.keptn.event.checknumber.triggered", "", "", "")


def test_expiry_is_after_the_ttl_and_never_when_expires_is_false() -> None:
    integration = Integration("i", "svc", last_seen=100.0)
    assert not integration.expired(now=700.0, ttl=600.0)
    assert integration.expired(now=700.5, ttl=600.0)
    assert not integration.evolve(expires=False).expired(now=1e9, ttl=600.0)


def test_admits_scope_is_keptns_listing_filter() -> None:
    integration = Integration(
        "i",
        "svc",
        subscriptions=(
            Subscription("a", "sh.keptn.event.x.triggered", SubscriptionFilter(("seed",))),
            Subscription("b", "sh.keptn.event.y.triggered", SubscriptionFilter((), ("prod",))),
        ),
    )
    assert integration.admits_scope("seed", "", "")
    assert integration.admits_scope("other", "prod", "")  # subscription b allows any project
    assert integration.admits_scope("seed", "dev", "")  # subscription a allows any stage
    assert not integration.admits_scope("other", "dev", "")
    assert not Integration("j", "empty").admits_scope("seed", "", "")


# ------------------------------------------------------------------------------ JSON forms


def test_the_api_form_never_holds_the_secret() -> None:
    subscription = integrations.parse_subscription(REGISTRATION["subscriptions"][0], "sub-1")
    shown = subscription.to_json()
    assert shown == {
        "id": "sub-1",
        "event": "sh.keptn.event.checknumber.triggered",
        "filter": {"projects": ["seed"], "stages": [], "services": []},
        "webhook": {"url": "http://127.0.0.1:9001/events", "mode": "structured"},
    }
    assert WHSEC not in json.dumps(shown)
    assert subscription.to_json(with_secret=True)["webhook"]["secret"] == WHSEC
    assert "webhook" not in Subscription("s", "sh.keptn.event.x.triggered").to_json()


def test_metadata_json_nests_kubernetes_metadata_as_keptn_does() -> None:
    assert Metadata(hostname="h", namespace="ns", podname="p").to_json() == {
        "hostname": "h",
        "integrationversion": "",
        "distributorversion": "",
        "location": "",
        "kubernetesmetadata": {"namespace": "ns", "podname": "p", "deploymentname": ""},
    }


def test_the_storage_form_keeps_secrets_and_round_trips() -> None:
    subscription = integrations.parse_subscription(REGISTRATION["subscriptions"][0], "sub-1")
    integration = Integration(
        id="abc",
        name="checknumber-node",
        metadata=Metadata(hostname="laptop", namespace="default"),
        subscriptions=(subscription, Subscription("sub-2", "sh.keptn.event.>")),
        last_seen=1_790_000_000.25,
        expires=False,
    )
    document = json.loads(json.dumps(integrations.to_document(integration)))
    assert document["subscriptions"][0]["webhook"]["secret"] == WHSEC
    assert "last_seen" not in document
    assert integrations.from_document(document, 1_790_000_000.25) == integration


NAMES = st.text(alphabet="abcxyz-_0123ü", min_size=1, max_size=8)
FILTERS = st.builds(
    SubscriptionFilter,
    st.lists(NAMES, max_size=3, unique=True).map(tuple),
    st.lists(NAMES, max_size=3, unique=True).map(tuple),
    st.lists(NAMES, max_size=3, unique=True).map(tuple),
)
WEBHOOKS = st.builds(
    Webhook,
    st.sampled_from(["http://h:1/x", "https://example.com/hook?a=1"]),
    st.sampled_from([SECRET, WHSEC, "ünïcödé-secret-value"]),
    st.sampled_from(integrations.WEBHOOK_MODES),
)
SUBSCRIPTIONS = st.builds(
    Subscription,
    NAMES,
    st.sampled_from(["sh.keptn.event.a.triggered", "sh.keptn.event.*.*.triggered", "sh.keptn.>"]),
    FILTERS,
    st.none() | WEBHOOKS,
)
INTEGRATIONS = st.builds(
    Integration,
    NAMES,
    NAMES,
    st.builds(Metadata, NAMES, NAMES, NAMES, NAMES, NAMES, NAMES, NAMES),
    st.lists(SUBSCRIPTIONS, max_size=4).map(tuple),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.booleans(),
)


@given(INTEGRATIONS)
def test_every_integration_survives_the_storage_form(integration: Integration) -> None:
    stored = json.loads(json.dumps(integrations.to_document(integration)))
    assert integrations.from_document(stored, integration.last_seen) == integration
