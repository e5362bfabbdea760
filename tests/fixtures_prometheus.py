"""A real Prometheus server scraping an exporter the test controls.

Plain helpers, so any conftest can build a fixture from them (``running_prometheus``)::

    @pytest.fixture(scope="session")
    def prometheus(tmp_path_factory):
        with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
            yield server

The binary is Debian's ``prometheus`` package unpacked by ``scripts/fetch-prometheus`` into
``.cache/prometheus`` (or ``$CONTROLPLANE_PROMETHEUS_BIN``, or one on ``PATH``). The test
process serves ``/metrics`` from a thread (:class:`MetricsExporter`); Prometheus scrapes it
every second as job :data:`JOB` with the extra label ``stage="dev"``. A test changes a value
with :meth:`MetricsExporter.set` and waits with :meth:`RunningPrometheus.wait_for_value`
until Prometheus has scraped it, instead of sleeping.

:class:`JsonSource` is the other kind of metric source, a plain HTTP endpoint, with routes
for the ways such a source answers well or badly (see its docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHED_BINARY = REPO_ROOT / ".cache" / "prometheus" / "usr" / "bin" / "prometheus"
BINARY_VARIABLE = "CONTROLPLANE_PROMETHEUS_BIN"
JOB = "carts"
STAGE_LABEL = "dev"
_POLL = 0.02  # how often a test server checks for shutdown (seconds)

Labels = tuple[tuple[str, str], ...]


class PrometheusUnavailable(RuntimeError):
    """No Prometheus binary, or it did not start."""


def find_prometheus() -> Path:
    """The binary: ``$CONTROLPLANE_PROMETHEUS_BIN``, the unpacked package, else ``PATH``."""
    given = os.environ.get(BINARY_VARIABLE)
    if given:
        if not os.access(given, os.X_OK):
            raise PrometheusUnavailable(f"{BINARY_VARIABLE}={given} is not an executable")
        return Path(given)
    if os.access(CACHED_BINARY, os.X_OK):
        return CACHED_BINARY
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    raise PrometheusUnavailable(
        "no prometheus binary: run scripts/fetch-prometheus (unpacks Debian's package into"
        f" .cache/prometheus), or set {BINARY_VARIABLE}"
    )


def free_port() -> int:
    """A port nothing listens on right now (nothing is listening once this returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MetricsExporter:
    """``/metrics`` in Prometheus' text format, with values the test sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        self._samples: dict[tuple[str, Labels], float] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(_POLL,), name="metrics-exporter", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def set(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        kind: str = "gauge",
    ) -> None:
        """Set one series (``kind`` is ``gauge`` or ``counter``)."""
        with self._lock:
            self._kinds[name] = kind
            self._samples[(name, tuple(sorted((labels or {}).items())))] = value

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._samples.pop((name, tuple(sorted((labels or {}).items()))), None)

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            for name, kind in sorted(self._kinds.items()):
                lines.append(f"# TYPE {name} {kind}")
                for (series, labels), value in sorted(self._samples.items()):
                    if series == name:
                        lines.append(f"{name}{_labels(labels)} {_number(value)}")
            return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: no line on stderr per request."""

        return Handler


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (
        (key, value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for key, value in labels
    )
    return "{" + ",".join(f'{key}="{value}"' for key, value in escaped) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class RunningPrometheus:
    """A started server: its URL, the exporter it scrapes, its log file."""

    url: str
    exporter: MetricsExporter
    log_file: Path
    process: subprocess.Popen[bytes]
    started_in: float  # seconds from launch until the first scrape was queryable
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression`` now (synchronous)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        return _vector(answer)

    async def wait_for_value(
        self, expression: str, expected: float, *, timeout: float = 15.0
    ) -> None:
        """Wait until ``expression`` has exactly one series whose value is ``expected``."""

        def matches(vector: list[dict[str, Any]]) -> bool:
            return len(vector) == 1 and float(vector[0]["value"][1]) == expected

        await self.wait_for(expression, matches, timeout=timeout)

    async def wait_for(
        self,
        expression: str,
        condition: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Poll ``expression`` until ``condition`` holds for its vector, or fail at the deadline."""
        deadline = time.monotonic() + timeout
        vector: list[dict[str, Any]] = []
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                answer = await client.get(f"{self.url}/api/v1/query", params={"query": expression})
                vector = _vector(answer)
                if condition(vector):
                    return vector
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{expression}: condition not met within {timeout}s; last {vector}"
                    )
                await asyncio.sleep(0.1)  # a poll interval, not a guess at "long enough"


def _vector(answer: httpx.Response) -> list[dict[str, Any]]:
    answer.raise_for_status()
    data = answer.json()["data"]
    assert data["resultType"] == "vector", data
    result: list[dict[str, Any]] = data["result"]
    return result


def write_config(path: Path, exporter_address: str) -> None:
    path.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{exporter_address}']\n"
        f"        labels: {{stage: {STAGE_LABEL}}}\n"
    )


def _command(binary: Path, workdir: Path, port: int) -> list[str]:
    command = [
        str(binary),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    # On Linux, end Prometheus with us even if pytest is killed (no orphaned servers).
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def _launch(
    binary: Path, workdir: Path, exporter: MetricsExporter, *, timeout: float
) -> RunningPrometheus:
    launched = time.monotonic()
    port = free_port()
    log_file = workdir / "prometheus.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            _command(binary, workdir, port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningPrometheus(f"http://127.0.0.1:{port}", exporter, log_file, process, 0.0)
    try:
        _wait_until_scraped(server, launched + timeout)
    except BaseException:
        stop(server)
        raise
    server.started_in = time.monotonic() - launched
    return server


def _wait_until_scraped(server: RunningPrometheus, deadline: float) -> None:
    """Ready, and the exporter's first scrape visible as ``up == 1``."""
    with httpx.Client(timeout=2) as client:
        while True:
            if server.process.poll() is not None:
                raise PrometheusUnavailable(
                    f"prometheus exited with {server.process.returncode}:\n{_tail(server.log_file)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.url}/-/ready").status_code == 200:
                    answer = client.get(
                        f"{server.url}/api/v1/query", params={"query": f'up{{job="{JOB}"}} == 1'}
                    )
                    if _vector(answer):
                        return
            if time.monotonic() > deadline:
                raise PrometheusUnavailable(
                    f"prometheus at {server.url} not scraping in time:\n{_tail(server.log_file)}"
                )
            time.sleep(0.05)  # a poll interval


def _tail(log_file: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(server: RunningPrometheus, timeout: float = 10.0) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout)


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, *, binary: Path | None = None, timeout: float = 30.0
) -> Iterator[RunningPrometheus]:
    """Start the exporter and Prometheus in ``workdir``; stop both on exit.

    Raises:
        PrometheusUnavailable: no binary (run ``scripts/fetch-prometheus``) or no start.
    """
    binary = binary or find_prometheus()
    exporter = MetricsExporter()
    exporter.start()
    try:
        write_config(workdir / "prometheus.yml", exporter.address)
        server = _start_with_retries(binary, workdir, exporter, timeout=timeout)
        try:
            yield server
        finally:
            stop(server)
    finally:
        exporter.stop()


def _start_with_retries(
    binary: Path, workdir: Path, exporter: MetricsExporter, *, timeout: float
) -> RunningPrometheus:
    # The free port may be taken between probing and binding; Prometheus then exits at once.
    for attempt in range(3):
        try:
            return _launch(binary, workdir, exporter, timeout=timeout)
        except PrometheusUnavailable as error:
            if attempt == 2 or "address already in use" not in str(error):
                raise
    raise AssertionError("unreachable")


class JsonSource:
    """An HTTP source on 127.0.0.1 with a route per behaviour; every method is accepted.

    ``/stock``: ``{"items": [{"count": 12}, {"count": "n/a"}], "query": {...}}`` echoing the
    query string; ``/protected``: ``{"count": 7}`` only with ``Authorization: Bearer
    <token>`` (else 401); ``/echo...``: the request's method, path, headers and body as JSON;
    ``/slow...``: answers only when :meth:`stop` runs (for time limits); ``/html``: a login
    page; ``/junk``: ``200`` with a broken JSON body; ``/error``: ``500`` and a text body;
    ``/big``: 2 MiB of JSON.
    """

    def __init__(self, token: str = "stock-token") -> None:
        self.token = token
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(_POLL,), name="json-source", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        path, _, query = request.path.partition("?")
        if path == "/stock":
            items = [{"count": 12}, {"count": "n/a"}]
            return _json(200, {"items": items, "query": _query(query)})
        if path == "/protected":
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return _json(401, {"error": "unauthorized"})
            return _json(200, {"count": 7})
        if path.startswith("/echo"):
            headers = {key.lower(): value for key, value in request.headers.items()}
            return _json(
                200,
                {
                    "method": request.command,
                    "path": path,
                    "headers": headers,
                    "body": body.decode(),
                },
            )
        if path.startswith("/slow"):
            self.release.wait(timeout=60)
            return _json(200, {"count": 1})
        if path == "/html":
            page = b"<!doctype html><html><body><form>Log in</form></body></html>"
            return 200, "text/html; charset=utf-8", page
        if path == "/junk":
            return 200, "application/json", b'{"count": 3,,'
        if path == "/error":
            return 500, "text/plain", b"database exploded\n"
        if path == "/big":
            return 200, "application/json", b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        return _json(404, {"error": f"no route {path}"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, content_type, answer = source.answer(self, body)
                # The client may have given up (time limit, size cap): ignore a closed socket.
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: no line on stderr per request."""

        return Handler


def _json(status: int, document: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(document).encode()


def _query(query: str) -> dict[str, str]:
    return dict(parse_qsl(query))
