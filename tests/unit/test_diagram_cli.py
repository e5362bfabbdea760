from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from controlplane import cli

CHART = 'flowchart LR\n  subgraph s0["dev"]\n    s0_q0["one<br/>t"]\n  end\n'
GOOD = """\
apiVersion: spec.keptn.sh/0.2.4
spec:
  stages:
    - name: dev
      sequences:
        - name: a
          triggeredOn:
            - event: dev.b.finished
          tasks:
            - name: t
        - name: b
          triggeredOn:
            - event: dev.a.finished
          tasks:
            - name: u
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="controlplane")
    cli.add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str], handler: httpx.MockTransport | None = None) -> int:
    args = parse(*argv)
    client = httpx.Client(transport=handler, base_url="http://cp") if handler else None
    code: int = args.func(args, client=client)
    return code


def test_diagram_of_a_project_asks_the_api_for_json(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"mermaid": CHART})

    assert run(["diagram", "my project"], httpx.MockTransport(answer)) == 0
    assert capsys.readouterr().out == CHART
    (request,) = seen
    assert request.url.raw_path.startswith(b"/api/controlPlane/v1/project/my%20project/diagram?")
    assert request.url.params["format"] == "json"


def test_diagram_reports_the_servers_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": 404, "message": "project 'x' does not exist"})

    assert run(["diagram", "x"], httpx.MockTransport(answer)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "project 'x' does not exist (HTTP 404)" in captured.err


def test_diagram_of_a_file_is_drawn_offline_with_warnings_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD)
    assert run(["diagram", "--file", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("flowchart LR\n")
    assert '    s0_q0["a<br/>t"]' in captured.out
    assert '  s0_q1 -.->|"pass|warning"| s0_q0' in captured.out
    assert f"{path}: warning: line 8: spec.stages[0].sequences[0].triggeredOn[0].event:" in (
        captured.err
    )
    assert "dev.a → dev.b → dev.a" in captured.err


def test_diagram_of_an_invalid_file_prints_validates_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("dev.b.finished", "dev.c.finished"))
    assert run(["diagram", "--file", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{path}:8: spec.stages[0].sequences[0].triggeredOn[0].event: 'dev.c.finished' can never"
        " fire: sequence 'c' is not defined in stage 'dev'\n"
    )


def test_diagram_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["diagram", "--file", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: cannot read the file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["diagram"], ["diagram", "demo", "--file", "x.yaml"]])
def test_diagram_needs_a_project_or_a_file(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    assert "diagram needs a PROJECT or --file FILE" in capsys.readouterr().err
