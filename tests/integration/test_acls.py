"""ACLs from the catalog enforced by a real broker: a stack of its own with SCRAM users and the StandardAuthorizer.

`start_stack(..., acls=True)` applies the catalog's ACLs; each service logs in as its own principal and may do
what topics.yaml says and nothing else. A refusal is one line naming principal, resource and operation, and
nothing is written; `streams acls plan` shows drift made by hand and `apply` undoes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from streams.acls import Binding
from streams.acls_admin import to_filter, to_kafka
from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.demo.samples import invoice_chain, user_action
from streams.errors import AuthorizationError, PublishError
from streams.kafka_util import read_all
from streams.local import scram
from streams.local.processes import free_port
from streams.local.stack import start_stack, stop_stack
from streams.publish import Publisher
from streams.runtime.engine import TransactionalEngine
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Message

    from streams.runtime.state import Output, PartitionState

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "streams-admin"
# Each principal's password: generated per run would do as well; fixed ones let a failure be replayed by hand.
USERS = {
    ADMIN: "adm1n-Pa55word",
    "billing-api": "b1lling-Pa55word",
    "validation-agent": "val1dation-Pa55word",
    "celery-bridge": "br1dge-Pa55word",
}
INVOICES = 3

pytestmark = pytest.mark.timeout(600)  # a stack of its own and a worker on a shared 2-core machine


class AclStack:
    """The stack, and settings or a child environment that log in as any of USERS."""

    def __init__(self, data_dir: Path) -> None:
        state = start_stack(data_dir, sasl_users=USERS, acls=True, catalog=ROOT / "topics.yaml")
        self.data_dir = data_dir
        self.bootstrap = state.services["kafka"].address
        self.redis_url = state.services["redis"].address
        assert state.services["kafka"].acls

    def settings(self, user: str = ADMIN) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            catalog_path=ROOT / "topics.yaml",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=SecretStr(USERS[user]),
        )

    def kafka(self, user: str = ADMIN) -> dict[str, str | int | float | bool]:
        settings = self.settings(user)
        return settings.kafka_config(settings.bootstrap_servers())

    def password(self, user: str) -> str:
        """USERS' password, or the one the stack generated for another catalog principal."""
        if user in USERS:
            return USERS[user]
        environment = scram.read_credentials(self.data_dir / "local", user)
        assert environment is not None, f"no credentials file for {user}"
        return environment["STREAMS_KAFKA_SASL_PASSWORD"]

    def env(self, user: str = ADMIN) -> dict[str, str]:
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_")}
        return {
            **inherited,
            **scram.client_environment(self.bootstrap, user, self.password(user)),
            "STREAMS_DATA_DIR": str(self.data_dir),
            "STREAMS_CATALOG_PATH": str(ROOT / "topics.yaml"),
            "STREAMS_REDIS_URL": self.redis_url,
        }

    def read(self, topic: str) -> list[Message]:
        """As the admin (a super user): what is really in the topic."""
        return read_all(self.kafka(), topic)

    def cli(self, *args: str, user: str = ADMIN, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env(user),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.data_dir,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclStack]:
    data_dir = tmp_path_factory.mktemp("acls")
    try:
        world = AclStack(data_dir)
        catalog = load_catalog(ROOT / "topics.yaml")
        apply_plan(plan_changes(catalog, world.kafka()), catalog, world.kafka())
        with RegistryClient(world.settings().registry_url()) as client:
            apply_schemas(catalog, client)
        yield world
    finally:
        stop_stack(data_dir)


def assert_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 1 and one line besides the service's own JSON log lines (a bridge logs its start and stop)."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert [line for line in output.strip().splitlines() if not line.startswith("{")] == [expected], output
    assert not any(password in output for password in USERS.values())


def test_the_catalogs_acls_are_on_the_broker_at_start_and_plan_shows_no_drift(stack: AclStack) -> None:
    result = stack.cli("acls", "plan", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acl plan: no changes" in result.stdout
    result = stack.cli("acls", "plan", "--output", "json")
    assert json.loads(result.stdout)["add"] == []


def test_a_producer_publishes_to_the_topic_it_owns(stack: AclStack) -> None:
    with Publisher(stack.settings("billing-api"), source="billing-api") as publisher:
        for invoice in invoice_chain(INVOICES, tenant="acl-owner"):
            publisher.publish("invoice.created", invoice).result()
    assert len(stack.read("invoice.created")) >= INVOICES


def test_publishing_to_a_topic_it_does_not_own_is_one_line_and_writes_nothing(stack: AclStack, tmp_path: Path) -> None:
    events = tmp_path / "actions.jsonl"
    events.write_text("\n".join(json.dumps(user_action(n), default=str) for n in range(3)) + "\n")
    result = stack.cli("publish", "user.action", "--file", str(events), user="billing-api")
    assert_one_line(
        result,
        "error: User:billing-api may not Write topic user.action (TOPIC_AUTHORIZATION_FAILED); run `streams acls plan`",
    )
    with (
        Publisher(stack.settings("billing-api"), source="billing-api") as publisher,
        pytest.raises(PublishError, match=r"^User:billing-api may not Write topic user\.action "),
    ):
        publisher.publish("user.action", user_action(9))
    assert stack.read("user.action") == []  # as the admin: nothing got in


def test_a_consumer_in_a_group_it_does_not_own_is_refused_in_one_line(stack: AclStack) -> None:
    # The bridge as celery-bridge may join groups `celery-bridge*` only (deploy: `--group celery-bridge`);
    # the catalog's default group streams-bridge is not its own.
    result = stack.cli("bridge", "--group", "streams-bridge", "--instance-id", "acl-test", user="celery-bridge")
    assert_one_line(
        result,
        "error: User:celery-bridge may not Read group streams-bridge (GROUP_AUTHORIZATION_FAILED);"
        " run `streams acls plan`",
    )


class _Nothing:
    """An agent that never gets to run: the engine must refuse to start first."""

    name = "acl-probe"
    sources: tuple[str, ...] = ("invoice.created",)

    def handle(self, records: list[Message], state: PartitionState, out: Output) -> None:
        del records, state, out
        raise AssertionError("no record may be handled by an engine the brokers refused")


def test_a_producer_using_another_principals_transactional_id_is_refused(stack: AclStack, tmp_path: Path) -> None:
    # validation-agent's group and changelog are its own; the transactional id is the audit writer's.
    engine = TransactionalEngine(
        stack.kafka("validation-agent"),
        _Nothing(),
        group="validation-agent-validation",
        data_dir=tmp_path,
        transactional_id="audit-agent-audit",
    )
    with pytest.raises(AuthorizationError) as refused:
        engine.run(threading.Event())
    assert str(refused.value) == (
        "User:validation-agent may not Write transactional id audit-agent-audit"
        " (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); run `streams acls plan`"
    )


def test_plan_shows_a_binding_deleted_or_granted_by_hand_and_apply_restores_the_catalogs(stack: AclStack) -> None:
    admin = AdminClient(stack.kafka())
    deleted = Binding("User:billing-api", "topic", "invoice.created", "literal", "Write")
    granted = Binding("User:billing-api", "topic", "user.action", "literal", "Write")
    for future in admin.delete_acls([to_filter(deleted)], request_timeout=30).values():
        assert future.result(), "the catalog's binding was on the broker"
    for future in admin.create_acls([to_kafka(granted)], request_timeout=30).values():
        future.result()

    plan = stack.cli("acls", "plan", "--output", "json")
    assert plan.returncode == 0, plan.stderr
    assert {(b["principal"], b["name"], b["operation"]) for b in json.loads(plan.stdout)["add"]} == {
        ("User:billing-api", "invoice.created", "Write")
    }
    assert {(b["principal"], b["name"], b["operation"]) for b in json.loads(plan.stdout)["remove"]} == {
        ("User:billing-api", "user.action", "Write")
    }
    check = stack.cli("acls", "plan", "--check")
    assert check.returncode == 1
    assert "DRIFT" in check.stdout
    assert check.stderr.strip().splitlines() == [
        f"error: the cluster's ACLs differ from {ROOT / 'topics.yaml'} in 2 binding(s); run `streams acls apply`"
    ]

    applied = stack.cli("acls", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "applied 1 addition(s) and 1 removal(s)" in applied.stdout
    again = stack.cli("acls", "apply")
    assert "no changes" in again.stdout, again.stdout
    assert stack.cli("acls", "plan", "--check").returncode == 0
    with Publisher(stack.settings("billing-api"), source="billing-api") as publisher:  # the grant is back
        publisher.publish("invoice.created", next(iter(invoice_chain(1, tenant="acl-restored")))).result()


def test_an_unmanaged_principals_acls_are_noted_and_left_alone(stack: AclStack) -> None:
    admin = AdminClient(stack.kafka())
    other = Binding("User:someone-else", "topic", "user.action", "literal", "Read")
    for future in admin.create_acls([to_kafka(other)], request_timeout=30).values():
        future.result()
    result = stack.cli("acls", "apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: User:someone-else has 1 ACL(s) the catalog does not manage (left alone)" in result.stdout
    assert "no changes" in result.stdout


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.5)


def run_worker_until(stack: AclStack, principal: str, agent: str, done: Callable[[], bool], log: Path) -> None:
    """`streams worker --agents <agent> --app-id <principal>` logged in as `principal`, until `done()`; then the
    log must show no refusal and no password."""
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "worker",
                "--agents",
                agent,
                "--app-id",
                principal,
                "--web-port",
                str(free_port()),
            ],
            env=stack.env(principal),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=stack.data_dir,
        )
    try:
        wait_for(done, 240, lambda: f"the {agent} worker; its log:\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert "AUTHORIZATION_FAILED" not in text, text[-3000:]
    assert not any(password in text for password in (*USERS.values(), stack.password(principal)))


def test_the_validation_worker_runs_as_its_own_principal_with_only_its_acls(stack: AclStack, tmp_path: Path) -> None:
    with Publisher(stack.settings("billing-api"), source="billing-api") as publisher:
        for invoice in invoice_chain(INVOICES, tenant="acl-worker"):
            publisher.publish("invoice.created", invoice).result()
    wanted = len(stack.read("invoice.created"))

    def outcomes() -> int:
        return len(stack.read("invoice.cleared")) + len(stack.read("compliance.violation"))

    run_worker_until(stack, "validation-agent", "validation", lambda: outcomes() >= wanted, tmp_path / "worker.log")
    assert stack.read("invoice.created.dlq") == []


def test_the_audit_writer_runs_as_its_own_principal_with_only_its_acls(stack: AclStack, tmp_path: Path) -> None:
    # A single elected writer: its group, leader group and topic, changelog and fixed transactional id all
    # start with `audit-agent-audit`.
    audited = len(stack.read("invoice.created"))
    run_worker_until(
        stack, "audit-agent", "audit", lambda: len(stack.read("audit.trail")) >= audited, tmp_path / "audit.log"
    )
    result = stack.cli("audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dev_up_reports_acls_and_every_catalog_principal_can_log_in_from_its_file(stack: AclStack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "dev",
            "up",
            "--sasl",
            "--acls",
            "--sasl-user",
            ADMIN,
            "--output",
            "json",
        ],
        env={**stack.env(), "STREAMS_LOCAL_SASL_PASSWORD": USERS[ADMIN]},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["already_running"] is True
    assert report["services"]["kafka"]["acls"] is True
    principals = stack.data_dir / "local" / scram.PRINCIPALS_DIR
    assert principals.stat().st_mode & 0o077 == 0
    # A principal the test gave no password got a generated one, in a file only its owner reads.
    environment = scram.read_credentials(stack.data_dir / "local", "indexing-agent")
    assert environment is not None
    assert (principals / "indexing-agent.env").stat().st_mode & 0o077 == 0
    assert environment["STREAMS_KAFKA_SASL_USERNAME"] == "indexing-agent"
    assert scram.scram_login_works(stack.bootstrap, "indexing-agent", environment["STREAMS_KAFKA_SASL_PASSWORD"])
    # ... and the passwords the stack was given are the ones in the files.
    billing = scram.read_credentials(stack.data_dir / "local", "billing-api")
    assert billing is not None
    assert billing["STREAMS_KAFKA_SASL_PASSWORD"] == (USERS["billing-api"])


def test_a_principal_that_may_not_see_acls_gets_one_line_not_an_empty_plan(stack: AclStack) -> None:
    # The broker answers its DescribeAcls with an empty list: without the check, every binding would look missing.
    result = stack.cli("acls", "plan", user="billing-api")
    assert_one_line(
        result,
        "error: User:billing-api may not Describe the cluster's ACLs"
        " (CLUSTER_AUTHORIZATION_FAILED); run `streams acls` as a super user or a principal"
        " allowed Describe on the cluster",
    )


def test_a_cluster_without_an_authorizer_is_one_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_")}
    env = {
        **inherited,
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMS_DATA_DIR": str(tmp_path),
        "STREAMS_CATALOG_PATH": str(ROOT / "topics.yaml"),
    }
    for command in ("plan", "apply"):
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", "acls", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert_one_line(
            result,
            "error: the cluster has no authorizer, so it keeps no ACLs: set authorizer.class.name="
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer on the brokers (locally:"
            " `streams dev up --sasl --acls`)",
        )


def test_replay_reads_what_its_principal_consumes_and_is_refused_the_rest(stack: AclStack, tmp_path: Path) -> None:
    allowed = stack.cli("replay", "audit.trail", "--export", str(tmp_path / "trail"), user="streams-replay")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    refused = stack.cli("replay", "invoice.created", "--export", str(tmp_path / "invoices"), user="streams-replay")
    assert_one_line(
        refused,
        "error: User:streams-replay may not Read topic invoice.created"
        " (TOPIC_AUTHORIZATION_FAILED); run `streams acls plan`",
    )
    assert not (tmp_path / "invoices" / "manifest.json").exists()


def test_the_outbox_relay_as_its_service_publishes_what_it_owns_and_parks_the_rest_with_the_refusal(
    stack: AclStack, tmp_path: Path
) -> None:
    from streams.outbox import Outbox  # noqa: PLC0415 - this test only
    from streams.outbox.commands import create_table  # noqa: PLC0415
    from streams.outbox.relay import Relay, RelayOptions  # noqa: PLC0415
    from streams.outbox.table import connect  # noqa: PLC0415
    from tests.integration.outbox_support import pending  # noqa: PLC0415

    dsn, table = f"sqlite:///{tmp_path / 'billing.db'}", "outbox"
    create_table(dsn, table)
    before = len(stack.read("invoice.created"))
    outbox = Outbox(stack.settings("billing-api"), source="billing-api", table=table)
    conn = connect(dsn)
    try:
        conn.execute("BEGIN")
        owned = outbox.add(conn, "invoice.created", next(iter(invoice_chain(1, tenant="acl-outbox"))))
        foreign = outbox.add(conn, "user.action", user_action(1))
        conn.commit()
    finally:
        conn.close()
        outbox.close()
    relay = Relay(RelayOptions(dsn=dsn, table=table, batch_size=10), stack.settings("billing-api"))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: pending(dsn, table)[0] == 0, 60, lambda: f"an empty outbox (have {pending(dsn, table)})")
    finally:
        stop.set()
        thread.join(30)
    assert pending(dsn, table) == (0, 1)
    conn = connect(dsn)
    try:
        reasons = dict(conn.execute(f"SELECT event_id, parked_reason FROM {table}").fetchall())  # noqa: S608
    finally:
        conn.close()
    assert owned not in reasons
    assert reasons[foreign] == (
        "User:billing-api may not Write topic user.action (TOPIC_AUTHORIZATION_FAILED); run `streams acls plan`"
    )
    assert len(stack.read("invoice.created")) == before + 1
    assert stack.read("user.action") == []


def test_the_registry_runs_as_its_platform_principal_and_registers_a_schema(stack: AclStack, tmp_path: Path) -> None:
    import httpx  # noqa: PLC0415 - this test only

    port = free_port()
    log = tmp_path / "registry.log"
    with log.open("ab") as out:
        registry = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "registry", "serve", "--port", str(port)],
            env=stack.env("streams-registry"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=stack.data_dir,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/subjects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 120, lambda: f"the registry on {url}; its log:\n{log.read_text(errors='replace')[-3000:]}")
        assert "invoice.created-value" in httpx.get(f"{url}/subjects", timeout=10).json()  # read _schemas
        schema = {"type": "record", "name": "AclProbe", "fields": [{"name": "id", "type": "string"}]}
        written = httpx.post(
            f"{url}/subjects/acl-probe-value/versions", timeout=30, json={"schema": json.dumps(schema)}
        )  # a transaction on _schemas
        assert written.status_code == 200, written.text
    finally:
        if registry.poll() is None:
            os.killpg(registry.pid, 15)
        registry.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert "AUTHORIZATION_FAILED" not in text, text[-3000:]
    assert not any(password in text for password in (*USERS.values(), stack.password("streams-registry")))


def test_the_bridge_runs_as_celery_bridge_in_its_own_group(stack: AclStack, tmp_path: Path) -> None:
    import redis  # noqa: PLC0415 - this test only

    from streams.bridge.celery_wire import queue_keys  # noqa: PLC0415

    cleared = len(stack.read("invoice.cleared"))
    assert cleared > 0, "the validation worker test runs first and clears invoices"
    client = redis.Redis.from_url(stack.redis_url)
    log = tmp_path / "bridge.log"

    def queued() -> int:
        return sum(int(client.llen(key)) for key in queue_keys("default"))

    with log.open("ab") as out:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "bridge", "--group", "celery-bridge", "--instance-id", "acl-bridge"],
            env=stack.env("celery-bridge"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=stack.data_dir,
        )
    try:
        wait_for(
            lambda: queued() >= cleared,
            180,
            lambda: f"{cleared} tasks in Redis (have {queued()}); bridge log:\n{log.read_text()[-3000:]}",
        )
    finally:
        if bridge.poll() is None:
            os.killpg(bridge.pid, 15)
        bridge.wait(timeout=60)
        client.close()
    text = log.read_text(errors="replace")
    assert "AUTHORIZATION_FAILED" not in text, text[-3000:]
    assert not any(password in text for password in USERS.values())
