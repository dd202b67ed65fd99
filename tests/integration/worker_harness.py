"""Shared by the worker tests: a local stack with the catalog applied, and worker processes to start and kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.kafka_util import read_all
from streams.local.stack import start_stack, stop_stack
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def catalog_stack(data_dir: Path, *, with_redis: bool = False) -> Iterator[Settings]:
    """A stack of its own with the catalog's real topics and schemas: the agents use the real names."""
    start_stack(data_dir, with_redis=with_redis, catalog=ROOT / "topics.yaml")
    settings = Settings(data_dir=data_dir, catalog_path=ROOT / "topics.yaml", agent_max_record_bytes=65_536)
    try:
        catalog = load_catalog(settings.catalog_path)
        config = settings.kafka_config(settings.bootstrap_servers())
        apply_plan(plan_changes(catalog, config), catalog, config)
        with RegistryClient(settings.registry_url()) as client:
            apply_schemas(catalog, client)
        yield settings
    finally:
        stop_stack(data_dir)


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMS_DATA_DIR": str(settings.data_dir),
        "STREAMS_CATALOG_PATH": str(settings.catalog_path),
        "STREAMS_AGENT_MAX_RECORD_BYTES": str(settings.agent_max_record_bytes),
    }


def start_process(settings: Settings, command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`command` in a session of its own (so it can be killed whole), on this stack, output into `log`."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_worker(settings: Settings, agents: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streams.cli", "worker", "--agents", agents, "--web-port", str(port)]
    return start_process(settings, command, log)


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


def read_topic(settings: Settings, topic: str) -> list[Any]:
    return read_all({"bootstrap.servers": settings.bootstrap_servers()}, topic)


def header(message: Any, name: str) -> str:
    value: bytes = dict(message.headers())[name]
    return value.decode()


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.5)
