"""End-to-end benchmark of the control plane: throughput, hand-off latency, memory.

    .venv/bin/python bench/run.py [--runs 3] [--quick] [--profile-seconds 20] [--micro]

It starts its own embedded NATS (JetStream) and PostgreSQL (fsync on, as shipped) in a
temporary folder, writes a shipyard for project ``bench`` (stage ``dev``; sequence ``one``
with the task ``alpha``, ``three`` with ``alpha``, ``beta``, ``gamma``, and ``idle`` with the
task ``wait`` that nobody answers), and starts ``bench/answerer.py`` (a trivial task service
that answers every task but ``wait`` with ``.started`` and ``.finished`` at once). Each
measurement gets a fresh control plane process (``python -m controlplane serve``), a fresh
database and a fresh JetStream stream; the load comes from ``bench/load.py`` in its own
process. Per run:

1. single-task sequences/s: a probe (as fast as possible, at most ``max_open`` unfinished)
   estimates capacity C; then triggers are offered open-loop at 1.1 x C, with the backlog of
   unfinished sequences capped, and sequence ``.finished`` events seen on NATS are counted
   over a steady window after a warm-up;
2. the same for three-task sequences;
3. at 100 three-task sequences/s offered: hand-off latency (the answerer's publish of a
   task's ``.finished`` -> its receipt of the next task's ``.triggered``) and
   trigger-to-first-task latency (POST written -> first task ``.triggered`` received);
4. peak RSS (VmHWM) of a fresh control plane after 10,000 sequences were triggered and all
   10,000 first tasks were sent (and left unanswered, so all stay open).

Medians over the runs (and min-max) go to a table on stdout and, with every run's details and
the machine, to ``bench/results/<timestamp>.json``. ``--profile-seconds`` (default 20; 0 turns
it off) samples the control plane with py-spy under the sustained single-task load.
Every server and child process is stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import nats

from controlplane.adapters.nats.embedded import EmbeddedNats
from controlplane.adapters.postgres.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
STREAM = "keptn"
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
        - name: three
          tasks:
            - name: alpha
            - name: beta
            - name: gamma
        - name: idle
          tasks:
            - name: wait
"""
IGNORED_TASK = "wait"
TARGETS = {
    "single_task_per_s": (">=", 500.0),
    "handoff_p50_ms": ("<=", 5.0),
    "handoff_p99_ms": ("<=", 50.0),
    "rss_peak_mb": ("<=", 300.0),
}


@dataclass(frozen=True)
class Config:
    runs: int
    probe_seconds: float
    warmup_seconds: float
    window_seconds: float
    latency_rate: float
    latency_warmup: float
    latency_window: float
    rss_sequences: int
    concurrency: int
    probe_max_open: int
    profile_seconds: float
    log_level: str
    breakdown: bool


def make_config(args: argparse.Namespace) -> Config:
    if args.quick:
        return Config(
            runs=args.runs or 1,
            probe_seconds=4,
            warmup_seconds=2,
            window_seconds=6,
            latency_rate=100,
            latency_warmup=2,
            latency_window=6,
            rss_sequences=2_000,
            concurrency=args.concurrency,
            probe_max_open=1000,
            profile_seconds=args.profile_seconds if args.profile_seconds is not None else 0,
            log_level=args.cp_log_level,
            breakdown=args.breakdown,
        )
    return Config(
        runs=args.runs or 3,
        probe_seconds=8,
        warmup_seconds=5,
        window_seconds=20,
        latency_rate=100,
        latency_warmup=3,
        latency_window=15,
        rss_sequences=10_000,
        concurrency=args.concurrency,
        probe_max_open=1000,
        profile_seconds=args.profile_seconds if args.profile_seconds is not None else 20,
        log_level=args.cp_log_level,
        breakdown=not args.no_breakdown,
    )


# ---------------------------------------------------------------------- statistics


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


def per_second(times: Sequence[float], end: float) -> list[int]:
    """How many of ``times`` fall in each whole second from 0 to ``end``."""
    counts = [0] * int(end + 1)
    for t in times:
        if 0 <= t < len(counts):
            counts[int(t)] += 1
    return counts


def in_window(times: Sequence[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t < end)


# ---------------------------------------------------------------------- processes and CPU


class Children:
    """Every child process we start, stopped (TERM, then KILL) in reverse order."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._signals: dict[int, int] = {}

    def start(
        self,
        name: str,
        command: list[str],
        log: Path,
        stop_signal: int = signal.SIGTERM,
        **kw: Any,
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=kw.pop("stdout", output),
                stderr=output,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children
                **kw,
            )
        self._procs.append((name, proc))
        self._signals[proc.pid] = stop_signal
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._signals.get(proc.pid, signal.SIGTERM))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]
        return proc.returncode

    def signal_all(self) -> None:
        """Send each running child its stop signal, without waiting (safe in a handler)."""
        for _name, proc in list(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self._signals.get(proc.pid, signal.SIGTERM))

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self._procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=10)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == parent:
            found.append(int(entry.name))
    return found


def postgres_pids(data_dir: Path | None) -> list[int]:
    """The embedded PostgreSQL server's processes (postmaster first), for CPU accounting."""
    if data_dir is None:
        return []
    try:
        master = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return []
    return [master, *children_of(master)]


def machine_ticks() -> dict[str, int]:
    """The first line of /proc/stat: ticks spent by all cores in each state."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return dict(zip(names, values, strict=True))


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


class CpuMeter:
    """CPU use between ``start()`` and ``stop()``, in % of one core.

    Per named process group, plus ``other_processes`` (every other process alive at both
    samples: other work on the machine, py-spy, this script), ``kernel_irq`` (interrupt and
    softirq time, much of it loopback networking) and ``machine_busy``: all cores together,
    so on 2 cores it goes up to 200. A process that started and ended inside the window is
    only in ``machine_busy``.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._wall = 0.0
        self._machine: dict[str, int] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        sample = {
            name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in self._groups.items()
        }
        known = {pid for pids in sample.values() for pid in pids}
        sample["other_processes"] = {
            pid: cpu_seconds(pid) for pid in all_pids() if pid not in known and pid != os.getpid()
        }
        sample["other_processes"][-1] = cpu_seconds(os.getpid())  # this script
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._wall = time.monotonic()
        self._machine = machine_ticks()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        wall = time.monotonic() - self._wall
        ticks = machine_ticks()
        delta = {key: ticks[key] - self._machine.get(key, 0) for key in ticks}
        result: dict[str, float] = {}
        for name, now in after.items():
            before = self._before.get(name, {})
            used = sum(now[pid] - before[pid] for pid in now if pid in before)
            result[name] = round(100.0 * used / wall, 1)
        per_core_second = _TICK * wall / 100.0
        busy = sum(delta.values()) - delta["idle"] - delta["iowait"]
        result["kernel_irq"] = round((delta["irq"] + delta["softirq"]) / per_core_second, 1)
        result["steal"] = round(delta["steal"] / per_core_second, 1)
        result["machine_busy"] = round(busy / per_core_second, 1)
        ours = sum(result[name] for name in self._groups)
        # Everything not ours: other processes, also those that came and went in the window.
        result["foreign"] = round(result["machine_busy"] - ours - result["kernel_irq"], 1)
        return result


def read_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in KiB from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---------------------------------------------------------------------- the bench


async def await_health(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until a started control plane answers /health, or fail naming its log."""
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + 60

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the control plane exited with {proc.returncode}; see {log}")
        if await asyncio.to_thread(probe):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the control plane did not become healthy; see {log}")


class Bench:
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
        self.answerer: subprocess.Popen[bytes] | None = None
        self.nc: Any = None
        self._databases = 0
        self._prefixes = 0
        self.shutdowns: list[dict[str, Any]] = []
        self.quiet_checks: list[dict[str, Any]] = []
        self.database = ""
        self.pg_stats = config.breakdown

    # -------------------------------------------------------------- set-up

    async def setup(self) -> None:
        self.sequences.mkdir()
        self.logs.mkdir()
        (self.sequences / "bench.yaml").write_text(SHIPYARD)
        self.nc = await nats.connect(self.nats_url, name="bench-run")
        self.answerer = self.children.start(
            "answerer",
            [
                PYTHON,
                str(BENCH / "answerer.py"),
                "--nats-url",
                self.nats_url,
                "--ignore",
                IGNORED_TASK,
            ],
            self.logs / "answerer.log",
        )
        for _ in range(200):
            with contextlib.suppress(Exception):
                await self.nc.request("bench.answerer.ping", b"", timeout=0.2)
                return
            if self.answerer.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the answerer did not start; see {self.logs / 'answerer.log'}")

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    def postgres_pids(self) -> list[int]:
        return postgres_pids(self.postgres.data_dir)

    # -------------------------------------------------------------- control plane

    @contextlib.asynccontextmanager
    async def control_plane(self, label: str, trace: Path | None = None) -> Any:
        """A fresh database, a fresh stream and a fresh ``controlplane serve`` process.

        With ``trace``, the process is ``bench/traced_controlplane.py`` (the same server with
        timers around the engine's stages), which writes its samples there when it exits.
        """
        await self.wait_for_quiet(label)
        self._databases += 1
        database = f"bench_{self._databases}"
        self.database = database
        admin = await asyncpg.connect(self.postgres.dsn_for("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {database}")
        finally:
            await admin.close()
        if trace is not None and self.pg_stats:
            connection = await asyncpg.connect(self.postgres.dsn_for(database))
            try:
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await connection.execute(
                    f"ALTER DATABASE {database} SET pg_stat_statements.track = 'top'"
                )
            finally:
                await connection.close()
        js = self.nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(STREAM)
        port = free_port()
        log = self.logs / f"controlplane-{self._databases}-{label}.log"
        entry = [str(BENCH / "traced_controlplane.py")] if trace else ["-m", "controlplane"]
        env = {**os.environ, "BENCH_TRACE_OUT": str(trace)} if trace else None
        proc = self.children.start(
            "controlplane",
            [
                PYTHON,
                *entry,
                "serve",
                "--nats-url",
                self.nats_url,
                "--database-url",
                self.postgres.dsn_for(database),
                "--port",
                str(port),
                "--sequences",
                str(self.sequences),
                "--task-started-timeout",
                "10m",
                "--log-level",
                self.config.log_level,
            ],
            log,
            # SIGINT, as Ctrl-C: on SIGTERM uvicorn re-raises the signal once it stopped
            # serving, which kills the process before bootstrap.serve's clean-up runs.
            stop_signal=signal.SIGINT,
            env=env,
        )
        try:
            await await_health(proc, port, log)
            yield proc, f"http://127.0.0.1:{port}", log
        finally:
            before = log.stat().st_size if log.exists() else 0
            code = await asyncio.to_thread(self.children.stop, proc)
            problems = log_problems(log, offset=before)
            self.shutdowns.append({"label": label, "exit_code": code, "log_problems": problems})
            if code not in (0, 130) or problems:
                print(
                    f"  note: control plane exited with {code}, {problems} error/traceback"
                    f" line(s) while stopping; log: {log}",
                    file=sys.stderr,
                )
            admin = await asyncpg.connect(self.postgres.dsn_for("postgres"))
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            finally:
                await admin.close()

    async def wait_for_quiet(self, label: str, limit: float = 90.0) -> None:
        """Wait (up to ``limit`` s) until other work on the machine uses < 25% of a core.

        The machine may be shared (other test suites): a measurement that starts while a
        foreign process is busy measures that process too. Each check is recorded.
        """
        began = time.monotonic()
        foreign = 0.0
        while True:
            meter = CpuMeter({"bench": self.bench_pids})
            meter.start()
            await asyncio.sleep(1.0)
            foreign = meter.stop()["foreign"]
            waited = time.monotonic() - began
            if foreign < 25.0 or waited >= limit:
                break
            await asyncio.sleep(2.0)
        self.quiet_checks.append(
            {"label": label, "foreign_pct": foreign, "waited_s": round(waited - 1.0, 1)}
        )
        if waited > 2.0:
            print(f"  (waited {waited - 1:.0f} s for a quiet machine; foreign CPU {foreign}%)")

    def bench_pids(self) -> list[int]:
        pids = [self.answerer.pid] if self.answerer is not None else []
        pids += [p.pid for _n, p in self.children._procs]
        if self.nats_server.pid:
            pids.append(self.nats_server.pid)
        return pids + self.postgres_pids()

    async def reset_pg_stats(self) -> None:
        if not self.pg_stats:
            return
        connection = await asyncpg.connect(self.postgres.dsn_for(self.database))
        try:
            await connection.execute("SELECT pg_stat_statements_reset()")
        finally:
            await connection.close()

    async def read_pg_stats(self, limit: int = 10) -> list[dict[str, Any]]:
        """The statements that took the most server time since the last reset."""
        if not self.pg_stats:
            return []
        connection = await asyncpg.connect(self.postgres.dsn_for(self.database))
        try:
            rows = await connection.fetch(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls,"
                " round(total_exec_time::numeric, 1) AS total_ms,"
                " round(mean_exec_time::numeric, 3) AS mean_ms, rows,"
                " wal_bytes::bigint AS wal_bytes"
                " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())"
                " ORDER BY total_exec_time DESC LIMIT $1",
                limit,
            )
        finally:
            await connection.close()
        return [
            {key: (float(value) if key.endswith("_ms") else value) for key, value in row.items()}
            for row in rows
        ]

    # -------------------------------------------------------------- load

    def _prefix(self, label: str) -> str:
        self._prefixes += 1
        return f"svc-{self._prefixes}-{label}-"

    async def load(
        self,
        label: str,
        url: str,
        *,
        sequence: str,
        rate: float,
        duration: float,
        max_open: int = 0,
        latency: bool = False,
        count: int = 1_000_000,
        wait_triggered: int = 0,
        drain: float = 0.0,
        meter: CpuMeter | None = None,
        window: tuple[float, float] | None = None,
        during: Callable[[], Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float] | None]:
        """Run ``bench/load.py`` once; measure CPU over ``window`` (seconds after t0)."""
        out = self.tmp / f"load-{self._prefixes + 1}-{label}.json"
        command = [
            PYTHON, str(BENCH / "load.py"), "--url", url, "--nats-url", self.nats_url,
            "--sequence", sequence, "--prefix", self._prefix(label),
            "--rate", str(rate), "--duration", str(duration), "--count", str(count),
            "--concurrency", str(self.config.concurrency), "--max-open", str(max_open),
            "--drain", str(drain), "--out", str(out),
        ]  # fmt: skip
        if latency:
            command.append("--latency")
        if wait_triggered:
            command += ["--count-task", IGNORED_TASK, "--wait-triggered", str(wait_triggered)]
        proc = self.children.start("load", command, self.logs / "load.log", stdout=subprocess.PIPE)
        cpu: dict[str, float] | None = None
        try:
            assert proc.stdout is not None
            line = (await asyncio.to_thread(proc.stdout.readline)).decode()
            if not line.startswith("started "):
                raise RuntimeError(f"load.py failed to start; see {self.logs / 'load.log'}")
            t0 = float(line.split()[1])
            if meter is not None and window is not None:
                await asyncio.sleep(max(0.0, t0 + window[0] - time.monotonic()))
                meter.start()
                if during is not None:
                    await during()
                await asyncio.sleep(max(0.0, t0 + window[1] - time.monotonic()))
                cpu = meter.stop()
            limit = duration + drain + 120
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=limit)
            if code != 0:
                raise RuntimeError(f"load.py exited with {code}; see {self.logs / 'load.log'}")
        finally:
            self.children.stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        result: dict[str, Any] = json.loads(out.read_text())
        out.unlink()
        return result, cpu

    def meter(self, cp: subprocess.Popen[bytes]) -> CpuMeter:
        answerer = self.answerer
        assert answerer is not None
        return CpuMeter(
            {
                "controlplane": lambda: [cp.pid],
                "postgres": self.postgres_pids,
                "nats_server": lambda: [self.nats_server.pid] if self.nats_server.pid else [],
                "answerer": lambda: [answerer.pid],
                "load": lambda: [p.pid for n, p in self.children._procs if n == "load"],
            }
        )

    # -------------------------------------------------------------- measurements

    async def throughput(
        self, sequence: str, *, offered: float | None = None, trace: Path | None = None
    ) -> dict[str, Any]:
        """Sequences/s; with ``offered``, no probe: that rate is offered."""
        c = self.config
        label = f"{sequence}-throughput" + ("-traced" if trace else "")
        async with self.control_plane(label, trace) as (cp, url, log):
            if offered is None:
                probe, _ = await self.load(
                    f"{label}-probe", url, sequence=sequence, rate=0,
                    duration=c.probe_seconds, max_open=c.probe_max_open,
                )  # fmt: skip
                half = c.probe_seconds / 2
                capacity = in_window(probe["finished"], half, c.probe_seconds) / half
                offered = max(20.0, round(1.1 * capacity))
                await asyncio.sleep(1.0)  # let the probe's backlog finish before the next t0
            else:
                capacity = offered / 1.1
            max_open = max(200, int(2 * capacity))
            start, end = c.warmup_seconds, c.warmup_seconds + c.window_seconds
            if trace:
                await self.reset_pg_stats()
            result, cpu = await self.load(
                label, url, sequence=sequence, rate=offered, duration=end + 0.5,
                max_open=max_open, meter=self.meter(cp), window=(start, end),
            )  # fmt: skip
            statements = await self.read_pg_stats() if trace else None
            errors = log_problems(log)
        window = end - start
        post = [
            a - s
            for s, a in zip(result["sent"], result["answered"], strict=True)
            if start <= s < end
        ]
        breakdown = summarize_trace(trace, result["t0_monotonic"], start, end) if trace else None
        if breakdown is not None:
            breakdown["postgres_statements_whole_run"] = statements
        return {
            "sequence": sequence,
            "probe_completed_per_s": round(capacity, 1),
            "offered_per_s": offered,
            "sent_per_s": round(in_window(result["sent"], start, end) / window, 1),
            "accepted_per_s": round(in_window(result["answered"], start, end) / window, 1),
            "completed_per_s": round(in_window(result["finished"], start, end) / window, 1),
            "post_latency_p50_ms": ms(percentile(post, 50)),
            "post_latency_p99_ms": ms(percentile(post, 99)),
            "statuses": result["statuses"],
            "http_errors": result["errors"],
            "max_open": max_open,
            "backlog_cap_hit": result["open_cap_waits"] > 0,
            "unfinished_at_end": len(result["sent"]) - len(result["finished"]),
            "window_s": [start, end],
            "completed_each_second": per_second(result["finished"], end),
            "sent_each_second": per_second(result["sent"], end),
            "cpu_pct_of_one_core": cpu,
            "controlplane_log_problems": errors,
            "breakdown": breakdown,
        }

    async def latency(self, trace: Path | None = None) -> dict[str, Any]:
        c = self.config
        start, end = c.latency_warmup, c.latency_warmup + c.latency_window
        label = "latency-traced" if trace else "latency"
        async with self.control_plane(label, trace) as (cp, url, log):
            await self.nc.request("bench.answerer.reset", b"", timeout=5)
            if trace:
                await self.reset_pg_stats()
            result, cpu = await self.load(
                "latency", url, sequence="three", rate=c.latency_rate, duration=end,
                latency=True, drain=10, meter=self.meter(cp), window=(start, end),
            )  # fmt: skip
            statements = await self.read_pg_stats() if trace else None
            dump = self.tmp / "answerer-dump.json"
            await self.nc.request("bench.answerer.dump", str(dump).encode(), timeout=10)
            answerer = json.loads(dump.read_text())
            dump.unlink()
            errors = log_problems(log)
        t0 = result["t0_monotonic"]
        handoffs = [d for at, d in answerer["handoffs"] if start <= at - t0 < end]
        observed = [d for at, d in result["observed_handoffs"] if start <= at < end]
        first = [
            d
            for s, d in zip(
                result["trigger_to_first_task_sent_at"],
                result["trigger_to_first_task"],
                strict=True,
            )
            if start <= s < end
        ]
        window = end - start
        breakdown = summarize_trace(trace, t0, start, end) if trace else None
        if breakdown is not None:
            breakdown["postgres_statements_whole_run"] = statements
        return {
            "breakdown": breakdown,
            "offered_per_s": c.latency_rate,
            "sent_per_s": round(in_window(result["sent"], start, end) / window, 1),
            "completed_per_s": round(in_window(result["finished"], start, end) / window, 1),
            "handoff_samples": len(handoffs),
            "handoff_p50_ms": ms(percentile(handoffs, 50)),
            "handoff_p90_ms": ms(percentile(handoffs, 90)),
            "handoff_p99_ms": ms(percentile(handoffs, 99)),
            "handoff_max_ms": ms(max(handoffs) if handoffs else None),
            "observer_handoff_samples": len(observed),
            "observer_handoff_p50_ms": ms(percentile(observed, 50)),
            "observer_handoff_p99_ms": ms(percentile(observed, 99)),
            "trigger_to_first_task_samples": len(first),
            "trigger_to_first_task_p50_ms": ms(percentile(first, 50)),
            "trigger_to_first_task_p99_ms": ms(percentile(first, 99)),
            "contexts_without_first_task": result["contexts_without_first_task"],
            "schedule_lag_max_ms": ms(result["schedule_lag_max"]),
            "answerer_duplicates": answerer["duplicates"],
            "statuses": result["statuses"],
            "http_errors": result["errors"],
            "window_s": [start, end],
            "cpu_pct_of_one_core": cpu,
            "controlplane_log_problems": errors,
        }

    async def memory(self) -> dict[str, Any]:
        n = self.config.rss_sequences
        async with self.control_plane("rss") as (cp, url, log):
            idle = read_status(cp.pid)
            started = time.monotonic()
            result, _ = await self.load(
                "rss", url, sequence="idle", rate=0, duration=600, count=n,
                wait_triggered=n, drain=300,
            )  # fmt: skip
            elapsed = time.monotonic() - started
            loaded = read_status(cp.pid)
            await asyncio.sleep(2.0)
            settled = read_status(cp.pid)
            errors = log_problems(log)
        return {
            "sequences": n,
            "accepted": result["statuses"].get("200", 0),
            "first_tasks_seen": result["task_count"],
            "all_open": result["task_count"] >= n,
            "seconds_to_open_all": round(elapsed, 1),
            "rss_idle_mb": round(idle["VmRSS"] / 1024, 1),
            "rss_peak_mb": round(settled["VmHWM"] / 1024, 1),
            "rss_after_mb": round(settled["VmRSS"] / 1024, 1),
            "rss_when_all_seen_mb": round(loaded["VmRSS"] / 1024, 1),
            "http_errors": result["errors"],
            "controlplane_log_problems": errors,
        }

    async def profile(self, rate: float, seconds: float, out_prefix: Path) -> dict[str, Any]:
        spy = find_py_spy()
        if spy is None:
            return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
        c = self.config
        raw = out_prefix.with_suffix(".profile.txt")
        svg = out_prefix.with_suffix(".profile.svg")
        svg_seconds = max(5.0, seconds / 2)
        warm = c.warmup_seconds
        async with self.control_plane("profile") as (cp, url, _log):
            capacity_rate = rate

            async def record() -> None:
                for fmt, path, secs in (("raw", raw, seconds), ("flamegraph", svg, svg_seconds)):
                    command = [
                        spy, "record", "--pid", str(cp.pid), "--duration", str(int(secs)),
                        "--rate", "100", "--format", fmt, "--output", str(path), "--nonblocking",
                    ]  # fmt: skip
                    done = await asyncio.to_thread(
                        subprocess.run, command, capture_output=True, check=False, timeout=secs + 60
                    )
                    if done.returncode != 0:
                        raise RuntimeError(f"py-spy failed: {done.stderr.decode()[-500:]}")

            result, cpu = await self.load(
                "profile", url, sequence="one", rate=capacity_rate,
                duration=warm + seconds + svg_seconds + 8, max_open=max(200, int(2 * rate)),
                meter=self.meter(cp), window=(warm, warm + seconds + svg_seconds + 4),
                during=record,
            )  # fmt: skip
        summary = summarize_profile(raw)
        end = warm + seconds + svg_seconds + 4
        summary.update(
            {
                "offered_per_s": rate,
                "completed_per_s": round(
                    in_window(result["finished"], warm, end) / (end - warm), 1
                ),
                "cpu_pct_of_one_core": cpu,
                "raw": str(raw.relative_to(ROOT)),
                "svg": str(svg.relative_to(ROOT)),
            }
        )
        return summary


def find_py_spy() -> str | None:
    beside = Path(PYTHON).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize_trace(path: Path, t0: float, start: float, end: float) -> dict[str, Any]:
    """Per stage: calls/s, duration p50/p99/mean, mean size, share of the window spent in it."""
    samples: dict[str, list[list[float]]] = json.loads(path.read_text())
    window = end - start
    out: dict[str, Any] = {}
    for name, rows in samples.items():
        inside = [row for row in rows if start <= row[0] - t0 < end]
        durations = [row[1] for row in inside]
        sizes = [row[2] for row in inside]
        out[name] = {
            "calls_per_s": round(len(inside) / window, 1),
            "p50_ms": ms(percentile(durations, 50)),
            "p99_ms": ms(percentile(durations, 99)),
            "mean_ms": ms(statistics.fmean(durations)) if durations else None,
            "mean_size": round(statistics.fmean(sizes), 1) if sizes else None,
            "busy_pct_of_window": round(100.0 * sum(durations) / window, 1),
        }
    return out


def log_problems(log: Path, offset: int = 0) -> int:
    """Lines at ERROR/CRITICAL level or tracebacks in a control plane log (from ``offset``)."""
    count = 0
    with contextlib.suppress(OSError), log.open("rb") as raw:
        raw.seek(offset)
        for line in raw.read().decode(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line:
                count += 1
    return count


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Top functions by self time (leaf frame) and by inclusive time from py-spy's raw output."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    packages: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        leaf = frames[-1]
        self_time[leaf] = self_time.get(leaf, 0) + count
        package = _package(stack.split(";")[-1])
        packages[package] = packages.get(package, 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count

    def top(table: dict[str, int], n: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:n]
        return [(name, round(100.0 * value / max(total, 1), 1)) for name, value in ranked]

    return {
        "samples": total,
        "top_self": top(self_time, 25),
        "top_inclusive": top(inclusive, 40),
        "self_by_package": top(packages, 15),
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``, with the package path shortened."""
    frame = frame.strip()
    if " (" not in frame:
        return frame
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _package(frame: str) -> str:
    """Which package a frame's code belongs to (py-spy prints module-relative paths)."""
    if " (" not in frame:
        return "other"
    path = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    parts = path.split("/")
    top = parts[0].removesuffix(".py")
    if top == "controlplane":
        depth = 3 if len(parts) > 3 and parts[1] == "adapters" else 2
        return "/".join(parts[:depth]).removesuffix(".py")
    if top.startswith("<frozen") or top in sys.stdlib_module_names:
        return f"stdlib {top.lstrip('_')}"
    if top == "<string>":
        return "generated code (dataclass __init__ etc.)"
    return top


# ---------------------------------------------------------------------- machine and summary


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"
    )
    mem = next(
        line
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    nats_version = subprocess.run(
        [str(Path(PYTHON).parent / "nats-server"), "--version"], capture_output=True, text=True,
        check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_gib": round(int(mem.split()[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats_server": nats_version,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    picks = {
        "single_task_per_s": ("single", "completed_per_s"),
        "single_task_offered_per_s": ("single", "offered_per_s"),
        "single_task_post_p50_ms": ("single", "post_latency_p50_ms"),
        "three_task_per_s": ("three", "completed_per_s"),
        "three_task_offered_per_s": ("three", "offered_per_s"),
        "handoff_p50_ms": ("latency", "handoff_p50_ms"),
        "handoff_p99_ms": ("latency", "handoff_p99_ms"),
        "observer_handoff_p50_ms": ("latency", "observer_handoff_p50_ms"),
        "observer_handoff_p99_ms": ("latency", "observer_handoff_p99_ms"),
        "trigger_to_first_task_p50_ms": ("latency", "trigger_to_first_task_p50_ms"),
        "trigger_to_first_task_p99_ms": ("latency", "trigger_to_first_task_p99_ms"),
        "latency_run_completed_per_s": ("latency", "completed_per_s"),
        "rss_idle_mb": ("memory", "rss_idle_mb"),
        "rss_peak_mb": ("memory", "rss_peak_mb"),
    }
    out: dict[str, dict[str, float | None]] = {}
    for key, (phase, field) in picks.items():
        values = [run[phase][field] for run in runs if run.get(phase, {}).get(field) is not None]
        out[key] = {
            "median": statistics.median(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }
    return out


def print_table(summary: dict[str, dict[str, float | None]], runs: int) -> None:
    rows = [
        ("single-task sequences/s (completed)", "single_task_per_s", ""),
        ("  offered (1.1 x probe)", "single_task_offered_per_s", ""),
        ("  POST latency p50 under that load, ms", "single_task_post_p50_ms", ""),
        ("three-task sequences/s (completed)", "three_task_per_s", ""),
        ("  offered (1.1 x probe)", "three_task_offered_per_s", ""),
        ("hand-off p50 @100 seq/s, ms (answerer)", "handoff_p50_ms", ""),
        ("hand-off p99 @100 seq/s, ms (answerer)", "handoff_p99_ms", ""),
        ("  hand-off p50, ms (bus observer)", "observer_handoff_p50_ms", ""),
        ("  hand-off p99, ms (bus observer)", "observer_handoff_p99_ms", ""),
        ("trigger->first task p50 @100/s, ms", "trigger_to_first_task_p50_ms", ""),
        ("trigger->first task p99 @100/s, ms", "trigger_to_first_task_p99_ms", ""),
        ("RSS idle, MB", "rss_idle_mb", ""),
        ("RSS peak with open sequences, MB", "rss_peak_mb", ""),
    ]
    print(f"\nmedians of {runs} run(s); spread is min-max")
    print(f"{'figure':<42} {'median':>9} {'spread':>19} {'target':>9}  verdict")
    for title, key, _ in rows:
        value = summary[key]
        median, low, high = value["median"], value["min"], value["max"]
        target = TARGETS.get(key)
        verdict = ""
        target_text = ""
        if target is not None and median is not None:
            op, bound = target
            target_text = f"{op}{bound:g}"
            ok = median >= bound if op == ">=" else median <= bound
            verdict = "met" if ok else "MISSED"
        spread = f"{low:g}-{high:g}" if low is not None and high is not None else "-"
        shown = f"{median:g}" if median is not None else "-"
        print(f"{title:<42} {shown:>9} {spread:>19} {target_text:>9}  {verdict}")


# ---------------------------------------------------------------------- main


async def orchestrate(
    config: Config,
    tmp: Path,
    children: Children,
    nats_server: EmbeddedNats,
    postgres: EmbeddedPostgres,
    args: argparse.Namespace,
    stamp: str,
) -> dict[str, Any]:
    bench = Bench(config, tmp, children, nats_server, postgres)
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"config": config.__dict__, "machine": machine_info()}
    try:
        await bench.setup()
        admin = await asyncpg.connect(postgres.dsn_for("postgres"))
        try:
            report["machine"]["postgres"] = await admin.fetchval("SHOW server_version")
            report["machine"]["postgres_fsync"] = await admin.fetchval("SHOW fsync")
            report["machine"]["postgres_synchronous_commit"] = await admin.fetchval(
                "SHOW synchronous_commit"
            )
        finally:
            await admin.close()
        for index in range(config.runs):
            run: dict[str, Any] = {}
            print(f"run {index + 1}/{config.runs}", flush=True)
            run["single"] = await bench.throughput("one")
            print(f"  single-task: {_brief(run['single'])}", flush=True)
            run["three"] = await bench.throughput("three")
            print(f"  three-task:  {_brief(run['three'])}", flush=True)
            run["latency"] = await bench.latency()
            lat = run["latency"]
            print(
                f"  latency @{lat['offered_per_s']}/s: hand-off p50 {lat['handoff_p50_ms']} ms"
                f" p99 {lat['handoff_p99_ms']} ms; trigger->first task"
                f" p50 {lat['trigger_to_first_task_p50_ms']} ms"
                f" p99 {lat['trigger_to_first_task_p99_ms']} ms",
                flush=True,
            )
            run["memory"] = await bench.memory()
            mem = run["memory"]
            print(
                f"  memory: {mem['first_tasks_seen']}/{mem['sequences']} open,"
                f" VmHWM {mem['rss_peak_mb']} MB (idle {mem['rss_idle_mb']} MB)",
                flush=True,
            )
            runs.append(run)
        report["runs"] = runs
        report["summary"] = summarize(runs)
        if config.profile_seconds > 0:
            rate = report["summary"]["single_task_offered_per_s"]["median"] or 500.0
            print(f"profiling the control plane with py-spy at {rate:g} offered/s", flush=True)
            report["profile"] = await bench.profile(
                float(rate), config.profile_seconds, results_dir / stamp
            )
        if config.breakdown:
            print("latency breakdown with timers around the engine's stages", flush=True)
            rate = report["summary"]["single_task_offered_per_s"]["median"] or 500.0
            traced_latency = await bench.latency(trace=tmp / "trace-latency.json")
            traced_single = await bench.throughput(
                "one", offered=float(rate), trace=tmp / "trace-single.json"
            )
            report["breakdown"] = {"latency": traced_latency, "single": traced_single}
            for name, phase in report["breakdown"].items():
                print(f"  {name}:")
                for stage, numbers in (phase["breakdown"] or {}).items():
                    if stage.startswith("postgres"):
                        for row in numbers or []:
                            total, calls = row["total_ms"], row["calls"]
                            print(f"    pg {total:>9} ms {calls:>6}x  {row['query'][:90]}")
                    else:
                        print(f"    {stage:<18} {numbers}")
        report["controlplane_shutdowns"] = bench.shutdowns
        report["quiet_checks"] = bench.quiet_checks
        if args.micro:
            report["micro"] = await asyncio.to_thread(run_micro)
        return report
    finally:
        await bench.close()


def _brief(phase: dict[str, Any]) -> str:
    cpu = phase["cpu_pct_of_one_core"] or {}
    return (
        f"offered {phase['offered_per_s']}/s, completed {phase['completed_per_s']}/s"
        f" (probe {phase['probe_completed_per_s']}/s; POST p50 {phase['post_latency_p50_ms']} ms;"
        f" CPU %: control plane {cpu.get('controlplane')}, postgres {cpu.get('postgres')},"
        f" other processes {cpu.get('other_processes')}, machine {cpu.get('machine_busy')}/200)"
    )


def run_micro() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, command in (
        ("postgres_commit", [PYTHON, str(BENCH / "postgres_commit.py")]),
        ("nats_publish", [PYTHON, "-m", "bench.nats_publish", "--events", "20000"]),
    ):
        print(f"micro-benchmark {name}", flush=True)
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        out[name] = done.stdout + (
            f"\n[exit {done.returncode}] {done.stderr[-2000:]}" if done.returncode else ""
        )
        print(out[name], flush=True)
    return out


@contextlib.contextmanager
def stop_on_signals(children: Children) -> Iterator[None]:
    """SIGINT and SIGTERM: signal every child at once, then unwind as on Ctrl-C.

    Signalling first matters: worker threads wait on the children (``proc.wait()``), and
    asyncio.run waits for those threads before the clean-up below it can run. SIGINT is set
    explicitly because a shell starts background jobs with it ignored.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # once: let the clean-up finish
            signal.signal(sig, signal.SIG_IGN)
        children.signal_all()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians of (3)")
    parser.add_argument("--quick", action="store_true", help="short windows, 1 run: a smoke test")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP connections of load.py")
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=None,
        help="py-spy sampling time after the runs (20; 0 = off; --quick: 0)",
    )
    parser.add_argument(
        "--micro",
        action="store_true",
        help="also run bench/postgres_commit.py and bench/nats_publish.py",
    )
    parser.add_argument("--cp-log-level", default="info", help="the control plane's --log-level")
    parser.add_argument("--breakdown", action="store_true", help="with --quick: trace stages")
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip the traced runs timing the engine"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    config = make_config(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    children = Children()
    with stop_on_signals(children), contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="controlplane-bench-"))
        if args.keep:
            print(f"temporary folder (kept): {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        nats_server = EmbeddedNats(tmp / "nats")
        stack.callback(nats_server.stop)
        nats_server.start()
        # Durable (fsync on), as `controlplane up` runs it. pg_stat_statements is loaded for
        # the breakdown but tracks nothing except in the traced runs' databases.
        preload = (
            {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "none"}
            if config.breakdown
            else {}
        )
        postgres = EmbeddedPostgres(settings=preload)
        stack.callback(postgres.stop)
        postgres.start(tmp / "postgres")
        stack.callback(children.stop_all)
        try:
            report = asyncio.run(
                orchestrate(config, tmp, children, nats_server, postgres, args, stamp)
            )
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
    out = BENCH / "results" / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print_table(report["summary"], config.runs)
    profile = report.get("profile")
    if profile and "top_self" in profile:
        print(f"\npy-spy, {profile['samples']} samples at {profile['offered_per_s']:g} offered/s:")
        for name, share in profile["top_self"][:12]:
            print(f"  {share:5.1f}%  {name}")
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
