"""End-to-end harness: the control plane as a real process, a scripted task service on NATS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

FINAL_STATES = {"finished", "aborted", "timedOut"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class ControlPlane:
    """``python -m controlplane serve`` against the test's NATS and PostgreSQL."""

    def __init__(
        self,
        *,
        nats_url: str,
        database_url: str,
        sequences: Path,
        workdir: Path,
        stream: str = "keptn",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"controlplane-{self.port}.log"
        self._command = [
            sys.executable,
            "-m",
            "controlplane",
            "serve",
            "--nats-url",
            nats_url,
            "--database-url",
            database_url,
            "--port",
            str(self.port),
            "--sequences",
            str(sequences),
            "--stream",
            stream,
            "--log-level",
            "debug",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=log, env=env)
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:

            async def healthy() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"control plane exited:\n{self.log.read_text()[-3000:]}")
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, timeout=timeout, what="the control plane to be healthy")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10.0)


class TaskService:
    """A task service scripted by the test: sees every task ``.triggered``, answers on NATS."""

    def __init__(self, nats_url: str, name: str = "test-executor") -> None:
        self._url = nats_url
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self._nc: Client | None = None

    async def __aenter__(self) -> TaskService:
        self._nc = await nats.connect(self._url)
        await self._nc.subscribe("sh.keptn.event.*.triggered", cb=self._on_message)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.drain()

    async def _on_message(self, msg: Msg) -> None:
        self.seen.append(json.loads(msg.data))

    def triggered(self, task: str, keptn_context: str | None = None) -> list[dict[str, Any]]:
        wanted = f"sh.keptn.event.{task}.triggered"
        return [
            event
            for event in self.seen
            if event["type"] == wanted
            and (keptn_context is None or event["shkeptncontext"] == keptn_context)
        ]

    async def wait_triggered(
        self, task: str, keptn_context: str | None = None, *, count: int = 1, timeout: float = 10.0
    ) -> dict[str, Any]:
        async def probe() -> list[dict[str, Any]]:
            found = self.triggered(task, keptn_context)
            return found if len(found) >= count else []

        found = await eventually(probe, timeout=timeout, what=f"{count} x {task}.triggered")
        event: dict[str, Any] = found[count - 1]
        return event

    async def answer(
        self,
        triggered: dict[str, Any],
        phase: str,
        *,
        source: str | None = None,
        **data: Any,
    ) -> dict[str, Any]:
        task = triggered["type"].removeprefix("sh.keptn.event.").removesuffix(".triggered")
        scope = {key: triggered["data"][key] for key in ("project", "stage", "service")}
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source or self.name,
            "type": f"sh.keptn.event.{task}.{phase}",
            "datacontenttype": "application/json",
            "shkeptncontext": triggered["shkeptncontext"],
            "triggeredid": triggered["id"],
            "data": {**scope, **data},
        }
        assert self._nc is not None
        await self._nc.publish(event["type"], json.dumps(event).encode())
        await self._nc.flush()
        return event

    async def complete(
        self,
        triggered: dict[str, Any],
        *,
        result: str = "pass",
        status: str = "succeeded",
        **data: Any,
    ) -> None:
        await self.answer(triggered, "started")
        await self.answer(triggered, "finished", result=result, status=status, **data)

    async def publish_raw(self, subject: str, body: bytes) -> None:
        assert self._nc is not None
        await self._nc.publish(subject, body)
        await self._nc.flush()


async def post_event(
    client: httpx.AsyncClient,
    type: str,
    data: dict[str, Any],
    *,
    source: str = "e2e",
    **attributes: str,
) -> httpx.Response:
    """POST one structured CloudEvent to the API as a Keptn client would."""
    body = {"specversion": "1.0", "source": source, "type": type, **attributes, "data": data}
    return await client.post("/api/v1/event", json=body)


async def trigger(
    client: httpx.AsyncClient,
    project: str,
    stage: str,
    sequence: str,
    service: str = "svc",
    **data: Any,
) -> str:
    response = await post_event(
        client,
        f"{stage}.{sequence}.triggered",
        {"project": project, "stage": stage, "service": service, **data},
    )
    assert response.status_code == 200, response.text
    context: str = response.json()["keptnContext"]
    return context


async def sequence_state(client: httpx.AsyncClient, project: str, context: str) -> dict[str, Any]:
    response = await client.get(
        f"/api/controlPlane/v1/sequence/{project}", params={"keptnContext": context}
    )
    assert response.status_code == 200, response.text
    states = response.json()["states"]
    return states[0] if states else {}


async def wait_state(
    client: httpx.AsyncClient,
    project: str,
    context: str,
    state: str | set[str],
    *,
    timeout: float = 10.0,
) -> dict[str, Any]:
    wanted = {state} if isinstance(state, str) else state

    async def probe() -> dict[str, Any]:
        current = await sequence_state(client, project, context)
        return current if current.get("state") in wanted else {}

    result: dict[str, Any] = await eventually(
        probe, timeout=timeout, what=f"context {context} in state {wanted}"
    )
    return result


async def events(client: httpx.AsyncClient, context: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/mongodb-datastore/event",
        params={"keptnContext": context, "pageSize": "100", **params},
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


class WebhookReceiver:
    """A real HTTP server in the test's loop that records the webhook POSTs it gets.

    ``statuses`` scripts the answers (one per request, then ``default_status``); with
    ``answer_with`` set, each accepted ``.triggered`` task event is answered through the
    control plane's API (``.started``, then ``.finished`` with that data), as a push-mode
    task service would.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        statuses: list[int] | None = None,
        default_status: int = 202,
        answer_with: dict[str, Any] | None = None,
        api: httpx.AsyncClient | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._statuses = list(statuses or [])
        self._default_status = default_status
        self._answer_with = answer_with
        self._api = api
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> WebhookReceiver:
        import uvicorn

        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # uvicorn < 0.29
        self._task = asyncio.create_task(self._server.serve())
        await eventually(
            self._started, timeout=10.0, what=f"the webhook receiver on port {self.port}"
        )
        return self

    async def _started(self) -> bool:
        assert self._task is not None
        if self._task.done():
            self._task.result()
        return bool(self._server.started)

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._answers):
            await task
        self._server.should_exit = True
        assert self._task is not None
        await self._task

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        self.requests.append((headers, body))
        status = self._statuses.pop(0) if self._statuses else self._default_status
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if 200 <= status < 300 and self._answer_with is not None:
            event = self.event(headers, body)
            task = asyncio.create_task(self._answer(event))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    @staticmethod
    def event(headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The CloudEvent of a request, structured or binary."""
        if headers.get("content-type", "").startswith("application/cloudevents+json"):
            event: dict[str, Any] = json.loads(body)
            return event
        from urllib.parse import unquote

        attributes = {
            key[3:]: unquote(value) for key, value in headers.items() if key.startswith("ce-")
        }
        return {**attributes, "data": json.loads(body)}

    async def _answer(self, triggered: dict[str, Any]) -> None:
        assert self._api is not None
        assert self._answer_with is not None
        task = triggered["type"].split(".")[3]
        scope = {k: triggered["data"][k] for k in ("project", "stage", "service")}
        for phase, extra in (("started", {}), ("finished", self._answer_with)):
            response = await post_event(
                self._api,
                f"sh.keptn.event.{task}.{phase}",
                {**scope, **extra},
                source="webhook-receiver",
                shkeptncontext=triggered["shkeptncontext"],
                triggeredid=triggered["id"],
            )
            assert response.status_code == 200, response.text

    def events(self) -> list[dict[str, Any]]:
        return [self.event(headers, body) for headers, body in self.requests]


class ServiceProcess:
    """A task service in another language, run as a process until the block ends.

    It is ready when it prints a line starting with ``ready_prefix`` on stdout; its stderr
    goes to a log file in the test's folder, shown when it fails to start.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        ready_prefix: str,
        log: Path,
        cwd: Path | None = None,
    ) -> None:
        self._argv = argv
        self._env = {**os.environ, **env}
        self._ready_prefix = ready_prefix
        self.log = log
        self._cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_line = ""
        self._drain: threading.Thread | None = None

    async def __aenter__(self) -> ServiceProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self._argv, stdout=subprocess.PIPE, stderr=log, env=self._env, cwd=self._cwd
            )
        try:
            self.ready_line = await asyncio.wait_for(asyncio.to_thread(self._ready), 30.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(self._ready_prefix):
                # Keep reading, so that a chatty service never blocks on a full pipe.
                self._drain = threading.Thread(target=self.process.stdout.read, daemon=True)
                self._drain.start()
                return line
        self.process.wait(5)
        raise AssertionError(
            f"{self._argv[0]} exited ({self.process.returncode}) before it was ready:\n"
            + self.log.read_text(errors="replace")[-3000:]
        )

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._drain is not None:
            self._drain.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
