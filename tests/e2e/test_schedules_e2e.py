"""Schedules end to end: `serve` and a separate `controlplane scheduler` race for every slot.

Both processes fire the same 6-field schedule (every two seconds) against one PostgreSQL
and one NATS; every slot must start exactly one sequence, whoever claimed it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.harness import ControlPlane, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROJECT = "clock"
SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: clock}
spec:
  stages:
    - name: dev
      sequences:
        - name: tick
          tasks: [{name: work}]
  schedules:
    - name: every-two
      cron: "*/2 * * * * *"
      stage: dev
      sequence: tick
      service: clock
      data:
        labels: {origin: e2e}
"""
TRIGGER = "sh.keptn.event.dev.tick.triggered"


class SchedulerProcess:
    """``python -m controlplane scheduler`` against the test's servers, logging to a file."""

    def __init__(self, nats_url: str, database_url: str, log: Path) -> None:
        self.log = log
        self._command = [
            sys.executable,
            "-m",
            "controlplane",
            "scheduler",
            "--nats-url",
            nats_url,
            "--database-url",
            database_url,
            "--stream",
            "keptn",
            "--log-level",
            "debug",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=log, env=env)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def started(self) -> bool:
        assert self.process is not None
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        if self.process.poll() is not None:
            raise AssertionError(f"the scheduler exited:\n{text[-3000:]}")
        return "scheduler.started" in text


@pytest.fixture
def sequences(tmp_path: Path) -> Path:
    folder = tmp_path / "sequences"
    folder.mkdir()
    (folder / f"{PROJECT}.yaml").write_text(SHIPYARD, encoding="utf-8")
    return folder


@pytest.fixture
async def plane(
    e2e_nats: str, database_url: str, sequences: Path, tmp_path: Path
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        nats_url=e2e_nats, database_url=database_url, sequences=sequences, workdir=tmp_path
    )
    await plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def second_scheduler(
    plane: ControlPlane, e2e_nats: str, database_url: str, tmp_path: Path
) -> Iterator[SchedulerProcess]:
    process = SchedulerProcess(e2e_nats, database_url, tmp_path / "scheduler.log")
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log.read_text(errors="replace")[-3000:]


async def triggers(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await client.get(
            "/api/mongodb-datastore/event",
            params={"project": PROJECT, "type": TRIGGER, "pageSize": "100", "nextPageKey": offset},
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["events"])
        offset = int(page.get("nextPageKey") or 0)
        if not offset:
            return found


async def test_two_schedulers_start_one_sequence_per_slot(
    plane: ControlPlane, second_scheduler: SchedulerProcess, database_url: str
) -> None:
    async def second_is_running() -> bool:
        return second_scheduler.started()

    await eventually(second_is_running, timeout=20, what="the second scheduler to start")
    async with plane.client() as client:
        # Slots fired while both were running: at least three after the second one started.
        first_count = len(await triggers(client))

        async def enough() -> list[dict[str, Any]]:
            found = await triggers(client)
            return found if len(found) >= first_count + 3 else []

        fired = await eventually(enough, timeout=30, what="three more scheduled slots")
        listing = (await client.get(f"/api/controlPlane/v1/project/{PROJECT}/schedule")).json()

    slots = Counter(event["data"]["labels"]["scheduledFor"] for event in fired)
    assert slots, fired
    assert max(slots.values()) == 1, slots  # no slot started two sequences
    assert len({event["shkeptncontext"] for event in fired}) == len(fired)
    for event in fired:
        assert event["source"] == "scheduler"
        assert event["data"]["labels"]["schedule"] == "every-two"
        assert event["data"]["labels"]["origin"] == "e2e"
        assert event["data"]["service"] == "clock"
        assert int(event["data"]["labels"]["scheduledFor"][17:19]) % 2 == 0  # even seconds

    [schedule] = listing["schedules"]
    assert schedule["origin"] == "shipyard"
    assert schedule["lastSlot"] is not None
    contexts = {event["shkeptncontext"] for event in fired}
    assert schedule["lastKeptnContext"] in contexts or schedule["lastSlot"] > max(slots)

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT slot, claimed_by FROM schedule_slots")
    finally:
        await connection.close()
    claimed = Counter(row["slot"] for row in rows)
    assert max(claimed.values()) == 1
    assert len(rows) >= len(fired)
