"""Apache Kafka for the local stack: broker jars from Maven Central, server.properties, KRaft format.

Jars are downloaded once per Kafka version (streams.local.maven) into a cache; later starts make no network call.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local.maven import COMPLETE_MARKER, fetch_jars, jars_cached, kafka_version
from streams.local.processes import (
    LOOPBACK,
    is_running,
    log_tail,
    port_in_use,
    spawn_detached,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streams.local.tls import BrokerTls

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.xml"
CACHE_VARIABLE = "STREAMS_LOCAL_CACHE_DIR"
READY_TIMEOUT_S = 60.0
SCRAM_MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"  # KRaft's, ACLs in the metadata log
__all__ = ["COMPLETE_MARKER", "jars_cached", "kafka_version"]  # re-exported: bench and tests name them here


@dataclass(frozen=True)
class KafkaLayout:
    """Where one local broker keeps its configuration, data and log, under `<data_dir>/local`.

    The single-node stack's node is `kafka/` and `kafka.log`; node N of a cluster (`--brokers 3`) is
    `kafka-N/` and `kafka-N.log`, so each has its own storage, formatted once and reused on every restart.
    """

    local_dir: Path
    node_id: int | None = None

    @property
    def name(self) -> str:
        return "kafka" if self.node_id is None else f"kafka-{self.node_id}"

    @property
    def properties_path(self) -> Path:
        return self.local_dir / self.name / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.local_dir / self.name / "data"

    @property
    def log_path(self) -> Path:
        return self.local_dir / f"{self.name}.log"

    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def cluster_id(self) -> str | None:
        """The KRaft cluster id this node's storage was formatted with, or None when it is not formatted."""
        if not self.formatted():
            return None
        for line in (self.log_dir / "meta.properties").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None


def default_cache_dir(version: str) -> Path:
    """`$STREAMS_LOCAL_CACHE_DIR/kafka-<version>`, else `~/.cache/streams/kafka-<version>` (XDG aware)."""
    root = os.environ.get(CACHE_VARIABLE)
    if root:
        return Path(root).expanduser() / f"kafka-{version}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "streams" / f"kafka-{version}"


def resolve_jars(jar_dir: Path, *, note: Callable[[str], None] | None = None) -> Path:
    """The directory holding the broker's runtime jars, downloaded there on first use only."""
    return fetch_jars(jar_dir, note=note)


def _run(command: list[str], *, timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        # S603: a fixed argument list built here, no shell.
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603
    except subprocess.TimeoutExpired as exc:
        raise LocalStackError(f"{what} took longer than {timeout_s:.0f}s; gave up") from exc


def new_cluster_id() -> str:
    """A KRaft cluster id the way Kafka makes them: a random UUID, base64url without padding.

    Like Kafka's Uuid.randomUuid, never one starting with '-': StorageTool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def quorum_voters(controller_ports: Mapping[int, int]) -> str:
    """`controller.quorum.voters` for combined nodes on loopback: node id -> controller port."""
    return ",".join(f"{node}@{LOOPBACK}:{port}" for node, port in sorted(controller_ports.items()))


def render_server_properties(
    *,
    broker_port: int,
    controller_port: int,
    log_dir: Path,
    internal_port: int | None = None,
    acl_admin: str | None = None,
    tls: BrokerTls | None = None,
    node_id: int = 1,
    voters: Mapping[int, int] | None = None,
) -> str:
    """server.properties for a combined broker+controller node on loopback.

    Alone by default (node 1, its own single voter). With `voters` (node id -> controller port of every
    node, this one included) it is node `node_id` of a cluster of that many nodes, with replication
    settings to match (`_replication_settings`).
    With `internal_port`, clients get a SASL_PLAINTEXT listener with SCRAM on `broker_port`, and a
    PLAINTEXT listener on `internal_port` carries inter-broker traffic and the stack's own probes.
    With `acl_admin` (a SCRAM user name) too, the StandardAuthorizer enforces ACLs (see `_acl_settings`).
    With `tls` too, the client listener is SASL_SSL (SCRAM inside TLS; client certificates required when
    `tls.client_auth`).
    """
    voters = voters if voters is not None else {node_id: controller_port}
    if voters.get(node_id) != controller_port:
        raise LocalStackError(f"node {node_id} with controller port {controller_port} is not among the voters {voters}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": quorum_voters(voters),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{broker_port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # One node gains nothing from 50 coordinator partitions; creating them made the first
        # consumer-group join take ~3s instead of ~1s.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        # Retention is enforced every 5 minutes by default: a topic with a retention of seconds (the archive's
        # tests, trying a retention change) would keep its records that long. One node checks cheaply.
        "log.retention.check.interval.ms": "2000",
    }
    settings.update(_replication_settings(len(voters)))
    if internal_port is not None:
        settings.update(_scram_listeners(broker_port, controller_port, internal_port, tls))
        if acl_admin is not None:
            settings.update(_acl_settings(acl_admin))
    lines = ["# Written by `streams dev up`; regenerated on every start.", ""]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _replication_settings(nodes: int) -> dict[str, str]:
    """Replication of the internal topics and of topics created without their own settings.

    One node: everything at 1. Three: what production runs (replication 3, min ISR 2), so an acks=all
    write survives one broker down and stalls, rather than being acknowledged by a lone replica, with two.
    A dead node is fenced after `broker.session.timeout.ms`; 6 s instead of 9 s shortens that stall on a
    laptop without making a busy machine's slow heartbeat look like a death.
    """
    if nodes == 1:
        return {}
    replicas, min_isr = str(min(nodes, 3)), str(min(nodes, 3) - 1)
    return {
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "unclean.leader.election.enable": "false",
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
    }


def _scram_listeners(
    broker_port: int, controller_port: int, internal_port: int, tls: BrokerTls | None = None
) -> dict[str, str]:
    """The client listener (SASL_PLAINTEXT, or SASL_SSL with `tls`) beside the loopback PLAINTEXT one.

    Per node: each node of a local cluster calls this with its own ports; one certificate serves them all,
    its names being those of loopback (streams.local.tls). Inter-broker, controller and the stack's probe
    traffic stay on PLAINTEXT: they never leave 127.0.0.1, and TLS there would only slow every start.
    """
    name = "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"
    clients = f"{name}://{LOOPBACK}:{broker_port}"
    internal = f"PLAINTEXT://{LOOPBACK}:{internal_port}"
    settings = {
        "listeners": f"{clients},{internal},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"{clients},{internal}",
        "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,{name}:{name},CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        # The broker verifies SCRAM against the credentials in the KRaft metadata; the login module
        # needs no options because no broker logs in over this listener.
        f"listener.name.{name.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    }
    if tls is not None:
        settings.update(tls.listener_settings(name))
    return settings


def _acl_settings(admin: str) -> dict[str, str]:
    """The StandardAuthorizer, denying whatever no ACL allows. Super users: `admin` (the stack's own SCRAM
    user, which the registry and the tests' admin use) and ANONYMOUS, the principal of the PLAINTEXT
    listeners: the controller's and the broker's internal one, which inter-broker and controller traffic and
    the stack's probes use. Both listen on loopback only."""
    return {
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:ANONYMOUS;User:{admin}",
        "allow.everyone.if.no.acl.found": "false",
    }


def format_storage(java: str, jar_dir: Path, properties_path: Path, cluster_id: str | None = None) -> None:
    """Format KRaft storage (kafka.tools.StorageTool, as kafka-storage.sh does) for `cluster_id`, else a new one.

    Every node of a cluster is formatted with the same id, or the quorum refuses them.
    """
    cluster_id = cluster_id if cluster_id is not None else new_cluster_id()
    command = [
        java, "-cp", str(jar_dir / "*"), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties_path),
    ]  # fmt: skip
    result = _run(command, timeout_s=120, what=f"formatting KRaft storage with {properties_path}")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise LocalStackError(f"formatting KRaft storage with {properties_path} failed:\n{output}")


def start_kafka(
    layout: KafkaLayout,
    *,
    jar_dir: Path,
    broker_port: int,
    controller_port: int,
    owner: Path,
    java: str,
    internal_port: int | None = None,
    acl_admin: str | None = None,
    tls: BrokerTls | None = None,
    node_id: int = 1,
    voters: Mapping[int, int] | None = None,
    cluster_id: str | None = None,
) -> int:
    """Write server.properties, format storage on first use, and launch the broker with `java`; its pid.

    `internal_port` makes the client listener SASL/SCRAM, `acl_admin` enforces ACLs, `tls` puts the client
    listener in TLS, `node_id` and `voters` make it one node of a cluster (see `render_server_properties`);
    `cluster_id` is the id to format with.
    """
    write_server_properties(
        layout,
        broker_port=broker_port,
        controller_port=controller_port,
        internal_port=internal_port,
        acl_admin=acl_admin,
        tls=tls,
        node_id=node_id,
        voters=voters,
    )
    if not layout.formatted():
        format_storage(java, jar_dir, layout.properties_path, cluster_id)
    return launch_kafka(layout, jar_dir=jar_dir, owner=owner, java=java)


def write_server_properties(
    layout: KafkaLayout,
    *,
    broker_port: int,
    controller_port: int,
    internal_port: int | None = None,
    acl_admin: str | None = None,
    tls: BrokerTls | None = None,
    node_id: int = 1,
    voters: Mapping[int, int] | None = None,
) -> None:
    """Check the node's ports are free and write its server.properties (`render_server_properties`)."""
    ports = [
        (broker_port, "choose another with --kafka-port"),
        (controller_port, "choose another with --controller-port"),
    ]
    if internal_port is not None:  # picked free a moment ago: another process just took it
        ports.append((internal_port, "start the stack again"))
    for port, hint in ports:
        if port_in_use(port):
            raise LocalStackError(f"port {port} on {LOOPBACK} is already in use; {hint}")
    layout.properties_path.parent.mkdir(parents=True, exist_ok=True)
    properties = render_server_properties(
        broker_port=broker_port,
        controller_port=controller_port,
        log_dir=layout.log_dir,
        internal_port=internal_port,
        acl_admin=acl_admin,
        tls=tls,
        node_id=node_id,
        voters=voters,
    )
    # Owner-only: with TLS it holds the broker key's password.
    descriptor = os.open(layout.properties_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(properties)
    layout.properties_path.chmod(0o600)


def launch_kafka(layout: KafkaLayout, *, jar_dir: Path, owner: Path, java: str, append_log: bool = False) -> int:
    """Run the node with the server.properties and formatted storage it already has; its pid.

    A node of a cluster restarts this way: its ports are in the other nodes' voters and in clients'
    bootstrap lists, and its storage holds its replicas, so both are kept as they are.
    """
    command = [
        java, "-Xmx512m", "-cp", str(jar_dir / "*"), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "kafka.Kafka", str(layout.properties_path),
    ]  # fmt: skip
    return spawn_detached(command, log_path=layout.log_path, owner=owner, append=append_log)


def kafka_answers(address: str, *, timeout_s: float = 2.0) -> bool:
    """True when a broker at `address` answers a metadata request within `timeout_s`."""
    host, _, port = address.rpartition(":")
    # Probe TCP first on loopback so librdkafka never logs connection-refused noise while the JVM boots.
    if host == LOOPBACK and port.isdigit() and not port_in_use(int(port)):
        return False
    return _metadata(address, timeout_s)


def _metadata(address: str, timeout_s: float) -> bool:
    from confluent_kafka import KafkaException  # noqa: PLC0415 - `streams dev --help` stays fast
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": address, "socket.connection.setup.timeout.ms": 1000})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def wait_for_kafka(pid: int, address: str, log_path: Path, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until the broker answers metadata; raise with its log tail if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise LocalStackError(f"kafka exited while starting; the end of {log_path}:\n{log_tail(log_path)}")
        if kafka_answers(address, timeout_s=2.0):
            return
        time.sleep(0.1)
    raise LocalStackError(
        f"kafka did not answer on {address} within {timeout_s:.0f}s; the end of {log_path}:\n{log_tail(log_path)}"
    )
