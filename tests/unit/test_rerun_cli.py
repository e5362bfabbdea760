"""``controlplane rerun``: what it asks the API and what it prints."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.test_cli import CONTEXT, run


def test_rerun_posts_the_options_and_prints_the_new_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200,
            json={
                "keptnContext": "new-context",
                "rerunOf": CONTEXT,
                "stage": "dev",
                "sequence": "pipeline",
                "fromTask": "test",
            },
        )

    assert run(["rerun", CONTEXT, "--project", "demo", "--from-task", "test"], api) == 0
    assert sent[0].url.path == f"/api/controlPlane/v1/sequence/demo/{CONTEXT}/rerun"
    assert json.loads(sent[0].content) == {"fromTask": "test"}
    out = capsys.readouterr()
    assert out.out.strip() == "new-context"
    assert f"re-running dev.pipeline from task test (of {CONTEXT})" in out.err


def test_a_refused_rerun_prints_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        message = f"the sequence {CONTEXT!r} is still running; abort it or wait for its end"
        return httpx.Response(409, json={"code": 409, "message": message})

    assert run(["rerun", CONTEXT, "--project", "demo"], api) == 2
    assert "still running" in capsys.readouterr().err
