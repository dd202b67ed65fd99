"""Throwaway TLS for the local stack: a CA, one broker certificate for every local node, a client one per principal.

Generated with `cryptography` under `<data_dir>/local/tls` (private keys owner-only, never printed); a file is
issued again only when it is missing, expired, or not signed by the current CA (decision 0029).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import LocalStackError
from streams.local.processes import LOOPBACK

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

TLS_DIR = "tls"
CLIENTS_DIR = "clients"
CA_NAME = "streams local CA"
BROKER_NAME = "streams local broker"
# Long enough for a laptop's stack to outlive a holiday, short enough that a leaked throwaway key dies soon.
VALIDITY = datetime.timedelta(days=30)
CA_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(hours=1)  # a certificate about to expire is renewed at start, not mid-run
# Every local node listens on loopback under these names, so one broker certificate serves them all.
BROKER_HOSTS = ("localhost",)
BROKER_ADDRESSES = (LOOPBACK, "::1")


@dataclass(frozen=True)
class ClientTls:
    """What one client needs to talk TLS to the local brokers: the CA, and its certificate and key under mTLS."""

    ca: Path
    certificate: Path | None = None
    key: Path | None = None

    def environment(self) -> dict[str, str]:
        """The STREAMS_KAFKA_SSL_* variables (`Settings.kafka_config` turns them into librdkafka properties)."""
        variables = {"STREAMS_KAFKA_SSL_CA_LOCATION": str(self.ca)}
        if self.certificate is not None and self.key is not None:
            variables["STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION"] = str(self.certificate)
            variables["STREAMS_KAFKA_SSL_KEY_LOCATION"] = str(self.key)
        return variables

    def librdkafka(self) -> dict[str, str]:
        """The same as librdkafka properties, for the stack's own probes."""
        return {
            "ssl.ca.location": str(self.ca),
            **({"ssl.certificate.location": str(self.certificate)} if self.certificate else {}),
            **({"ssl.key.location": str(self.key)} if self.key else {}),
        }


@dataclass(frozen=True)
class BrokerTls:
    """The broker side: its key and certificate chain (PEM text), the CA's certificate, whether clients need one."""

    key_pem: str = field(repr=False)
    chain_pem: str
    ca_pem: str
    client_auth: bool

    def listener_settings(self, listener: str) -> dict[str, str]:
        """server.properties entries for the TLS listener named `listener`, PEM inline.

        Inline because Java reads a PEM keystore *file* only when its key is encrypted, and the JDK cannot
        decrypt the PBES2 keys `cryptography` writes ("PBES2 SecretKeyFactory not available"). So
        server.properties holds the key and is owner-only, like the key file; Kafka logs these values as
        [hidden]. Newlines are written as `\\n`, which Java's Properties reads back as newlines.
        """
        prefix = f"listener.name.{listener.lower()}."
        settings = {
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.key": _one_line(self.key_pem),
            f"{prefix}ssl.keystore.certificate.chain": _one_line(self.chain_pem),
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.certificates": _one_line(self.ca_pem),
        }
        if self.client_auth:
            settings[f"{prefix}ssl.client.auth"] = "required"
        return settings


def _one_line(pem: str) -> str:
    return pem.strip().replace("\n", "\\n")


@dataclass(frozen=True)
class LocalTls:
    """The certificates of one local stack, under `directory`."""

    directory: Path
    mtls: bool

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_certificate(self) -> Path:
        return self.directory / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.directory / "broker.key"

    def client_files(self, principal: str) -> tuple[Path, Path]:
        return self.directory / CLIENTS_DIR / f"{principal}.crt", self.directory / CLIENTS_DIR / f"{principal}.key"

    def broker(self) -> BrokerTls:
        """The broker's side; its chain is its certificate then the CA's."""
        ca = self.ca.read_text()
        return BrokerTls(self.broker_key.read_text(), self.broker_certificate.read_text() + ca, ca, self.mtls)

    def client(self, principal: str) -> ClientTls:
        if not self.mtls:
            return ClientTls(self.ca)
        certificate, key = self.client_files(principal)
        return ClientTls(self.ca, certificate, key)


def tls_dir(local_dir: Path) -> Path:
    return local_dir / TLS_DIR


def ensure_certificates(
    directory: Path, principals: Iterable[str], *, mtls: bool, now: datetime.datetime | None = None
) -> LocalTls:
    """The stack's CA, broker certificate and (with `mtls`) a client certificate per principal in `directory`,
    each issued only when it is missing, expires within RENEW_BEFORE, or is not signed by the current CA."""
    from cryptography import x509  # noqa: PLC0415 - `streams dev --help` stays fast
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    now = now or datetime.datetime.now(datetime.UTC)
    files = LocalTls(directory, mtls)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    if certificate_problem(files.ca, None, now) is not None or not files.ca_key.exists():
        ca_key = new_key()
        # Its own name per stack, so an error about a certificate from another stack's CA can tell them apart.
        name = f"{CA_NAME} {secrets.token_hex(4)}"
        ca_certificate = issue(name, ca_key, None, now=now, validity=CA_VALIDITY, authority=True)
        write_key(files.ca_key, ca_key)
        files.ca.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    else:
        ca_certificate = x509.load_pem_x509_certificate(files.ca.read_bytes())
        loaded = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca_key = _ec_key(loaded, files.ca_key)
    ca = (ca_certificate, ca_key)
    if certificate_problem(files.broker_certificate, ca_certificate, now) is not None or not files.broker_key.exists():
        key = new_key()
        certificate = issue(BROKER_NAME, key, ca, now=now, server=True)
        write_key(files.broker_key, key)
        files.broker_certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if mtls:
        (directory / CLIENTS_DIR).mkdir(exist_ok=True)
        (directory / CLIENTS_DIR).chmod(0o700)
        for principal in principals:
            certificate_path, key_path = files.client_files(principal)
            if certificate_problem(certificate_path, ca_certificate, now) is not None or not key_path.exists():
                issue_client(certificate_path, key_path, principal, ca, now=now)
    return files


def issue_client(
    certificate_path: Path,
    key_path: Path,
    principal: str,
    ca: tuple[x509.Certificate, EllipticCurvePrivateKey],
    *,
    now: datetime.datetime,
    validity: datetime.timedelta = VALIDITY,
) -> None:
    """A client certificate (CN=`principal`) and its unencrypted key (owner-only), as librdkafka reads them."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    key = new_key()
    certificate = issue(principal, key, ca, now=now, validity=validity, client=True)
    write_key(key_path, key)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def new_key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    return ec.generate_private_key(ec.SECP256R1())  # fast to make, and both Java and OpenSSL take it


def issue(
    common_name: str,
    key: EllipticCurvePrivateKey,
    ca: tuple[x509.Certificate, EllipticCurvePrivateKey] | None,
    *,
    now: datetime.datetime,
    validity: datetime.timedelta = VALIDITY,
    authority: bool = False,
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    """A certificate for `key`, valid from an hour before `now` (clock skew) for `validity`; signed by `ca`'s key,
    or self-signed when `ca` is None. A `server` one names every loopback host a local node answers on."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer, signer = (ca[0].subject, ca[1]) if ca is not None else (subject, key)
    start = now - datetime.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )  # fmt: skip
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()), critical=False
        )
    if authority:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(host) for host in BROKER_HOSTS]
        names += [x509.IPAddress(ipaddress.ip_address(address)) for address in BROKER_ADDRESSES]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(signer, hashes.SHA256())


def certificate_problem(path: Path, ca: x509.Certificate | None, now: datetime.datetime) -> str | None:
    """Why the certificate at `path` must be issued again (missing, unreadable, expired or about to, not yet
    valid, not signed by `ca`), or None when it is good."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    if not path.exists():
        return "missing"
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return "unreadable"
    if certificate.not_valid_after_utc - RENEW_BEFORE <= now:
        return f"expires {certificate.not_valid_after_utc.isoformat()}"
    if certificate.not_valid_before_utc > now:
        return f"not valid before {certificate.not_valid_before_utc.isoformat()}"
    if ca is not None:
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return "not signed by the current CA"
    return None


def write_key(path: Path, key: EllipticCurvePrivateKey) -> None:
    """An unencrypted PKCS#8 key, owner-only from the moment it exists."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(path, pem)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC


def _ec_key(key: object, path: Path) -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LocalStackError(f"{path} is not the local CA's key; delete {path.parent} to generate a new CA")
    return key
