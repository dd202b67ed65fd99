"""PostgreSQL and MariaDB servers from the OS packages, on loopback and a free port, in a directory of ours.

Used by the outbox's integration tests and bench: each server is our own process group, stopped at the end.
"""

from __future__ import annotations

import gc
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import LocalStackError
from streams.local.processes import LOOPBACK, free_port, is_running, log_tail, port_in_use, stop_process_group

if TYPE_CHECKING:
    from collections.abc import Callable

READY_TIMEOUT_S = 60.0
POSTGRES_BIN = Path("/usr/lib/postgresql")
INSTALL_HINT = "apt-get install -y postgresql mariadb-server (Debian packages)"


@dataclass
class DatabaseServer:
    """One server: `dsn` for streams.outbox; `stop()` ends its process group, `start()` runs it again."""

    name: str
    dsn: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    identity: dict[str, Any] = field(default_factory=dict)
    scratch: Path | None = None  # a directory of the server's own, removed by `stop(remove=True)`
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self) -> None:
        """Spawn the server in a session of its own; return once it accepts connections."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own argv
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self.identity,
            )
        _wait(self)

    def stop(self, *, remove: bool = True) -> None:
        """SIGTERM (then SIGKILL) the server; `remove`: delete its scratch directory too."""
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, timeout_s=30.0)
            self.process.wait(timeout=10)
        if remove and self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None and POSTGRES_BIN.is_dir():
        for version in sorted(POSTGRES_BIN.iterdir(), reverse=True):
            if (version / "bin" / name).exists():
                return str(version / "bin" / name)
    if found is None:
        raise LocalStackError(f"`{name}` is not installed: {INSTALL_HINT}")
    return found


def _run_as() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LocalStackError(f"running as root needs the `postgres` user the package creates: {INSTALL_HINT}") from exc
    return {"user": "postgres", "group": "postgres"}


def start_postgres(directory: Path, *, port: int | None = None, database: str = "streams") -> DatabaseServer:
    """initdb (once) and start postgres on 127.0.0.1:`port` (free when None); returns once it accepts logins."""
    port = port or free_port()
    if port_in_use(port):
        raise LocalStackError(f"port {port} on {LOOPBACK} is already in use")
    identity = _run_as()
    directory.mkdir(parents=True, exist_ok=True)
    log_path, home = directory / "postgres.log", directory
    if identity:
        # The postgres user cannot enter a root-only temp dir (pytest's are 0700): its files go under a
        # directory of its own, which `stop()` removes.
        home = Path(tempfile.mkdtemp(prefix="streams-postgres-"))
        shutil.chown(home, "postgres", "postgres")
    data = home / "pgdata"
    if not (data / "PG_VERSION").exists():
        subprocess.run(  # noqa: S603
            [
                _tool("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **identity,
        )
    argv = [
        _tool("postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-h",
        LOOPBACK,
        "-k",
        str(home),
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    server = DatabaseServer(
        "postgres",
        f"postgresql://postgres@{LOOPBACK}:{port}/{database}",
        argv,
        log_path,
        lambda: _postgres_ready(port, database),
        identity,
        None if home == directory else home,
    )
    server.start()
    return server


def _postgres_ready(port: int, database: str) -> bool:
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(
            f"postgresql://postgres@{LOOPBACK}:{port}/postgres", connect_timeout=2, autocommit=True
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{database}"')
        return True
    except psycopg.OperationalError:
        return False


def start_mariadb(directory: Path, *, port: int | None = None, database: str = "streams") -> DatabaseServer:
    """mariadb-install-db (once) and start mariadbd on 127.0.0.1:`port`; returns once `database` exists."""
    port = port or free_port()
    if port_in_use(port):
        raise LocalStackError(f"port {port} on {LOOPBACK} is already in use")
    data, log_path = directory / "mariadb", directory / "mariadb.log"
    directory.mkdir(parents=True, exist_ok=True)
    user = ["--user=root"] if os.geteuid() == 0 else []
    if not (data / "mysql").exists():
        subprocess.run(  # noqa: S603
            [
                _tool("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                *user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
    argv = [
        _tool("mariadbd"),
        "--no-defaults",
        f"--datadir={data}",
        f"--port={port}",
        f"--bind-address={LOOPBACK}",
        f"--socket={directory / 'mariadb.sock'}",
        f"--pid-file={directory / 'mariadb.pid'}",
        *user,
        "--skip-name-resolve",
        "--innodb-flush-log-at-trx-commit=2",
        "--innodb-buffer-pool-size=64M",
        "--max-connections=200",
        f"--log-error={log_path}",
    ]
    server = DatabaseServer(
        "mariadb",
        f"mysql://streams:streams@{LOOPBACK}:{port}/{database}",
        argv,
        log_path,
        lambda: _mariadb_ready(directory / "mariadb.sock", database),
    )
    server.start()
    return server


def _mariadb_ready(socket_path: Path, database: str) -> bool:
    import pymysql  # noqa: PLC0415

    if not socket_path.exists():
        return False
    # PyMySQL leaks the socket of a refused connection; collect it while ResourceWarning is muted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            conn = pymysql.connect(
                unix_socket=str(socket_path), user="root", password="", connect_timeout=2, autocommit=True
            )
        except pymysql.err.OperationalError:
            gc.collect()
            return False
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            cursor.execute("CREATE USER IF NOT EXISTS 'streams'@'%' IDENTIFIED BY 'streams'")
            cursor.execute(f"GRANT ALL ON `{database}`.* TO 'streams'@'%'")
    finally:
        conn.close()
    return True


def _wait(server: DatabaseServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not is_running(server.pid):
            raise LocalStackError(
                f"{server.name} exited while starting; the end of {server.log_path}:\n{log_tail(server.log_path)}"
            )
        if server.ready():
            return
        time.sleep(0.1)
    server.stop()
    raise LocalStackError(
        f"{server.name} did not accept connections within {READY_TIMEOUT_S:.0f}s; the end of "
        f"{server.log_path}:\n{log_tail(server.log_path)}"
    )
