"""Awaiting the result, end to end: a real control plane, NATS, PostgreSQL and task service.

The long-poll, ``POST /api/v1/event?wait=`` and the Server-Sent Events stream each deliver
the end of a real sequence whose tasks are answered over NATS.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.harness import ControlPlane, TaskService, events, trigger

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

P = "e2e"
STREAM = "/api/v1/event/stream"


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of an SSE response as they arrive (comments are skipped)."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value


async def answer_pair(executor: TaskService, context: str) -> None:
    for task in ("step-one", "step-two"):
        triggered = await executor.wait_triggered(task, context)
        await executor.complete(triggered, **{task: {"done": True}})


PAIR_TYPES = [
    "sh.keptn.event.dev.pair.triggered",
    "sh.keptn.event.step-one.triggered",
    "sh.keptn.event.step-one.started",
    "sh.keptn.event.step-one.finished",
    "sh.keptn.event.step-two.triggered",
    "sh.keptn.event.step-two.started",
    "sh.keptn.event.step-two.finished",
    "sh.keptn.event.dev.pair.finished",
]


async def test_long_poll_returns_as_soon_as_the_sequence_finishes(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single")
        poll = asyncio.create_task(
            client.get(
                f"/api/controlPlane/v1/sequence/{P}",
                params={"keptnContext": context, "wait": "60s"},
                timeout=70.0,
            )
        )
        work = await executor.wait_triggered("work", context)
        assert not poll.done()  # still running: the poll is held
        answered_at = time.monotonic()
        await executor.complete(work, output={"value": 1})
        response = await asyncio.wait_for(poll, timeout=30.0)
        elapsed = time.monotonic() - answered_at
        assert response.status_code == 200, response.text
        [state] = response.json()["states"]
        assert state["state"] == "finished"
        assert elapsed < 10.0, f"the long-poll took {elapsed:.1f}s after the answer"


async def test_long_poll_that_runs_out_shows_the_running_state(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single")
        await executor.wait_triggered("work", context)
        response = await client.get(
            f"/api/controlPlane/v1/sequence/{P}", params={"keptnContext": context, "wait": "1s"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["states"][0]["state"] == "started"


async def test_post_with_wait_returns_the_final_result_of_a_multi_task_sequence(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        body = {
            "specversion": "1.0",
            "source": "e2e",
            "type": "dev.delivery.triggered",
            "shkeptncontext": "0f3c1a52-7d2e-4d43-9b84-6a4b1d0f5e11",
            "data": {
                "project": P,
                "stage": "dev",
                "service": "svc",
                "configurationChange": {"values": {"image": "app:2"}},
            },
        }
        post = asyncio.create_task(
            client.post("/api/v1/event", params={"wait": "60s"}, json=body, timeout=70.0)
        )
        context = body["shkeptncontext"]
        deployment = await executor.wait_triggered("deployment", context)
        await executor.complete(deployment, deployment={"deploymentURIsLocal": ["http://dev"]})
        test = await executor.wait_triggered("test", context)
        await executor.complete(test, result="warning", test={"passed": 9, "failed": 0})
        staging = await executor.wait_triggered("deployment", context, count=2)
        assert not post.done()  # dev finished, but the context goes on in staging
        await executor.complete(staging, deployment={"deploymentURIsPublic": ["http://stg"]})
        response = await asyncio.wait_for(post, timeout=30.0)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["keptnContext"] == context
        assert result["finished"] is True
        assert result["state"] == "finished"
        assert (result["result"], result["status"]) == ("pass", "succeeded")
        data = result["data"]
        assert data["stage"] == "staging"
        assert data["configurationChange"] == {"values": {"image": "app:2"}}
        assert data["test"] == {"passed": 9, "failed": 0}
        assert data["deployment"]["deploymentURIsLocal"] == ["http://dev"]
        assert data["deployment"]["deploymentURIsPublic"] == ["http://stg"]


async def test_post_with_wait_of_an_immediate_failure_and_of_a_timeout(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        unknown = await client.post(
            "/api/v1/event",
            params={"wait": "30s"},
            json={
                "type": "dev.no-such-sequence.triggered",
                "source": "e2e",
                "data": {"project": P, "stage": "dev", "service": "svc"},
            },
        )
        assert unknown.status_code == 200, unknown.text
        assert unknown.json()["finished"] is True
        assert (unknown.json()["result"], unknown.json()["status"]) == ("fail", "errored")
        pending = await client.post(
            "/api/v1/event",
            params={"wait": "200ms"},
            json={
                "type": "dev.single.triggered",
                "source": "e2e",
                "data": {"project": P, "stage": "dev", "service": "svc"},
            },
        )
        assert pending.status_code == 202, pending.text
        assert pending.json()["finished"] is False
        work = await executor.wait_triggered("work", pending.json()["keptnContext"])
        await executor.complete(work)


async def test_stream_delivers_a_sequence_live_in_order_and_ends(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "pair")
        received: list[dict[str, str]] = []
        async with client.stream("GET", STREAM, params={"keptnContext": context}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            answering = asyncio.create_task(answer_pair(executor, context))
            async for frame in sse_frames(response):
                received.append(frame)
            await answering
        end = received[-1]
        assert end["event"] == "end"
        assert json.loads(end["data"]) == {
            "keptnContext": context,
            "state": "finished",
            "reason": "ended",
        }
        assert [frame["event"] for frame in received[:-1]] == PAIR_TYPES
        for frame in received[:-1]:
            event = json.loads(frame["data"])
            assert (event["id"], event["type"]) == (frame["id"], frame["event"])
            assert event["shkeptncontext"] == context
        # The stream's events are the stored ones, in the order they were stored.
        stored = await events(client, context)
        assert [frame["id"] for frame in received[:-1]] == [e["id"] for e in reversed(stored)]


async def test_stream_resumes_after_last_event_id_without_gaps_or_repeats(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "pair")
        await executor.wait_triggered("step-one", context)
        first: list[dict[str, str]] = []
        async with client.stream("GET", STREAM, params={"keptnContext": context}) as response:
            async for frame in sse_frames(response):
                first.append(frame)
                if len(first) == 2:  # trigger and step-one.triggered: then the client drops
                    break
        assert [frame["event"] for frame in first] == PAIR_TYPES[:2]
        # While nobody listens, the sequence moves on.
        await answer_pair(executor, context)
        rest: list[dict[str, str]] = []
        async with client.stream(
            "GET",
            STREAM,
            params={"keptnContext": context},
            headers={"Last-Event-ID": first[-1]["id"]},
        ) as response:
            async for frame in sse_frames(response):
                rest.append(frame)
        assert [frame["event"] for frame in first + rest[:-1]] == PAIR_TYPES
        assert rest[-1]["event"] == "end"


async def test_stream_of_an_unknown_context_is_404(control_plane: ControlPlane) -> None:
    async with control_plane.client() as client:
        response = await client.get(
            STREAM, params={"keptnContext": "9d7a0c1e-0000-4000-8000-000000000000"}
        )
        assert response.status_code == 404, response.text
        assert "no events" in response.json()["message"]


async def test_stopping_the_control_plane_ends_open_streams_and_polls_at_once(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single")
        await executor.wait_triggered("work", context)
        poll = asyncio.create_task(
            client.get(
                f"/api/controlPlane/v1/sequence/{P}",
                params={"keptnContext": context, "wait": "5m"},
                timeout=70.0,
            )
        )
        received: list[dict[str, str]] = []
        async with client.stream("GET", STREAM, params={"keptnContext": context}) as response:
            async for frame in sse_frames(response):
                received.append(frame)
                if len(received) == 2:  # caught up with what is stored: now stop the server
                    stopping_at = time.monotonic()
                    stopping = asyncio.create_task(asyncio.to_thread(control_plane.stop))
        await stopping
        took = time.monotonic() - stopping_at
        assert json.loads(received[-1]["data"])["reason"] == "closed"
        assert (await poll).json()["states"][0]["state"] == "started"
        assert took < 10.0, f"stopping took {took:.1f}s with a stream and a poll open"
