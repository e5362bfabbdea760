"""Webhook push: request building and signatures, backoff, and the dispatcher's outcomes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.application.envelope import Envelope
from controlplane.application.registry import Registry
from controlplane.application.webhooks import (
    SOURCE,
    DeliveryResult,
    RetryPolicy,
    WebhookDispatcher,
    WebhookRequest,
    build_request,
    sign,
)
from controlplane.domain.integrations import Subscription, SubscriptionFilter, Webhook
from controlplane.testing import InMemoryIntegrationStore
from tests.unit.application.fakes import FakeSettle

NOW = 1_795_255_200.0  # 2026-11-21T10:00:00Z
SECRET = "a-long-enough-secret"
KEY = b"\x00\x01binary key bytes\xff"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
URL = "http://127.0.0.1:9001/events"
OTHER_URL = "http://127.0.0.1:9002/hook"
TASK_TRIGGERED = "sh.keptn.event.checknumber.triggered"
SEQUENCE_TRIGGERED = "sh.keptn.event.dev.sequence-one.triggered"


def event(event_type: str = TASK_TRIGGERED, event_id: str = "ev-1", **data: Any) -> Envelope:
    return Envelope(
        id=event_id,
        source="controlplane/shipyard",
        type=event_type,
        time="2026-11-21T10:00:00.000Z",
        data={
            "project": "seed",
            "stage": "dev",
            "service": "phone",
            "checknumber": {"number": "+41 44 668 18 00"},
            **data,
        },
        keptn_context="5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f",
        triggered_id="seq-trigger-1",
        gitcommitid="abc123",
    )


def expected_signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks' scheme, written out here independently of the code under test."""
    content = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


# ------------------------------------------------------------------------------ sign


def test_sign_is_standard_webhooks_hmac_sha256() -> None:
    body = b'{"a":1}'
    assert sign(KEY, "msg_1", 1_700_000_000, body) == expected_signature(
        KEY, "msg_1", "1700000000", body
    )


def test_sign_matches_the_standard_webhooks_reference_vector() -> None:
    # The example from the Standard Webhooks specification and its reference libraries.
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert (
        sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


# ------------------------------------------------------------------------------ build_request


def subscription(mode: str = "structured", secret: str = SECRET) -> Subscription:
    return Subscription(
        "sub-1",
        TASK_TRIGGERED,
        SubscriptionFilter(("seed",)),
        Webhook(URL, secret, "binary" if mode == "binary" else "structured"),
    )


def verify(request: WebhookRequest, key: bytes) -> None:
    headers = request.headers
    assert headers["webhook-signature"] == expected_signature(
        key, headers["webhook-id"], headers["webhook-timestamp"], request.body
    )


def test_structured_mode_posts_the_whole_cloudevent() -> None:
    original = event(temporaryData={"kept": {"x": 1}, "distributor": {"other": "y"}})
    request = build_request(original, subscription(), now=NOW + 0.9)

    assert request.url == URL
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert not any(name.startswith("ce-") for name in request.headers)
    body = json.loads(request.body)
    assert body["id"] == "ev-1"
    assert body["type"] == TASK_TRIGGERED
    assert body["specversion"] == "1.0"
    assert body["shkeptncontext"] == original.keptn_context
    assert body["triggeredid"] == "seq-trigger-1"
    assert body["gitcommitid"] == "abc123"
    assert body["data"]["checknumber"] == {"number": "+41 44 668 18 00"}
    assert body["data"]["temporaryData"] == {
        "kept": {"x": 1},
        "distributor": {"other": "y", "subscriptionID": "sub-1"},
    }
    # The event itself is not changed for other receivers.
    assert "subscriptionID" not in original.data["temporaryData"]["distributor"]


def test_signature_headers_are_verifiable() -> None:
    request = build_request(event(), subscription(), now=NOW + 0.9)
    assert request.headers["webhook-id"] == "ev-1.sub-1"
    assert request.message_id == "ev-1.sub-1"
    assert request.headers["webhook-timestamp"] == str(int(NOW))
    verify(request, SECRET.encode())


def test_a_whsec_secret_signs_with_its_decoded_bytes() -> None:
    request = build_request(event(), subscription(secret=WHSEC), now=NOW)
    verify(request, KEY)
    with pytest.raises(AssertionError):
        verify(request, WHSEC.encode())


def test_each_attempt_is_signed_at_its_own_time_under_the_same_id() -> None:
    first = build_request(event(), subscription(), now=NOW)
    second = build_request(event(), subscription(), now=NOW + 30)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) == int(NOW) + 30
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    verify(second, SECRET.encode())


def test_binary_mode_posts_data_and_sends_attributes_as_headers() -> None:
    request = build_request(event(), subscription("binary"), now=NOW)

    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["project"] == "seed"
    assert body["temporaryData"]["distributor"]["subscriptionID"] == "sub-1"
    ce = {name: value for name, value in request.headers.items() if name.startswith("ce-")}
    assert ce == {
        "ce-specversion": "1.0",
        "ce-id": "ev-1",
        "ce-source": "controlplane/shipyard",
        "ce-type": TASK_TRIGGERED,
        "ce-time": "2026-11-21T10:00:00.000Z",
        "ce-shkeptncontext": "5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f",
        "ce-shkeptnspecversion": "0.2.4",
        "ce-triggeredid": "seq-trigger-1",
        "ce-gitcommitid": "abc123",
    }
    verify(request, SECRET.encode())


def test_binary_mode_leaves_out_absent_extensions() -> None:
    bare = event().evolve(triggered_id="", gitcommitid="")
    headers = build_request(bare, subscription("binary"), now=NOW).headers
    assert "ce-triggeredid" not in headers
    assert "ce-gitcommitid" not in headers
    assert headers["ce-id"] == "ev-1"


def test_binary_header_values_are_percent_encoded_printable_ascii() -> None:
    source = 'https://example.com/zürich "a" 100%'
    request = build_request(event().evolve(source=source), subscription("binary"), now=NOW)
    value = request.headers["ce-source"]
    assert value == "https://example.com/z%C3%BCrich%20%22a%22%20100%25"
    assert value.isascii()
    assert urllib.parse.unquote(value) == source


def test_non_ascii_data_is_sent_as_utf8_json() -> None:
    request = build_request(event(note="grüezi"), subscription(), now=NOW)
    assert "grüezi".encode() in request.body
    assert json.loads(request.body)["data"]["note"] == "grüezi"


def test_a_subscription_without_webhook_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="no webhook"):
        build_request(event(), Subscription("s", TASK_TRIGGERED), now=NOW)


# ------------------------------------------------------------------------------ RetryPolicy


def test_default_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    policy = RetryPolicy()
    assert [policy.delay(attempt, lambda: 0.5) for attempt in range(1, 9)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
        60.0,
    ]
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.8)
    assert policy.delay(7, lambda: 1.0) == pytest.approx(72.0)


@given(
    attempt=st.integers(min_value=-5, max_value=10**6),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    initial=st.floats(min_value=0.001, max_value=100.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    maximum=st.floats(min_value=0.0, max_value=3600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_delay_stays_within_the_jittered_bounds(
    attempt: int, draw: float, initial: float, factor: float, maximum: float, jitter: float
) -> None:
    policy = RetryPolicy(attempts=6, initial=initial, factor=factor, maximum=maximum, jitter=jitter)
    try:
        base = min(maximum, initial * factor ** max(attempt - 1, 0))
    except OverflowError:
        base = maximum  # grown past any float, so past the maximum
    delay = policy.delay(attempt, lambda: draw)
    assert delay >= 0.0
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


# ------------------------------------------------------------------------------ dispatcher fakes


class FakeSender:
    """Records each request; answers from a per-URL script, then with ``default``."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.script: dict[str, list[DeliveryResult]] = {}
        self.default = DeliveryResult(200)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def answer(self, url: str, *results: DeliveryResult) -> None:
        self.script.setdefault(url, []).extend(results)

    async def send(self, request: WebhookRequest, *, time_limit: float) -> DeliveryResult:
        assert time_limit == 5.0
        self.requests.append(request)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        queue = self.script.get(request.url)
        return queue.pop(0) if queue else self.default

    def urls(self) -> list[str]:
        return [request.url for request in self.requests]


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[Envelope] = []
        self.failures = 0

    async def publish(self, events: Sequence[Envelope]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        self.published.extend(events)


class Setup:
    def __init__(self) -> None:
        self.now = NOW
        self.ids = itertools.count(1)
        self.registry = Registry(
            InMemoryIntegrationStore(),
            ttl=600.0,
            clock=self.clock,
            new_id=lambda: f"sub-{next(self.ids)}",
        )
        self.sender = FakeSender()
        self.publisher = FakePublisher()
        self.open: set[str] = {"ev-1"}
        self.open_checks: list[tuple[str, str]] = []
        self.dispatcher = WebhookDispatcher(
            self.registry,
            self.sender,
            self.publisher,
            is_open=self.is_open,
            retry=RetryPolicy(attempts=3, initial=1.0, maximum=60.0),
            clock=self.clock,
            draw=lambda: 0.5,  # no jitter: delays are exact
        )

    def clock(self) -> float:
        return self.now

    async def is_open(self, event_type: str, event_id: str) -> bool:
        self.open_checks.append((event_type, event_id))
        return event_id in self.open

    async def register(
        self, name: str, url: str = URL, event_type: str = "checknumber.triggered", **extra: Any
    ) -> str:
        body = {
            "name": name,
            "subscriptions": [
                {
                    "event": event_type,
                    "filter": {"projects": ["seed"]},
                    "webhook": {"url": url, "secret": SECRET},
                }
            ],
            **extra,
        }
        integration_id, _ = await self.registry.register(body)
        return integration_id

    def subscription_id(self, integration_id: str) -> str:
        return self.registry.get(integration_id).subscriptions[0].id

    async def deliver(self, envelope: Envelope, attempt: int = 1) -> FakeSettle:
        """Hand the event over as the broker's ``attempt``-th delivery; wait until settled."""
        ack = FakeSettle(attempt)
        await self.dispatcher.receive(envelope, ack)
        await asyncio.wait_for(ack.settled.wait(), timeout=5)
        return ack


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    setup = Setup()
    yield setup
    await setup.dispatcher.stop()
    assert setup.dispatcher.inflight == 0


# ------------------------------------------------------------------------------ dispatcher


async def test_delivered_event_is_processed(setup: Setup) -> None:
    integration_id = await setup.register("checker")
    ack = await setup.deliver(event())
    assert ack.outcomes == [("processed", None)]
    [request] = setup.sender.requests
    assert request.url == URL
    assert request.headers["webhook-id"] == f"ev-1.{setup.subscription_id(integration_id)}"
    verify(request, SECRET.encode())
    assert setup.publisher.published == []


async def test_an_event_nobody_wants_is_processed_without_sending(setup: Setup) -> None:
    await setup.register("checker")
    for unwanted in (event(project="other"), event("sh.keptn.event.test.triggered")):
        ack = await setup.deliver(unwanted)
        assert ack.outcomes == [("processed", None)]
    assert setup.sender.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        DeliveryResult(503),
        DeliveryResult(500, "boom"),
        DeliveryResult(408),
        DeliveryResult(429),
        DeliveryResult(None, "connection refused"),
    ],
)
async def test_a_temporary_failure_is_retried_with_backoff(
    setup: Setup, failure: DeliveryResult
) -> None:
    await setup.register("checker")
    setup.sender.answer(URL, failure, failure)

    first = await setup.deliver(event(), attempt=1)
    assert first.outcomes == [("retry", 1.0)]
    second = await setup.deliver(event(), attempt=2)
    assert second.outcomes == [("retry", 2.0)]
    third = await setup.deliver(event(), attempt=3)
    assert third.outcomes == [("processed", None)]

    assert setup.sender.urls() == [URL, URL, URL]
    assert len({r.headers["webhook-id"] for r in setup.sender.requests}) == 1
    assert setup.publisher.published == []


async def test_the_last_failed_attempt_answers_the_open_task(setup: Setup) -> None:
    integration_id = await setup.register("checker")
    subscription_id = setup.subscription_id(integration_id)
    setup.sender.default = DeliveryResult(503, "unavailable")

    assert (await setup.deliver(event(), attempt=1)).outcomes == [("retry", 1.0)]
    assert (await setup.deliver(event(), attempt=2)).outcomes == [("retry", 2.0)]
    assert (await setup.deliver(event(), attempt=3)).outcomes == [("processed", None)]

    started, finished = setup.publisher.published
    assert started.type == "sh.keptn.event.checknumber.started"
    assert finished.type == "sh.keptn.event.checknumber.finished"
    for answer in (started, finished):
        assert answer.source == SOURCE == "controlplane/webhook"
        assert answer.triggered_id == "ev-1"
        assert answer.keptn_context == "5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f"
        assert answer.gitcommitid == "abc123"
        assert answer.time == "2026-11-21T10:00:00.000Z"
        assert (answer.project, answer.stage, answer.service) == ("seed", "dev", "phone")
    assert started.id != finished.id
    assert finished.data["status"] == "errored"
    assert finished.data["result"] == "fail"
    message = finished.data["message"]
    assert URL in message
    assert "'checker'" in message
    assert "3 attempts" in message
    assert "HTTP 503: unavailable" in message
    assert subscription_id not in {started.id, finished.id}


async def test_a_refusal_is_final_at_once(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.answer(URL, DeliveryResult(400, "bad event"))
    ack = await setup.deliver(event(), attempt=1)
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL]
    _, finished = setup.publisher.published
    assert finished.data["status"] == "errored"
    assert "after 1 attempt: HTTP 400: bad event" in finished.data["message"]


async def test_a_connection_error_is_named_in_the_answer(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.default = DeliveryResult(None, "connection refused")
    await setup.deliver(event(), attempt=3)
    _, finished = setup.publisher.published
    assert "connection refused" in finished.data["message"]


async def test_giving_up_on_a_closed_task_publishes_nothing(setup: Setup) -> None:
    await setup.register("checker")
    setup.open.clear()
    setup.sender.answer(URL, DeliveryResult(404))
    ack = await setup.deliver(event(), attempt=1)
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL]
    assert setup.publisher.published == []


async def test_giving_up_on_a_sequence_event_publishes_nothing(setup: Setup) -> None:
    await setup.register("watcher", event_type="*.*.triggered")
    setup.open.add("seq-ev")
    setup.sender.default = DeliveryResult(503)
    ack = await setup.deliver(event(SEQUENCE_TRIGGERED, "seq-ev"), attempt=3)
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL]
    assert setup.publisher.published == []


async def test_a_sequence_event_is_retried_although_no_task_is_open_for_it(setup: Setup) -> None:
    # The real open check looks for an open task; a sequence's .triggered never is one.
    await setup.register("watcher", event_type="*.*.triggered")
    setup.sender.answer(URL, DeliveryResult(503))
    seq = event(SEQUENCE_TRIGGERED, "seq-ev")
    assert (await setup.deliver(seq, attempt=1)).outcomes == [("retry", 1.0)]
    assert (await setup.deliver(seq, attempt=2)).outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL, URL]


async def test_a_retry_goes_only_to_the_webhook_that_failed(setup: Setup) -> None:
    await setup.register("good", URL)
    await setup.register("flaky", OTHER_URL)
    setup.sender.answer(OTHER_URL, DeliveryResult(503))

    assert (await setup.deliver(event(), attempt=1)).outcomes == [("retry", 1.0)]
    assert sorted(setup.sender.urls()) == sorted([URL, OTHER_URL])

    setup.sender.requests.clear()
    assert (await setup.deliver(event(), attempt=2)).outcomes == [("processed", None)]
    assert setup.sender.urls() == [OTHER_URL]


async def test_only_the_failing_webhook_is_given_up_on(setup: Setup) -> None:
    await setup.register("good", URL)
    await setup.register("dead", OTHER_URL)
    setup.sender.answer(OTHER_URL, DeliveryResult(503), DeliveryResult(503), DeliveryResult(503))

    for attempt in (1, 2):
        assert (await setup.deliver(event(), attempt=attempt)).outcomes[0][0] == "retry"
    assert (await setup.deliver(event(), attempt=3)).outcomes == [("processed", None)]
    assert setup.sender.urls().count(URL) == 1
    assert setup.sender.urls().count(OTHER_URL) == 3
    _, finished = setup.publisher.published
    assert OTHER_URL in finished.data["message"]
    assert "'dead'" in finished.data["message"]


async def test_a_deleted_subscription_is_not_delivered_on_retry(setup: Setup) -> None:
    integration_id = await setup.register("checker")
    setup.sender.answer(URL, DeliveryResult(503))
    assert (await setup.deliver(event(), attempt=1)).outcomes == [("retry", 1.0)]

    await setup.registry.delete_subscription(integration_id, setup.subscription_id(integration_id))
    ack = await setup.deliver(event(), attempt=2)
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL]
    assert setup.publisher.published == []


async def test_an_edited_subscription_gets_the_retry_at_its_new_url(setup: Setup) -> None:
    integration_id = await setup.register("checker")
    subscription_id = setup.subscription_id(integration_id)
    setup.sender.answer(URL, DeliveryResult(503))
    await setup.deliver(event(), attempt=1)

    await setup.registry.replace_subscription(
        integration_id,
        subscription_id,
        {"event": "checknumber.triggered", "webhook": {"url": OTHER_URL, "secret": SECRET}},
    )
    assert (await setup.deliver(event(), attempt=2)).outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL, OTHER_URL]


async def test_a_task_that_ended_before_the_retry_is_not_sent_again(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.answer(URL, DeliveryResult(503))
    assert (await setup.deliver(event(), attempt=1)).outcomes == [("retry", 1.0)]

    setup.open.discard("ev-1")  # another executor finished it, or it timed out
    ack = await setup.deliver(event(), attempt=2)
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [URL]
    assert setup.publisher.published == []
    assert setup.open_checks == [(TASK_TRIGGERED, "ev-1")]


async def test_give_up_answers_have_the_same_ids_every_time(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.default = DeliveryResult(400)
    await setup.deliver(event(), attempt=1)
    await setup.deliver(event(), attempt=1)  # redelivered: the broker lost the ack
    first, second = setup.publisher.published[:2], setup.publisher.published[2:]
    assert [e.id for e in first] == [e.id for e in second]
    assert len({e.id for e in first}) == 2

    other = Setup()
    await other.register("checker")
    other.sender.default = DeliveryResult(400)
    await other.deliver(event(), attempt=1)
    assert [e.id for e in other.publisher.published] == [e.id for e in first]


async def test_give_up_answers_differ_per_event(setup: Setup) -> None:
    await setup.register("checker")
    setup.open.add("ev-2")
    setup.sender.default = DeliveryResult(400)
    await setup.deliver(event(event_id="ev-1"))
    await setup.deliver(event(event_id="ev-2"))
    assert len({e.id for e in setup.publisher.published}) == 4


async def test_a_give_up_that_cannot_be_published_is_tried_again(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.default = DeliveryResult(400)
    setup.publisher.failures = 1

    failed = await setup.deliver(event(), attempt=1)
    assert [outcome for outcome, _ in failed.outcomes] == ["retry"]
    assert setup.publisher.published == []

    again = await setup.deliver(event(), attempt=2)
    assert again.outcomes == [("processed", None)]
    _, finished = setup.publisher.published
    assert finished.data["status"] == "errored"


async def test_stop_cancels_deliveries_in_flight_and_hands_them_back(setup: Setup) -> None:
    await setup.register("checker")
    setup.sender.gate = asyncio.Event()  # the receiver never answers
    ack = FakeSettle(1)
    await setup.dispatcher.receive(event(), ack)
    await asyncio.wait_for(setup.sender.entered.wait(), timeout=5)
    assert setup.dispatcher.inflight == 1

    await setup.dispatcher.stop()
    assert ack.outcomes == [("retry", 0)]
    assert setup.dispatcher.inflight == 0
    assert setup.publisher.published == []


async def test_deliveries_of_different_events_run_side_by_side(setup: Setup) -> None:
    await setup.register("checker")
    setup.open.add("ev-2")
    setup.sender.gate = asyncio.Event()
    first, second = FakeSettle(1), FakeSettle(1)
    await setup.dispatcher.receive(event(event_id="ev-1"), first)
    await setup.dispatcher.receive(event(event_id="ev-2"), second)
    assert setup.dispatcher.inflight == 2

    setup.sender.gate.set()
    await asyncio.wait_for(first.settled.wait(), timeout=5)
    await asyncio.wait_for(second.settled.wait(), timeout=5)
    assert first.outcomes == second.outcomes == [("processed", None)]
    assert sorted(r.headers["webhook-id"].split(".")[0] for r in setup.sender.requests) == [
        "ev-1",
        "ev-2",
    ]


async def test_an_expired_integration_gets_no_deliveries(setup: Setup) -> None:
    await setup.register("gone")
    forever = await setup.register("third-party", OTHER_URL, expires=False)
    setup.now += 601
    ack = await setup.deliver(event())
    assert ack.outcomes == [("processed", None)]
    assert setup.sender.urls() == [OTHER_URL]
    assert setup.registry.get(forever).name == "third-party"
