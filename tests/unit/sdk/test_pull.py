"""HTTP pull: polling the open-events listing and answering with POST /api/v1/event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tasksdk import ApiError, TaskApp, TaskContext, TransportError, contract
from tasksdk.transports.http import HttpPullTransport
from tests.unit.sdk.fake_control_plane import FakeControlPlane, eventually

TRIGGERED = "sh.keptn.event.checknumber.triggered"
FAST = {"poll_interval": 0.01, "ping_interval": 0.05}


def checknumber_app(calls: list[str], **filters: Any) -> TaskApp:
    app = TaskApp("checknumber-service")

    @app.task("checknumber", **filters)
    async def check(ctx: TaskContext) -> dict[str, Any]:
        calls.append(ctx.event.id)
        return {"checknumber": {"digits": len(str(ctx.properties.get("number", "")))}}

    return app


def triggered(project: str = "seed", stage: str = "dev", service: str = "phone") -> dict[str, Any]:
    return contract.triggered_event(
        "checknumber",
        project=project,
        stage=stage,
        service=service,
        data={"checknumber": {"number": 12345}},
    )


async def test_an_open_event_is_answered_started_then_finished() -> None:
    fake = FakeControlPlane()
    calls: list[str] = []
    event = triggered()
    fake.add_open(event)

    async with fake.api() as api, checknumber_app(calls).connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    assert calls == [event["id"]]
    finished = fake.events[-1]
    assert finished["source"] == "checknumber-service"
    assert finished["shkeptncontext"] == event["shkeptncontext"]
    assert finished["data"]["checknumber"] == {"digits": 5}
    assert finished["data"]["result"] == "pass"
    assert set(fake.event_content_types) == {"application/cloudevents+json"}


async def test_an_event_listed_on_every_poll_is_handled_once() -> None:
    fake = FakeControlPlane()
    fake.close_on_finished = False  # another executor keeps the task open
    calls: list[str] = []
    event = triggered()
    fake.add_open(event)

    async with fake.api() as api, checknumber_app(calls).connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])
        polls = len(fake.polls)
        await eventually(lambda: len(fake.polls) >= polls + 5)

    assert calls == [event["id"]]
    assert fake.answers_to(event["id"]) == ["started", "finished"]


async def test_every_page_of_the_listing_is_read() -> None:
    fake = FakeControlPlane()
    calls: list[str] = []
    events = [triggered() for _ in range(120)]
    for event in events:
        fake.add_open(event)

    async with fake.api() as api, checknumber_app(calls).connect_pull(api, **FAST):
        await eventually(lambda: len(calls) == len(events))

    assert sorted(calls) == sorted(e["id"] for e in events)
    assert {query["pageSize"] for _, query in fake.polls} == {"50"}
    assert any(query.get("nextPageKey") == "100" for _, query in fake.polls)


@pytest.mark.parametrize(
    ("filters", "expected_query"),
    [
        ({}, {}),
        ({"project": "seed"}, {"project": "seed"}),
        ({"project": "seed", "stage": ["dev", "prod"]}, {"project": "seed"}),
        ({"stage": ["dev"], "service": "phone"}, {"stage": "dev", "service": "phone"}),
    ],
)
async def test_only_single_valued_filters_narrow_the_listing(
    filters: dict[str, Any], expected_query: dict[str, str]
) -> None:
    fake = FakeControlPlane()

    async with fake.api() as api, checknumber_app([], **filters).connect_pull(api, **FAST):
        await eventually(lambda: len(fake.polls) >= 1)

    event_type, query = fake.polls[0]
    assert event_type == TRIGGERED
    assert query == {**expected_query, "pageSize": "50"}


async def test_events_outside_the_handler_filters_are_not_answered() -> None:
    fake = FakeControlPlane()
    calls: list[str] = []
    mine, other = triggered(stage="dev"), triggered(stage="prod")
    fake.add_open(other)
    fake.add_open(mine)

    app = checknumber_app(calls, stage=["dev", "hardening"])
    async with fake.api() as api, app.connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(mine["id"]) == ["started", "finished"])
        polls = len(fake.polls)
        await eventually(lambda: len(fake.polls) >= polls + 2)

    assert calls == [mine["id"]]
    assert fake.answers_to(other["id"]) == []


async def test_answers_are_retried_while_the_api_answers_5xx() -> None:
    fake = FakeControlPlane()
    fake.fail_events = [503, 502, 500]
    calls: list[str] = []
    event = triggered()
    fake.add_open(event)

    async with fake.api() as api, checknumber_app(calls).connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    assert calls == [event["id"]]


async def test_a_started_that_cannot_be_sent_leaves_the_event_for_a_later_poll() -> None:
    fake = FakeControlPlane()
    fake.fail_events = [503] * 4  # all attempts of the first .started
    calls: list[str] = []
    event = triggered()
    fake.add_open(event)

    async with fake.api() as api, checknumber_app(calls).connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])

    assert calls == [event["id"]]


async def test_publish_raises_the_server_message_on_4xx() -> None:
    fake = FakeControlPlane()
    fake.add_open(triggered())
    answer = contract.encode({"type": "sh.keptn.event.checknumber.started", "triggeredid": "nope"})

    async with fake.api() as api:
        transport = HttpPullTransport(api)
        with pytest.raises(ApiError, match="already ended") as raised:
            await transport.publish("sh.keptn.event.checknumber.started", answer)

    assert raised.value.status == 409


async def test_publish_raises_after_the_retries_when_the_api_is_down() -> None:
    fake = FakeControlPlane()
    fake.down = True

    async with fake.api() as api:
        with pytest.raises(TransportError, match="cannot reach the control plane API"):
            await HttpPullTransport(api).publish("x", b"{}")

    assert fake.unreachable_attempts == 4


async def test_the_api_token_is_sent_as_x_token() -> None:
    fake = FakeControlPlane(token="s3cret")
    event = triggered()
    fake.add_open(event)

    async with fake.api(token="s3cret") as api, checknumber_app([]).connect_pull(api, **FAST):
        await eventually(lambda: fake.answers_to(event["id"]) == ["started", "finished"])


async def test_polling_stops_with_the_block() -> None:
    fake = FakeControlPlane()

    async with fake.api() as api:
        async with checknumber_app([]).connect_pull(api, **FAST) as transport:
            await eventually(lambda: len(fake.polls) >= 2)
            assert transport.subjects == {TRIGGERED}
        polls = len(fake.polls)
        fake.add_open(triggered())
        # Absence can only be shown by waiting: ten poll intervals without a poll.
        await asyncio.sleep(10 * FAST["poll_interval"])

    assert transport.subjects == frozenset()
    assert len(fake.polls) == polls
    assert fake.events == []


async def test_wildcard_subjects_cannot_be_polled() -> None:
    async with FakeControlPlane().api() as api:
        transport = HttpPullTransport(api)

        async def ignore(payload: bytes) -> None:
            pass

        with pytest.raises(TransportError, match="wildcard"):
            await transport.subscribe("sh.keptn.event.*.triggered", queue="", handler=ignore)


async def test_events_are_handed_over_as_structured_cloudevents() -> None:
    fake = FakeControlPlane()
    event = triggered()
    fake.add_open(event)
    received: list[bytes] = []

    async def collect(payload: bytes) -> None:
        received.append(payload)

    async with fake.api() as api:
        transport = HttpPullTransport(api, poll_interval=0.01)
        await transport.subscribe(TRIGGERED, queue="ignored", handler=collect)
        await eventually(lambda: len(received) >= 2)  # listed again on the next poll
        await transport.stop_receiving()

    assert json.loads(received[0]) == event
    assert received[0] == received[1]
