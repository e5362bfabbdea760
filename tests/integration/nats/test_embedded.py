from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from controlplane.adapters.nats.embedded import EmbeddedNats, EmbeddedNatsError
from controlplane.adapters.nats.jetstream import connect, ensure_stream

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"process {pid} still alive after {timeout}s")
        time.sleep(0.01)


async def test_starts_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    pid = server.pid
    assert pid is not None
    try:
        assert url.startswith("nats://127.0.0.1:")
        assert server.start() == url  # already running: same server
        nc = await connect(url, name="test")
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        await nc.close()
        assert server.log_file.is_file()
    finally:
        server.stop()
    assert not server.running()
    assert not alive(pid)
    server.stop()  # idempotent


async def test_jetstream_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    with EmbeddedNats(data) as server:
        nc = await connect(server.url, name="test")
        js = nc.jetstream()
        await ensure_stream(js, stream="keptn")
        await js.publish("sh.keptn.event.deployment.finished", b"{}")
        await nc.close()
    assert (data / "jetstream").is_dir()
    with EmbeddedNats(data) as server:
        nc = await connect(server.url, name="test")
        info = await nc.jetstream().stream_info("keptn")
        await nc.close()
    assert info.state.messages == 1


def test_a_server_left_on_the_data_dir_is_stopped_first(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    first = EmbeddedNats(data)
    first.start()
    first_pid = first.pid
    assert first_pid is not None
    second = EmbeddedNats(data)
    try:
        second.start()
        wait_dead(first_pid)
        assert second.running()
    finally:
        second.stop()
        first.stop()


def test_fails_clearly_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = EmbeddedNats(tmp_path / "nats", port=port, start_timeout=5)
        with pytest.raises(EmbeddedNatsError, match="exited"):
            server.start()
    assert not server.running()


def test_missing_binary_is_reported(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", binary=tmp_path / "no-such-nats-server")
    with pytest.raises(EmbeddedNatsError, match="missing"):
        server.start()
    assert not server.running()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_no_orphan_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from controlplane.adapters.nats.embedded import EmbeddedNats
        server = EmbeddedNats({str(tmp_path / "nats")!r})
        server.start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        server_pid = int(line)
        assert alive(server_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    wait_dead(server_pid)
