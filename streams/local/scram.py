"""SASL/SCRAM for the local broker: users, the client settings that reach them, and the credentials file.

Users are created over the broker's internal PLAINTEXT listener with the Admin API on every start, so a
data dir formatted without SASL (or with other passwords) gets the requested ones too.
"""

from __future__ import annotations

import os
import secrets
import shlex
import time
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local.kafka import SCRAM_MECHANISM
from streams.local.processes import is_running, log_tail

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from confluent_kafka.admin import UserScramCredentialAlteration

    from streams.local.tls import ClientTls

CREDENTIALS_FILE = "sasl.env"
PRINCIPALS_DIR = "principals"  # with ACLs: one credentials file per catalog principal
DEFAULT_USER = "streams"
SCRAM_ITERATIONS = 8192  # Kafka's kafka-configs.sh default
READY_TIMEOUT_S = 60.0


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def client_environment(bootstrap: str, username: str, password: str, tls: ClientTls | None = None) -> dict[str, str]:
    """The STREAMS_* variables that make every client log in to the local SCRAM listener as `username`
    (inside TLS with `tls`: the CA file, and the client's certificate and key under mTLS)."""
    return {
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL" if tls is not None else "SASL_PLAINTEXT",
        "STREAMS_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "STREAMS_KAFKA_SASL_USERNAME": username,
        "STREAMS_KAFKA_SASL_PASSWORD": password,
        **(tls.environment() if tls is not None else {}),
    }


def credentials_path(local_dir: Path, principal: str | None = None) -> Path:
    """`<local>/sasl.env` (the stack's own user), or `<local>/principals/<name>.env` for a catalog principal."""
    return local_dir / CREDENTIALS_FILE if principal is None else local_dir / PRINCIPALS_DIR / f"{principal}.env"


def write_credentials(local_dir: Path, environment: Mapping[str, str], principal: str | None = None) -> Path:
    """`export` lines for a shell (`source <path>`), readable by the owner only: it holds a password."""
    path = credentials_path(local_dir, principal)
    path.parent.mkdir(parents=True, exist_ok=True)
    if principal is not None:
        path.parent.chmod(0o700)  # a directory of passwords
    lines = ["# Written by `streams dev up --sasl`: source it to talk to the local SCRAM listener."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC
    return path


def read_credentials(local_dir: Path, principal: str | None = None) -> dict[str, str] | None:
    """The variables `write_credentials` recorded, or None when there is no such file."""
    path = credentials_path(local_dir, principal)
    if not path.exists():
        return None
    environment = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            parsed = shlex.split(value)
            environment[name] = parsed[0] if parsed else ""
    return environment


def create_users(internal_address: str, users: Mapping[str, str], *, timeout_s: float = 30.0) -> None:
    """Create or update each user's SCRAM credential (idempotent), over the unauthenticated internal listener."""
    from confluent_kafka import KafkaException  # noqa: PLC0415 - `streams dev --help` stays fast
    from confluent_kafka.admin import (  # noqa: PLC0415
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": internal_address})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, password.encode()) for name, password in users.items()
    ]
    futures = admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise LocalStackError(
                f"cannot create the SCRAM user '{name}' on {internal_address}: {exc.args[0]}"
            ) from exc


def scram_login_works(
    address: str, username: str, password: str, *, timeout_s: float = 2.0, tls: ClientTls | None = None
) -> bool:
    """True when `username` logs in on the SCRAM listener at `address` (over TLS with `tls`) and reads metadata."""
    from confluent_kafka import KafkaException  # noqa: PLC0415 - `streams dev --help` stays fast
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient(
        {
            **client_config(address, username, password, tls),
            "socket.connection.setup.timeout.ms": 1000,
            "log_level": 0,  # a refused login is this function's False, not librdkafka's lines on stderr
        }
    )
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def client_config(address: str, username: str, password: str, tls: ClientTls | None = None) -> dict[str, str]:
    return {
        "bootstrap.servers": address,
        "security.protocol": "SASL_SSL" if tls is not None else "SASL_PLAINTEXT",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": username,
        "sasl.password": password,
        **(tls.librdkafka() if tls is not None else {}),
    }


def wait_for_login(
    pid: int,
    address: str,
    username: str,
    password: str,
    log_path: Path,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    tls: ClientTls | None = None,
) -> None:
    """Block until `username` can log in (new credentials take a moment to reach the broker's metadata)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise LocalStackError(f"kafka exited while starting; the end of {log_path}:\n{log_tail(log_path)}")
        if scram_login_works(address, username, password, tls=tls):
            return
        time.sleep(0.2)
    raise LocalStackError(
        f"user '{username}' could not log in with {SCRAM_MECHANISM} on {address} within {timeout_s:.0f}s;"
        f" the end of {log_path}:\n{log_tail(log_path)}"
    )
