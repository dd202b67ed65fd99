"""Key files: generated once, never overwritten, and each wrong kind of file is named."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streams.replay.errors import EvidenceError
from streams.replay.signing import generate_keypair, load_private_key, load_public_key, sign, verify_signature


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "auditor")
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert pair.public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert pair.fingerprint.startswith("sha256:")
    with pytest.raises(EvidenceError, match="already exists"):
        generate_keypair(tmp_path / "auditor")


def test_the_halves_are_not_interchangeable(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    with pytest.raises(EvidenceError, match=r"it is a public key; sign with the \.key file"):
        load_private_key(pair.public)
    with pytest.raises(EvidenceError, match=r"it is a private key; pass the \.pub file"):
        load_public_key(pair.private)
    with pytest.raises(EvidenceError, match="cannot read the signing key"):
        load_private_key(tmp_path / "missing.key")


def test_signature_checks(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    key = load_private_key(pair.private)
    document = sign(b"manifest", key)
    assert verify_signature(b"manifest", document, None) == []
    assert verify_signature(b"manifest", document, load_public_key(pair.public)) == []
    assert "was edited after signing" in verify_signature(b"manifest!", document, None)[0]
    assert "malformed" in verify_signature(b"manifest", {**document, "signature": "%%"}, None)[0]
