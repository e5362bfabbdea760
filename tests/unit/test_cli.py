from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane import cli

CONTEXT = "5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f"
GOOD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: demo
spec:
  stages:
    - name: dev
      sequences:
        - name: sequence-one
          tasks:
            - name: checknumber
              triggeredAfter: soon
"""
BAD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
spec:
  stages:
    - name: Dev
      sequences:
        - name: one
          tasks: {}
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="controlplane")
    cli.add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str], handler: Callable[[httpx.Request], httpx.Response]) -> int:
    args = parse(*argv)
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://cp")
    code: int = args.func(args, client=client)
    return code


def event(type: str, id: str, time: str, **data: Any) -> dict[str, Any]:
    return {
        "id": id,
        "type": f"sh.keptn.event.{type}",
        "source": "svc",
        "time": time,
        "shkeptncontext": CONTEXT,
        "data": {"project": "demo", "stage": "dev", "service": "demo", **data},
    }


# ------------------------------------------------------------------ validate


def test_validate_good_file_prints_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD)
    assert parse("validate", str(path)).func(parse("validate", str(path))) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok (1 stages, 1 sequences)" in out
    assert f"{path}: warning:" in out
    assert "triggeredAfter" in out


def test_validate_bad_file_names_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    args = parse("validate", str(good), str(bad), str(tmp_path / "missing.yaml"))
    assert args.func(args) == 1
    lines = capsys.readouterr().out.splitlines()
    problems = [line for line in lines if line.startswith(str(bad))]
    assert len(problems) >= 2
    assert any("spec.stages[0].name" in line and ":5:" in line for line in problems)
    assert any("tasks" in line for line in problems)
    assert any("missing.yaml: cannot read the file" in line for line in lines)
    assert any(line.startswith(f"{good}: ok") for line in lines)


def test_validate_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [\n")
    args = parse("validate", str(path))
    assert args.func(args) == 1
    assert str(path) in capsys.readouterr().out


# ------------------------------------------------------------------ trigger


def test_trigger_posts_a_sequence_trigger(capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"keptnContext": CONTEXT})

    argv = [
        "trigger",
        "demo",
        "dev",
        "sequence-one",
        "--data",
        '{"number": "+41 44"}',
        "--label",
        "who=me",
        "--label",
        "ticket=1=2",
        "--token",
        "t0k",
    ]
    assert run(argv, api) == 0
    assert capsys.readouterr().out.strip() == CONTEXT
    [request] = sent
    assert request.url.path == "/api/v1/event"
    assert request.headers["content-type"] == "application/cloudevents+json"
    body = json.loads(request.content)
    assert body["type"] == "sh.keptn.event.dev.sequence-one.triggered"
    assert body["specversion"] == "1.0"
    assert body["id"]
    assert body["data"] == {
        "number": "+41 44",
        "project": "demo",
        "stage": "dev",
        "service": "demo",
        "labels": {"who": "me", "ticket": "1=2"},
    }


def test_trigger_service_option(capsys: pytest.CaptureFixture[str]) -> None:
    bodies: list[Any] = []

    def api(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"keptnContext": CONTEXT})

    assert run(["trigger", "demo", "dev", "one", "--service", "carts"], api) == 0
    assert bodies[0]["data"]["service"] == "carts"


@pytest.mark.parametrize(
    "argv",
    [
        ["trigger", "demo", "dev", "one", "--data", "[1]"],
        ["trigger", "demo", "dev", "one", "--data", "{nope"],
        ["trigger", "demo", "dev", "one", "--label", "novalue"],
        ["trigger", "demo", "dev", "one", "--timeout", "forever"],
        ["pause", CONTEXT],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


class Sequence:
    """A fake control plane whose sequence advances one step per state poll."""

    def __init__(self, steps: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        self.steps = steps
        self.polls = 0
        self.events: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/event":
            return httpx.Response(200, json={"keptnContext": CONTEXT})
        if path.startswith("/api/controlPlane/v1/sequence/"):
            state, events = self.steps[min(self.polls, len(self.steps) - 1)]
            self.polls += 1
            self.events = events
            return httpx.Response(200, json={"states": [state], "nextPageKey": 0, "totalCount": 1})
        if path == "/api/mongodb-datastore/event":
            newest = self.events[::-1]
            offset = int(request.url.params.get("nextPageKey", "0"))
            size = int(request.url.params["pageSize"])
            page = newest[offset : offset + size]
            following = offset + size
            key = str(following) if following < len(newest) else "0"
            return httpx.Response(
                200,
                json={
                    "events": page,
                    "nextPageKey": key,
                    "totalCount": len(newest),
                    "pageSize": size,
                },
            )
        return httpx.Response(404, json={"code": 404, "message": "Not Found"})


def state(overall: str, stage_state: str) -> dict[str, Any]:
    return {
        "name": "sequence-one",
        "service": "demo",
        "project": "demo",
        "time": "2024-01-31T10:00:00.000Z",
        "shkeptncontext": CONTEXT,
        "state": overall,
        "problemTitle": "",
        "stages": [{"name": "dev", "state": stage_state}],
    }


TRIGGERED = event("dev.sequence-one.triggered", "s-1", "2024-01-31T10:00:00.000Z")
TASK = event("checknumber.triggered", "t-1", "2024-01-31T10:00:00.010Z")
STARTED = {**event("checknumber.started", "t-2", "2024-01-31T10:00:00.020Z"), "triggeredid": "t-1"}


def finished(result: str, status: str = "succeeded") -> list[dict[str, Any]]:
    return [
        {
            **event(
                "checknumber.finished",
                "t-3",
                "2024-01-31T10:00:01.000Z",
                result=result,
                status=status,
            ),
            "triggeredid": "t-1",
        },
        {
            **event(
                "dev.sequence-one.finished",
                "s-2",
                "2024-01-31T10:00:01.010Z",
                result=result,
                status=status,
            ),
            "source": "shipyard-controller",
            "triggeredid": "s-1",
        },
    ]


WAIT = ["trigger", "demo", "dev", "sequence-one", "--wait", "--poll-interval", "0.001"]


@pytest.mark.parametrize(("result", "code"), [("pass", 0), ("warning", 0), ("fail", 1)])
def test_trigger_wait_shows_each_task_and_exits_by_result(
    capsys: pytest.CaptureFixture[str], result: str, code: int
) -> None:
    fake = Sequence(
        [
            (state("started", "triggered"), [TRIGGERED, TASK]),
            (state("started", "triggered"), [TRIGGERED, TASK, STARTED]),
            (state("finished", "succeeded"), [TRIGGERED, TASK, STARTED, *finished(result)]),
        ]
    )
    assert run(WAIT, fake) == code
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == CONTEXT
    kinds = [line.split()[1] for line in lines[1:-1]]
    assert kinds == [
        "dev.sequence-one.triggered",
        "checknumber.triggered",
        "checknumber.started",
        "checknumber.finished",
        "dev.sequence-one.finished",
    ]
    assert "t-1" in lines[3]
    assert f"succeeded/{result}" in lines[4]
    assert lines[-1].startswith(f"sequence finished: result {result}")


def test_trigger_wait_many_events_between_polls(capsys: pytest.CaptureFixture[str]) -> None:
    many = [
        event("checknumber.status.changed", f"c-{n:03}", f"2024-01-31T10:00:00.{n:03}Z")
        for n in range(250)
    ]
    fake = Sequence(
        [
            (state("started", "triggered"), [TRIGGERED]),
            (state("finished", "succeeded"), [TRIGGERED, *many, *finished("pass")]),
        ]
    )
    assert run(WAIT, fake) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 1 + 250 + 2 + 1
    assert len(set(lines)) == len(lines)


@pytest.mark.parametrize("overall", ["aborted", "timedOut"])
def test_trigger_wait_aborted_or_timed_out_exits_1(
    capsys: pytest.CaptureFixture[str], overall: str
) -> None:
    ending = finished("pass", status="aborted")
    fake = Sequence([(state(overall, "aborted"), [TRIGGERED, TASK, *ending])])
    assert run(WAIT, fake) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"sequence {overall}")


def test_trigger_wait_gives_up_after_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    fake = Sequence([(state("started", "triggered"), [TRIGGERED])])
    assert run([*WAIT, "--timeout", "50ms"], fake) == 1
    assert "gave up waiting after 50ms" in capsys.readouterr().err


# ------------------------------------------------------------------ other commands


def test_sequences_table(capsys: pytest.CaptureFixture[str]) -> None:
    queries: list[httpx.URL] = []

    def api(request: httpx.Request) -> httpx.Response:
        queries.append(request.url)
        two = {
            **state("started", "triggered"),
            "shkeptncontext": "c-2",
            "stages": [
                {"name": "dev", "state": "succeeded"},
                {"name": "staging", "state": "triggered"},
            ],
        }
        return httpx.Response(
            200,
            json={
                "states": [two, state("finished", "succeeded")],
                "nextPageKey": 0,
                "totalCount": 2,
            },
        )

    assert run(["sequences", "demo", "--state", "started"], api) == 0
    assert queries[0].path == "/api/controlPlane/v1/sequence/demo"
    assert queries[0].params["state"] == "started"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "CONTEXT", "SEQUENCE", "STAGES", "STATE"]
    assert lines[1].split() == [
        "2024-01-31T10:00:00.000Z",
        "c-2",
        "sequence-one",
        "dev:succeeded,staging:triggered",
        "started",
    ]
    assert lines[2].split()[1:] == [CONTEXT, "sequence-one", "dev:succeeded", "finished"]


def test_events_trace_oldest_first(capsys: pytest.CaptureFixture[str]) -> None:
    fake = Sequence([(state("finished", "succeeded"), [TRIGGERED, TASK, STARTED])])
    fake.events = [TRIGGERED, TASK, STARTED]
    assert run(["events", CONTEXT, "--project", "demo"], fake) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [
        "dev.sequence-one.triggered",
        "checknumber.triggered",
        "checknumber.started",
    ]
    assert lines[2].split()[3] == "t-1"


def test_events_for_unknown_context(capsys: pytest.CaptureFixture[str]) -> None:
    fake = Sequence([(state("finished", "succeeded"), [])])
    assert run(["events", CONTEXT], fake) == 1
    assert "no events" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("action", "word"), [("pause", "paused"), ("resume", "resumed"), ("abort", "aborted")]
)
def test_control_commands(capsys: pytest.CaptureFixture[str], action: str, word: str) -> None:
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    assert run([action, CONTEXT, "--project", "demo", "--stage", "dev"], api) == 0
    assert sent[0].url.path == f"/api/controlPlane/v1/sequence/demo/{CONTEXT}/control"
    assert json.loads(sent[0].content) == {"state": action, "stage": "dev"}
    assert capsys.readouterr().out.strip() == f"{word} {CONTEXT} (stage dev)"


def test_server_refusal_prints_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": 404, "message": "project 'demo' does not exist"})

    assert run(["pause", CONTEXT, "--project", "demo"], api) == 2
    assert "project 'demo' does not exist (HTTP 404)" in capsys.readouterr().err


def test_server_failure_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream gone")

    assert run(["sequences", "demo"], api) == 1
    assert "upstream gone (HTTP 503)" in capsys.readouterr().err


def test_connection_refused_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert run(["sequences", "demo", "--url", "http://127.0.0.1:1"], api) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:1" in err
    assert "may not be running" in err


def test_url_and_token_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONTROLPLANE_URL", "http://cp.example:9000")
    monkeypatch.setenv("CONTROLPLANE_API_TOKEN", "from-env")
    args = parse("sequences", "demo")
    assert (args.url, args.token) == ("http://cp.example:9000", "from-env")
    monkeypatch.delenv("CONTROLPLANE_URL")
    monkeypatch.delenv("CONTROLPLANE_API_TOKEN")
    args = parse("sequences", "demo")
    assert (args.url, args.token) == ("http://127.0.0.1:8080", None)


def test_client_from_url_and_token() -> None:
    with cli.build_client(
        parse("sequences", "demo", "--token", "abc", "--url", "http://cp:1")
    ) as c:
        assert c.headers["x-token"] == "abc"
        assert str(c.base_url) == "http://cp:1"
    with cli.build_client(parse("sequences", "demo", "--url", "http://cp:1")) as c:
        assert "x-token" not in c.headers


def test_a_server_that_is_not_the_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>hello</html>")

    assert run(["sequences", "demo"], api) == 2
    assert "did not answer with JSON" in capsys.readouterr().err


def test_a_server_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    assert run(["events", CONTEXT], api) == 2
    assert "did not answer in time" in capsys.readouterr().err


# ------------------------------------------------------------------ integrations


def integration(**changes: Any) -> dict[str, Any]:
    return {
        "id": "5b1c0f",
        "name": "checknumber-node",
        "metadata": {"hostname": "h", "lastseen": "2024-01-31T10:00:00.000Z"},
        "subscriptions": [
            {
                "id": "s-1",
                "event": "sh.keptn.event.checknumber.triggered",
                "filter": {"projects": ["seed"], "stages": [], "services": []},
                "webhook": {"url": "http://127.0.0.1:9001/events", "mode": "binary"},
            },
            {
                "id": "s-2",
                "event": "sh.keptn.event.other.triggered",
                "filter": {"projects": [], "stages": [], "services": []},
            },
        ],
        "expires": True,
        **changes,
    }


def test_integrations_table_shows_last_seen_and_each_subscription(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/controlPlane/v1/uniform/registration"
        return httpx.Response(200, json=[integration(), integration(id="9", subscriptions=[])])

    assert run(["integrations"], api) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "LAST", "SEEN", "SUBSCRIPTION", "EVENT", "FILTER"]
    assert lines[1].startswith("checknumber-node  5b1c0f")
    assert " ago " in lines[1]
    assert lines[1].split()[-6:] == [
        "s-1",
        "checknumber.triggered",
        "projects=seed",
        "->",
        "http://127.0.0.1:9001/events",
        "(binary)",
    ]
    assert lines[2].split() == ["s-2", "other.triggered", "any"]
    assert "(none: receives nothing)" in lines[3]


def test_integrations_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["integrations", "--json"], lambda _: httpx.Response(200, json=[])) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_subscribe_posts_a_webhook_subscription(capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[dict[str, Any]] = []

    def api(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url.path == "/api/controlPlane/v1/uniform/registration/i-1/subscription"
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": "s-9"})

    argv = ["subscribe", "i-1", "checknumber.triggered", "--project", "seed", "--stage", "dev"]
    argv += ["--webhook", "http://h/x", "--secret", "0123456789abcdef"]
    assert run(argv, api) == 0
    assert capsys.readouterr().out.strip() == "s-9"
    assert sent == [
        {
            "event": "checknumber.triggered",
            "filter": {"projects": ["seed"], "stages": ["dev"], "services": []},
            "webhook": {"url": "http://h/x", "secret": "0123456789abcdef", "mode": "structured"},
        }
    ]


def test_subscribe_with_a_webhook_needs_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTROLPLANE_WEBHOOK_SECRET", raising=False)

    def api(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    assert run(["subscribe", "i-1", "x.triggered", "--webhook", "http://h/x"], api) == 2
    assert "--secret" in capsys.readouterr().err


def test_unsubscribe_and_a_refusal_message(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        assert request.method == "DELETE"
        return httpx.Response(
            404, json={"code": 404, "message": "integration 'i-1' has no subscription 's-1'"}
        )

    assert run(["unsubscribe", "i-1", "s-1"], api) == 2
    assert "has no subscription 's-1'" in capsys.readouterr().err


def test_trigger_wait_prints_a_quality_gates_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    gate = event(
        "evaluate.finished",
        "g-1",
        "2024-01-31T10:00:02.000Z",
        status="succeeded",
        result="warning",
        message="Evaluation returned a warning",
        evaluation={
            "result": "warning",
            "score": 66.66666666666666,
            "indicatorResults": [
                {
                    "displayName": "Distance (km)",
                    "status": "fail",
                    "score": 0,
                    "value": {"metric": "distance_km", "value": 490.5, "success": True},
                    "passTargets": [{"criteria": "<=25", "targetValue": 25, "violated": True}],
                    "warningTargets": None,
                }
            ],
        },
    )
    fake = Sequence([(state("finished", "succeeded"), [TRIGGERED, gate, *finished("warning")])])

    assert run(WAIT, fake) == 0

    out = capsys.readouterr().out
    assert "Distance (km)  490.5" in out
    assert "<=25=25!" in out
    assert "score 66.66666666666666: warning" in out
