"""Signed checkpoints of the audit chain: the head (sequence, entry hash, time) signed with an Ed25519 evidence
key, kept as JSON lines outside the chain and carried by the chain's own entries, so a cut tail, a rollback or a
fork cannot go unseen.

`streams audit checkpoint` appends one; `streams audit verify --checkpoint FILE` checks a chain (a topic or
an exported file: no cluster needed) against all of them, naming the first missing sequence; `audit verify`
always checks the checkpoints the chain carries (decision 0025).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.agents.audit_chain import ChainEntry
from streams.errors import StreamsError
from streams.replay.signing import fingerprint, sign

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.agents.audit_chain import UnreadableEntry

__all__ = [
    "CHECKPOINT_FORMAT",
    "append_checkpoint",
    "embedded_line",
    "make_checkpoint",
    "read_checkpoints",
    "sign_head",
    "verify_checkpoints",
    "verify_embedded",
]

CHECKPOINT_FORMAT = "streams-audit-checkpoint/1"


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def make_checkpoint(
    entries: Sequence[ChainEntry | UnreadableEntry], chain: str, key: Ed25519PrivateKey, now: datetime | None = None
) -> dict[str, Any]:
    """A signed checkpoint of the chain's head (its last readable entry)."""
    readable = [entry for entry in entries if isinstance(entry, ChainEntry)]
    if not readable:
        raise StreamsError(f"the chain {chain} is empty: there is no head to checkpoint")
    return sign_head(chain, readable[-1].sequence, readable[-1].entry_hash, key, now)


def sign_head(
    chain: str, sequence: int, entry_hash: str, key: Ed25519PrivateKey, now: datetime | None = None
) -> dict[str, Any]:
    """A signed checkpoint of the head `sequence` / `entry_hash` of `chain`."""
    body = {
        "format": CHECKPOINT_FORMAT,
        "chain": chain,
        "sequence": sequence,
        "entry_hash": entry_hash,
        "time": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return {**body, "signature": sign(_signed_bytes(body), key)}


def append_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(checkpoint, sort_keys=True) + "\n")


def embedded_line(checkpoint: dict[str, Any]) -> str:
    """The checkpoint as an entry's `checkpoint` field carries it: the checkpoint file's line, compact."""
    return json.dumps(checkpoint, sort_keys=True, separators=(",", ":"))


def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    """The checkpoints of a checkpoint file, or those an exported chain (`streams audit export`) carries: an
    earlier export kept away from the cluster is then the outside reference a later chain is checked against."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise StreamsError(f"cannot read the checkpoint file {path}: {exc.strerror or exc}") from exc
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except ValueError as exc:
        raise StreamsError(f"{path} is not JSON lines of checkpoints: {exc}") from exc
    checkpoints: list[dict[str, Any]] = []
    for record in records:
        if isinstance(record, dict) and "previous_entry_hash" in record:  # an exported chain entry
            carried = record.get("checkpoint")
            if isinstance(carried, str):
                checkpoints.append(_parse_carried(carried, f"{path}: sequence {record.get('sequence')}"))
        elif isinstance(record, dict):
            checkpoints.append(record)
        else:
            raise StreamsError(f"{path} is not JSON lines of checkpoints: a line holds {type(record).__name__}")
    return checkpoints


def _parse_carried(text: str, where: str) -> dict[str, Any]:
    try:
        checkpoint = json.loads(text)
    except ValueError as exc:
        raise StreamsError(f"{where}: its checkpoint is not JSON: {exc}") from exc
    if not isinstance(checkpoint, dict):
        raise StreamsError(f"{where}: its checkpoint is not a JSON object")
    return checkpoint


def verify_embedded(
    entries: Sequence[ChainEntry | UnreadableEntry], trusted: Ed25519PublicKey | None = None
) -> tuple[int, list[str]]:
    """(how many, problems) of the checkpoints the chain's entries carry: each must be validly signed (by
    `trusted` when given), name the entry that carries it, and agree with the chain (verify_checkpoints)."""
    carried: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in entries:
        if not isinstance(entry, ChainEntry) or entry.checkpoint is None:
            continue
        try:
            checkpoint = _parse_carried(entry.checkpoint, f"sequence {entry.sequence}")
        except StreamsError as exc:
            problems.append(str(exc))
            continue
        if checkpoint.get("sequence") != entry.sequence or checkpoint.get("entry_hash") != entry.entry_hash:
            problems.append(
                f"sequence {entry.sequence} carries a checkpoint of sequence {checkpoint.get('sequence')} "
                f"({checkpoint.get('entry_hash')}), not of itself ({entry.entry_hash}): the entry was rewritten "
                "or the checkpoint moved"
            )
        carried.append(checkpoint)
    return len(carried), problems + verify_checkpoints(entries, carried, trusted)


def _signature_problem(checkpoint: dict[str, Any], trusted: Ed25519PublicKey | None) -> str | None:
    document = checkpoint.get("signature") or {}
    body = {k: v for k, v in checkpoint.items() if k != "signature"}
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(document["public_key"], validate=True))
        signature = base64.b64decode(document["signature"], validate=True)
    except (KeyError, ValueError, TypeError):
        return "its signature is missing or malformed"
    if trusted is not None and fingerprint(trusted) != fingerprint(embedded):
        return f"it is signed by key {fingerprint(embedded)}, not the trusted {fingerprint(trusted)}"
    try:
        (trusted or embedded).verify(signature, _signed_bytes(body))
    except InvalidSignature:
        return "its signature does not verify: the checkpoint was edited"
    return None


def verify_checkpoints(
    entries: Sequence[ChainEntry | UnreadableEntry],
    checkpoints: Sequence[dict[str, Any]],
    trusted: Ed25519PublicKey | None = None,
) -> list[str]:
    """Problems of the chain against its signed checkpoints (empty: every checkpointed head is still there).

    A chain that ends before a checkpoint's sequence was cut or rolled back; one whose entry at that sequence
    has another hash was forked (rewritten) after the last checkpoint it still matches.
    """
    by_sequence = {entry.sequence: entry for entry in entries if isinstance(entry, ChainEntry)}
    tip = max(by_sequence, default=-1)
    problems: list[str] = []
    matched = -1  # the highest checkpointed sequence the chain still agrees with
    for checkpoint in sorted(checkpoints, key=lambda c: int(c.get("sequence", -1))):
        sequence, when = int(checkpoint.get("sequence", -1)), checkpoint.get("time")
        if (problem := _signature_problem(checkpoint, trusted)) is not None:
            problems.append(f"checkpoint of sequence {sequence} ({when}): {problem}")
            continue
        entry = by_sequence.get(sequence)
        if entry is None and sequence > tip:
            problems.append(
                f"the chain ends at sequence {tip}, but sequence {sequence} was checkpointed at {when}: "
                f"its tail was cut or rolled back; the first missing sequence is {tip + 1}"
            )
            break
        if entry is None or entry.entry_hash != checkpoint.get("entry_hash"):
            found = "missing" if entry is None else f"has hash {entry.entry_hash}"
            problems.append(
                f"the chain forked: sequence {sequence} {found}, but {checkpoint.get('entry_hash')} "
                f"was checkpointed at {when}; the signed history after sequence {matched} is missing "
                f"(the first missing sequence is {matched + 1} or later, up to {sequence})"
            )
            break
        matched = sequence
    return problems
