"""Kafka security without a broker: the SCRAM stack's properties and credentials file, and the one path
from STREAMS_* settings to librdkafka properties (`Settings.kafka_config`) and to faust (`broker_credentials`).
"""

from __future__ import annotations

import datetime
import re
import ssl
from typing import TYPE_CHECKING

import certifi
import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from streams.errors import ConfigError, LocalStackError
from streams.faust_app import broker_credentials
from streams.local import kafka, scram
from streams.local.stack import start_stack
from streams.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "pa55-w0rd that 'never' shows"  # noqa: S105 - a test value


def sasl(**extra: object) -> Settings:
    values: dict[str, object] = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "validation-agent",
        "kafka_sasl_password": SecretStr(SECRET),
        **extra,
    }
    return Settings.model_validate(values)


def client_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "validation-agent")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "client.crt", directory / "client.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET.encode()),
        )
    )
    return cert_path, key_path


def test_the_scram_stack_listens_for_clients_with_sasl_and_keeps_plaintext_inside(tmp_path: Path) -> None:
    text = kafka.render_server_properties(
        broker_port=39092, controller_port=39093, log_dir=tmp_path / "d", internal_port=39094
    )
    lines = set(text.splitlines())
    assert {
        "listeners=SASL_PLAINTEXT://127.0.0.1:39092,PLAINTEXT://127.0.0.1:39094,CONTROLLER://127.0.0.1:39093",
        "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:39092,PLAINTEXT://127.0.0.1:39094",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        (
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    } <= lines
    plain = kafka.render_server_properties(broker_port=39092, controller_port=39093, log_dir=tmp_path / "d")
    assert "sasl" not in plain


def test_an_acl_stack_denies_by_default_and_trusts_only_its_admin_and_the_loopback_listeners(tmp_path: Path) -> None:
    text = kafka.render_server_properties(
        broker_port=39092, controller_port=39093, log_dir=tmp_path / "d", internal_port=39094, acl_admin="streams"
    )
    lines = set(text.splitlines())
    assert {
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:ANONYMOUS;User:streams",
        "allow.everyone.if.no.acl.found=false",
    } <= lines
    without = kafka.render_server_properties(
        broker_port=39092, controller_port=39093, log_dir=tmp_path / "d", internal_port=39094
    )
    assert "authorizer" not in without


def test_acls_without_sasl_users_or_a_catalog_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="use `streams dev up --sasl --acls`"):
        start_stack(tmp_path, acls=True, catalog=tmp_path / "topics.yaml")
    with pytest.raises(LocalStackError, match="use `streams dev up --sasl --acls`"):
        start_stack(tmp_path, acls=True, sasl_users={"streams": "pw"})
    assert not (tmp_path / "local").exists()


def test_principal_credentials_files_are_owner_only(tmp_path: Path) -> None:
    path = scram.write_credentials(
        tmp_path, scram.client_environment("127.0.0.1:1", "billing-api", "pw-1"), "billing-api"
    )
    assert path == tmp_path / "principals" / "billing-api.env"
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0
    assert scram.read_credentials(tmp_path, "billing-api") == scram.client_environment(
        "127.0.0.1:1", "billing-api", "pw-1"
    )


def test_the_credentials_file_is_for_the_owner_and_sources_back_exactly(tmp_path: Path) -> None:
    environment = scram.client_environment("127.0.0.1:39092", "streams", SECRET)
    path = scram.write_credentials(tmp_path, environment)
    assert path.stat().st_mode & 0o777 == 0o600
    assert scram.read_credentials(tmp_path) == environment
    assert environment["STREAMS_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert environment["STREAMS_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert scram.read_credentials(tmp_path / "none") is None


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert Settings().kafka_config("b:9092") == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "PLAINTEXT",
        "log_level": 0,
    }
    assert broker_credentials(Settings().kafka_config("b:9092")) is None


def test_librdkafka_logs_only_when_verbose() -> None:
    assert Settings(verbose=True).kafka_config("b:9092") == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_sasl_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(certifi.contents().encode())
    for name, value in {
        "STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMS_KAFKA_SASL_USERNAME": "validation-agent",
        "STREAMS_KAFKA_SASL_PASSWORD": SECRET,
        "STREAMS_KAFKA_SSL_CA_LOCATION": str(ca),
    }.items():
        monkeypatch.setenv(name, value)
    assert Settings().kafka_config("kafka:9093") == {
        "bootstrap.servers": "kafka:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "validation-agent",
        "sasl.password": SECRET,
        "ssl.ca.location": str(ca),
        "log_level": 0,
    }


def test_the_password_is_in_no_repr_dump_or_error() -> None:
    settings = sasl()
    for shown in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        assert SECRET not in shown
    with pytest.raises(ConfigError) as error:
        sasl(kafka_sasl_username=None).kafka_config("b:9092")
    assert SECRET not in str(error.value)
    assert SECRET not in repr(broker_credentials(settings.kafka_config("b:9092")))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_sasl_mechanism": None}, "needs STREAMS_KAFKA_SASL_MECHANISM (the mechanism one of SCRAM-SHA-512"),
        (
            {"kafka_sasl_username": None, "kafka_sasl_password": None},
            "needs STREAMS_KAFKA_SASL_USERNAME, STREAMS_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_security_protocol": "PLAINTEXT"}, "SASL credentials are set but STREAMS_KAFKA_SECURITY_PROTOCOL"),
        (
            {"kafka_ssl_ca_location": "/nowhere/ca.crt"},
            "STREAMS_KAFKA_SSL_CA_LOCATION set but STREAMS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_ssl_ca_location": "/nowhere/ca.crt"},
            "STREAMS_KAFKA_SSL_CA_LOCATION=/nowhere/ca.crt: no such file",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_ssl_key_location": "/nowhere/client.key"},
            "a client certificate needs both STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION and STREAMS_KAFKA_SSL_KEY_LOCATION",
        ),
    ],
    ids=["no-mechanism", "no-credentials", "credentials-without-sasl", "ca-without-tls", "missing-ca", "key-only"],
)
def test_settings_that_do_not_fit_together_name_the_variables(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        sasl(**changes).kafka_config("b:9092")


def test_faust_gets_the_same_sasl_credentials() -> None:
    credentials = broker_credentials(sasl(kafka_sasl_mechanism="SCRAM-SHA-256").kafka_config("b:9092"))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("validation-agent", SECRET)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.ssl_context is None


def test_faust_gets_the_same_tls_trust_and_client_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(certifi.contents().encode())
    cert, key = client_certificate(tmp_path)
    over_tls = sasl(kafka_security_protocol="SASL_SSL", kafka_ssl_ca_location=ca)
    credentials = broker_credentials(over_tls.kafka_config("b:9093"))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.check_hostname  # librdkafka verifies the broker's name by default too
    assert credentials.ssl_context.get_ca_certs()

    mutual = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=ca,
        kafka_ssl_certificate_location=cert,
        kafka_ssl_key_location=key,
        kafka_ssl_key_password=SecretStr(SECRET),
    )
    config = mutual.kafka_config("b:9093")
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.password"] == SECRET
    tls_only = broker_credentials(config)
    assert isinstance(tls_only, faust.SSLCredentials)
    assert tls_only.protocol.value == "SSL"


def test_plaintext_has_no_login_to_check() -> None:
    Settings().check_kafka_login("127.0.0.1:9", timeout_s=0.1)  # returns at once: nothing to verify, no socket
