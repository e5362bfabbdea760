"""A trivial auto-answering task service for the benchmark (plain nats-py, no task SDK).

It subscribes to ``sh.keptn.event.*.triggered`` (one token between ``event`` and ``triggered``:
task events only, never a sequence's ``<stage>.<sequence>.triggered``) and answers every
task it is not told to ignore with ``.started`` and ``.finished`` (status succeeded, result
pass) at once. Publishing goes through nats-py's flusher task, which writes everything
published in one event-loop turn with one socket write, so answers are batched without an
explicit ``flush()`` round trip.

Hand-off latency, as measured here: for every ``.finished`` it publishes, it keeps the
``time.monotonic()`` taken right after the ``publish()`` call that queued it (so the time
until nats-py's flusher wrote it to the socket is *included*, which errs on the slow side).
When the next ``.triggered`` of the same keptnContext arrives, the sample is the arrival time
(taken first thing in the message callback) minus that publish time. That interval spans:
answerer -> nats-server -> JetStream stream -> the engine's pull consumer -> the engine's
batch and PostgreSQL commit -> JetStream publish -> nats-server -> answerer, i.e. the control
plane's own hand-off plus two NATS round trips' worth of hops (into the control plane and out
of it) and the answerer's own scheduling delay.

Control (request/reply on plain NATS, used by ``bench/run.py``):

* ``bench.answerer.ping``   -> ``pong``
* ``bench.answerer.reset``  -> forget all samples and counters
* ``bench.answerer.dump``   -> body is a file path; the samples are written there as JSON

    .venv/bin/python bench/answerer.py --nats-url nats://127.0.0.1:4222 [--ignore wait]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

TRIGGERED = "sh.keptn.event.*.triggered"
_PREFIX_TOKENS = 3  # sh.keptn.event
_SEEN_LIMIT = 200_000


class Answerer:
    def __init__(self, nc: Any, ignore: frozenset[str], source: str) -> None:
        self._nc = nc
        self._ignore = ignore
        self._source = source
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._finished_at: dict[str, float] = {}
        # (arrival time, hand-off seconds) pairs; monotonic clock, shared by all processes
        self.handoffs: list[tuple[float, float]] = []
        self.answered = 0
        self.ignored = 0
        self.duplicates = 0

    def reset(self) -> None:
        self._finished_at.clear()
        self.handoffs.clear()
        self.answered = 0
        self.ignored = 0
        self.duplicates = 0

    async def on_triggered(self, msg: Msg) -> None:
        arrived = time.monotonic()
        task = msg.subject.split(".")[_PREFIX_TOKENS]
        if task in self._ignore:
            self.ignored += 1
            return
        try:
            event = json.loads(msg.data)
            event_id = str(event["id"])
            context = str(event.get("shkeptncontext") or "")
            data = event.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return
        if event_id in self._seen:  # at-least-once delivery: the same task again
            self.duplicates += 1
            return
        self._seen[event_id] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        previous = self._finished_at.pop(context, None)
        if previous is not None:
            self.handoffs.append((arrived, arrived - previous))
        answer_data = {
            "project": data.get("project"),
            "stage": data.get("stage"),
            "service": data.get("service"),
            "status": "succeeded",
            "result": "pass",
        }
        prefix = f"sh.keptn.event.{task}."
        for phase in ("started", "finished"):
            body = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": self._source,
                "type": prefix + phase,
                "time": _now_text(),
                "datacontenttype": "application/json",
                "shkeptncontext": context,
                "triggeredid": event_id,
                "shkeptnspecversion": "0.2.4",
                "data": answer_data,
            }
            await self._nc.publish(prefix + phase, json.dumps(body).encode())
        self._finished_at[context] = time.monotonic()
        self.answered += 1

    def report(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "handoffs": self.handoffs,
        }


def _now_text() -> str:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{stamp}.{int(now % 1 * 1000):03d}Z"


async def serve(url: str, ignore: frozenset[str], source: str) -> None:
    nc = await nats.connect(url, name="bench-answerer", max_reconnect_attempts=3)
    answerer = Answerer(nc, ignore, source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def on_ping(msg: Msg) -> None:
        await msg.respond(b"pong")

    async def on_reset(msg: Msg) -> None:
        answerer.reset()
        await msg.respond(b"ok")

    async def on_dump(msg: Msg) -> None:
        target = Path(msg.data.decode())
        await asyncio.to_thread(target.write_text, json.dumps(answerer.report()))
        await msg.respond(b"ok")

    # A pending limit far above what a run sends: a slow answerer must show up as latency,
    # not as silently dropped messages.
    await nc.subscribe(
        TRIGGERED, cb=answerer.on_triggered, pending_msgs_limit=1_000_000, pending_bytes_limit=0
    )
    await nc.subscribe("bench.answerer.ping", cb=on_ping)
    await nc.subscribe("bench.answerer.reset", cb=on_reset)
    await nc.subscribe("bench.answerer.dump", cb=on_dump)
    await nc.flush()
    await stop.wait()
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--ignore", default="", help="comma-separated task names not to answer")
    parser.add_argument("--source", default="bench-answerer")
    args = parser.parse_args()
    ignore = frozenset(name for name in args.ignore.split(",") if name)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the venv
        asyncio.run(serve(args.nats_url, ignore, args.source))
    else:
        uvloop.run(serve(args.nats_url, ignore, args.source))


if __name__ == "__main__":
    main()
