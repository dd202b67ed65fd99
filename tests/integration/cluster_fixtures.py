"""A three-broker local cluster of its own (`streams dev up --brokers 3 --sasl --acls`'s code) for the tests that
need replication: SCRAM users and the catalog's ACLs, topics applied with the `cluster` profile (replication 3,
min ISR 2), schemas registered; nodes killed and restarted by id.

Independent of the session's single-broker stack (conftest.py): its own data dir, stopped with the module.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.kafka_util import read_all
from streams.local import cluster, scram
from streams.local.stack import start_stack, stop_stack
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Message

    from streams.local.state import NodeState
    from streams.settings import KafkaConfig

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "cluster"
ADMIN = "cluster-admin"
ADMIN_PASSWORD = "clu5ter-Adm1n-Pa55"  # noqa: S105 - the test cluster's own super user


def catalog_copy(directory: Path, *, bridge_routes: tuple[str, ...] | None = None) -> Path:
    """topics.yaml (and the schemas beside it) copied into `directory`; with `bridge_routes`, only those routes
    of its `bridge:` section, so a test can bridge what its Celery worker can run in its time."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "schemas", directory / "schemas", dirs_exist_ok=True)
    document = yaml.safe_load((ROOT / "topics.yaml").read_text())
    if bridge_routes is not None:
        routes = document["bridge"]["routes"]
        document["bridge"]["routes"] = {name: routes[name] for name in bridge_routes}
    path = directory / "topics.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class ClusterStack:
    """Three nodes, the registry and Redis; settings and child environments that log in as any principal."""

    def __init__(self, data_dir: Path, catalog_path: Path) -> None:
        state = start_stack(data_dir, brokers=3, sasl_users={ADMIN: ADMIN_PASSWORD}, acls=True, catalog=catalog_path)
        self.data_dir = data_dir
        self.catalog_path = catalog_path
        self.bootstrap = state.services["kafka"].address
        self.redis_url = state.services["redis"].address
        self.registry_url = state.services["registry"].address
        assert len(state.services["kafka"].nodes) == 3

    # ---- clients -----------------------------------------------------------------------------------------

    def password(self, user: str) -> str:
        if user == ADMIN:
            return ADMIN_PASSWORD
        environment = scram.read_credentials(self.data_dir / "local", user)
        assert environment is not None, f"no credentials file for {user}"
        return environment["STREAMS_KAFKA_SASL_PASSWORD"]

    def settings(self, user: str = ADMIN) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            catalog_path=self.catalog_path,
            profile=PROFILE,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=SecretStr(self.password(user)),
        )

    def kafka(self, user: str = ADMIN, **extra: Any) -> KafkaConfig:
        settings = self.settings(user)
        return {**settings.kafka_config(settings.bootstrap_servers()), **extra}

    def env(self, user: str = ADMIN) -> dict[str, str]:
        """A child process's environment: logged in as `user`, on this cluster, its catalog and profile."""
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_")}
        return {
            **inherited,
            **scram.client_environment(self.bootstrap, user, self.password(user)),
            "STREAMS_DATA_DIR": str(self.data_dir),
            "STREAMS_CATALOG_PATH": str(self.catalog_path),
            "STREAMS_PROFILE": PROFILE,
            "STREAMS_REDIS_URL": self.redis_url,
        }

    def read(self, topic: str) -> list[Message]:
        """As the admin (a super user), read_committed: what is really in the topic."""
        return read_all(self.kafka(), topic, timeout_s=60)

    # ---- nodes -------------------------------------------------------------------------------------------

    def nodes(self) -> tuple[NodeState, ...]:
        return cluster.cluster_nodes(self.data_dir)

    def controller(self, timeout_s: float = 30.0) -> int:
        """The node id of the active controller, waiting for an election if there is none right now."""
        deadline = time.monotonic() + timeout_s
        while (leader := cluster.quorum_leader(self.nodes())) is None:
            assert time.monotonic() < deadline, "no KRaft controller leader"
            time.sleep(0.2)
        return leader

    def kill(self, node_id: int) -> None:
        cluster.kill_node(self.data_dir, node_id)

    def restart(self, node_id: int) -> None:
        cluster.start_node(self.data_dir, node_id)

    def under_replicated(self) -> list[tuple[str, int]]:
        """Partitions (of every topic, internal ones included) whose ISR is not all their replicas."""
        admin = AdminClient(self.kafka())
        metadata = admin.list_topics(timeout=10)
        return [
            (name, partition.id)
            for name, topic in metadata.topics.items()
            for partition in topic.partitions.values()
            if set(partition.isrs) != set(partition.replicas)
        ]

    def wait_fully_replicated(self, timeout_s: float = 90.0) -> float:
        """Block until every partition has its full ISR again (a restarted node caught up); the seconds it took."""
        started = time.monotonic()
        wait_for(lambda: not self.under_replicated(), timeout_s, lambda: f"full ISRs; short: {self.under_replicated()}")
        return time.monotonic() - started


def wait_for(condition: Callable[[], Any], timeout: float, what: Callable[[], str], interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(interval)


@pytest.fixture(scope="module")
def three_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    """A three-broker cluster with SCRAM and the catalog's ACLs, the catalog (bridging compliance violations
    only) applied with the `cluster` profile and its schemas registered; stopped after the module."""
    data_dir = tmp_path_factory.mktemp("three-brokers")
    catalog_path = catalog_copy(data_dir / "catalog", bridge_routes=("compliance-errors", "compliance-warnings"))
    try:
        stack = ClusterStack(data_dir, catalog_path)
        catalog = load_catalog(catalog_path, PROFILE)
        apply_plan(plan_changes(catalog, stack.kafka()), catalog, stack.kafka())
        with RegistryClient(stack.registry_url) as client:
            apply_schemas(catalog, client)
        yield stack
    finally:
        stop_stack(data_dir)
