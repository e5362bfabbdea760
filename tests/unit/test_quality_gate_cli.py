from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane import cli, quality_gate_cli

CONTEXT = "5f0f1a8e-2b7c-4f5e-9d3a-1c2b3a4d5e6f"
EVALUATION_PATH = "/api/controlPlane/v1/project/shop/stage/dev/service/carts/evaluation"

VERDICT: dict[str, Any] = {
    "status": "succeeded",
    "result": "warning",
    "message": "Evaluation returned a warning: the calculated score of 75 is close to the"
    " warning target value of 75",
    "evaluation": {
        "result": "warning",
        "score": 75,
        "indicatorResults": [
            {
                "score": 1,
                "status": "pass",
                "displayName": "Response time P95",
                "value": {
                    "metric": "rt",
                    "value": 512.5,
                    "comparedValue": 480,
                    "success": True,
                    "message": "",
                },
                "passTargets": [
                    {"criteria": "<=+10%", "targetValue": 528, "violated": False},
                    {"criteria": "<600", "targetValue": 600, "violated": False},
                ],
                "warningTargets": None,
            },
            {
                "score": 0.5,
                "status": "warning",
                "displayName": "",
                "value": {"metric": "errors", "value": 2, "comparedValue": 0, "success": True},
                "passTargets": [{"criteria": "<1", "targetValue": 1, "violated": True}],
                "warningTargets": [{"criteria": "<5", "targetValue": 5, "violated": False}],
            },
            {
                "score": 0,
                "status": "fail",
                "displayName": "Queue",
                "value": {
                    "metric": "queue",
                    "value": 0,
                    "success": False,
                    "message": "http://q: HTTP 503",
                },
                "passTargets": None,
                "warningTargets": None,
            },
        ],
    },
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="controlplane")
    quality_gate_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str], handler: Callable[[httpx.Request], httpx.Response]) -> int:
    args = parse(*argv)
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://cp")
    code: int = args.func(args, client=client)
    return code


def finished(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "fin",
        "type": "sh.keptn.event.evaluation.finished",
        "shkeptncontext": CONTEXT,
        "data": {"project": "shop", "stage": "dev", "service": "carts", **data},
    }


def test_the_verdict_is_a_table_of_objectives_then_the_score(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli.print_verdict(VERDICT)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "OBJECTIVE",
        "VALUE",
        "COMPARED",
        "PASS",
        "WARNING",
        "STATUS",
        "SCORE",
    ]
    assert lines[1].split() == [
        "Response",
        "time",
        "P95",
        "512.5",
        "480",
        "<=+10%=528",
        "<600=600",
        "-",
        "pass",
        "1",
    ]
    assert lines[2].split() == ["errors", "2", "0", "<1=1!", "<5=5", "warning", "0.5"]
    assert lines[3].startswith("Queue")
    assert "- (http://q: HTTP 503)" in lines[3]
    assert lines[4] == "(a target marked ! is violated)"
    assert lines[5] == "score 75: warning (status succeeded, result warning)"
    assert lines[6].startswith("Evaluation returned a warning")


def test_evaluate_triggers_waits_and_exits_by_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    posted: list[dict[str, Any]] = []
    polls = {"count": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == EVALUATION_PATH:
            posted.append(json.loads(request.content))
            return httpx.Response(200, json={"keptnContext": CONTEXT})
        if request.url.path == "/api/mongodb-datastore/event":
            assert request.url.params["keptnContext"] == CONTEXT
            polls["count"] += 1
            found = [finished(VERDICT)] if polls["count"] > 1 else []
            return httpx.Response(200, json={"events": found, "nextPageKey": "0"})
        return httpx.Response(404, json={"code": 404, "message": "no"})

    code = run(
        [
            "evaluate",
            "shop",
            "dev",
            "carts",
            "--timeframe",
            "10m",
            "--label",
            "build=7",
            "--poll-interval",
            "0",
        ],
        handler,
    )

    assert code == 0  # warning passes the gate
    assert posted == [{"timeframe": "10m", "labels": {"build": "7"}}]
    out = capsys.readouterr().out
    assert out.startswith(CONTEXT + "\n")
    assert "score 75: warning" in out


def test_a_failed_gate_exits_1_and_no_verdict_in_time_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = {**VERDICT, "result": "fail"}

    def answering(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"keptnContext": CONTEXT})
        return httpx.Response(200, json={"events": [finished(failing)], "nextPageKey": "0"})

    def silent(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"keptnContext": CONTEXT})
        return httpx.Response(200, json={"events": [], "nextPageKey": "0"})

    argv = ["evaluate", "shop", "dev", "carts", "--poll-interval", "0"]
    assert run(argv, answering) == 1
    assert run([*argv, "--timeout", "0s"], silent) == 1
    assert "no verdict after 0ms" in capsys.readouterr().err


def test_evaluate_reports_the_servers_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"code": 400, "message": "use start with end or with timeframe"}
        )

    code = run(["evaluate", "shop", "dev", "carts", "--end", "2026-11-21T10:00:00Z"], handler)

    assert code == 2
    assert "use start with end or with timeframe (HTTP 400)" in capsys.readouterr().err


def test_resource_put_uploads_files_base64_at_the_service_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text("objectives: []\n")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"commitID": "3", "metadata": {"version": "3"}})

    code = run(
        ["resource", "put", "shop", str(slo), "--stage", "dev", "--service", "carts"], handler
    )

    assert code == 0
    (request,) = sent
    assert request.method == "PUT"
    assert request.url.path == (
        "/api/resource-service/v1/project/shop/stage/dev/service/carts/resource"
    )
    body = json.loads(request.content)
    assert body == {
        "resources": [
            {
                "resourceURI": "slo.yaml",
                "resourceContent": base64.b64encode(b"objectives: []\n").decode(),
            }
        ]
    }
    assert capsys.readouterr().out == "stored slo.yaml (version 3)\n"


def test_resource_get_prints_the_content(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/resource-service/v1/project/shop/resource/sli.yaml"
        content = base64.b64encode(b"indicators: {}\n").decode()
        return httpx.Response(200, json={"resourceURI": "sli.yaml", "resourceContent": content})

    assert run(["resource", "get", "shop", "sli.yaml"], handler) == 0
    assert capsys.readouterr().out == "indicators: {}\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["resource", "get", "shop", "x", "--service", "carts"], "--service needs --stage"),
        (["resource", "put", "shop", "a", "b", "--uri", "c"], "--uri names one file"),
        (["resource", "put", "shop", "/nonexistent/slo.yaml"], "cannot read the file"),
        (["evaluate", "shop", "dev", "carts", "--label", "novalue"], "KEY=VALUE"),
        (["evaluate", "shop", "dev", "carts", "--timeout", "soon"], "--timeout"),
    ],
)
def test_usage_mistakes_exit_2_with_a_reason(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert run(argv, handler) == 2
    assert expected in capsys.readouterr().err
