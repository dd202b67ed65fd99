"""The local stack's TLS without a broker: certificates issued once and again only when missing or expired, keys
owner-only, the SASL_SSL listener's properties, the client variables, and the words for a refused handshake."""

from __future__ import annotations

import datetime
import ipaddress
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from streams.errors import LocalStackError
from streams.local import kafka, scram, tls
from streams.local.stack import start_stack
from streams.tls_check import explain, is_tls_failure

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()
    }


def test_a_ca_a_broker_certificate_for_loopback_and_a_client_certificate_per_principal(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path / "tls", ["streams", "billing-api"], mtls=True, now=NOW)
    ca, broker = load(files.ca), load(files.broker_certificate)
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    usage = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for principal in ("streams", "billing-api"):
        certificate, key = files.client_files(principal)
        client = load(certificate)
        client.verify_directly_issued_by(ca)
        assert client.subject.rfc4514_string() == f"CN={principal}"
        assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    keys = list((tmp_path / "tls").rglob("*.key"))
    assert len(keys) == 4
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in keys)
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "tls" / "clients").stat().st_mode & 0o777 == 0o700
    assert broker.not_valid_after_utc - broker.not_valid_before_utc == tls.VALIDITY


def test_without_mtls_there_are_no_client_certificates(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path, ["streams"], mtls=False, now=NOW)
    assert not (tmp_path / "clients").exists()
    assert files.client("streams") == tls.ClientTls(files.ca)
    assert files.client("streams").environment() == {"STREAMS_KAFKA_SSL_CA_LOCATION": str(files.ca)}


def test_certificates_are_issued_again_only_when_missing_or_expired(tmp_path: Path) -> None:
    tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=NOW)
    first = snapshot(tmp_path)
    tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=NOW + datetime.timedelta(days=20))
    assert snapshot(tmp_path) == first  # nothing expired: the same files, so running clients keep working

    (tmp_path / "clients" / "streams.crt").unlink()
    tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=NOW)
    again = snapshot(tmp_path)
    assert again["clients/streams.crt"] != first["clients/streams.crt"]
    assert again["clients/streams.key"] != first["clients/streams.key"]
    assert {name: again[name] for name in ("ca.crt", "ca.key", "broker.crt", "broker.key")} == {
        name: first[name] for name in ("ca.crt", "ca.key", "broker.crt", "broker.key")
    }

    later = NOW + tls.VALIDITY  # the broker's and the client's have expired (or are within RENEW_BEFORE), the CA not
    tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=later)
    renewed = snapshot(tmp_path)
    assert renewed["ca.crt"] == first["ca.crt"]
    assert renewed["broker.crt"] != again["broker.crt"]
    assert renewed["clients/streams.crt"] != again["clients/streams.crt"]
    assert tls.certificate_problem(tmp_path / "broker.crt", load(tmp_path / "ca.crt"), later) is None


def test_a_new_ca_reissues_everything_it_signed(tmp_path: Path) -> None:
    tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=NOW)
    first = snapshot(tmp_path)
    much_later = NOW + tls.CA_VALIDITY
    files = tls.ensure_certificates(tmp_path, ["streams"], mtls=True, now=much_later)
    renewed = snapshot(tmp_path)
    assert all(renewed[name] != first[name] for name in first)
    load(files.broker_certificate).verify_directly_issued_by(load(files.ca))
    load(files.client_files("streams")[0]).verify_directly_issued_by(load(files.ca))


def test_a_certificate_from_another_ca_is_a_problem(tmp_path: Path) -> None:
    one = tls.ensure_certificates(tmp_path / "one", [], mtls=False, now=NOW)
    other = tls.ensure_certificates(tmp_path / "other", [], mtls=False, now=NOW)
    assert load(one.ca).subject != load(other.ca).subject  # each stack's CA has its own name
    assert tls.certificate_problem(one.broker_certificate, load(other.ca), NOW) == "not signed by the current CA"
    assert tls.certificate_problem(tmp_path / "none.crt", None, NOW) == "missing"


def test_the_sasl_ssl_listener_keeps_plaintext_inside_and_pem_on_one_line(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path / "tls", ["streams"], mtls=False, now=NOW)
    text = kafka.render_server_properties(
        broker_port=39092, controller_port=39093, log_dir=tmp_path / "d", internal_port=39094, tls=files.broker()
    )
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["listeners"] == (
        "SASL_SSL://127.0.0.1:39092,PLAINTEXT://127.0.0.1:39094,CONTROLLER://127.0.0.1:39093"
    )
    assert settings["advertised.listeners"] == "SASL_SSL://127.0.0.1:39092,PLAINTEXT://127.0.0.1:39094"
    assert settings["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert settings["inter.broker.listener.name"] == "PLAINTEXT"
    assert settings["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"].startswith("org.apache.kafka")
    assert settings["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert settings["listener.name.sasl_ssl.ssl.truststore.type"] == "PEM"
    assert "listener.name.sasl_ssl.ssl.client.auth" not in settings
    # Java's Properties reads `\n` back as a newline: the PEM Kafka gets is the file's.
    key = settings["listener.name.sasl_ssl.ssl.keystore.key"].replace("\\n", "\n")
    assert key == files.broker_key.read_text().strip()
    chain = settings["listener.name.sasl_ssl.ssl.keystore.certificate.chain"].replace("\\n", "\n")
    assert chain.count("BEGIN CERTIFICATE") == 2  # the broker's, then the CA's
    assert settings["listener.name.sasl_ssl.ssl.truststore.certificates"].replace("\\n", "\n") == (
        files.ca.read_text().strip()
    )
    assert files.broker_key.read_text().split("\n")[1] not in repr(files.broker())  # never in a repr


def test_mtls_requires_client_certificates_on_the_client_listener_only(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path / "tls", ["streams"], mtls=True, now=NOW)
    text = kafka.render_server_properties(
        broker_port=39092, controller_port=39093, log_dir=tmp_path / "d", internal_port=39094, tls=files.broker()
    )
    assert "listener.name.sasl_ssl.ssl.client.auth=required" in text.splitlines()
    assert "\nssl.client.auth" not in text  # not broker-wide: the internal and controller listeners stay PLAINTEXT


def test_the_client_variables_name_the_ca_and_under_mtls_the_principals_certificate(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path, ["billing-api"], mtls=True, now=NOW)
    environment = scram.client_environment("127.0.0.1:1", "billing-api", "pw", files.client("billing-api"))
    certificate, key = files.client_files("billing-api")
    assert environment == {
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMS_KAFKA_SASL_USERNAME": "billing-api",
        "STREAMS_KAFKA_SASL_PASSWORD": "pw",
        "STREAMS_KAFKA_SSL_CA_LOCATION": str(files.ca),
        "STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION": str(certificate),
        "STREAMS_KAFKA_SSL_KEY_LOCATION": str(key),
    }
    assert scram.client_config("127.0.0.1:1", "billing-api", "pw", files.client("billing-api"))[
        "security.protocol"
    ] == ("SASL_SSL")


def test_tls_without_sasl_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match=r"use `streams dev up --sasl --tls`"):
        start_stack(tmp_path, tls=True)
    with pytest.raises(LocalStackError, match=r"use `streams dev up --sasl --tls`"):
        start_stack(tmp_path, mtls=True)
    assert not (tmp_path / "local").exists()


def test_librdkafkas_tls_failures_are_recognised_also_as_transport_errors() -> None:
    assert is_tls_failure(
        "sasl_ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
    )
    assert is_tls_failure(
        "sasl_ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate"
    )
    assert not is_tls_failure(
        "sasl_ssl://127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    )


def test_a_refused_client_certificate_is_explained_from_the_certificate_itself(tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - tls.VALIDITY - datetime.timedelta(days=1)
    files = tls.ensure_certificates(tmp_path, ["billing-api"], mtls=True, now=past)
    certificate, _ = files.client_files("billing-api")
    refused = "Receive failed: error:0A000416:SSL routines::ssl/tls alert certificate unknown: SSL alert number 46"
    expired_at = load(certificate).not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert explain("127.0.0.1:1", refused, {"ssl.certificate.location": str(certificate)}) == (
        f"the brokers refused the client certificate in STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION={certificate}"
        f" (CN=billing-api): it expired at {expired_at}; issue a new one (the local stack does at `streams dev up`)"
    )
    assert explain("127.0.0.1:1", refused.replace("certificate unknown", "bad certificate"), {}) == (
        "the brokers require a client certificate (mTLS) and none is configured; set"
        " STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION and STREAMS_KAFKA_SSL_KEY_LOCATION"
    )
