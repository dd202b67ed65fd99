"""Ed25519 keys for evidence bundles: generate a pair, sign a manifest's bytes, check a signature.

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), readable by openssl and every TLS stack.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.replay.errors import EvidenceError

__all__ = [
    "ALGORITHM",
    "KeyPair",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign",
    "signature_document",
    "verify_signature",
]

ALGORITHM = "Ed25519"


@dataclass(frozen=True)
class KeyPair:
    """Where `generate_keypair` wrote the two halves, and the public key's fingerprint."""

    private: Path
    public: Path
    fingerprint: str


def generate_keypair(stem: Path) -> KeyPair:
    """Write `<stem>.key` (private, mode 0600) and `<stem>.pub`; refuses to overwrite either."""
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise EvidenceError(f"{path} already exists; choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise EvidenceError(f"cannot write the key pair next to {stem}: {exc.strerror or exc}") from exc
    return KeyPair(private_path, public_path, fingerprint(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`; EvidenceError saying what the file holds instead."""
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        hint = " (it is a public key; sign with the .key file)" if b"PUBLIC KEY" in data else ""
        raise EvidenceError(f"{path} is not an unencrypted PEM private key{hint}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(
            f"{path} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 key; "
            "make one with `streams evidence keygen`"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file `path`."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        hint = " (it is a private key; pass the .pub file)" if b"PRIVATE KEY" in data else ""
        raise EvidenceError(f"{path} is not a PEM public key{hint}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 public key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:<first 16 bytes, hex>` of the raw public key: short enough to read out, long enough to trust."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def sign(data: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signature document stored as `manifest.sig` for `data` (the manifest's exact bytes)."""
    public = key.public_key()
    return signature_document(public, key.sign(data))


def signature_document(public: Ed25519PublicKey, signature: bytes) -> dict[str, Any]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "algorithm": ALGORITHM,
        "signed_file": "manifest.json",
        "public_key": base64.b64encode(raw).decode(),
        "key_fingerprint": fingerprint(public),
        "signature": base64.b64encode(signature).decode(),
    }


def verify_signature(data: bytes, document: dict[str, Any], trusted: Ed25519PublicKey | None) -> list[str]:
    """Problems with `document` as a signature over `data` (empty when it verifies).

    With `trusted`, the signature must be that key's; without, the key embedded in the document is used,
    which proves the manifest is unchanged since signing but not who signed it.
    """
    if document.get("algorithm") != ALGORITHM:
        return [f"manifest.sig: unsupported algorithm {document.get('algorithm')!r} (expected {ALGORITHM})"]
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(document["public_key"], validate=True))
        signature = base64.b64decode(document["signature"], validate=True)
    except (KeyError, ValueError, TypeError) as exc:
        return [f"manifest.sig is malformed: {exc}"]
    key = trusted or embedded
    if trusted is not None and fingerprint(trusted) != fingerprint(embedded):
        return [
            (
                f"wrong signature key: the bundle was signed by key {fingerprint(embedded)}, not by the trusted "
                f"key {fingerprint(trusted)}"
            )
        ]
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return [
            (
                f"manifest signature does not verify with key {fingerprint(key)}: manifest.json was edited "
                "after signing (or manifest.sig was)"
            )
        ]
    return []


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EvidenceError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
