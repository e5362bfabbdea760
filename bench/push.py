"""Webhook push and the task SDK, end to end: added latency, delivery rate, SDK round trip.

    .venv/bin/python bench/push.py [--runs 3] [--rate 100] [--seconds 20] [--quick]

It starts its own embedded NATS (JetStream) and PostgreSQL (fsync on) in a temporary
folder, writes a shipyard for project ``bench`` (stage ``dev``, sequence ``one`` with the one
task ``alpha``), and gives every measurement a fresh ``python -m controlplane serve`` process
with a fresh database and a fresh JetStream stream. Everything else runs in this process, on
one event loop: a webhook receiver (uvicorn, a raw ASGI app), NATS subscribers, the task
answerers and the trigger client (``bench/load.py``'s keep-alive HTTP/1.1 connections; every
trigger names its own service ``svc-<n>``, because only one sequence runs at a time per
project, stage and service). Per run:

1. **push vs NATS at a fixed rate** (``--rate``, default 100 sequences/s, for ``--seconds``
   after a 2 s warm-up that is not counted). The webhook receiver is registered through
   ``POST /api/controlPlane/v1/uniform/registration`` with a webhook subscription for
   ``sh.keptn.event.alpha.triggered``; a core NATS subscriber on the same subject answers
   every task (``.started`` and ``.finished``, succeeded/pass) so the sequences complete.
   Both note ``time.perf_counter()`` (and ``time.time()``) at receipt per event id. Per
   event: NATS latency and push latency (receipt minus the event's own ``time`` attribute,
   which has millisecond precision, truncated) and the **added latency** of push: webhook
   receipt minus NATS receipt of the same event (one process, one clock, no rounding);
2. **push delivery rate**: sequences triggered as fast as the control plane takes them
   (``--burst`` of them, at most 300 unfinished at once); webhook deliveries/s, task
   ``.triggered``/s on NATS and sequences finished/s over the steady window (1 s after the
   first trigger to the last one), and which of them limits; the same burst once more on a
   control plane without any webhook shows what push costs the engine;
3. **task round trip**: no webhook; the task is answered by a ``tasksdk.TaskApp`` (one
   handler for ``alpha``) and, in a second control plane, by the raw NATS answerer; an
   observer on its own NATS connection notes each ``alpha.triggered`` and ``alpha.finished``;
   round trip = ``.finished`` receipt minus ``.triggered`` receipt per triggered id, at the
   fixed rate. The difference between the two is the SDK's own overhead.

Medians over ``--runs`` (with min-max) are printed as a table and written, with every run's
details and the machine, to ``bench/results/push-<timestamp>.json``. Every process and
server is stopped at the end, also on Ctrl-C, SIGTERM or an error. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
import uvicorn
from load import Connection, HttpError  # bench/load.py: the keep-alive HTTP/1.1 client
from nats.aio.msg import Msg
from run import (
    Children,
    CpuMeter,
    await_health,
    free_port,
    machine_info,
    postgres_pids,
    stop_on_signals,
)

from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.postgres.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: bench
spec:
  stages:
    - name: dev
      sequences:
        - name: one
          tasks:
            - name: alpha
"""
TASK = "alpha"
TRIGGERED = f"sh.keptn.event.{TASK}.triggered"
FINISHED = f"sh.keptn.event.{TASK}.finished"
SEQUENCE_FINISHED = "sh.keptn.event.dev.one.finished"
REGISTRATION = "/api/controlPlane/v1/uniform/registration"
SECRET = "bench-push-secret-7f3a9c2e41d8"  # not whsec_: the key is its UTF-8 bytes
WARMUP = 2.0
BURST_MAX_OPEN = 300
TARGET_ADDED_P50_MS = 5.0


@dataclass(frozen=True)
class Config:
    runs: int
    rate: float
    seconds: float
    warmup: float
    burst: int
    burst_concurrency: int
    drain: float
    keep: bool


# ---------------------------------------------------------------------- small helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max in milliseconds of seconds values, and their count."""
    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


def parse_event_time(text: str) -> float | None:
    """A CloudEvent ``time`` (``2026-11-21T10:00:00.123Z``) as Unix seconds."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def per_second(times: Iterable[float], end: float) -> list[int]:
    counts = [0] * max(1, int(end + 1))
    for t in times:
        if 0 <= t < len(counts):
            counts[int(t)] += 1
    return counts


def log_summary(log: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a control plane log (text format: lower-case level)."""
    counts = {"warning": 0, "error": 0, "critical": 0, "traceback": 0}
    examples: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Traceback"):
                counts["traceback"] += 1
                continue
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in counts:
                counts[parts[1]] += 1
                key = f"{parts[1]} {parts[2]}"
                examples[key] = examples.get(key, 0) + 1
    return {**counts, "by_message": dict(sorted(examples.items(), key=lambda kv: -kv[1])[:10])}


def answer_bodies(event: dict[str, Any], source: str) -> list[tuple[str, bytes]]:
    """``.started`` and ``.finished`` (succeeded/pass) for one task ``.triggered`` event."""
    data = event.get("data") or {}
    answer = {
        "project": data.get("project"),
        "stage": data.get("stage"),
        "service": data.get("service"),
        "status": "succeeded",
        "result": "pass",
    }
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    out = []
    for phase in ("started", "finished"):
        subject = f"sh.keptn.event.{TASK}.{phase}"
        body = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": subject,
            "time": stamp,
            "datacontenttype": "application/json",
            "shkeptncontext": event.get("shkeptncontext"),
            "triggeredid": event.get("id"),
            "shkeptnspecversion": "0.2.4",
            "data": answer,
        }
        out.append((subject, json.dumps(body).encode()))
    return out


# ---------------------------------------------------------------------- what we record


class Recorder:
    """Receipt times of one measurement, keyed by event id (perf_counter and time.time)."""

    def __init__(self) -> None:
        # event id -> (perf_counter, time.time(), the event's own `time` attribute)
        self.nats: dict[str, tuple[float, float, str]] = {}
        self.hook: dict[str, tuple[float, float, str]] = {}
        # triggered id -> perf_counter at the observer's receipt of the task's .finished
        self.finished: dict[str, float] = {}
        self.sequence_finished: list[float] = []
        self.nats_repeats = 0
        self.hook_repeats = 0
        self.hook_bad_signature = 0
        self.hook_unreadable = 0
        self.hook_answered_before_parse = 0
        self.answered = 0
        self.changed = asyncio.Event()


def parse_event(data: bytes) -> dict[str, Any] | None:
    """A received CloudEvent with an id, or None for anything else."""
    try:
        event = json.loads(data)
        str(event["id"])
    except (ValueError, KeyError, TypeError):
        return None
    return event if isinstance(event, dict) else None


def note_nats_receipt(rec: Recorder, data: bytes) -> dict[str, Any] | None:
    """Record when a ``.triggered`` arrived over NATS; None for garbage and repeats."""
    arrived, wall = time.perf_counter(), time.time()
    event = parse_event(data)
    if event is None:
        return None
    event_id = str(event["id"])
    if event_id in rec.nats:
        rec.nats_repeats += 1
        return None
    rec.nats[event_id] = (arrived, wall, str(event.get("time", "")))
    return event


class WebhookReceiver:
    """A raw ASGI app: answer 200 at once, then note the receipt of the CloudEvent."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.rec = Recorder()
        self._seen_ids: set[str] = set()

    def reset(self, rec: Recorder) -> None:
        self.rec = rec
        self._seen_ids = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        arrived = time.perf_counter()
        wall = time.time()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
        )
        await send({"type": "http.response.body", "body": b""})
        self._note(scope.get("headers") or [], b"".join(chunks), arrived, wall)

    def _note(
        self, headers: list[tuple[bytes, bytes]], body: bytes, at: float, wall: float
    ) -> None:
        rec = self.rec
        values = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers
        }
        message_id = values.get("webhook-id", "")
        if message_id in self._seen_ids:
            rec.hook_repeats += 1
            return
        self._seen_ids.add(message_id)
        signed = f"{message_id}.{values.get('webhook-timestamp', '')}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        offered = [part.partition(",")[2] for part in values.get("webhook-signature", "").split()]
        if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
            rec.hook_bad_signature += 1
        try:
            event = json.loads(body)
            event_id = str(event["id"])
        except (ValueError, KeyError, TypeError):
            rec.hook_unreadable += 1
            return
        rec.hook.setdefault(event_id, (at, wall, str(event.get("time", ""))))
        rec.changed.set()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: ours stop everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


# ---------------------------------------------------------------------- triggering


@dataclass
class Drive:
    t0: float = 0.0  # perf_counter when sending began
    sent: list[float] = field(default_factory=list)  # seconds after t0, per trigger
    post_latency: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    schedule_lag_max: float = 0.0
    open_cap_waits: int = 0
    sending_ended: float = 0.0
    stopped_early: bool = False


async def drive(
    url: str,
    *,
    rate: float,
    count: int,
    concurrency: int,
    rec: Recorder,
    prefix: str,
    max_open: int = 0,
    time_limit: float = 300.0,
    on_start: Callable[[], Awaitable[None]] | None = None,
) -> Drive:
    """POST ``count`` triggers of ``dev.one``: open-loop at ``rate``/s, or as fast as taken.

    Sending stops early after ``time_limit`` seconds (a stalled control plane).
    """
    host_port = url.removeprefix("http://")
    host, _, port = host_port.partition(":")
    if host != "127.0.0.1":
        raise SystemExit("push.py only targets 127.0.0.1")
    out = Drive()
    tickets: asyncio.Queue[int | None] = asyncio.Queue(maxsize=concurrency)

    def body(n: int) -> bytes:
        return json.dumps(
            {
                "type": "dev.one.triggered",
                "source": "bench",
                "data": {"project": "bench", "stage": "dev", "service": f"{prefix}{n}"},
            }
        ).encode()

    async def worker() -> None:
        conn = Connection(host, int(port))
        try:
            while (n := await tickets.get()) is not None:
                began = time.perf_counter()
                try:
                    status, _payload, _sent = await conn.post("/api/v1/event", body(n))
                except HttpError as exc:
                    key = str(exc)[:80]
                    out.errors[key] = out.errors.get(key, 0) + 1
                    continue
                out.sent.append(began - out.t0)
                out.post_latency.append(time.perf_counter() - began)
                out.statuses[str(status)] = out.statuses.get(str(status), 0) + 1
        finally:
            await conn.close()

    if on_start is not None:
        await on_start()
    out.t0 = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    deadline = out.t0 + time_limit
    try:
        for n in range(count):
            if time.perf_counter() >= deadline:
                out.stopped_early = True
                break
            if rate > 0:
                delay = out.t0 + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    out.schedule_lag_max = max(out.schedule_lag_max, -delay)
            while (
                max_open
                and n - len(rec.sequence_finished) >= max_open
                and time.perf_counter() < deadline
            ):
                out.open_cap_waits += 1
                rec.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rec.changed.wait(), 0.05)
            await tickets.put(n)
        for _ in workers:
            await tickets.put(None)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    out.sending_ended = time.perf_counter() - out.t0
    return out


async def wait_until(check: Callable[[], bool], rec: Recorder, limit: float) -> bool:
    end = time.perf_counter() + limit
    while not check():
        if time.perf_counter() >= end:
            return False
        rec.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.changed.wait(), 0.1)
    return True


# ---------------------------------------------------------------------- the bench


class PushBench:
    def __init__(
        self,
        config: Config,
        tmp: Path,
        children: Children,
        nats_server: EmbeddedNats,
        postgres: EmbeddedPostgres,
    ) -> None:
        self.config = config
        self.tmp = tmp
        self.children = children
        self.nats_server = nats_server
        self.postgres = postgres
        self.nats_url = nats_server.url
        self.sequences = tmp / "sequences"
        self.logs = tmp / "logs"
        self.nc: Any = None
        self.receiver = WebhookReceiver(SECRET.encode())
        self.hook_url = ""
        self._server: _Uvicorn | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._counter = 0
        self.quiet_checks: list[dict[str, Any]] = []

    # -------------------------------------------------------------- set-up

    async def setup(self) -> None:
        self.sequences.mkdir()
        self.logs.mkdir()
        (self.sequences / "bench.yaml").write_text(SHIPYARD)
        self.nc = await nats.connect(self.nats_url, name="bench-push", max_reconnect_attempts=3)
        port = free_port()
        config = uvicorn.Config(
            self.receiver,
            host="127.0.0.1",
            port=port,
            interface="asgi3",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=60,
        )
        self._server = _Uvicorn(config)
        self._server_task = asyncio.create_task(self._server.serve(), name="webhook receiver")
        for _ in range(200):
            if self._server.started:
                break
            if self._server_task.done():
                self._server_task.result()
            await asyncio.sleep(0.025)
        else:
            raise RuntimeError("the webhook receiver did not start")
        self.hook_url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._server_task, timeout=10)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def postgres_pids(self) -> list[int]:
        return postgres_pids(self.postgres.data_dir)

    def meter(self, cp: subprocess.Popen[bytes]) -> CpuMeter:
        return CpuMeter(
            {
                "controlplane": lambda: [cp.pid],
                "postgres": self.postgres_pids,
                "nats_server": lambda: [self.nats_server.pid] if self.nats_server.pid else [],
                "bench_process": lambda: [os.getpid()],
            }
        )

    async def wait_for_quiet(self, label: str, limit: float = 30.0) -> None:
        """Wait (up to ``limit`` s) until other work on the machine uses < 25% of a core."""
        began = time.monotonic()
        foreign = 0.0
        while True:
            meter = CpuMeter(
                {
                    "ours": lambda: [
                        os.getpid(),
                        *([self.nats_server.pid] if self.nats_server.pid else []),
                        *self.postgres_pids(),
                    ]
                }
            )
            await asyncio.to_thread(meter.start)
            await asyncio.sleep(1.0)
            foreign = (await asyncio.to_thread(meter.stop))["foreign"]
            waited = time.monotonic() - began
            if foreign < 25.0 or waited >= limit:
                break
            await asyncio.sleep(1.0)
        self.quiet_checks.append(
            {
                "label": label,
                "foreign_pct": foreign,
                "waited_s": round(waited - 1.0, 1),
                "loadavg": os.getloadavg(),
            }
        )
        if waited > 2.0:
            print(f"    (waited {waited - 1:.0f} s for a quieter machine; foreign CPU {foreign}%)")

    # -------------------------------------------------------------- control plane

    @contextlib.asynccontextmanager
    async def control_plane(
        self, label: str
    ) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, Path]]:
        """A fresh database, a fresh stream and a fresh ``controlplane serve`` process."""
        await self.wait_for_quiet(label)
        self._counter += 1
        database = f"push_{self._counter}"
        stream = f"push_{os.getpid()}_{self._counter}"
        admin = await asyncpg.connect(self.postgres.dsn_for("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {database}")
        finally:
            await admin.close()
        port = free_port()
        log = self.logs / f"controlplane-{self._counter}-{label}.log"
        proc = self.children.start(
            "controlplane",
            [
                PYTHON, "-m", "controlplane", "serve",
                "--nats-url", self.nats_url,
                "--database-url", self.postgres.dsn_for(database),
                "--port", str(port),
                "--sequences", str(self.sequences),
                "--stream", stream,
                "--log-level", "warning",
            ],
            log,
            # SIGINT, as Ctrl-C: uvicorn re-raises SIGTERM before the clean-up has run.
            stop_signal=signal.SIGINT,
        )  # fmt: skip
        try:
            await await_health(proc, port, log)
            yield proc, f"http://127.0.0.1:{port}", log
        finally:
            await asyncio.to_thread(self.children.stop, proc)
            # Streams must not overlap in subjects: the next control plane makes its own.
            with contextlib.suppress(Exception):
                await self.nc.jetstream().delete_stream(stream)
            admin = await asyncpg.connect(self.postgres.dsn_for("postgres"))
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            finally:
                await admin.close()

    async def register_webhook(self, base_url: str) -> str:
        body = {
            "name": "bench-push-receiver",
            "metadata": {"hostname": "bench", "integrationversion": "1.0.0"},
            "subscriptions": [
                {
                    "event": TRIGGERED,
                    "filter": {"projects": ["bench"], "stages": [], "services": []},
                    "webhook": {"url": self.hook_url, "mode": "structured", "secret": SECRET},
                }
            ],
            "expires": False,
        }

        def post() -> tuple[int, str]:
            request = urllib.request.Request(
                base_url + REGISTRATION,
                data=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, text = await asyncio.to_thread(post)
        if status not in (200, 201):
            raise RuntimeError(f"registration refused: {status} {text}")
        return str(json.loads(text)["id"])

    # -------------------------------------------------------------- NATS roles

    async def subscribe_answerer(
        self, nc: Any, rec: Recorder, *, record: bool, source: str = "bench-push-answerer"
    ) -> Any:
        """The raw task service: answers each ``alpha.triggered``; optionally notes receipt."""

        async def on_triggered(msg: Msg) -> None:
            event = note_nats_receipt(rec, msg.data) if record else parse_event(msg.data)
            if event is None:
                return
            for subject, payload in answer_bodies(event, source):
                await nc.publish(subject, payload)
            rec.answered += 1

        return await nc.subscribe(
            TRIGGERED, cb=on_triggered, pending_msgs_limit=1_000_000, pending_bytes_limit=0
        )

    async def subscribe_observer(self, rec: Recorder, *, tasks: bool) -> list[Any]:
        """Sequence ``.finished`` (for the open cap); with ``tasks``, alpha triggered/finished."""
        nc = self.nc

        async def on_sequence_finished(msg: Msg) -> None:
            rec.sequence_finished.append(time.perf_counter())
            rec.changed.set()

        async def on_triggered(msg: Msg) -> None:
            note_nats_receipt(rec, msg.data)

        async def on_finished(msg: Msg) -> None:
            arrived = time.perf_counter()
            try:
                triggered_id = str(json.loads(msg.data)["triggeredid"])
            except (ValueError, KeyError, TypeError):
                return
            rec.finished.setdefault(triggered_id, arrived)
            rec.changed.set()

        limits = {"pending_msgs_limit": 1_000_000, "pending_bytes_limit": 0}
        subs = [await nc.subscribe(SEQUENCE_FINISHED, cb=on_sequence_finished, **limits)]
        if tasks:
            subs.append(await nc.subscribe(TRIGGERED, cb=on_triggered, **limits))
            subs.append(await nc.subscribe(FINISHED, cb=on_finished, **limits))
        await nc.flush()
        return subs

    @staticmethod
    async def unsubscribe(subs: Iterable[Any]) -> None:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _prefix(self, label: str) -> str:
        return f"svc-{self._counter}-{label}-"

    # -------------------------------------------------------------- 1. push vs NATS

    async def push_latency(self) -> dict[str, Any]:
        c = self.config
        rec = Recorder()
        self.receiver.reset(rec)
        async with self.control_plane("push-latency") as (cp, url, log):
            await self.register_webhook(url)
            subs = await self.subscribe_observer(rec, tasks=False)
            subs.append(await self.subscribe_answerer(self.nc, rec, record=True))
            await self.nc.flush()
            meter = self.meter(cp)
            try:
                count = round(c.rate * (c.warmup + c.seconds))
                result = await drive(
                    url, rate=c.rate, count=count, concurrency=8, rec=rec,
                    prefix=self._prefix("lat"), time_limit=c.warmup + c.seconds + 30,
                    on_start=lambda: asyncio.to_thread(meter.start),
                )  # fmt: skip
                cpu = await asyncio.to_thread(meter.stop)
                await wait_until(
                    lambda: (
                        len(rec.sequence_finished) >= len(result.sent)
                        and all(event_id in rec.hook for event_id in rec.nats)
                    ),
                    rec,
                    c.drain,
                )
            finally:
                await self.unsubscribe(subs)
            problems = log_summary(log)
        t0 = result.t0
        start, end = c.warmup, c.warmup + c.seconds
        in_window = [i for i, v in rec.nats.items() if start <= v[0] - t0 < end]
        both = [i for i in in_window if i in rec.hook]
        hook_only = [
            i for i, v in rec.hook.items() if start <= v[0] - t0 < end and i not in rec.nats
        ]
        added = [rec.hook[i][0] - rec.nats[i][0] for i in both]
        nats_latency, push_latency = [], []
        for i in both:
            stamp = parse_event_time(rec.nats[i][2])
            if stamp is not None:
                nats_latency.append(rec.nats[i][1] - stamp)
                push_latency.append(rec.hook[i][1] - stamp)
        worst = sorted(both, key=lambda i: rec.hook[i][0] - rec.nats[i][0])[-5:]
        return {
            "offered_per_s": c.rate,
            "window_s": [start, end],
            "sent": len(result.sent),
            "statuses": result.statuses,
            "http_errors": result.errors,
            "sending_stopped_early": result.stopped_early,
            "post_latency": spread(result.post_latency),
            "schedule_lag_max_ms": ms(result.schedule_lag_max),
            "sequences_finished": len(rec.sequence_finished),
            "events_in_window": len(in_window),
            "seen_by_both": len(both),
            "missing_webhook": len(in_window) - len(both),
            "missing_nats": len(hook_only),
            "webhook_repeats": rec.hook_repeats,
            "nats_repeats": rec.nats_repeats,
            "bad_signatures": rec.hook_bad_signature,
            "unreadable_webhooks": rec.hook_unreadable,
            "added": spread(added),
            "nats_latency": spread(nats_latency),
            "push_latency": spread(push_latency),
            "added_each_second_p50_ms": _seconds_p50(
                [(rec.nats[i][0] - t0, rec.hook[i][0] - rec.nats[i][0]) for i in both], end
            ),
            "worst_added": [
                {
                    "at_s": round(rec.nats[i][0] - t0, 3),
                    "added_ms": ms(rec.hook[i][0] - rec.nats[i][0]),
                }
                for i in worst
            ],
            "cpu_pct_of_one_core": cpu,
            "controlplane_log": problems,
        }

    # -------------------------------------------------------------- 2. delivery rate

    async def burst(self, *, push: bool) -> dict[str, Any]:
        c = self.config
        rec = Recorder()
        self.receiver.reset(rec)
        label = "burst-push" if push else "burst-engine-only"
        async with self.control_plane(label) as (cp, url, log):
            if push:
                await self.register_webhook(url)
            subs = await self.subscribe_observer(rec, tasks=False)
            subs.append(await self.subscribe_answerer(self.nc, rec, record=True))
            await self.nc.flush()
            meter = self.meter(cp)
            try:
                result = await drive(
                    url, rate=0, count=c.burst, concurrency=c.burst_concurrency, rec=rec,
                    prefix=self._prefix("burst"), max_open=BURST_MAX_OPEN, time_limit=180,
                    on_start=lambda: asyncio.to_thread(meter.start),
                )  # fmt: skip
                cpu = await asyncio.to_thread(meter.stop)
                drained = await wait_until(
                    lambda: (
                        len(rec.sequence_finished) >= len(result.sent)
                        and (not push or all(event_id in rec.hook for event_id in rec.nats))
                    ),
                    rec,
                    max(c.drain, 30.0),
                )
            finally:
                await self.unsubscribe(subs)
            problems = log_summary(log)
        t0 = result.t0
        start = min(1.0, result.sending_ended / 4)
        end = max(result.sent) if result.sent else result.sending_ended
        if end - start < 0.5:
            start = 0.0
        window = max(end - start, 1e-9)
        nats_times = [v[0] - t0 for v in rec.nats.values()]
        hook_times = [v[0] - t0 for v in rec.hook.values()]
        finished_times = [t - t0 for t in rec.sequence_finished]

        def rate(times: list[float]) -> float:
            return round(sum(1 for t in times if start <= t < end) / window, 1)

        last_nats = max(nats_times, default=0.0)
        last_hook = max(hook_times, default=0.0)
        both = [i for i in rec.nats if i in rec.hook]
        out: dict[str, Any] = {
            "push": push,
            "sequences": c.burst,
            "sent": len(result.sent),
            "statuses": result.statuses,
            "http_errors": result.errors,
            "sending_stopped_early": result.stopped_early,
            "max_open": BURST_MAX_OPEN,
            "open_cap_waits": result.open_cap_waits,
            "window_s": [round(start, 3), round(end, 3)],
            "triggers_sent_per_s": rate(result.sent),
            "tasks_triggered_per_s": rate(nats_times),
            "sequences_finished_per_s": rate(finished_times),
            "sequences_finished": len(rec.sequence_finished),
            "drained": drained,
            "post_latency": spread(result.post_latency),
            "cpu_pct_of_one_core": cpu,
            "controlplane_log": problems,
            "each_second": {
                "tasks_triggered": per_second(nats_times, last_nats),
                "sequences_finished": per_second(finished_times, last_nats),
            },
        }
        if push:
            out.update(
                {
                    "webhook_deliveries_per_s": rate(hook_times),
                    "webhooks_received": len(rec.hook),
                    "missing_webhook": len(rec.nats) - len(both),
                    "webhook_repeats": rec.hook_repeats,
                    "bad_signatures": rec.hook_bad_signature,
                    "last_webhook_after_last_task_s": round(last_hook - last_nats, 3),
                    # once the engine has triggered its last task, push has the process alone
                    "webhook_deliveries_per_s_after_engine_idle": (
                        round(
                            sum(1 for t in hook_times if t > last_nats) / (last_hook - last_nats), 1
                        )
                        if last_hook - last_nats >= 0.5
                        else None
                    ),
                    "added_under_load": spread([rec.hook[i][0] - rec.nats[i][0] for i in both]),
                }
            )
            out["each_second"]["webhooks"] = per_second(hook_times, max(last_nats, last_hook))
            keeps_up = (
                out["webhook_deliveries_per_s"] >= 0.95 * out["tasks_triggered_per_s"]
                and out["last_webhook_after_last_task_s"] < 1.0
                and out["missing_webhook"] == 0
            )
            out["limit"] = (
                "the engine (push keeps up with every task it triggers)"
                if keeps_up
                else "push delivery (webhooks fall behind the tasks the engine triggers)"
            )
        return out

    # -------------------------------------------------------------- 3. round trip

    async def round_trip(self, kind: str) -> dict[str, Any]:
        c = self.config
        rec = Recorder()
        label = f"roundtrip-{kind}"
        async with self.control_plane(label) as (cp, url, log):
            subs = await self.subscribe_observer(rec, tasks=True)
            meter = self.meter(cp)
            try:
                async with self._answerer(kind, rec):
                    count = round(c.rate * (c.warmup + c.seconds))
                    result = await drive(
                        url, rate=c.rate, count=count, concurrency=8, rec=rec,
                        prefix=self._prefix(kind), time_limit=c.warmup + c.seconds + 30,
                        on_start=lambda: asyncio.to_thread(meter.start),
                    )  # fmt: skip
                    cpu = await asyncio.to_thread(meter.stop)
                    await wait_until(
                        lambda: len(rec.sequence_finished) >= len(result.sent), rec, c.drain
                    )
            finally:
                await self.unsubscribe(subs)
            problems = log_summary(log)
        t0 = result.t0
        start, end = c.warmup, c.warmup + c.seconds
        in_window = [i for i, v in rec.nats.items() if start <= v[0] - t0 < end]
        trips = [rec.finished[i] - rec.nats[i][0] for i in in_window if i in rec.finished]
        return {
            "answerer": kind,
            "offered_per_s": c.rate,
            "window_s": [start, end],
            "sent": len(result.sent),
            "statuses": result.statuses,
            "http_errors": result.errors,
            "sending_stopped_early": result.stopped_early,
            "sequences_finished": len(rec.sequence_finished),
            "tasks_in_window": len(in_window),
            "unanswered_in_window": len(in_window) - len(trips),
            "round_trip": spread(trips),
            "cpu_pct_of_one_core": cpu,
            "controlplane_log": problems,
        }

    @contextlib.asynccontextmanager
    async def _answerer(self, kind: str, rec: Recorder) -> AsyncIterator[None]:
        """The task service under test, on its own NATS connection in this process."""
        if kind == "sdk":
            from tasksdk import TaskApp  # imported here: the SDK is not needed by 1 and 2

            app = TaskApp("bench-sdk")

            @app.task(TASK)
            async def alpha(ctx: Any) -> dict[str, Any]:
                return {TASK: {"ok": True}}

            async with app.connect(self.nats_url):
                yield
            return
        nc = await nats.connect(self.nats_url, name="bench-raw-answerer", max_reconnect_attempts=3)
        try:
            await self.subscribe_answerer(nc, rec, record=False)
            await nc.flush()
            yield
        finally:
            with contextlib.suppress(Exception):
                await nc.drain()


def _seconds_p50(samples: list[tuple[float, float]], end: float) -> list[float | None]:
    """p50 in ms of (moment, value) samples, per whole second from 0 to ``end``."""
    buckets: list[list[float]] = [[] for _ in range(max(1, int(end + 1)))]
    for moment, value in samples:
        if 0 <= moment < len(buckets):
            buckets[int(moment)].append(value)
    return [ms(percentile(bucket, 50)) for bucket in buckets]


# ---------------------------------------------------------------------- summary


PICKS: dict[str, tuple[str, str]] = {
    # key: (title, dotted path in a run)
    "added_p50_ms": ("push added latency p50 (webhook - NATS)", "latency.added.p50_ms"),
    "added_p99_ms": ("push added latency p99", "latency.added.p99_ms"),
    "nats_p50_ms": ("  NATS latency p50 (receipt - event time)", "latency.nats_latency.p50_ms"),
    "nats_p99_ms": ("  NATS latency p99", "latency.nats_latency.p99_ms"),
    "push_p50_ms": ("  push latency p50 (receipt - event time)", "latency.push_latency.p50_ms"),
    "push_p99_ms": ("  push latency p99", "latency.push_latency.p99_ms"),
    "seen_by_both": ("  events seen by both", "latency.seen_by_both"),
    "missing_webhook": ("  missing at the webhook", "latency.missing_webhook"),
    "missing_nats": ("  missing on NATS", "latency.missing_nats"),
    "webhooks_per_s": ("burst: webhook deliveries/s", "burst_push.webhook_deliveries_per_s"),
    "burst_tasks_per_s": ("burst: tasks triggered/s", "burst_push.tasks_triggered_per_s"),
    "burst_sequences_per_s": (
        "burst: sequences finished/s",
        "burst_push.sequences_finished_per_s",
    ),
    "burst_engine_only_per_s": (
        "  same burst, no webhook: sequences/s",
        "burst_engine_only.sequences_finished_per_s",
    ),
    "burst_added_p50_ms": ("  burst: added latency p50", "burst_push.added_under_load.p50_ms"),
    "burst_added_p99_ms": ("  burst: added latency p99", "burst_push.added_under_load.p99_ms"),
    "burst_webhooks_after_idle_per_s": (
        "  burst: webhooks/s once the engine is idle",
        "burst_push.webhook_deliveries_per_s_after_engine_idle",
    ),
    "burst_engine_cost_pct": (
        "  burst: engine sequences/s lost to push, %",
        "derived.push_costs_engine_pct",
    ),
    "burst_webhook_lag_s": (
        "  burst: last webhook after last task, s",
        "burst_push.last_webhook_after_last_task_s",
    ),
    "sdk_rt_p50_ms": ("SDK task round trip p50", "sdk.round_trip.p50_ms"),
    "sdk_rt_p99_ms": ("SDK task round trip p99", "sdk.round_trip.p99_ms"),
    "raw_rt_p50_ms": ("  raw answerer round trip p50", "raw.round_trip.p50_ms"),
    "raw_rt_p99_ms": ("  raw answerer round trip p99", "raw.round_trip.p99_ms"),
    "sdk_overhead_p50_ms": ("  SDK overhead p50 (SDK - raw)", "derived.sdk_overhead_p50_ms"),
}


def _dig(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for key, (_title, path) in PICKS.items():
        values = [v for run in runs if isinstance(v := _dig(run, path), int | float)]
        out[key] = {
            "median": statistics.median(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }
    return out


def print_table(summary: dict[str, dict[str, float | None]], runs: int, rate: float) -> None:
    print(f"\nmedians of {runs} run(s) at {rate:g} tasks/s (burst rows excepted); spread min-max")
    print(f"{'figure':<46} {'median':>9} {'spread':>19}  target")
    for key, (title, _path) in PICKS.items():
        value = summary[key]
        median, low, high = value["median"], value["min"], value["max"]
        shown = f"{median:g}" if median is not None else "-"
        range_text = f"{low:g}-{high:g}" if low is not None and high is not None else "-"
        target = ""
        if key == "added_p50_ms" and median is not None:
            verdict = "met" if median <= TARGET_ADDED_P50_MS else "MISSED"
            target = f"<= {TARGET_ADDED_P50_MS:g} ms: {verdict}"
        print(f"{title:<46} {shown:>9} {range_text:>19}  {target}")


# ---------------------------------------------------------------------- main


async def orchestrate(
    config: Config,
    tmp: Path,
    children: Children,
    nats_server: EmbeddedNats,
    postgres: EmbeddedPostgres,
) -> dict[str, Any]:
    bench = PushBench(config, tmp, children, nats_server, postgres)
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "event_loop": type(asyncio.get_running_loop()).__module__,
        "loadavg_at_start": os.getloadavg(),
        **machine_info(),
    }
    report: dict[str, Any] = {"config": config.__dict__, "machine": machine}
    runs: list[dict[str, Any]] = []
    try:
        await bench.setup()
        admin = await asyncpg.connect(postgres.dsn_for("postgres"))
        try:
            machine["postgres"] = await admin.fetchval("SHOW server_version")
            machine["postgres_fsync"] = await admin.fetchval("SHOW fsync")
        finally:
            await admin.close()
        for index in range(config.runs):
            print(f"run {index + 1}/{config.runs}", flush=True)
            run: dict[str, Any] = {}
            run["latency"] = lat = await bench.push_latency()
            print(
                f"  push vs NATS @{config.rate:g}/s: added p50 {lat['added']['p50_ms']} ms"
                f" p99 {lat['added']['p99_ms']} ms; NATS p50 {lat['nats_latency']['p50_ms']} ms,"
                f" push p50 {lat['push_latency']['p50_ms']} ms; both {lat['seen_by_both']},"
                f" missing webhook {lat['missing_webhook']}, missing NATS {lat['missing_nats']}",
                flush=True,
            )
            run["burst_push"] = burst = await bench.burst(push=True)
            run["burst_engine_only"] = alone = await bench.burst(push=False)
            print(
                f"  burst of {config.burst}: webhooks {burst['webhook_deliveries_per_s']}/s,"
                f" tasks {burst['tasks_triggered_per_s']}/s, sequences"
                f" {burst['sequences_finished_per_s']}/s (no webhook:"
                f" {alone['sequences_finished_per_s']}/s); limit: {burst['limit']}",
                flush=True,
            )
            for kind in ("sdk", "raw"):
                try:
                    run[kind] = await bench.round_trip(kind)
                except Exception as exc:  # the SDK is under development: report, go on
                    if kind == "raw":
                        raise
                    run[kind] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"  SDK round trip failed: {run[kind]['error']}", flush=True)
            sdk, raw = _dig(run, "sdk.round_trip.p50_ms"), run["raw"]["round_trip"]
            with_push = burst["sequences_finished_per_s"]
            without = alone["sequences_finished_per_s"]
            run["derived"] = {
                "sdk_overhead_p50_ms": (
                    round(sdk - raw["p50_ms"], 3)
                    if sdk is not None and raw["p50_ms"] is not None
                    else None
                ),
                "push_costs_engine_pct": (
                    round(100.0 * (1.0 - with_push / without), 1) if without else None
                ),
            }
            print(
                f"  round trip @{config.rate:g}/s: SDK p50"
                f" {_dig(run, 'sdk.round_trip.p50_ms')} ms"
                f" p99 {_dig(run, 'sdk.round_trip.p99_ms')} ms;"
                f" raw p50 {raw['p50_ms']} ms p99 {raw['p99_ms']} ms",
                flush=True,
            )
            runs.append(run)
        report["runs"] = runs
        report["summary"] = summarize(runs)
        report["quiet_checks"] = bench.quiet_checks
        machine["loadavg_at_end"] = os.getloadavg()
        return report
    finally:
        await bench.close()


def make_config(args: argparse.Namespace) -> Config:
    return Config(
        runs=args.runs or (1 if args.quick else 3),
        rate=args.rate,
        seconds=args.seconds or (5.0 if args.quick else 20.0),
        warmup=WARMUP,
        burst=args.burst or (1000 if args.quick else 3000),
        burst_concurrency=32,
        drain=10.0,
        keep=args.keep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians of (3)")
    parser.add_argument("--rate", type=float, default=100.0, help="fixed rate, tasks/s (100)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds (20)")
    parser.add_argument("--burst", type=int, default=None, help="sequences in the burst (3000)")
    parser.add_argument("--quick", action="store_true", help="1 run, 5 s windows: a smoke test")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    config = make_config(args)
    if config.rate <= 0 or config.seconds <= 0 or config.runs < 1 or config.burst < 1:
        parser.error("--rate, --seconds, --runs and --burst must be positive")
    if config.rate * (config.warmup + config.seconds) > 20_000 or config.burst > 20_000:
        parser.error("at most 20,000 sequences per measurement")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    # Name the source of any library warning (the SDK and nats-py log, they print nothing).
    logging.basicConfig(level=logging.WARNING, format="    [%(name)s] %(levelname)s %(message)s")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    children = Children()
    with stop_on_signals(children), contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="controlplane-push-"))
        if config.keep:
            print(f"temporary folder (kept): {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        nats_server = EmbeddedNats(tmp / "nats")
        stack.callback(nats_server.stop)
        nats_server.start()
        postgres = EmbeddedPostgres()
        stack.callback(postgres.stop)
        postgres.start(tmp / "postgres")
        stack.callback(children.stop_all)
        try:
            runner: Callable[[Any], Any] = asyncio.run
            with contextlib.suppress(ImportError):
                import uvloop

                runner = uvloop.run
            report = runner(orchestrate(config, tmp, children, nats_server, postgres))
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
    out = BENCH / "results" / f"push-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report["summary"], config.runs, config.rate)
    for index, run in enumerate(report["runs"], 1):
        print(f"burst, run {index}: the limit is {run['burst_push']['limit']}")
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
