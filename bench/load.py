"""Load generator: POSTs sequence triggers over raw HTTP/1.1 keep-alive and watches NATS.

Not httpx (it degrades past a few concurrent requests): a small client on asyncio streams,
one request at a time per connection, ``--concurrency`` connections. Triggers are sent
open-loop at ``--rate`` per second (``0``: as fast as the connections allow), each with its
own service (``<prefix><n>``) because only one sequence runs at a time per
(project, stage, service). Two bounds keep a run finite: ``--count`` and ``--duration``;
``--max-open`` stops sending while that many triggered sequences have not yet finished, so a
control plane slower than the offered rate sees a bounded backlog, not an ever-growing one.

On NATS (plain subscriptions, the same view a task service has) it records:

* every sequence ``.finished`` (``sh.keptn.event.<stage>.<sequence>.finished``): arrival time;
* with ``--latency``: the first task ``.triggered`` of each keptnContext (trigger-to-first-task
  latency = its arrival minus the time the POST's bytes were written) and, as an observer,
  each task ``.finished`` -> next task ``.triggered`` of the same context (both arrival times
  at this process: the hand-off as a bystander on the bus sees it);
* with ``--count-task T``: how many ``T.triggered`` arrived (``--wait-triggered`` waits for N).

All times are ``time.monotonic()`` seconds relative to ``t0`` (the start of sending), written
as JSON to ``--out``. The line ``started <t0>`` on stdout marks the start of sending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.msg import Msg

SEQUENCE_FINISHED = "sh.keptn.event.*.*.finished"
TASK_TRIGGERED = "sh.keptn.event.*.triggered"
TASK_FINISHED = "sh.keptn.event.*.finished"


class HttpError(RuntimeError):
    pass


class Connection:
    """One HTTP/1.1 keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        """Send one POST; returns (status, body, monotonic time the request was written)."""
        reader, writer = await self._open()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        sent = time.monotonic()
        try:
            status, payload, keep = await self._response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        if not keep:
            await self.close()
        return status, payload, sent

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise ValueError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        chunked = False
        keep = True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection" and b"close" in value.lower():
                keep = False
        if chunked:
            parts: list[bytes] = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            return status, b"".join(parts), keep
        if length < 0:
            raise ValueError("response without Content-Length")
        return status, await reader.readexactly(length), keep


@dataclass
class Recorder:
    t0: float = 0.0
    sent: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    # keptnContext -> time its POST was written; only kept with --latency
    contexts: dict[str, float] = field(default_factory=dict)
    finished: list[float] = field(default_factory=list)
    first_triggered: dict[str, float] = field(default_factory=dict)
    last_task_finished: dict[str, float] = field(default_factory=dict)
    observed_handoffs: list[tuple[float, float]] = field(default_factory=list)
    task_count: int = 0
    schedule_lag_max: float = 0.0
    open_cap_waits: int = 0

    def rel(self, moment: float) -> float:
        return moment - self.t0


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        url = urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("load.py only targets 127.0.0.1")
        self.rec = Recorder()
        self.sent_total = 0
        self.finished_total = 0
        self.done_sending = asyncio.Event()
        self.task_target = asyncio.Event()
        self.open_changed = asyncio.Event()

    # ------------------------------------------------------------------ NATS side

    async def on_sequence_finished(self, msg: Msg) -> None:
        self.rec.finished.append(self.rec.rel(time.monotonic()))
        self.finished_total += 1
        self.open_changed.set()

    async def on_task_triggered(self, msg: Msg) -> None:
        arrived = time.monotonic()
        if (
            self.args.count_task
            and msg.subject == f"sh.keptn.event.{self.args.count_task}.triggered"
        ):
            self.rec.task_count += 1
            if self.args.wait_triggered and self.rec.task_count >= self.args.wait_triggered:
                self.task_target.set()
        if not self.args.latency:
            return
        context = _context(msg.data)
        if context is None:
            return
        self.rec.first_triggered.setdefault(context, self.rec.rel(arrived))
        previous = self.rec.last_task_finished.pop(context, None)
        if previous is not None:
            moment = self.rec.rel(arrived)
            self.rec.observed_handoffs.append((moment, moment - previous))

    async def on_task_finished(self, msg: Msg) -> None:
        arrived = time.monotonic()
        context = _context(msg.data)
        if context is not None:
            self.rec.last_task_finished[context] = self.rec.rel(arrived)

    # ------------------------------------------------------------------ HTTP side

    def body(self, n: int) -> bytes:
        a = self.args
        return json.dumps(
            {
                "specversion": "1.0",
                "source": "bench",
                "type": f"{a.stage}.{a.sequence}.triggered",
                "data": {"project": a.project, "stage": a.stage, "service": f"{a.prefix}{n}"},
            }
        ).encode()

    async def worker(self, tickets: asyncio.Queue[int | None]) -> None:
        conn = Connection(self.host, self.port)
        rec = self.rec
        try:
            while True:
                n = await tickets.get()
                if n is None:
                    return
                try:
                    status, payload, sent = await conn.post("/api/v1/event", self.body(n))
                except HttpError as exc:
                    key = str(exc)[:80]
                    rec.errors[key] = rec.errors.get(key, 0) + 1
                    continue
                answered = time.monotonic()
                rec.sent.append(rec.rel(sent))
                rec.answered.append(rec.rel(answered))
                rec.statuses[str(status)] = rec.statuses.get(str(status), 0) + 1
                if self.args.latency and status == 200:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        rec.contexts[str(json.loads(payload)["keptnContext"])] = rec.rel(sent)
        finally:
            await conn.close()

    async def produce(self, tickets: asyncio.Queue[int | None]) -> None:
        a = self.args
        rec = self.rec
        deadline = rec.t0 + a.duration
        n = 0
        while n < a.count and time.monotonic() < deadline:
            if a.rate > 0:
                due = rec.t0 + n / a.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    rec.schedule_lag_max = max(rec.schedule_lag_max, -delay)
            if a.max_open > 0:
                while self.sent_total - self.finished_total >= a.max_open:
                    rec.open_cap_waits += 1
                    self.open_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.open_changed.wait(), 0.05)
                    if time.monotonic() >= deadline:
                        break
                if time.monotonic() >= deadline:
                    break
            await tickets.put(n)
            self.sent_total += 1
            n += 1
        for _ in range(a.concurrency):
            await tickets.put(None)

    async def run(self) -> dict[str, Any]:
        a = self.args
        nc = await nats.connect(a.nats_url, name="bench-load", max_reconnect_attempts=3)
        try:
            await _subscribe(nc, SEQUENCE_FINISHED, self.on_sequence_finished)
            if a.latency or a.count_task:
                await _subscribe(nc, TASK_TRIGGERED, self.on_task_triggered)
            if a.latency:
                await _subscribe(nc, TASK_FINISHED, self.on_task_finished)
            await nc.flush()
            tickets: asyncio.Queue[int | None] = asyncio.Queue(maxsize=a.concurrency)
            self.rec.t0 = time.monotonic()
            print(f"started {self.rec.t0:.6f}", flush=True)
            workers = [asyncio.create_task(self.worker(tickets)) for _ in range(a.concurrency)]
            await self.produce(tickets)
            await asyncio.wait_for(asyncio.gather(*workers), timeout=a.drain + 30)
            sending_ended = self.rec.rel(time.monotonic())
            if a.wait_triggered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.task_target.wait(), timeout=a.drain)
            elif a.drain > 0:
                end = time.monotonic() + a.drain
                while self.finished_total < self.sent_total and time.monotonic() < end:
                    self.open_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.open_changed.wait(), 0.05)
            await nc.flush()
        finally:
            await nc.close()
        return self.result(sending_ended)

    def result(self, sending_ended: float) -> dict[str, Any]:
        rec = self.rec
        trigger_latency = [
            rec.first_triggered[ctx] - sent
            for ctx, sent in rec.contexts.items()
            if ctx in rec.first_triggered
        ]
        return {
            "args": vars(self.args),
            "t0_monotonic": rec.t0,
            "sending_ended": sending_ended,
            "sent": rec.sent,
            "answered": rec.answered,
            "statuses": rec.statuses,
            "errors": rec.errors,
            "finished": rec.finished,
            "trigger_to_first_task": trigger_latency,
            "trigger_to_first_task_sent_at": [
                sent for ctx, sent in rec.contexts.items() if ctx in rec.first_triggered
            ],
            "contexts_without_first_task": sum(
                1 for ctx in rec.contexts if ctx not in rec.first_triggered
            ),
            "observed_handoffs": rec.observed_handoffs,
            "task_count": rec.task_count,
            "schedule_lag_max": rec.schedule_lag_max,
            "open_cap_waits": rec.open_cap_waits,
        }


async def _subscribe(nc: Any, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
    # No pending limits: a slow observer must show up as latency, not as dropped messages.
    await nc.subscribe(subject, cb=cb, pending_msgs_limit=1_000_000, pending_bytes_limit=0)


def _context(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("shkeptncontext")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", required=True, help="control plane base URL (127.0.0.1 only)")
    p.add_argument("--nats-url", required=True)
    p.add_argument("--project", default="bench")
    p.add_argument("--stage", default="dev")
    p.add_argument("--sequence", default="one")
    p.add_argument("--prefix", default="svc-", help="service name prefix; <prefix><n>")
    p.add_argument("--rate", type=float, default=0.0, help="triggers/s offered; 0 = max")
    p.add_argument("--concurrency", type=int, default=32, help="HTTP connections")
    p.add_argument("--count", type=int, default=1_000_000, help="most triggers to send")
    p.add_argument("--duration", type=float, default=30.0, help="most seconds of sending")
    p.add_argument("--max-open", type=int, default=0, help="most unfinished sequences; 0 = off")
    p.add_argument("--drain", type=float, default=0.0, help="seconds to wait after sending")
    p.add_argument("--latency", action="store_true", help="record per-context latencies")
    p.add_argument("--count-task", default="", help="count this task's .triggered events")
    p.add_argument("--wait-triggered", type=int, default=0, help="wait for N of --count-task")
    p.add_argument("--out", required=True, type=Path)
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    result = await Load(args).run()
    args.out.write_text(json.dumps(result, default=str))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        sys.exit("concurrency must be >= 1 and duration > 0")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))


if __name__ == "__main__":
    main()
