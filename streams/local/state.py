"""The local stack's state file: what runs, on which ports, with which pids and logs.

`streams dev up` writes it; `status`, `down` and every client that has no explicit address read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

STATE_FILE = "stack.json"


class NodeState(BaseModel):
    """One Kafka node of a local cluster (`streams dev up --brokers 3`): its own process, ports and log."""

    model_config = ConfigDict(frozen=True)

    node_id: int
    pid: int
    address: str  # its client listener
    controller_address: str
    log_path: str
    internal_address: str | None = None  # its PLAINTEXT listener, when the client one is SASL

    def alive(self) -> bool:
        return _alive(self.pid)


class ServiceState(BaseModel):
    """One process of the stack (Kafka with several nodes: one per node, in `nodes`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    address: str
    log_path: str
    # Kafka with a SASL/SCRAM client listener (`address`) also has a PLAINTEXT one for the stack's probes.
    security_protocol: str = "PLAINTEXT"
    internal_address: str | None = None
    sasl_users: tuple[str, ...] = ()
    acls: bool = False  # the StandardAuthorizer enforces ACLs (`streams dev up --sasl --acls`)
    mtls: bool = False  # the SASL_SSL listener also requires client certificates (`streams dev up --tls --mtls`)
    # A cluster: every node; then `address` (and `internal_address`) list all of them, and `pid` is node 1's
    # when the stack started, kept for readers that know one broker only.
    nodes: tuple[NodeState, ...] = ()

    def alive(self) -> bool:
        """True while the process exists (signal 0 probes without touching it); a cluster while any node does."""
        if self.nodes:
            return any(node.alive() for node in self.nodes)
        return _alive(self.pid)

    def pids(self) -> list[int]:
        """Every process of the service: each node's for a cluster, else the one."""
        return [node.pid for node in self.nodes] if self.nodes else [self.pid]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StackState(BaseModel):
    """Everything `streams dev up` started, keyed by service name (kafka, redis, registry)."""

    model_config = ConfigDict(frozen=True)

    data_dir: str
    services: dict[str, ServiceState]

    def address(self, name: str) -> str | None:
        """The address of a running service, or None when it is absent or dead."""
        service = self.services.get(name)
        if service is None or not service.alive():
            return None
        return service.address


def state_path(data_dir: Path) -> Path:
    return data_dir / "local" / STATE_FILE


def read_state(data_dir: Path) -> StackState | None:
    """The recorded stack, or None when `streams dev up` has not run (or ran down)."""
    path = state_path(data_dir)
    if not path.exists():
        return None
    return StackState.model_validate(json.loads(path.read_text()))


def write_state(data_dir: Path, state: StackState) -> None:
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2, exclude_defaults=True))
    tmp.replace(path)


def clear_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)
