"""A local Kafka cluster of combined KRaft nodes (`streams dev up --brokers 3`): ports, one cluster id, start,
kill -9 and restart of a node by id, and which node is the active controller.

streams.local.stack starts and records the cluster; tests and operators use `kill_node`, `start_node` and
`quorum_leader` on the recorded stack.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local import binaries, kafka
from streams.local.processes import LOOPBACK, free_port, is_running, port_in_use, stop_process_group
from streams.local.state import NodeState, ServiceState, read_state, write_state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streams.local.tls import BrokerTls

CLUSTER_SIZES = (1, 3)  # one node, or production's replication 3 with min ISR 2
METADATA_TOPIC = "__cluster_metadata"
DESCRIBE_QUORUM = 55  # Kafka API key (KIP-595); v0 is flexible: request header v2, response header v1


@dataclass(frozen=True)
class NodePorts:
    """The loopback ports of one node: clients, controller quorum, and (with SASL) the internal listener."""

    node_id: int
    broker: int
    controller: int
    internal: int | None = None

    @property
    def probe_address(self) -> str:
        """The address the stack itself talks to: the PLAINTEXT one, internal when clients need SASL."""
        return f"{LOOPBACK}:{self.internal if self.internal is not None else self.broker}"


def allocate_ports(
    count: int, *, broker_port: int | None = None, controller_port: int | None = None, internal: bool = False
) -> list[NodePorts]:
    """Distinct free ports for `count` nodes; node 1 takes `broker_port` / `controller_port` when given."""
    taken: set[int] = {port for port in (broker_port, controller_port) if port is not None}

    def pick() -> int:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        return port

    nodes = []
    for node_id in range(1, count + 1):
        broker = broker_port if node_id == 1 and broker_port is not None else pick()
        controller = controller_port if node_id == 1 and controller_port is not None else pick()
        nodes.append(NodePorts(node_id, broker, controller, pick() if internal else None))
    return nodes


def start_nodes(
    local_dir: Path,
    ports: Sequence[NodePorts],
    *,
    java: str,
    jar_dir: Path,
    owner: Path,
    acl_admin: str | None = None,
    tls: BrokerTls | None = None,
) -> list[NodeState]:
    """Configure, format (one cluster id for all, the one already on disk if any node has it) and start every
    node, then wait until each answers a metadata request; on any failure, stop what was started."""
    voters = {node.node_id: node.controller for node in ports}
    # One node keeps the single stack's layout (`kafka/`, `kafka.log`); a cluster's node N is `kafka-N/`.
    layouts = {node.node_id: kafka.KafkaLayout(local_dir, node.node_id if len(ports) > 1 else None) for node in ports}
    for node in ports:
        kafka.write_server_properties(
            layouts[node.node_id],
            broker_port=node.broker,
            controller_port=node.controller,
            internal_port=node.internal,
            acl_admin=acl_admin,
            tls=tls,
            node_id=node.node_id,
            voters=voters,
        )
    known = {layout.cluster_id() for layout in layouts.values()} - {None}
    if len(known) > 1:
        raise LocalStackError(
            f"the nodes under {local_dir} were formatted for different clusters ({', '.join(sorted(map(str, known)))});"
            " delete them with `streams dev down --purge`"
        )
    cluster_id = known.pop() if known else kafka.new_cluster_id()
    unformatted = [layout for layout in layouts.values() if not layout.formatted()]
    with ThreadPoolExecutor(max_workers=len(ports)) as pool:  # each format is a JVM start: in parallel
        for future in [
            pool.submit(kafka.format_storage, java, jar_dir, layout.properties_path, cluster_id)
            for layout in unformatted
        ]:
            future.result()
    pids: list[int] = []
    try:
        launched = (kafka.launch_kafka(layouts[n.node_id], jar_dir=jar_dir, owner=owner, java=java) for n in ports)
        pids.extend(launched)  # one by one: what started before a failure is in `pids`, and stopped below
        # No node answers before a majority of voters is up and has elected a leader: all are launched first.
        for node, pid in zip(ports, pids, strict=True):
            kafka.wait_for_kafka(pid, node.probe_address, layouts[node.node_id].log_path)
    except BaseException:  # Ctrl-C included: never leave an unrecorded broker running
        for pid in pids:
            stop_process_group(pid, timeout_s=10.0)
        raise
    return [_node_state(node, pid, layouts[node.node_id]) for node, pid in zip(ports, pids, strict=True)]


def _node_state(node: NodePorts, pid: int, layout: kafka.KafkaLayout) -> NodeState:
    return NodeState(
        node_id=node.node_id,
        pid=pid,
        address=f"{LOOPBACK}:{node.broker}",
        controller_address=f"{LOOPBACK}:{node.controller}",
        internal_address=f"{LOOPBACK}:{node.internal}" if node.internal is not None else None,
        log_path=str(layout.log_path),
    )


def _cluster(data_dir: Path) -> ServiceState:
    state = read_state(data_dir.resolve())
    broker = state.services.get("kafka") if state is not None else None
    if broker is None or not broker.nodes:
        raise LocalStackError(
            f"no local Kafka cluster recorded in {data_dir.resolve() / 'local'}; start one with"
            " `streams dev up --brokers 3`"
        )
    return broker


def _node(broker: ServiceState, node_id: int) -> NodeState:
    for node in broker.nodes:
        if node.node_id == node_id:
            return node
    raise LocalStackError(f"the local cluster has no node {node_id} (it has {[n.node_id for n in broker.nodes]})")


def cluster_nodes(data_dir: Path) -> tuple[NodeState, ...]:
    """The recorded nodes of the local cluster for `data_dir` (pids as last started)."""
    return _cluster(data_dir).nodes


def kill_node(data_dir: Path, node_id: int) -> NodeState:
    """kill -9 one node (its whole process group) and wait until it is gone: a crash, not a shutdown."""
    node = _node(_cluster(data_dir), node_id)
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        return node
    deadline = time.monotonic() + 10
    while is_running(node.pid):
        if time.monotonic() > deadline:
            raise LocalStackError(f"kafka node {node_id} (pid {node.pid}) survived SIGKILL")
        time.sleep(0.05)
    return node


def start_node(
    data_dir: Path, node_id: int, *, cache_dir: Path | None = None, timeout_s: float = kafka.READY_TIMEOUT_S
) -> NodeState:
    """Start a stopped (or killed) node again on its ports, its server.properties and its formatted storage,
    wait until it answers, and record its new pid; a node that runs is returned as it is."""
    data_dir = data_dir.resolve()
    broker = _cluster(data_dir)
    node = _node(broker, node_id)
    if is_running(node.pid):
        return node
    layout = kafka.KafkaLayout(data_dir / "local", node_id)
    if not layout.formatted():
        raise LocalStackError(f"kafka node {node_id} has no formatted storage in {layout.log_dir}")
    for address in filter(None, (node.address, node.controller_address, node.internal_address)):
        deadline = time.monotonic() + 10  # a node killed a moment ago may still be closing its sockets
        while port_in_use(int(address.rpartition(":")[2])):
            if time.monotonic() > deadline:
                raise LocalStackError(f"cannot restart kafka node {node_id}: {address} is taken by another process")
            time.sleep(0.2)
    jar_dir = kafka.resolve_jars(cache_dir if cache_dir is not None else kafka.default_cache_dir(kafka.kafka_version()))
    pid = kafka.launch_kafka(layout, jar_dir=jar_dir, owner=data_dir, java=binaries.find_java().path, append_log=True)
    try:
        kafka.wait_for_kafka(pid, node.internal_address or node.address, layout.log_path, timeout_s=timeout_s)
    except BaseException:
        stop_process_group(pid, timeout_s=10.0)
        raise
    restarted = node.model_copy(update={"pid": pid})
    _record(data_dir, restarted)
    return restarted


def _record(data_dir: Path, node: NodeState) -> None:
    state = read_state(data_dir)
    if state is None:
        return
    broker = state.services["kafka"]
    nodes = tuple(node if n.node_id == node.node_id else n for n in broker.nodes)
    update: dict[str, object] = {"nodes": nodes}
    if node.node_id == nodes[0].node_id:
        update["pid"] = node.pid
    services = {**state.services, "kafka": broker.model_copy(update=update)}
    write_state(data_dir, state.model_copy(update={"services": services}))


def quorum_leader(nodes: Sequence[NodeState], *, timeout_s: float = 2.0) -> int | None:
    """The node id of the active controller (the KRaft quorum's leader), or None while there is none.

    Asked with DescribeQuorum on each node's controller listener: only the leader answers it without
    NOT_LEADER_OR_FOLLOWER. (A client's DescribeCluster names a random broker as "controller" under KRaft,
    KIP-919, so it cannot tell.)
    """
    for node in nodes:
        leader = _describe_quorum(node.controller_address, timeout_s)
        if leader is not None:
            return leader
    return None


def _describe_quorum(address: str, timeout_s: float) -> int | None:
    host, _, port = address.rpartition(":")
    client = b"streams-local"
    topic = METADATA_TOPIC.encode()
    header = struct.pack(">hhih", DESCRIBE_QUORUM, 0, 1, len(client)) + client + b"\x00"
    # topics: compact array of 1 (2), name as a compact string (length + 1), partitions: compact array of 1
    # holding partition 0; a tagged-field count of 0 closes the partition, the topic and the request.
    body = bytes([2, len(topic) + 1]) + topic + bytes([2]) + struct.pack(">i", 0) + b"\x00\x00\x00"
    request = header + body
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _read(sock, 4))[0]
            response = _read(sock, size)
    except (OSError, struct.error):
        return None
    return _leader_of(response)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _leader_of(response: bytes) -> int | None:
    """LeaderId from a DescribeQuorum v0 response, or None when the node answered with an error."""
    position = 4  # correlation id
    position += _uvarint_size(response, position)  # header's tagged fields: none
    (error,) = struct.unpack_from(">h", response, position)
    position += 2
    if error != 0:
        return None
    if response[position] != 2:  # exactly one topic
        return None
    position += 1
    name_length = response[position] - 1
    position += 1 + name_length
    position += 1  # partitions: compact array of one
    _partition, partition_error, leader = struct.unpack_from(">ihi", response, position)
    return leader if partition_error == 0 and leader >= 0 else None


def _uvarint_size(data: bytes, position: int) -> int:
    size = 1
    while data[position + size - 1] & 0x80:
        size += 1
    return size
