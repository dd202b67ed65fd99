"""TLS + SCRAM + ACLs end to end on a three-broker cluster of its own (`start_stack(..., brokers=3, tls=True, ...)`).

Every client runs as its catalog principal over SASL_SSL with a client certificate: publisher, validation and
audit workers, the registry, the bridge with a real Celery worker, replay with a signed evidence export, the
outbox relay and the console. A certificate from another CA, an expired certificate, a wrong password and a
missing ACL are each one line naming the principal; and no log, metric, dead letter or error of the run holds a
password or a private key.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from confluent_kafka import Producer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from streams.admin import apply_plan, plan_changes
from streams.catalog import load_catalog
from streams.console.auth import hash_password
from streams.demo.samples import invoice_chain, user_action
from streams.errors import ConfigError
from streams.kafka_util import read_all
from streams.local import kafka, scram, tls
from streams.local.processes import free_port
from streams.local.stack import local_dir, start_stack, stop_stack
from streams.publish import Publisher
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Message

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "streams-admin"
TENANT = "tls-co"
INVOICES = 4

pytestmark = pytest.mark.timeout(900)  # a stack of its own and seven client processes on a shared 2-core machine

# What the run showed anyone: (where, text). The last test scans it all for secrets, and for the bodies of
# these private keys besides the stack's own (the evidence signing key).
CAPTURED: list[tuple[str, str]] = []
OTHER_KEYS: list[Path] = []


class TlsStack:
    """The stack, and the settings or child environment of any principal, from the files the stack wrote."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        state = start_stack(
            data_dir,
            sasl_users={ADMIN: scram.generate_password()},
            acls=True,
            tls=True,
            mtls=True,
            catalog=ROOT / "topics.yaml",
            brokers=3,
        )
        self.kafka_state = state.services["kafka"]
        self.redis_url = state.services["redis"].address
        self.registry_url = state.services["registry"].address
        self.local = local_dir(data_dir)

    def variables(self, user: str = ADMIN) -> dict[str, str]:
        """The STREAMS_KAFKA_* variables the stack wrote for `user` (sasl.env for the admin)."""
        environment = scram.read_credentials(self.local, None if user == ADMIN else user)
        assert environment is not None, f"no credentials file for {user}"
        return environment

    def env(self, user: str = ADMIN, **overrides: str) -> dict[str, str]:
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("STREAMS_")}
        return {
            **inherited,
            **self.variables(user),
            "STREAMS_DATA_DIR": str(self.data_dir),
            "STREAMS_CATALOG_PATH": str(ROOT / "topics.yaml"),
            "STREAMS_PROFILE": "cluster",  # replication 3, min ISR 2: the cluster's own defaults
            "STREAMS_REDIS_URL": self.redis_url,
            **overrides,
        }

    def settings(self, user: str = ADMIN, **overrides: str) -> Settings:
        values = {
            name.removeprefix("STREAMS_").lower(): value
            for name, value in self.env(user, **overrides).items()
            if name.startswith("STREAMS_")
        }
        return Settings(**values)  # type: ignore[arg-type]

    def kafka(self, user: str = ADMIN) -> dict[str, str | int | float | bool]:
        settings = self.settings(user)
        return settings.kafka_config(settings.bootstrap_servers())

    def read(self, topic: str) -> list[Message]:
        return read_all(self.kafka(), topic)  # as the admin, a super user: what is really there

    def cli(self, *args: str, user: str = ADMIN, timeout: float = 120, **overrides: str) -> str:
        """Run a command to its end; its exit code and output (also captured for the secrets scan)."""
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.env(user, **overrides),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.data_dir,
        )
        output = result.stdout + result.stderr
        CAPTURED.append((f"streams {' '.join(args)} as {user}", output))
        return f"{result.returncode}\n{output}"

    def spawn(self, command: list[str], log: Path, user: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                command,
                env=self.env(user),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
            )

    def passwords(self) -> list[str]:
        """Every SCRAM password the stack generated: its own user's and each catalog principal's."""
        found = [scram.read_credentials(self.local)]
        found += [
            scram.read_credentials(self.local, path.stem) for path in (self.local / scram.PRINCIPALS_DIR).glob("*.env")
        ]
        return [environment["STREAMS_KAFKA_SASL_PASSWORD"] for environment in found if environment]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    data_dir = tmp_path_factory.mktemp("tls")
    try:
        world = TlsStack(data_dir)
        catalog = load_catalog(ROOT / "topics.yaml", "cluster")
        apply_plan(plan_changes(catalog, world.kafka()), catalog, world.kafka())
        with RegistryClient(world.registry_url) as client:  # the stack's registry reads _schemas over SASL_SSL
            apply_schemas(catalog, client)
        yield world
    finally:
        stop_stack(data_dir)


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def scrape(url: str) -> str:
    text = httpx.get(url, timeout=10).text
    CAPTURED.append((url, text))
    return text


def test_the_client_files_name_tls_and_keep_keys_owner_only(stack: TlsStack) -> None:
    assert stack.kafka_state.security_protocol == "SASL_SSL"
    assert stack.kafka_state.mtls
    admin = stack.variables(ADMIN)
    billing = stack.variables("billing-api")
    for user, environment in ((ADMIN, admin), ("billing-api", billing)):
        assert environment["STREAMS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert environment["STREAMS_KAFKA_SSL_CA_LOCATION"] == str(stack.local / "tls" / "ca.crt")
        certificate = Path(environment["STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION"])
        key = Path(environment["STREAMS_KAFKA_SSL_KEY_LOCATION"])
        subject = x509.load_pem_x509_certificate(certificate.read_bytes()).subject.rfc4514_string()
        assert subject == f"CN={user}"
        assert key.stat().st_mode & 0o077 == 0
    keys = list((stack.local / "tls").rglob("*.key"))
    assert len(keys) >= 3  # the CA's, the broker's, one per client
    assert all(path.stat().st_mode & 0o077 == 0 for path in keys)
    for node in (1, 2, 3):  # each holds the broker's key
        assert (stack.local / f"kafka-{node}" / "server.properties").stat().st_mode & 0o077 == 0


def test_dev_up_reports_the_running_tls_stack_and_refuses_to_drop_tls(stack: TlsStack) -> None:
    admin_password = stack.variables(ADMIN)["STREAMS_KAFKA_SASL_PASSWORD"]
    command = [sys.executable, "-m", "streams.cli", "dev", "up", "--sasl", "--sasl-user", ADMIN, "--acls"]
    env = {**stack.env(), "STREAMS_LOCAL_SASL_PASSWORD": admin_password}
    result = subprocess.run(
        [*command, "--tls", "--mtls", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # `dev up` hands the stack's own credentials out by design (decision 0015), so it is not a log to scan for
    # passwords; but no private key, not even the admin's client key it points at.
    shown = [result.stdout + result.stderr]
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["already_running"] is True
    assert report["services"]["kafka"]["security_protocol"] == "SASL_SSL"
    assert report["services"]["kafka"]["mtls"] is True
    assert report["kafka_client_environment"] == stack.variables(ADMIN)
    text = subprocess.run(
        [*command, "--tls", "--mtls"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    shown.append(text.stdout + text.stderr)
    assert not [line for line in key_bodies(stack.local / "tls") for output in shown if line in output]
    assert f"TLS: CA, certificates and keys (owner-only) in {stack.local / 'tls'}" in text.stdout
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        (
            f"error: asked for the local stack without TLS, but the one in {stack.local} already runs with mTLS;"
            " stop it with `streams dev down` first"
        )
    ]


def test_the_pipeline_runs_over_tls_and_scram_with_each_service_as_its_principal(
    stack: TlsStack, tmp_path: Path
) -> None:
    # Publish as billing-api (the SDK in this process), and one undecodable record for a dead letter.
    with Publisher(stack.settings("billing-api"), source="billing-api") as publisher:
        for invoice in invoice_chain(INVOICES, tenant=TENANT):
            publisher.publish("invoice.created", invoice).result()
    producer = Producer(stack.kafka("billing-api"))
    producer.produce("invoice.created", key=TENANT.encode(), value=b"not avro", headers=[("ce_id", b"tls-broken-1")])
    assert producer.flush(30) == 0

    # The validation and audit agents, each as its own principal.
    web_port = free_port()
    workers = [
        stack.spawn(
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
                str(port),
            ],
            tmp_path / f"{agent}.log",
            principal,
        )
        for agent, principal, port in (
            ("validation", "validation-agent", web_port),
            ("audit", "audit-agent", free_port()),
        )
    ]
    try:
        wait_for(
            lambda: len(stack.read("invoice.cleared")) >= INVOICES and len(stack.read("invoice.created.dlq")) >= 1,
            300,
            lambda: f"{INVOICES} cleared and a dead letter; {(tmp_path / 'validation.log').read_text()[-3000:]}",
        )
        wait_for(
            lambda: len(stack.read("audit.trail")) >= 2 * INVOICES,
            300,
            lambda: f"the audit trail; {(tmp_path / 'audit.log').read_text()[-3000:]}",
        )
        metrics = scrape(f"http://127.0.0.1:{web_port}/metrics")
        assert 'agent="validation"' in metrics
    finally:
        for worker in workers:
            stop(worker)
    dead = stack.read("invoice.created.dlq")
    CAPTURED.extend(("dlq headers", repr(message.headers())) for message in dead)
    assert {header[0] for header in dead[0].headers() or []} >= {"dlq_agent", "dlq_error_class", "dlq_error_message"}
    assert stack.cli("audit", "verify").startswith("0\n")

    _registry_as_its_principal(stack, tmp_path)
    _bridge_and_celery(stack, tmp_path)

    # Replay the audit trail as streams-replay into a signed evidence bundle, and verify it.
    assert stack.cli("evidence", "keygen", str(tmp_path / "auditor")).startswith("0\n")
    OTHER_KEYS.append(tmp_path / "auditor.key")
    bundle = tmp_path / "bundle"
    exported = stack.cli(
        "replay", "audit.trail", "--export", str(bundle), "--sign-key", str(tmp_path / "auditor.key"),
        user="streams-replay",
    )  # fmt: skip
    assert exported.startswith("0\n"), exported
    verified = stack.cli("evidence", "verify", str(bundle), "--public-key", str(tmp_path / "auditor.pub"))
    assert verified.startswith("0\n"), verified

    # The outbox relay as billing-api: a row committed in SQLite reaches invoice.created over TLS.
    _relay_one_row(stack, tmp_path)

    # The console (as the admin: the catalog has no console principal yet) lists the topics over TLS.
    _console_lists_topics(stack, tmp_path)

    for log in tmp_path.glob("*.log"):
        text = log.read_text(errors="replace")
        CAPTURED.append((str(log), text))
        assert "AUTHORIZATION_FAILED" not in text, f"{log}: {text[-3000:]}"


def _registry_as_its_principal(stack: TlsStack, tmp_path: Path) -> None:
    # The registry as its platform principal, over SASL_SSL: it reads _schemas and writes a new schema.
    port = free_port()
    registry = stack.spawn(
        [sys.executable, "-m", "streams.cli", "registry", "serve", "--port", str(port)],
        tmp_path / "registry.log",
        "streams-registry",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/subjects"), 120, lambda: (tmp_path / "registry.log").read_text()[-3000:])
        assert "invoice.created-value" in httpx.get(f"{url}/subjects", timeout=10).json()
        schema = {"type": "record", "name": "TlsProbe", "fields": [{"name": "id", "type": "string"}]}
        written = httpx.post(
            f"{url}/subjects/tls-probe-value/versions", timeout=30, json={"schema": json.dumps(schema)}
        )
        assert written.status_code == 200, written.text
        scrape(f"{url}/metrics")
    finally:
        stop(registry)


def _bridge_and_celery(stack: TlsStack, tmp_path: Path) -> None:
    # The bridge as celery-bridge and a real Celery worker (as celery-workers, which may report task.failed).
    bridge_port = free_port()
    bridge = stack.spawn(
        [sys.executable, "-m", "streams.cli", "bridge", "--group", "celery-bridge", "--instance-id", "tls-bridge",
         "--metrics-port", str(bridge_port)],
        tmp_path / "bridge.log",
        "celery-bridge",
    )  # fmt: skip
    celery = stack.spawn(
        [sys.executable, "-m", "celery", "-A", "streams.bridge.reference_tasks", "worker", "-Q",
         "interactive,default,batch", "--concurrency", "1", "--without-gossip", "--without-mingle"],
        tmp_path / "celery.log",
        "celery-workers",
    )  # fmt: skip
    pdfs = stack.data_dir / "bridge" / "invoices" / TENANT
    try:
        wait_for(
            lambda: len(list(pdfs.glob("*.pdf"))) >= INVOICES,
            300,
            lambda: (
                f"{INVOICES} PDFs; bridge: {(tmp_path / 'bridge.log').read_text()[-2000:]}\n"
                f"celery: {(tmp_path / 'celery.log').read_text()[-2000:]}"
            ),
        )
        scrape(f"http://127.0.0.1:{bridge_port}/metrics")
    finally:
        stop(bridge)
        stop(celery)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _relay_one_row(stack: TlsStack, tmp_path: Path) -> None:
    from streams.outbox import Outbox  # noqa: PLC0415 - this test only
    from streams.outbox.table import connect  # noqa: PLC0415
    from tests.integration.outbox_support import pending  # noqa: PLC0415

    dsn, before = f"sqlite:///{tmp_path / 'billing.db'}", len(stack.read("invoice.created"))
    assert stack.cli("outbox", "init", "--dsn", dsn, user="billing-api").startswith("0\n")
    outbox = Outbox(stack.settings("billing-api"), source="billing-api")
    conn = connect(dsn)
    try:
        conn.execute("BEGIN")
        outbox.add(conn, "invoice.created", invoice_chain(INVOICES + 1, tenant=TENANT)[-1])
        conn.commit()
    finally:
        conn.close()
        outbox.close()
    metrics_port = free_port()
    relay = stack.spawn(
        [sys.executable, "-m", "streams.cli", "outbox", "relay", "--dsn", dsn, "--metrics-port", str(metrics_port)],
        tmp_path / "relay.log",
        "billing-api",
    )
    try:
        wait_for(lambda: pending(dsn, "streams_outbox") == (0, 0), 120, (tmp_path / "relay.log").read_text)
        scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stop(relay)
    assert len(stack.read("invoice.created")) == before + 1


def _console_lists_topics(stack: TlsStack, tmp_path: Path) -> None:
    port = free_port()
    users = {"ana": {"role": "operator", "password_hash": hash_password("ana-console-pass", rounds=4)}}
    env = stack.env(
        ADMIN,
        STREAMS_CONSOLE_USERS=json.dumps(users),
        STREAMS_CONSOLE_SESSION_SECRET="s" * 40,
        STREAMS_CONSOLE_SECURE_COOKIES="false",
    )
    with (tmp_path / "console.log").open("ab") as out:
        console = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "console", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=stack.data_dir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/health"), 120, lambda: (tmp_path / "console.log").read_text()[-3000:])
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as browser:
            login = browser.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert token is not None, login.text[:2000]
            answer = browser.post(
                "/login", data={"username": "ana", "password": "ana-console-pass", "csrf": token.group(1)}
            )
            assert answer.status_code == 200, answer.text[:2000]
            topics = browser.get("/topics")
            assert topics.status_code == 200
            assert "invoice.created" in topics.text
    finally:
        stop(console)


# ---- refusals: one line naming the principal ----------------------------------------------------------------

COMMANDS = {
    "publish": ["publish", "user.action", "--file", "/dev/null"],
    "worker": ["worker", "--agents", "validation", "--app-id", "billing-api", "--web-port", "0"],
    "bridge": ["bridge", "--group", "billing-api", "--instance-id", "tls-refused"],
    "replay": ["replay", "invoice.created", "--export", "refused-bundle"],
    "registry": ["registry", "serve", "--port", "0"],
    "relay": ["outbox", "relay", "--dsn", "sqlite:///refused.db"],
}


def one_line(output: str) -> str:
    code, _, text = output.partition("\n")
    lines = [line for line in text.strip().splitlines() if not line.startswith("{")]  # services' JSON log lines
    assert code == "1", output
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another stack's CA: the brokers' certificate is not signed by it."""
    return tls.ensure_certificates(tmp_path_factory.mktemp("foreign-ca"), [], mtls=False).ca


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_broker_certificate_from_another_ca_is_refused_in_one_line(
    stack: TlsStack, foreign_ca: Path, command: str
) -> None:
    if command == "relay":  # the relay reads its table first: give it one
        assert stack.cli("outbox", "init", "--dsn", "sqlite:///refused.db", user="billing-api").startswith("0\n")
    line = one_line(stack.cli(*COMMANDS[command], user="billing-api", STREAMS_KAFKA_SSL_CA_LOCATION=str(foreign_ca)))
    issuer = x509.load_pem_x509_certificate((stack.local / "tls" / "ca.crt").read_bytes()).subject.rfc4514_string()
    assert line == (
        f"error: TLS with the brokers at {stack.kafka_state.address} failed for User:billing-api: the broker's"
        f" certificate (CN=streams local broker) is not signed by the CA in STREAMS_KAFKA_SSL_CA_LOCATION="
        f"{foreign_ca} (it was signed by {issuer}); point that variable at the CA that signed the brokers'"
        " certificates"
    )


def test_an_expired_client_certificate_is_refused_in_one_line(stack: TlsStack, tmp_path: Path) -> None:
    directory = stack.local / "tls"
    ca = (
        x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()),
        serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None),
    )
    certificate, key = tmp_path / "expired.crt", tmp_path / "expired.key"
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    tls.issue_client(certificate, key, "billing-api", ca, now=past)  # type: ignore[arg-type]
    expired_at = x509.load_pem_x509_certificate(certificate.read_bytes()).not_valid_after_utc
    for command in ("publish", "worker"):
        line = one_line(
            stack.cli(
                *COMMANDS[command],
                user="billing-api",
                STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION=str(certificate),
                STREAMS_KAFKA_SSL_KEY_LOCATION=str(key),
            )
        )
        assert line == (
            f"error: TLS with the brokers at {stack.kafka_state.address} failed for User:billing-api: the brokers"
            f" refused the client certificate in STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION={certificate}"
            f" (CN=billing-api): it expired at {expired_at.strftime('%Y-%m-%dT%H:%M:%SZ')}; issue a new one (the"
            " local stack does at `streams dev up`)"
        )
    with pytest.raises(ConfigError, match=r"failed for User:billing-api: the brokers refused the client certificate"):
        Publisher(
            stack.settings(
                "billing-api",
                STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION=str(certificate),
                STREAMS_KAFKA_SSL_KEY_LOCATION=str(key),
            ),
            source="billing-api",
        ).close()
    CAPTURED.append(("expired client certificate: library error", "see the asserted lines"))


@pytest.mark.parametrize("command", ["publish", "worker", "bridge", "replay", "registry"])
def test_a_wrong_password_over_tls_is_one_line(stack: TlsStack, command: str) -> None:
    wrong = "not-the-Pa55word-of-billing"
    line = one_line(stack.cli(*COMMANDS[command], user="billing-api", STREAMS_KAFKA_SASL_PASSWORD=wrong))
    assert line == (
        f"error: SASL authentication failed: the brokers at {stack.kafka_state.address} refused user 'billing-api'"
        " with SCRAM-SHA-512 (Authentication failed during authentication due to invalid credentials with SASL"
        " mechanism SCRAM-SHA-512); check STREAMS_KAFKA_SASL_USERNAME and STREAMS_KAFKA_SASL_PASSWORD"
    )
    CAPTURED.append(("wrong password", line))


def test_a_missing_acl_over_tls_is_one_line_and_writes_nothing(stack: TlsStack, tmp_path: Path) -> None:
    events = tmp_path / "actions.jsonl"
    events.write_text("\n".join(json.dumps(user_action(n), default=str) for n in range(3)) + "\n")
    before = len(stack.read("user.action"))  # the console's login above is one (it ran as the admin)
    line = one_line(stack.cli("publish", "user.action", "--file", str(events), user="billing-api"))
    assert line == (
        "error: User:billing-api may not Write topic user.action (TOPIC_AUTHORIZATION_FAILED); run `streams acls plan`"
    )
    assert len(stack.read("user.action")) == before


def test_an_expired_broker_certificate_is_one_line(stack: TlsStack, tmp_path: Path) -> None:
    """A broker of its own (the stack's start function, then the same broker restarted on an expired certificate
    signed by the same CA, which `start_stack` would have renewed)."""
    data_dir = tmp_path / "expired-broker"
    user, password = "streams", scram.generate_password()
    state = start_stack(data_dir, sasl_users={user: password}, tls=True, with_redis=False, with_registry=False)
    broker = state.services["kafka"]
    try:
        stop_stack(data_dir)
        certificates = tls.LocalTls(tls.tls_dir(local_dir(data_dir)), mtls=False)
        ca = (
            x509.load_pem_x509_certificate(certificates.ca.read_bytes()),
            serialization.load_pem_private_key(certificates.ca_key.read_bytes(), password=None),
        )
        key = tls.new_key()
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
        expired = tls.issue(tls.BROKER_NAME, key, ca, now=past, server=True)  # type: ignore[arg-type]
        tls.write_key(certificates.broker_key, key)
        certificates.broker_certificate.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
        properties = kafka.KafkaLayout(local_dir(data_dir)).properties_path.read_text()
        ports = dict(re.findall(r"(\w+)://127\.0\.0\.1:(\d+)", properties.split("listeners=", 1)[1].split("\n")[0]))
        pid = kafka.start_kafka(
            kafka.KafkaLayout(local_dir(data_dir)),
            jar_dir=kafka.default_cache_dir(kafka.kafka_version()),
            broker_port=int(ports["SASL_SSL"]),
            controller_port=int(ports["CONTROLLER"]),
            owner=data_dir.resolve(),
            java=_java(),
            internal_port=int(ports["PLAINTEXT"]),
            tls=certificates.broker(),
        )
        try:
            assert broker.internal_address is not None
            kafka.wait_for_kafka(pid, broker.internal_address, Path(broker.log_path))
            settings = Settings(
                data_dir=data_dir,
                kafka_bootstrap_servers=broker.address,
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_mechanism="SCRAM-SHA-512",
                kafka_sasl_username=user,
                kafka_sasl_password=SecretStr(password),
                kafka_ssl_ca_location=certificates.ca,
            )
            with pytest.raises(ConfigError) as refused:
                settings.check_kafka_login(broker.address)
        finally:
            from streams.local.processes import stop_process_group  # noqa: PLC0415

            stop_process_group(pid, timeout_s=30)
        assert str(refused.value) == (
            f"TLS with the brokers at {broker.address} failed for User:{user}: the broker's certificate"
            f" (CN=streams local broker) expired at {expired.not_valid_after_utc.strftime('%Y-%m-%dT%H:%M:%SZ')};"
            " the brokers need a new one (the local stack issues one at `streams dev up` when it has expired)"
        )
        CAPTURED.append(("expired broker certificate", str(refused.value)))
        CAPTURED.append(("expired broker's kafka.log", Path(broker.log_path).read_text(errors="replace")))
        # ... and the next start issues a good one.
        renewed = tls.ensure_certificates(certificates.directory, [], mtls=False)
        assert tls.certificate_problem(renewed.broker_certificate, ca[0], datetime.datetime.now(datetime.UTC)) is None
    finally:
        stop_stack(data_dir, purge=True)


def _java() -> str:
    from streams.local import binaries  # noqa: PLC0415

    return binaries.find_java().path


# ---- secrets --------------------------------------------------------------------------------------------------


def key_bodies(directory: Path) -> list[str]:
    """The base64 lines of every private key PEM under `directory`."""
    lines = []
    for path in directory.rglob("*.key"):
        text = path.read_text()
        assert "PRIVATE KEY" in text
        lines += [line for line in text.splitlines() if line and not line.startswith("-----")]
    return lines


def test_no_log_metric_dead_letter_or_error_of_the_run_holds_a_secret(stack: TlsStack) -> None:
    assert len(CAPTURED) > 10, "runs after the tests above, in this module"
    secrets = stack.passwords() + key_bodies(stack.local / "tls")
    for path in OTHER_KEYS:
        secrets += key_bodies(path.parent)
    assert len(stack.passwords()) >= 5
    # The scan looks for the real strings: the files that must hold them do.
    assert stack.variables(ADMIN)["STREAMS_KAFKA_SASL_PASSWORD"] in (stack.local / scram.CREDENTIALS_FILE).read_text()
    server_properties = (stack.local / "kafka-1" / "server.properties").read_text()  # holds the broker's key inline
    assert any(line in server_properties for line in key_bodies(stack.local / "tls"))
    logs = [(str(path), path.read_text(errors="replace")) for path in stack.local.glob("*.log")]
    assert {Path(name).name for name, _ in logs} >= {"kafka-1.log", "kafka-2.log", "kafka-3.log", "registry.log"}
    for where, text in [*CAPTURED, *logs]:
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} chars) is in {where}"
