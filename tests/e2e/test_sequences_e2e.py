"""The control plane as a process: triggers over HTTP, tasks answered over NATS.

Each test gets its own control plane process, NATS server and database.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from tests.e2e.harness import (
    ControlPlane,
    TaskService,
    events,
    eventually,
    post_event,
    sequence_state,
    trigger,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

P = "e2e"


async def test_single_task_sequence_finishes_with_the_task_result(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single", labels={"team": "a"})
        work = await executor.wait_triggered("work", context)
        assert (work["data"]["project"], work["data"]["stage"]) == (P, "dev")
        assert "triggeredid" not in work
        await executor.complete(work, result="warning", output={"value": 42})
        state = await wait_state(client, P, context, "finished")
        assert state["stages"][0]["state"] == "succeeded"
        trace = await events(client, context)
        types = [event["type"] for event in trace]
        assert types[0] == "sh.keptn.event.dev.single.finished"  # newest first
        finished = trace[0]
        assert finished["data"]["result"] == "warning"
        assert finished["data"]["labels"] == {"team": "a"}
        trigger_event = [e for e in trace if e["type"] == "sh.keptn.event.dev.single.triggered"]
        assert finished["triggeredid"] == trigger_event[0]["id"]
        assert len(types) == len(set(event["id"] for event in trace)) == 5


async def test_payloads_merge_into_the_next_task_and_chain_into_the_next_stage(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(
            client, P, "dev", "delivery", configurationChange={"values": {"image": "app:1"}}
        )
        deployment = await executor.wait_triggered("deployment", context)
        assert deployment["data"]["deployment"] == {"deploymentstrategy": "direct"}
        await executor.complete(
            deployment, deployment={"deploymentURIsLocal": ["http://dev"]}, message="done"
        )
        test = await executor.wait_triggered("test", context)
        assert test["data"]["deployment"]["deploymentURIsLocal"] == ["http://dev"]
        assert test["data"]["configurationChange"] == {"values": {"image": "app:1"}}
        assert test["data"]["message"] == ""
        assert (test["data"]["result"], test["data"]["status"]) == ("pass", "succeeded")
        await executor.complete(test)
        staging = await executor.wait_triggered("deployment", context, count=2)
        assert staging["data"]["stage"] == "staging"
        assert staging["data"]["deployment"]["deploymentURIsLocal"] == ["http://dev"]
        await executor.complete(staging)
        state = await wait_state(client, P, context, "finished")
        assert [stage["name"] for stage in state["stages"]] == ["dev", "staging"]
        assert state["stages"][0]["image"] == "app:1"
        assert not executor.triggered("rollback", context)


async def test_failure_stops_the_sequence_and_triggers_only_fail_selectors(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "delivery")
        deployment = await executor.wait_triggered("deployment", context)
        await executor.complete(deployment, result="fail", status="errored")
        rollback = await executor.wait_triggered("rollback", context)
        assert rollback["data"]["stage"] == "staging"
        assert not executor.triggered("test", context)
        await executor.complete(rollback)
        state = await wait_state(client, P, context, "finished")
        dev = state["stages"][0]
        assert dev["state"] == "errored"
        assert dev["latestFailedEvent"]["type"] == "sh.keptn.event.dev.delivery.finished"
        trace = await events(client, context, type="sh.keptn.event.staging.delivery.triggered")
        assert trace == []


async def test_unknown_status_ends_with_unknown_and_fail(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single")
        work = await executor.wait_triggered("work", context)
        await executor.complete(work, result="pass", status="something-else")
        await wait_state(client, P, context, "finished")
        finished = await events(client, context, type="sh.keptn.event.dev.single.finished")
        assert (finished[0]["data"]["status"], finished[0]["data"]["result"]) == ("unknown", "fail")


async def test_several_executors_must_all_finish(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "two")
        first = await executor.wait_triggered("first", context)
        await executor.answer(first, "started", source="a")
        await executor.answer(first, "started", source="b")
        await executor.answer(
            first, "finished", source="a", result="pass", status="succeeded", first={"a": 1}
        )
        await asyncio.sleep(0.3)  # negative check: nothing may move while b is running
        assert not executor.triggered("second", context)
        await executor.answer(
            first, "finished", source="b", result="warning", status="succeeded", first={"b": 2}
        )
        second = await executor.wait_triggered("second", context)
        assert second["data"]["first"] == {"a": 1, "b": 2}
        assert second["data"]["result"] == "warning"


async def test_parallel_stages_run_together_and_the_context_ends_after_both(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "two")
        await executor.complete(await executor.wait_triggered("first", context))
        await executor.complete(await executor.wait_triggered("second", context))
        check_a = await executor.wait_triggered("check-a", context)
        check_b = await executor.wait_triggered("check-b", context)
        await executor.complete(check_a)

        async def qa_a_done() -> dict[str, object]:
            state = await sequence_state(client, P, context)
            stages = {stage["name"]: stage["state"] for stage in state["stages"]}
            return state if stages.get("qa-a") == "succeeded" else {}

        state = await eventually(qa_a_done, what="stage qa-a to succeed")
        assert state["state"] == "started"  # qa-b still runs
        await executor.complete(check_b)
        state = await wait_state(client, P, context, "finished")
        assert sorted(s["name"] for s in state["stages"]) == ["dev", "qa-a", "qa-b"]


async def test_one_sequence_per_service_and_stage_with_fifo_queueing(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        first = await trigger(client, P, "dev", "single")
        second = await trigger(client, P, "dev", "single")
        third = await trigger(client, P, "dev", "single")
        other_service = await trigger(client, P, "dev", "single", service="other")
        await executor.wait_triggered("work", other_service)
        work = await executor.wait_triggered("work", first)
        await wait_state(client, P, second, "waiting")
        await wait_state(client, P, third, "waiting")
        assert not executor.triggered("work", second)
        await executor.complete(work)
        work2 = await executor.wait_triggered("work", second)
        assert not executor.triggered("work", third)
        await executor.complete(work2)
        await executor.wait_triggered("work", third)


async def test_triggered_after_delays_the_task(control_plane: ControlPlane, e2e_nats: str) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        loop = asyncio.get_running_loop()
        started = loop.time()
        context = await trigger(client, P, "dev", "delayed")
        later = await executor.wait_triggered("later", context, timeout=10)
        waited = loop.time() - started
        assert 1.9 <= waited < 3.5, waited
        await executor.complete(later)
        await wait_state(client, P, context, "finished")


async def test_unanswered_task_times_out_and_chains_on_fail(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "delivery")
        queued = await trigger(client, P, "dev", "delivery")
        await executor.wait_triggered("deployment", context)
        state = await wait_state(client, P, context, "timedOut", timeout=10)
        assert state["stages"][0]["state"] == "errored"
        finished = await events(client, context, type="sh.keptn.event.dev.delivery.finished")
        assert (finished[0]["data"]["status"], finished[0]["data"]["result"]) == ("errored", "fail")
        assert "timed out" in finished[0]["data"]["message"]
        # Unlike Keptn, a timeout follows the normal rules: the rollback on fail runs.
        await executor.wait_triggered("rollback", context)
        # The timed-out sequence no longer blocks the queue.
        await executor.wait_triggered("deployment", queued)


async def test_automatic_and_manual_approval(control_plane: ControlPlane, e2e_nats: str) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        automatic = await trigger(client, P, "dev", "gated", result="pass")
        await executor.wait_triggered("release", automatic)
        manual = await trigger(client, P, "dev", "gated", service="manual", result="warning")
        approval = await executor.wait_triggered("approval", manual)
        open_events = await client.get(
            "/api/controlPlane/v1/event/triggered/sh.keptn.event.approval.triggered",
            params={"project": P, "service": "manual"},
        )
        assert [e["id"] for e in open_events.json()["events"]] == [approval["id"]]
        await asyncio.sleep(0.3)  # negative check: a manual approval must wait
        assert not executor.triggered("release", manual)
        # No shkeptncontext: the answer takes its task's context.
        response = await post_event(
            client,
            "sh.keptn.event.approval.finished",
            {
                "project": P,
                "stage": "dev",
                "service": "manual",
                "result": "pass",
                "status": "succeeded",
            },
            source="human",
            triggeredid=approval["id"],
        )
        assert response.status_code == 200, response.text
        await executor.wait_triggered("release", manual)
        trace = await events(client, manual, type="sh.keptn.event.approval.finished")
        assert [event["source"] for event in trace] == ["human"]


async def test_a_trigger_published_on_nats_runs_and_gets_a_context(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        await executor.publish_raw(
            "sh.keptn.event.dev.single.triggered",
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": "nats-trigger-1",
                    "source": "nats-client",
                    "type": "sh.keptn.event.dev.single.triggered",
                    "data": {"project": P, "stage": "dev", "service": "from-nats"},
                }
            ).encode(),
        )
        work = await executor.wait_triggered("work")
        context = work["shkeptncontext"]
        assert context
        await executor.complete(work)
        await wait_state(client, P, context, "finished")


async def test_a_sequence_waiting_for_approval_does_not_block_the_next(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        waiting = await trigger(client, P, "dev", "gated", result="warning")
        await executor.wait_triggered("approval", waiting)
        await wait_state(client, P, waiting, "started")
        other = await trigger(client, P, "dev", "single")
        await executor.wait_triggered("work", other)


async def test_pause_parks_the_next_task_and_resume_sends_it(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "pair")
        one = await executor.wait_triggered("step-one", context)
        control = f"/api/controlPlane/v1/sequence/{P}/{context}/control"
        assert (await client.post(control, json={"state": "pause"})).status_code == 200
        assert (await sequence_state(client, P, context))["state"] == "paused"
        await executor.complete(one)
        await asyncio.sleep(0.5)  # negative check: the paused sequence must not move on
        assert not executor.triggered("step-two", context)
        assert (await sequence_state(client, P, context))["state"] == "paused"
        assert (await client.post(control, json={"state": "resume"})).status_code == 200
        two = await executor.wait_triggered("step-two", context, timeout=2)
        await executor.complete(two)
        await wait_state(client, P, context, "finished")


async def test_abort_ends_the_sequence_and_frees_the_queue(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "single")
        queued = await trigger(client, P, "dev", "single")
        work = await executor.wait_triggered("work", context)
        response = await client.post(
            f"/api/controlPlane/v1/sequence/{P}/{context}/control", json={"state": "abort"}
        )
        assert response.status_code == 200
        assert (await sequence_state(client, P, context))["state"] == "aborted"
        finished = await events(client, context, type="sh.keptn.event.dev.single.finished")
        assert (finished[0]["data"]["status"], finished[0]["data"]["result"]) == ("aborted", "pass")
        await executor.wait_triggered("work", queued)
        late = await post_event(
            client,
            "sh.keptn.event.work.finished",
            {
                "project": P,
                "stage": "dev",
                "service": "svc",
                "result": "pass",
                "status": "succeeded",
            },
            source="late",
            shkeptncontext=context,
            triggeredid=work["id"],
        )
        assert late.status_code == 409, late.text


async def test_a_sequence_can_loop_on_its_own_failure(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        context = await trigger(client, P, "dev", "loop")
        await executor.complete(await executor.wait_triggered("mytask", context), result="fail")
        again = await executor.wait_triggered("mytask", context, count=2)
        await executor.complete(again)
        other = await executor.wait_triggered("othertask", context)
        await executor.complete(other, result="fail")
        state = await wait_state(client, P, context, "finished")
        assert len(executor.triggered("mytask", context)) == 2
        assert state["stages"][0]["state"] == "succeeded"


async def test_trigger_failures_end_errored(control_plane: ControlPlane) -> None:
    async with control_plane.client() as client:
        for stage, sequence, project in (
            ("nowhere", "single", P),
            ("dev", "missing", P),
            ("dev", "empty", P),
            ("dev", "delivery", "broken"),
        ):
            response = await post_event(
                client,
                f"{stage}.{sequence}.triggered",
                {"project": project, "stage": stage, "service": "svc"},
            )
            assert response.status_code == 200, response.text
            context = response.json()["keptnContext"]
            await wait_state(client, project, context, "finished")
            finished = await events(
                client, context, type=f"sh.keptn.event.{stage}.{sequence}.finished"
            )
            data = finished[0]["data"]
            assert (data["status"], data["result"]) == ("errored", "fail"), data
            assert data["message"]
        project = await client.get("/api/controlPlane/v1/project/broken")
        assert project.status_code == 200
        assert "Dev" in project.json()["shipyardError"]


async def test_garbage_on_nats_does_not_stop_the_engine(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        await executor.publish_raw("sh.keptn.event.work.finished", b"{not json")
        await executor.publish_raw(
            "sh.keptn.event.work.started",
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": "x",
                    "source": "s",
                    "type": "sh.keptn.event.work.started",
                    "triggeredid": "no-such-task",
                    "data": {"project": P},
                }
            ).encode(),
        )
        # A type that cannot be a NATS subject is refused before anything is stored.
        spaced = await post_event(
            client, "dev.a b.triggered", {"project": P, "stage": "dev", "service": "svc"}
        )
        assert spaced.status_code == 400, spaced.text
        # PostgreSQL cannot store a NUL character: refused with a reason, nothing half-stored.
        refused = await post_event(
            client,
            "dev.single.triggered",
            {"project": P, "stage": "dev", "service": "svc", "note": "a\u0000b"},
        )
        assert refused.status_code == 400, refused.text
        assert "NUL" in refused.json()["message"]
        context = await trigger(client, P, "dev", "single")
        work = await executor.wait_triggered("work", context)
        await executor.answer(work, "started")
        await executor.answer(work, "finished", result="pass", status="succeeded", note="x\u0000")
        await executor.answer(work, "finished", result="pass", status="succeeded")
        await wait_state(client, P, context, "finished")


async def test_kill_mid_sequence_loses_and_duplicates_nothing(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    async with TaskService(e2e_nats) as executor:
        async with control_plane.client() as client:
            context = await trigger(client, P, "dev", "pair")
            first = await executor.wait_triggered("step-one", context)
            await executor.answer(first, "started")
        control_plane.kill()
        # The answer arrives while the control plane is down: JetStream keeps it.
        await executor.answer(first, "finished", result="pass", status="succeeded")
        await control_plane.start()
        async with control_plane.client() as client:
            # An answer that was in flight when the process died comes back after the
            # consumer's ack wait (10 s).
            second = await executor.wait_triggered("step-two", context, timeout=30)
            await executor.complete(second)
            await wait_state(client, P, context, "finished")
            trace = await events(client, context)
            ids = [event["id"] for event in trace]
            assert len(ids) == len(set(ids))
            counted = [event["type"] for event in trace]
            assert counted.count("sh.keptn.event.step-one.triggered") == 1
            assert counted.count("sh.keptn.event.step-two.triggered") == 1
            assert counted.count("sh.keptn.event.dev.pair.finished") == 1
        # Plain NATS subscribers get at-least-once delivery (a republished outbox event is
        # de-duplicated by JetStream, not by core NATS), so the executor may see a repeat,
        # but it is always the same event id.
        assert {event["id"] for event in executor.triggered("step-two", context)} == {second["id"]}


def shipyard_b64(second_task: str) -> str:
    text = f"""
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {{name: versioned}}
spec:
  stages:
    - name: dev
      sequences:
        - name: flow
          tasks:
            - name: task-a
            - name: {second_task}
"""
    return base64.b64encode(text.encode()).decode()


async def test_projects_over_the_api_and_running_sequences_keep_their_definition(
    control_plane: ControlPlane, e2e_nats: str
) -> None:
    base = "/api/controlPlane/v1/project"
    async with control_plane.client() as client, TaskService(e2e_nats) as executor:
        created = await client.post(base, json={"name": "versioned", "shipyard": shipyard_b64("b")})
        assert created.status_code == 201, created.text
        again = await client.post(base, json={"name": "versioned", "shipyard": shipyard_b64("b")})
        assert again.status_code == 409
        bad_yaml = base64.b64encode(b"apiVersion: spec.keptn.sh/0.2.4\nspec:\n  stages: []\n")
        invalid = await client.post(base, json={"name": "other", "shipyard": bad_yaml.decode()})
        assert invalid.status_code == 400
        assert "other:3: spec.stages" in invalid.json()["message"]  # field path and YAML line
        assert (await client.get(f"{base}/other")).status_code == 404

        old = await trigger(client, "versioned", "dev", "flow")
        first = await executor.wait_triggered("task-a", old)
        replaced = await client.put(base, json={"name": "versioned", "shipyard": shipyard_b64("c")})
        assert replaced.status_code == 200, replaced.text
        await executor.complete(first)
        await executor.wait_triggered("b", old)  # the definition it started with
        new = await trigger(client, "versioned", "dev", "flow", service="new")
        await executor.complete(await executor.wait_triggered("task-a", new))
        await executor.wait_triggered("c", new)

        project = (await client.get(f"{base}/versioned")).json()
        assert project["projectName"] == "versioned"
        assert [stage["stageName"] for stage in project["stages"]] == ["dev"]
        assert "name: c" in project["shipyard"]
        assert (await client.delete(f"{base}/versioned")).status_code == 200
        assert (await client.get(f"{base}/versioned")).status_code == 404
