"""The schema registry as a local-stack service: `python -m streams.registry` on loopback.

Started after Kafka (it stores schemas in the broker's `_schemas` topic); ready when GET /subjects answers.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local.processes import LOOPBACK, is_running, log_tail, port_in_use, spawn_detached

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

READY_TIMEOUT_S = 60.0


def registry_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def start_registry(
    local_dir: Path,
    *,
    port: int,
    bootstrap: str,
    catalog: Path | None,
    owner: Path,
    kafka_environment: Mapping[str, str] | None = None,
) -> tuple[int, Path]:
    """Launch the registry on 127.0.0.1:`port` in its own session; (pid, log path).

    It reaches Kafka with `kafka_environment` (STREAMS_KAFKA_* security variables), never with ones
    inherited from this shell: those may describe another cluster.
    """
    if port_in_use(port):
        raise LocalStackError(f"port {port} on {LOOPBACK} is already in use; choose another with --registry-port")
    log_path = local_dir / "registry.log"
    command = [
        sys.executable,
        "-m",
        "streams.registry",
        "--bootstrap-servers",
        bootstrap,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    if catalog is not None and catalog.exists():
        command += ["--catalog", str(catalog.resolve())]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_KAFKA_")}
    environment.update(kafka_environment or {})
    return spawn_detached(command, log_path=log_path, owner=owner, environment=environment), log_path


def registry_answers(url: str) -> bool:
    import httpx  # noqa: PLC0415 - `streams dev --help` and `streams demo --help` stay fast

    try:
        return httpx.get(f"{url}/subjects", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_registry(pid: int, url: str, log_path: Path, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until the registry answers; raise with its log tail if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise LocalStackError(
                f"the schema registry exited while starting; the end of {log_path}:\n{log_tail(log_path)}"
            )
        if registry_answers(url):
            return
        time.sleep(0.1)
    raise LocalStackError(
        f"the schema registry did not answer at {url} within {timeout_s:.0f}s; the end of {log_path}:\n"
        f"{log_tail(log_path)}"
    )
