"""Micro-benchmark of PostgresStore.commit, the engine's hot path.

Each commit is what a busy engine batch writes: new events (half of them flagged for the
outbox), executions updated in place (drawn from a pool of live ones, so after the first
round they are updates, not inserts), and the ids the relay published since the previous
commit. It prints the rates, and how much of the time is Python encoding.

    .venv/bin/python bench/postgres_commit.py                 # embedded server, fsync on
    .venv/bin/python bench/postgres_commit.py --dsn postgresql://...   # an existing database
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from controlplane.adapters.postgres import store as store_module
from controlplane.adapters.postgres.embedded import EmbeddedPostgres
from controlplane.adapters.postgres.migrate import migrate
from controlplane.adapters.postgres.store import PostgresStore
from controlplane.application.envelope import Envelope, format_time
from controlplane.application.ports import UnitOfWork
from controlplane.domain.execution import (
    Answer,
    CurrentTask,
    Execution,
    Scope,
    State,
    TaskOutcome,
)
from controlplane.domain.shipyard import Sequence, Task

SEQUENCE = Sequence(
    "delivery",
    (
        Task("deployment", 0.0, {"deploymentstrategy": "blue_green_service"}),
        Task("test", 0.0, {"teststrategy": "performance"}),
        Task("evaluation"),
        Task("release"),
    ),
)


def make_execution(n: int, round_: int, now: float) -> Execution:
    context = f"ctx-{n}"
    data = {
        "project": "sockshop",
        "stage": "dev",
        "service": f"svc-{n % 50}",
        "labels": {"buildId": str(round_), "owner": "team-a"},
        "configurationChange": {"values": {"image": f"docker.io/keptn/carts:0.{round_}.{n}"}},
    }
    outcome = TaskOutcome(
        "deployment",
        f"task-{n}-0",
        "pass",
        "succeeded",
        {"deployment": {"deploymentURIsLocal": [f"http://svc-{n}.dev:80"], "gitCommit": "ab12"}},
    )
    current = CurrentTask(
        1,
        "test",
        f"task-{n}-{round_}",
        due_at=now,
        sent_at=now,
        answers=(Answer(f"answer-{n}-{round_}", False, "jmeter-service"),),
    )
    return Execution(
        id=f"exec-{n}",
        scope=Scope("sockshop", "dev", f"svc-{n % 50}", context),
        sequence=SEQUENCE,
        input=data,
        triggered_at=now - 60,
        task_started_timeout=600.0,
        state=State.STARTED,
        gitcommitid="ab12cd34",
        previous=(outcome,),
        current=current,
    )


def make_event(now: float, n: int) -> Envelope:
    return Envelope(
        id=str(uuid.uuid4()),
        source="jmeter-service",
        type="sh.keptn.event.test.finished",
        time=format_time(now),
        keptn_context=f"ctx-{n}",
        triggered_id=f"task-{n}",
        data={
            "project": "sockshop",
            "stage": "dev",
            "service": f"svc-{n % 50}",
            "status": "succeeded",
            "result": "pass",
            "message": "Tests finished successfully " + "x" * 400,
            "test": {"start": format_time(now - 30), "end": format_time(now)},
            "labels": {"buildId": "42", "owner": "team-a"},
        },
    )


def make_work(round_: int, args: argparse.Namespace, published: list[str]) -> UnitOfWork:
    now = time.time()
    base = (round_ * args.executions) % args.live
    executions = [
        make_execution((base + i) % args.live, round_, now) for i in range(args.executions)
    ]
    events = [(make_event(now, i), i % 2 == 0) for i in range(args.events)]
    return UnitOfWork(
        events=events,
        executions={item.id: item for item in executions},
        published=published,
    )


async def run(dsn: str, args: argparse.Namespace) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
        await connection.execute("TRUNCATE events, executions, pauses")
    finally:
        await connection.close()
    store = await PostgresStore.connect(dsn, min_size=1, max_size=2)
    try:
        works: list[UnitOfWork] = []
        published: list[str] = []
        for round_ in range(args.warmup + args.commits):
            work = make_work(round_, args, published)
            published = [envelope.id for envelope, publish in work.events if publish]
            works.append(work)
        for work in works[: args.warmup]:
            await store.commit(work)
        encode_started = time.perf_counter()
        for work in works[args.warmup :]:
            store_module._event_columns(work.events)
            store_module._execution_columns(work.executions.values())
        encoding = time.perf_counter() - encode_started
        durations: list[float] = []
        for work in works[args.warmup :]:
            started = time.perf_counter()
            await store.commit(work)
            durations.append(time.perf_counter() - started)
    finally:
        await store.close()
    total = sum(durations)
    rows = args.commits * (args.events + args.executions)
    print(
        f"{args.commits} commits of {args.executions} executions + {args.events} events"
        f" (+ {args.events // 2} outbox flags cleared), fsync {'on' if args.durable else 'off'}"
    )
    print(f"  rows/s:    {rows / total:,.0f}")
    print(f"  events/s:  {args.commits * args.events / total:,.0f}")
    print(f"  commits/s: {args.commits / total:,.1f}")
    print(
        f"  per commit: median {statistics.median(durations) * 1000:.1f} ms,"
        f" max {max(durations) * 1000:.1f} ms;"
        f" python encoding {encoding / args.commits * 1000:.1f} ms of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="use this database instead of an embedded server")
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--live", type=int, default=2000, help="pool of live executions")
    parser.add_argument(
        "--no-durable", dest="durable", action="store_false", help="embedded server without fsync"
    )
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(run(args.dsn, args))
        return
    folder = Path(tempfile.mkdtemp(prefix="controlplane-bench-"))
    server = EmbeddedPostgres(durable=args.durable)
    try:
        asyncio.run(run(server.start(folder / "data"), args))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
