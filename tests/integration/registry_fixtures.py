"""Schema registry processes for integration tests: `python -m streams.registry` on a free port.

Use it with `from tests.integration.registry_fixtures import registry_url  # noqa: F401`.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
AUDITED_TOPIC = "reg.audited"
PLAIN_TOPIC = "reg.plain"
CATALOG = f"""\
version: 1
defaults:
  partitions: 1
  replication_factor: 1
topics:
  {AUDITED_TOPIC}:
    owner: tests
    audit: true
    legal_retention: 7d
    archive: true
  {PLAIN_TOPIC}:
    owner: tests
"""


@dataclass
class RegistryProcess:
    """One running registry; `stop()` sends SIGTERM (SIGKILL after 10 s)."""

    url: str
    topic: str
    process: subprocess.Popen[str]
    log_path: Path
    pump: threading.Thread | None = None
    stdout: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.pump is not None:
            self.pump.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_registry(
    bootstrap: str, topic: str, log_path: Path, *, catalog: Path | None = None, timeout_s: float = 60.0
) -> RegistryProcess:
    """Start a registry on `topic` and return once it printed the URL it listens on."""
    command = [
        sys.executable,
        "-m",
        "streams.registry",
        "--bootstrap-servers",
        bootstrap,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--topic",
        topic,
    ]
    if catalog is not None:
        command += ["--catalog", str(catalog)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps the pipe drained for the whole life of the process
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if line.startswith("registry listening on "):
            url = line.removeprefix("registry listening on ").strip()
            return RegistryProcess(url, topic, process, log_path, pumping, seen)
    failed = RegistryProcess("", topic, process, log_path, pumping, seen)
    process.kill()
    failed.stop()
    raise RuntimeError(
        f"registry did not start on {topic}: stdout={''.join(seen)!r}\n{log_path.read_text(errors='replace')}"
    )


def unique_schemas_topic() -> str:
    return f"_schemas_{uuid.uuid4().hex[:10]}"


def write_catalog(directory: Path) -> Path:
    """A catalog with one `audit: true` topic (AUDITED_TOPIC) and one plain topic (PLAIN_TOPIC)."""
    path = directory / "topics.yaml"
    path.write_text(CATALOG)
    return path


@pytest.fixture(scope="session")
def registry_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the session's registry: its own `_schemas_<hex>` topic, the test catalog."""
    directory = tmp_path_factory.mktemp("registry")
    registry = start_registry(
        kafka_bootstrap, unique_schemas_topic(), directory / "registry.log", catalog=write_catalog(directory)
    )
    yield registry.url
    registry.stop()
