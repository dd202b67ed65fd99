"""The three-node local cluster without a broker: each node's server.properties, ports, layout, the state file's
nodes, `dev status` rows, the DescribeQuorum answer, and `dev up --brokers` refusing sizes it does not run."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.errors import LocalStackError
from streams.local import cluster, kafka
from streams.local.commands import _rows
from streams.local.stack import start_stack
from streams.local.state import NodeState, ServiceState, StackState, read_state, write_state

if TYPE_CHECKING:
    from pathlib import Path

VOTERS = {1: 39101, 2: 39111, 3: 39121}


def node_properties(
    tmp_path: Path, node_id: int, *, internal: int | None = None, admin: str | None = None
) -> dict[str, str]:
    text = kafka.render_server_properties(
        broker_port=39100 + 10 * (node_id - 1),
        controller_port=VOTERS[node_id],
        log_dir=tmp_path / f"kafka-{node_id}" / "data",
        internal_port=internal,
        acl_admin=admin,
        node_id=node_id,
        voters=VOTERS,
    )
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_each_node_has_its_id_ports_and_data_dir_and_all_share_the_three_voters(tmp_path: Path) -> None:
    rendered = [node_properties(tmp_path, node_id) for node_id in (1, 2, 3)]
    voters = "1@127.0.0.1:39101,2@127.0.0.1:39111,3@127.0.0.1:39121"
    for node_id, properties in enumerate(rendered, start=1):
        broker, controller = 39100 + 10 * (node_id - 1), VOTERS[node_id]
        assert properties["node.id"] == str(node_id)
        assert properties["process.roles"] == "broker,controller"
        assert properties["controller.quorum.voters"] == voters
        assert properties["listeners"] == f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}"
        assert properties["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{broker}"
        assert properties["log.dirs"] == str(tmp_path / f"kafka-{node_id}" / "data")
    assert len({p["log.dirs"] for p in rendered}) == 3


def test_three_nodes_replicate_like_production_and_one_node_stays_at_one(tmp_path: Path) -> None:
    three = node_properties(tmp_path, 2)
    assert {key: three[key] for key in three if "replication" in key or "isr" in key or "insync" in key} == {
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "share.coordinator.state.topic.replication.factor": "3",
        "share.coordinator.state.topic.min.isr": "2",
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
    }
    assert three["unclean.leader.election.enable"] == "false"
    one = kafka.render_server_properties(broker_port=39092, controller_port=39093, log_dir=tmp_path / "d")
    assert "min.insync.replicas" not in one
    assert "default.replication.factor" not in one
    assert "offsets.topic.replication.factor=1" in one.splitlines()


def test_with_sasl_and_acls_every_node_gets_the_same_listener_shape_and_authorizer(tmp_path: Path) -> None:
    for node_id in (1, 2, 3):
        properties = node_properties(tmp_path, node_id, internal=39200 + node_id, admin="streams")
        assert properties["inter.broker.listener.name"] == "PLAINTEXT"
        assert f"PLAINTEXT://127.0.0.1:{39200 + node_id}" in properties["advertised.listeners"]
        assert properties["authorizer.class.name"] == kafka.AUTHORIZER
        assert properties["super.users"] == "User:ANONYMOUS;User:streams"
        assert properties["controller.quorum.voters"] == "1@127.0.0.1:39101,2@127.0.0.1:39111,3@127.0.0.1:39121"


def test_a_node_must_be_among_the_voters_with_its_own_controller_port(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="not among the voters"):
        kafka.render_server_properties(
            broker_port=39100, controller_port=39999, log_dir=tmp_path, node_id=1, voters=VOTERS
        )


def test_nodes_get_distinct_ports_and_node_1_the_requested_ones() -> None:
    nodes = cluster.allocate_ports(3, broker_port=39092, controller_port=39093, internal=True)
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert (nodes[0].broker, nodes[0].controller) == (39092, 39093)
    ports = [p for n in nodes for p in (n.broker, n.controller, n.internal)]
    assert len(set(ports)) == 9
    assert nodes[1].probe_address == f"127.0.0.1:{nodes[1].internal}"
    assert cluster.allocate_ports(1)[0].internal is None


def test_each_node_has_its_own_layout_and_the_single_node_keeps_the_old_one(tmp_path: Path) -> None:
    single, second = kafka.KafkaLayout(tmp_path), kafka.KafkaLayout(tmp_path, 2)
    assert single.properties_path == tmp_path / "kafka" / "server.properties"
    assert single.log_path == tmp_path / "kafka.log"
    assert second.properties_path == tmp_path / "kafka-2" / "server.properties"
    assert second.log_dir == tmp_path / "kafka-2" / "data"
    assert second.log_path == tmp_path / "kafka-2.log"
    assert second.cluster_id() is None
    second.log_dir.mkdir(parents=True)
    (second.log_dir / "meta.properties").write_text("version=1\ncluster.id=AbCdEf\nnode.id=2\n")
    assert second.cluster_id() == "AbCdEf"


def cluster_state(tmp_path: Path) -> StackState:
    nodes = tuple(
        NodeState(
            node_id=n,
            pid=999_000 + n,
            address=f"127.0.0.1:{39100 + n}",
            controller_address=f"127.0.0.1:{39110 + n}",
            log_path=str(tmp_path / f"kafka-{n}.log"),
        )
        for n in (1, 2, 3)
    )
    kafka_service = ServiceState(
        name="kafka",
        pid=nodes[0].pid,
        address=",".join(n.address for n in nodes),
        log_path=nodes[0].log_path,
        nodes=nodes,
    )
    return StackState(data_dir=str(tmp_path), services={"kafka": kafka_service})


def test_the_state_file_keeps_every_node_and_status_shows_one_row_per_node(tmp_path: Path) -> None:
    state = cluster_state(tmp_path)
    write_state(tmp_path, state)
    again = read_state(tmp_path)
    assert again == state
    assert again is not None
    assert again.services["kafka"].pids() == [999_001, 999_002, 999_003]
    assert [(name, service.address) for name, service in _rows(again)] == [
        ("kafka-1", "127.0.0.1:39101"),
        ("kafka-2", "127.0.0.1:39102"),
        ("kafka-3", "127.0.0.1:39103"),
    ]
    assert again.address("kafka") is None  # no node runs: no address for clients
    assert cluster.cluster_nodes(tmp_path) == state.services["kafka"].nodes
    with pytest.raises(LocalStackError, match="has no node 4"):
        cluster.kill_node(tmp_path, 4)


def test_the_quorum_leader_is_read_from_a_describe_quorum_answer() -> None:
    topic = b"__cluster_metadata"

    def answer(error: int, partition_error: int, leader: int) -> bytes:
        head = struct.pack(">i", 1) + b"\x00" + struct.pack(">h", error)
        body = bytes([2, len(topic) + 1]) + topic + bytes([2]) + struct.pack(">ihi", 0, partition_error, leader)
        return head + body + struct.pack(">iq", 7, 100) + b"\x00" * 4

    assert cluster._leader_of(answer(0, 0, 2)) == 2
    assert cluster._leader_of(answer(0, 6, 2)) is None  # NOT_LEADER_OR_FOLLOWER: ask the next node
    assert cluster._leader_of(answer(0, 0, -1)) is None  # an election is on
    assert cluster._leader_of(answer(58, 0, 1)) is None


def test_start_stack_refuses_a_size_it_does_not_run(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="1 or 3 Kafka brokers, not 2"):
        start_stack(tmp_path, brokers=2)


def test_dev_up_brokers_is_one_line_for_a_size_it_does_not_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dev", "up", "--brokers", "2"], env={"STREAMS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: Invalid value for '--brokers': '2' is not one of '1', '3'.")
