"""SASL/SCRAM end to end on a stack of its own: every client logs in with credentials from STREAMS_* settings.

The broker's client listener is SASL_PLAINTEXT with SCRAM-SHA-512 (`start_stack(sasl_users=...)`); the
publisher, a validation worker, a replay export and the Celery bridge run against it, and a wrong password
is one clear error that names the failure and the brokers, never the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from pydantic import SecretStr

from streams.admin import apply_plan, plan_changes
from streams.bridge.celery_wire import queue_keys
from streams.catalog import load_catalog
from streams.demo.samples import invoice_chain
from streams.kafka_util import read_all
from streams.local import scram
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack
from streams.publish import Publisher
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Message

ROOT = Path(__file__).resolve().parents[2]
USER = "streams-sasl"
PASSWORD = "s3cret-Pa55word"  # noqa: S105 - the test stack's own credential
WRONG = "wr0ng-Pa55word"
INVOICES = 4

pytestmark = pytest.mark.timeout(600)  # a stack of its own, a worker and a bridge on a shared 2-core machine


class SaslStack:
    """The stack, the settings that log in to it, and the environment a child process needs for the same."""

    def __init__(self, data_dir: Path) -> None:
        state = start_stack(data_dir, sasl_users={USER: PASSWORD}, catalog=ROOT / "topics.yaml")
        self.data_dir = data_dir
        self.bootstrap = state.services["kafka"].address
        self.redis_url = state.services["redis"].address
        self.settings = Settings(
            data_dir=data_dir,
            catalog_path=ROOT / "topics.yaml",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=USER,
            kafka_sasl_password=SecretStr(PASSWORD),
        )

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        """What `streams dev up --sasl` tells a user to export, with `password`; nothing else of ours."""
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_")}
        return {
            **inherited,
            **scram.client_environment(self.bootstrap, USER, password),
            "STREAMS_DATA_DIR": str(self.data_dir),
            "STREAMS_CATALOG_PATH": str(ROOT / "topics.yaml"),
            "STREAMS_REDIS_URL": self.redis_url,
        }

    def kafka(self) -> dict[str, str | int | float | bool]:
        return self.settings.kafka_config(self.settings.bootstrap_servers())

    def read(self, topic: str) -> list[Message]:
        return read_all(self.kafka(), topic)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslStack]:
    data_dir = tmp_path_factory.mktemp("sasl")
    try:
        world = SaslStack(data_dir)
        catalog = load_catalog(world.settings.catalog_path)
        apply_plan(plan_changes(catalog, world.kafka()), catalog, world.kafka())
        with RegistryClient(world.settings.registry_url()) as client:
            apply_schemas(catalog, client)
        yield world
    finally:
        stop_stack(data_dir)


def run_cli(
    stack: SaslStack, *args: str, password: str = PASSWORD, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=stack.env(password),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=stack.data_dir,
    )


def spawn_cli(stack: SaslStack, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=stack.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=stack.data_dir,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
    process.wait(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def validated(stack: SaslStack, tmp_path_factory: pytest.TempPathFactory) -> list[Message]:
    """Valid invoices published with the SDK and cleared by a validation worker, both logged in with SCRAM."""
    with Publisher(stack.settings, source="sasl-tests") as publisher:
        for invoice in invoice_chain(INVOICES, tenant="sasl"):
            publisher.publish("invoice.created", invoice)
    log = tmp_path_factory.mktemp("sasl-worker") / "worker.log"
    worker = spawn_cli(stack, log, "worker", "--agents", "validation", "--web-port", str(free_port()))
    try:
        wait_for(
            lambda: len(stack.read("invoice.cleared")) >= INVOICES,
            240,
            lambda: f"{INVOICES} cleared invoices; worker log:\n{log.read_text(errors='replace')[-3000:]}",
        )
    finally:
        stop(worker)
    return stack.read("invoice.cleared")


def test_the_publisher_and_a_worker_log_in_with_scram(stack: SaslStack, validated: list[Message]) -> None:
    assert len(stack.read("invoice.created")) == INVOICES
    assert len(validated) == INVOICES
    assert stack.read("compliance.violation") == []


def test_replay_exports_with_credentials_from_the_environment(
    stack: SaslStack, validated: list[Message], tmp_path: Path
) -> None:
    del validated
    bundle = tmp_path / "bundle"
    result = run_cli(stack, "replay", "invoice.created", "--export", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"exported {INVOICES} record(s)" in result.stdout
    assert (bundle / "manifest.json").exists()
    assert PASSWORD not in result.stdout + result.stderr


def test_the_bridge_logs_in_and_hands_cleared_invoices_to_celery(
    stack: SaslStack, validated: list[Message], tmp_path: Path
) -> None:
    del validated
    client = redis.Redis.from_url(stack.redis_url)
    log = tmp_path / "bridge.log"

    def queued() -> int:
        return sum(int(client.llen(key)) for key in queue_keys("default"))

    bridge = spawn_cli(stack, log, "bridge", "--instance-id", "sasl-bridge")
    try:
        wait_for(
            lambda: queued() >= INVOICES,
            180,
            lambda: f"{INVOICES} tasks in Redis (have {queued()}); bridge log:\n{log.read_text()[-3000:]}",
        )
    finally:
        stop(bridge)
        client.close()
    assert PASSWORD not in log.read_text(errors="replace")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["worker", "--agents", "validation", "--web-port", "0"], id="worker"),
        pytest.param(["registry", "serve", "--port", "0"], id="registry"),
        pytest.param(["publish", "user.action", "--file", "/dev/null"], id="publish"),
        pytest.param(["replay", "invoice.created", "--export", "bundle"], id="replay"),
        pytest.param(["bridge", "--instance-id", "wrong"], id="bridge"),
    ],
)
def test_a_wrong_password_is_one_clear_error(stack: SaslStack, command: list[str]) -> None:
    result = run_cli(stack, *command, password=WRONG, timeout=90)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    expected = (
        f"error: SASL authentication failed: the brokers at {stack.bootstrap} refused user '{USER}' with"
        " SCRAM-SHA-512 (Authentication failed during authentication due to invalid credentials with SASL"
        " mechanism SCRAM-SHA-512); check STREAMS_KAFKA_SASL_USERNAME and STREAMS_KAFKA_SASL_PASSWORD"
    )
    assert output.strip().splitlines() == [expected], output
    assert WRONG not in output
    assert PASSWORD not in output


def test_dev_up_reports_the_running_scram_stack_and_its_client_variables(stack: SaslStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dev", "up", "--sasl", "--sasl-user", USER, "--output", "json"],
        env={**stack.env(), "STREAMS_LOCAL_SASL_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["already_running"] is True
    assert report["services"]["kafka"]["security_protocol"] == "SASL_PLAINTEXT"
    assert report["kafka_client_environment"] == scram.client_environment(stack.bootstrap, USER, PASSWORD)
    assert (stack.data_dir / "local" / scram.CREDENTIALS_FILE).stat().st_mode & 0o077 == 0
