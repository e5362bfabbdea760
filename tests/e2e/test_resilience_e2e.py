"""Never stuck, never lost, against a real control plane, NATS and PostgreSQL.

Timeouts and retries with backoff, heartbeats, concurrency keys under parallel triggers,
re-runs from the failed task, and callback links (shipyard: fixtures/shipyards/resilience.yaml).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    ControlPlane,
    TaskService,
    eventually,
    post_event,
    sequence_state,
    trigger,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

P = "resilience"


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_a_task_that_goes_silent_is_timed_out_and_retried_with_backoff(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "flaky")
        first = await executor.wait_triggered("deploy", context)
        assert first["data"]["attempt"] == 1
        await executor.answer(first, "started")  # ...and then nothing
        started_at = time.time()
        second = await executor.wait_triggered("deploy", context, count=2, timeout=10)
        assert second["data"]["attempt"] == 2
        assert second["id"] != first["id"]
        # Timed out 1 s after .started, then 300 ms +/- 20 % of backoff.
        waited = seconds(second["time"]) - started_at
        assert 1.0 + 0.24 <= waited <= 1.0 + 0.36 + 1.0, waited
        # The second attempt errors: the third follows after 600 ms +/- 20 %.
        await executor.answer(second, "started")
        failed_at = time.time()
        await executor.answer(
            second, "finished", result="fail", status="errored", message="disk full"
        )
        third = await executor.wait_triggered("deploy", context, count=3, timeout=10)
        assert third["data"]["attempt"] == 3
        backoff = seconds(third["time"]) - failed_at
        assert 0.48 <= backoff <= 0.72 + 1.0, backoff
        # A late answer to the first attempt is refused instead of mixing in.
        late = await post_event(
            client,
            "sh.keptn.event.deploy.finished",
            {
                "project": P,
                "stage": "dev",
                "service": "svc",
                "result": "pass",
                "status": "succeeded",
            },
            triggeredid=first["id"],
            shkeptncontext=context,
        )
        assert late.status_code == 409, late.text
        await executor.complete(third, output="v3")
        report = await executor.wait_triggered("report", context)
        assert report["data"]["output"] == "v3"
        await executor.complete(report)
        state = await wait_state(client, P, context, "finished")
        stage = state["stages"][0]
        assert [a["attempt"] for a in stage["attempts"]] == [1, 2]
        assert stage["attempts"][0]["timedOut"] is True
        assert "timed out" in stage["attempts"][0]["message"]
        assert stage["attempts"][1]["message"] == "disk full"


async def test_when_retries_run_out_the_sequence_fails_and_chains_on_fail(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "flaky")
        for attempt in (1, 2, 3):
            deploy = await executor.wait_triggered("deploy", context, count=attempt, timeout=10)
            await executor.complete(deploy, result="fail", status="errored")
        cleanup = await executor.wait_triggered("cleanup", context, timeout=10)
        assert cleanup["data"]["result"] == "fail"
        assert len(executor.triggered("report", context)) == 0


async def test_heartbeats_keep_a_task_alive_and_silence_times_it_out(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        alive = await trigger(client, P, "dev", "alive")
        crunch = await executor.wait_triggered("crunch", alive)
        await executor.answer(crunch, "started")
        silent = await trigger(client, P, "dev", "alive", service="other")
        quiet = await executor.wait_triggered("crunch", silent)
        await executor.answer(quiet, "started")
        # Beat every 300 ms for 2.5 s: more than twice the 1 s finished deadline.
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5
        while loop.time() < until:
            await executor.answer(crunch, "status.changed", message="still crunching")
            await asyncio.sleep(0.3)  # the heartbeat's own rhythm, not a wait for a result
        assert (await sequence_state(client, P, alive))["state"] == "started"
        await executor.answer(crunch, "finished", result="pass", status="succeeded")
        assert (await wait_state(client, P, alive, "finished"))["stages"][0]["state"] == "succeeded"
        timed_out = await wait_state(client, P, silent, "timedOut", timeout=10)
        assert timed_out["stages"][0]["state"] == "errored"


async def test_a_concurrency_key_limits_parallel_sequences_under_parallel_triggers(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        contexts = await asyncio.gather(
            *(
                trigger(client, P, "dev", "limited", service=f"svc-{n}", labels={"team": "a"})
                for n in range(6)
            )
        )
        other_team = await trigger(client, P, "dev", "limited", labels={"team": "b"})
        await executor.wait_triggered("hold", other_team)  # another key: not held back
        await executor.wait_triggered("hold", count=3)  # two of team a, one of team b
        done: set[str] = set()
        while len(done) < len(contexts):
            open_tasks = [
                event
                for event in executor.triggered("hold")
                if event["shkeptncontext"] in contexts and event["shkeptncontext"] not in done
            ]
            assert len(open_tasks) <= 2, [event["shkeptncontext"] for event in open_tasks]
            if not open_tasks:
                await executor.wait_triggered("hold", count=len(done) + 3)
                continue
            task = open_tasks[0]
            await executor.complete(task)
            await wait_state(client, P, task["shkeptncontext"], "finished")
            done.add(task["shkeptncontext"])
        # A trigger that lacks the key's field is refused, naming it; nothing is stored.
        refused = await post_event(
            client,
            "sh.keptn.event.dev.limited.triggered",
            {"project": P, "stage": "dev", "service": "svc"},
        )
        assert refused.status_code == 400
        assert "data.labels.team" in refused.json()["message"]


async def rerun(client: httpx.AsyncClient, context: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/controlPlane/v1/sequence/{P}/{context}/rerun", json=body)


async def test_a_rerun_starts_from_the_failed_task_with_the_original_input(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "pipeline", version="1.2.3")
        build = await executor.wait_triggered("build", context)
        await executor.complete(build, artifact="app-1.2.3.tar")
        test = await executor.wait_triggered("test", context)
        running = await rerun(client, context)
        assert running.status_code == 409  # still running
        await executor.complete(test, result="fail")
        await wait_state(client, P, context, "finished")
        response = await rerun(client, context)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["fromTask"] == "test"
        assert body["rerunOf"] == context
        new_context = body["keptnContext"]
        assert new_context != context
        retest = await executor.wait_triggered("test", new_context)
        assert retest["data"]["version"] == "1.2.3"  # the original input
        assert retest["data"]["artifact"] == "app-1.2.3.tar"  # the skipped build's output
        assert executor.triggered("build", new_context) == []
        await executor.complete(retest)
        ship = await executor.wait_triggered("ship", new_context)
        await executor.complete(ship)
        state = await wait_state(client, P, new_context, "finished")
        assert state["stages"][0]["rerunOf"] == context
        # The old run is left as it was; a named task and bad names are checked.
        assert (await sequence_state(client, P, context))["state"] == "finished"
        again = await rerun(client, context, fromTask="build")
        assert again.status_code == 200
        assert await executor.wait_triggered("build", again.json()["keptnContext"])
        wrong = await rerun(client, context, fromTask="nope")
        assert wrong.status_code == 400
        assert "nope" in wrong.json()["message"]
        unknown = await rerun(client, "no-such-context")
        assert unknown.status_code == 404


async def test_a_callback_link_completes_a_task_once(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "gated")
        signoff = await executor.wait_triggered("signoff", context)
        url = signoff["data"]["callback"]["url"]
        assert url.startswith(control_plane.url + "/callback/")
        forged = await client.post(url[:-4] + "abcd", json={})
        assert forged.status_code == 404
        page = await client.get(url)
        assert page.status_code == 200
        assert "Approve" in page.text
        done = await client.post(url, json={"result": "pass", "approver": "ann"})
        assert done.status_code == 200, done.text
        assert done.json()["keptnContext"] == context
        publish = await executor.wait_triggered("publish", context)
        assert publish["data"]["approver"] == "ann"
        again = await client.post(url, json={"result": "fail"})
        assert again.status_code == 409
        bad = await client.post(url, json=["not", "an", "object"])
        assert bad.status_code in (400, 409)

        async def finished_events() -> list[dict[str, Any]]:
            response = await client.get(
                "/api/mongodb-datastore/event",
                params={"keptnContext": context, "type": "sh.keptn.event.signoff.finished"},
            )
            found: list[dict[str, Any]] = response.json()["events"]
            return found

        [finished] = await eventually(finished_events, what="signoff.finished stored")
        assert finished["source"] == "callback"
        assert finished["data"]["approver"] == "ann"
