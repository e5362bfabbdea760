"""``python -m controlplane`` with timers around the engine's stages (diagnostics only).

Used by ``bench/run.py`` for its latency breakdown; it changes no behaviour: it wraps, from
the outside, the engine's batch step and the store and publisher calls it awaits, and at exit
writes the per-call durations (and batch sizes) to the file named by ``BENCH_TRACE_OUT``:

* ``engine.batch``      ``Engine._decide``: deciding one batch (lookups and decisions; its
  commit then runs beside the next batch's decisions);
* ``store.find_events`` the read of ids the engine does not hold in memory;
* ``store.commit``      the batch's one transaction (fsync included);
* ``publisher.publish`` one outbox chunk to JetStream, acks awaited (runs beside the loop).

    BENCH_TRACE_OUT=trace.json .venv/bin/python bench/traced_controlplane.py serve ...
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from controlplane.__main__ import main
from controlplane.adapters.nats.jetstream import JetStreamPublisher
from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.engine import Engine

# name -> list of (monotonic end time, seconds, size)
_samples: dict[str, list[tuple[float, float, int]]] = {}


def _size(name: str, args: tuple[Any, ...]) -> int:
    if not args:
        return 0
    first = args[0]
    if name == "store.commit":
        return len(getattr(first, "events", ()))
    try:
        return len(first)
    except TypeError:
        return 0


def _wrap(owner: type, attribute: str, name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, attribute)
    bucket = _samples.setdefault(name, [])

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            ended = time.perf_counter()
            bucket.append((time.monotonic(), ended - started, _size(name, args)))

    setattr(owner, attribute, timed)


def _dump() -> None:
    target = os.environ.get("BENCH_TRACE_OUT")
    if target:
        Path(target).write_text(json.dumps(_samples))


_wrap(Engine, "_decide", "engine.batch")
_wrap(PostgresStore, "find_events", "store.find_events")
_wrap(PostgresStore, "commit", "store.commit")
_wrap(JetStreamPublisher, "publish", "publisher.publish")
atexit.register(_dump)
# Stopped by SIGTERM anyway (uvicorn re-raises it after shutting down): exit through Python,
# so the samples are written.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

if __name__ == "__main__":
    sys.exit(main())
