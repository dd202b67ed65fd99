"""Why a TLS connection to the brokers failed, in words: librdkafka only says "certificate verify failed" or
"alert bad certificate", so the broker's certificate is fetched (unverified) and checked against the settings' CA.

Used by `Settings` to turn a refused handshake into one line naming the principal and the cause (decision 0029).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

TIMEOUT_S = 3.0
# librdkafka's words for a handshake the broker broke off because of our certificate (TLS 1.3 sends the alert
# after the client thinks the handshake is done, so it arrives as a receive failure).
CLIENT_REFUSED = ("alert bad certificate", "alert certificate unknown", "certificate required", "alert unknown ca",
                  "alert certificate expired", "alert certificate revoked", "alert handshake failure")  # fmt: skip


def is_tls_failure(text: str) -> bool:
    """True when librdkafka's error text is about the TLS handshake (also when reported as a transport error)."""
    lowered = text.lower()
    return "ssl handshake failed" in lowered or "ssl routines" in lowered or any(m in lowered for m in CLIENT_REFUSED)


def explain(bootstrap_servers: str, error_text: str, files: dict[str, str]) -> str:
    """What went wrong, for a failed TLS connection to the brokers at `bootstrap_servers`, given librdkafka's
    `error_text` and the client's TLS `files` (librdkafka keys: ssl.ca.location, ssl.certificate.location).

    Names files and certificate subjects, never key material."""
    lowered = error_text.lower()
    if any(marker in lowered for marker in CLIENT_REFUSED):
        return _client_refused(files.get("ssl.certificate.location"), lowered)
    host, port = _first(bootstrap_servers)
    try:
        certificate = _peer_certificate(host, port)
    except (OSError, ValueError) as exc:
        return f"the handshake failed ({_short(error_text)}; fetching the broker's certificate: {exc})"
    now = datetime.datetime.now(datetime.UTC)
    subject = certificate.subject.rfc4514_string()
    if certificate.not_valid_after_utc <= now:
        return (
            f"the broker's certificate ({subject}) expired at {_when(certificate.not_valid_after_utc)};"
            " the brokers need a new one (the local stack issues one at `streams dev up` when it has expired)"
        )
    if certificate.not_valid_before_utc > now:
        return f"the broker's certificate ({subject}) is not valid before {_when(certificate.not_valid_before_utc)}"
    ca_file = files.get("ssl.ca.location")
    issuer = certificate.issuer.rfc4514_string()
    if ca_file is None:
        return (
            f"the broker's certificate ({subject}) is signed by {issuer}, which this machine's CAs do not"
            " include; set STREAMS_KAFKA_SSL_CA_LOCATION to the CA that signed the brokers' certificates"
        )
    if not _signed_by_any(certificate, Path(ca_file)):
        return (
            f"the broker's certificate ({subject}) is not signed by the CA in"
            f" STREAMS_KAFKA_SSL_CA_LOCATION={ca_file} (it was signed by {issuer}); point that variable at the"
            " CA that signed the brokers' certificates"
        )
    if not _names(certificate, host):
        return f"the broker's certificate ({subject}) does not name {host}, the address the client connected to"
    return f"the handshake failed ({_short(error_text)})"


def _client_refused(certificate_file: str | None, lowered: str) -> str:
    if certificate_file is None:
        return (
            "the brokers require a client certificate (mTLS) and none is configured; set"
            " STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION and STREAMS_KAFKA_SSL_KEY_LOCATION"
        )
    from cryptography import x509  # noqa: PLC0415 - only on this path

    where = f"STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION={certificate_file}"
    try:
        certificate = x509.load_pem_x509_certificate(Path(certificate_file).read_bytes())
    except (OSError, ValueError):
        return f"the brokers refused the client certificate in {where}, which is not a readable PEM certificate"
    now = datetime.datetime.now(datetime.UTC)
    subject = certificate.subject.rfc4514_string()
    if certificate.not_valid_after_utc <= now:
        return (
            f"the brokers refused the client certificate in {where} ({subject}): it expired at"
            f" {_when(certificate.not_valid_after_utc)}; issue a new one (the local stack does at `streams dev up`)"
        )
    if certificate.not_valid_before_utc > now:
        return (
            f"the brokers refused the client certificate in {where} ({subject}): it is not valid before"
            f" {_when(certificate.not_valid_before_utc)}"
        )
    if "certificate required" in lowered:  # TLS 1.3's alert when the client sent none after all
        return f"the brokers received no client certificate although {where} is set; check that file and its key"
    return (
        f"the brokers refused the client certificate in {where} ({subject}, signed by"
        f" {certificate.issuer.rfc4514_string()}): it is not signed by a CA the brokers trust"
    )


def _peer_certificate(host: str, port: int) -> x509.Certificate:
    """The broker's certificate as it presents it, not verified: verification is what failed."""
    from cryptography import x509  # noqa: PLC0415 - only on this path

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # to read what is presented; nothing is sent over this connection
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=host) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the broker presented no certificate")
    return x509.load_der_x509_certificate(der)


def _signed_by_any(certificate: x509.Certificate, ca_file: Path) -> bool:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    try:
        authorities = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError):
        return False
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _names(certificate: x509.Certificate, host: str) -> bool:
    from cryptography import x509  # noqa: PLC0415

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in (name.lower() for name in names.get_values_for_type(x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)


def _first(bootstrap_servers: str) -> tuple[str, int]:
    first = bootstrap_servers.split(",", maxsplit=1)[0].strip()
    first = first.split("://", 1)[-1]
    host, _, port = first.rpartition(":")
    return host.strip("[]"), int(port)


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(text: str) -> str:
    """librdkafka's reason without its broker prefix and state suffix."""
    reason = text.split(": ", 1)[-1]
    return reason.split(" (after ", 1)[0]
