"""The control plane API client: paths, headers, errors and retries."""

from __future__ import annotations

import json

import httpx
import pytest

from tasksdk import ApiError, ControlPlaneApi, RegistrationError, RetryPolicy, TransportError

NO_WAIT = RetryPolicy(attempts=3, first_delay=0.001, max_delay=0.001)


def api_answering(
    *responses: httpx.Response, url: str = "http://cp.test", token: str | None = None
) -> tuple[ControlPlaneApi, list[httpx.Request]]:
    requests: list[httpx.Request] = []
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return queue.pop(0)

    api = ControlPlaneApi(
        url,
        token=token,
        http_transport=httpx.MockTransport(handle),
        registration_retry=NO_WAIT,
        publish_retry=NO_WAIT,
    )
    return api, requests


def problem(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "message": message})


async def test_requests_carry_the_token_and_keptn_style_urls_work() -> None:
    api, requests = api_answering(
        httpx.Response(201, json={"id": "abc"}), url="http://cp.test/prefix/api/", token="t0k"
    )

    async with api:
        answer = await api.register({"name": "svc"})

    assert (answer.id, answer.created) == ("abc", True)
    assert str(requests[0].url) == "http://cp.test/prefix/api/controlPlane/v1/uniform/registration"
    assert requests[0].headers["x-token"] == "t0k"


async def test_a_known_registration_is_reported_as_not_created() -> None:
    api, _ = api_answering(httpx.Response(200, json={"id": "abc"}))

    async with api:
        answer = await api.register({"name": "svc"})

    assert (answer.id, answer.created) == ("abc", False)


async def test_registration_retries_5xx_then_gives_the_last_error() -> None:
    api, requests = api_answering(*(problem(503, "starting") for _ in range(3)))

    async with api:
        with pytest.raises(ApiError, match="starting") as raised:
            await api.register({"name": "svc"})

    assert raised.value.status == 503
    assert len(requests) == 3


async def test_a_refused_registration_is_not_retried() -> None:
    api, requests = api_answering(problem(400, "a subscription filter with services needs stages"))

    async with api:
        with pytest.raises(RegistrationError, match="services needs stages"):
            await api.register({"name": "svc"})

    assert len(requests) == 1


async def test_events_are_sent_as_structured_cloudevents_and_429_is_retried() -> None:
    api, requests = api_answering(problem(429, "slow down"), httpx.Response(200, json={}))
    payload = json.dumps({"id": "1", "type": "sh.keptn.event.x.started"}).encode()

    async with api:
        await api.send_event(payload)

    assert [r.url.path for r in requests] == ["/api/v1/event", "/api/v1/event"]
    assert requests[-1].headers["content-type"] == "application/cloudevents+json"
    assert requests[-1].content == payload


async def test_a_ping_for_an_unknown_id_raises_404() -> None:
    api, requests = api_answering(problem(404, "no integration with id x"))

    async with api:
        with pytest.raises(ApiError) as raised:
            await api.ping("x/y")

    assert raised.value.status == 404
    assert requests[0].method == "PUT"
    assert requests[0].url.raw_path == b"/api/controlPlane/v1/uniform/registration/x%2Fy/ping"


async def test_answers_that_are_not_json_objects_are_transport_errors() -> None:
    api, _ = api_answering(httpx.Response(200, text="<html>proxy</html>"))

    async with api:
        with pytest.raises(TransportError, match="not JSON"):
            await api.ping("x")


async def test_the_listing_follows_next_page_keys() -> None:
    api, requests = api_answering(
        httpx.Response(200, json={"events": [{"id": "1"}, {"id": "2"}], "nextPageKey": "2"}),
        httpx.Response(200, json={"events": [{"id": "3"}], "nextPageKey": "0"}),
    )

    async with api:
        events = await api.open_triggered(
            "sh.keptn.event.x.triggered", scope={"project": "seed"}, page_size=2
        )

    assert [e["id"] for e in events] == ["1", "2", "3"]
    assert [dict(r.url.params) for r in requests] == [
        {"project": "seed", "pageSize": "2"},
        {"project": "seed", "pageSize": "2", "nextPageKey": "2"},
    ]


def test_retry_delays_double_up_to_the_maximum() -> None:
    delays = list(RetryPolicy(attempts=6, first_delay=1.0, max_delay=5.0).delays())

    assert len(delays) == 5
    for delay, nominal in zip(delays, [1, 2, 4, 5, 5], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
