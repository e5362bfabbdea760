"""`controlplane up`: embedded servers, the example service, one owner per folder, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import eventually, free_port, trigger, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SEQUENCES = Path(__file__).parent.parent.parent / "sequences"


class LocalMode:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "controlplane",
            "up",
            "--port",
            str(self.port),
            "--local-nats-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--sequences",
            str(SEQUENCES),
        ]

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
        with log.open("ab") as out:
            return subprocess.Popen(self.command(), stdout=out, stderr=out, env=env)

    async def healthy(self) -> bool:
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            try:
                return (await client.get("/health")).status_code == 200
            except httpx.TransportError:
                return False


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise
    return process.returncode


async def test_up_runs_the_example_and_keeps_its_state(tmp_path: Path) -> None:
    local = LocalMode(tmp_path / "data", free_port())
    log = tmp_path / "up.log"
    first = local.start(log)
    try:
        await eventually(local.healthy, timeout=60, what="`controlplane up` to be healthy")
        async with httpx.AsyncClient(base_url=local.url, timeout=10) as client:
            context = await trigger(
                client,
                "seed",
                "dev",
                "sequence-one",
                service="phone",
                checknumber={"number": "+41 44 668 18 00"},
            )
            state = await wait_state(client, "seed", context, "finished", timeout=20)
            assert state["stages"][0]["state"] == "succeeded"

        async def banner() -> str:
            text = log.read_text()
            return text if "controlplane is up" in text else ""

        printed = await eventually(banner, what="the start-up banner")
        assert local.url in printed
        assert "nats://127.0.0.1:" in printed

        # A second `up` on the same folder would take over the first one's servers.
        second = subprocess.run(  # noqa: ASYNC221 - a short-lived CLI call
            [*local.command()[:-6], "--port", str(free_port()), *local.command()[-4:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "in use by a running `controlplane up`" in second.stderr
        assert await local.healthy()
    finally:
        assert stop(first) == 0, log.read_text()[-2000:]

    again = local.start(log)
    try:
        await eventually(local.healthy, timeout=60, what="the restarted `controlplane up`")
        async with httpx.AsyncClient(base_url=local.url, timeout=10) as client:
            state = await wait_state(client, "seed", context, "finished")
            assert state["shkeptncontext"] == context
    finally:
        assert stop(again) == 0
