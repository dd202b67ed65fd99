"""Verifying an evidence bundle: signature, file digests, every record's SHA-256, the Merkle root, counts.

Every check runs; the report names each failure (edited record, dropped record, edited manifest, wrong key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import SchemaError
from streams.replay.container import ContainerReader
from streams.replay.encoding import LEAF, NULL, RecordEncoder, length_tag, merkle_root
from streams.replay.errors import EvidenceError
from streams.replay.evidence import BUNDLE_FORMAT, HASHES, MANIFEST, SIGNATURE, file_sha256, partial_dir
from streams.replay.jsonl import decode_b64, decode_blob, json_safe
from streams.replay.signing import fingerprint, verify_signature
from streams.replay.skipping import EnvelopeFields, read_envelope, skipper
from streams.schemas.codec import HEADER, MAGIC, AvroCodec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["VerifyReport", "verify_bundle"]

Key = tuple[int, int]  # (partition, offset)
SHOWN = 20  # problems listed in the error message; the report keeps them all


@dataclass
class VerifyReport:
    """The outcome of `verify_bundle`: what was checked, who signed, and every problem found."""

    directory: Path
    records: int = 0
    merkle_root: str | None = None
    signed_by: str | None = None
    signer_trusted: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "ok": self.ok,
            "records": self.records,
            "merkle_root": self.merkle_root,
            "signed_by": self.signed_by,
            "signer_trusted": self.signer_trusted,
            "problems": self.problems,
        }

    def raise_if_failed(self) -> None:
        if self.problems:
            shown = self.problems[:SHOWN]
            more = f"\n  ... and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
            raise EvidenceError(
                f"evidence bundle {self.directory} FAILED verification ({len(self.problems)} "
                "problem(s)):\n  " + "\n  ".join(shown) + more,
                tuple(self.problems),
            )


def verify_bundle(directory: Path, trusted: Ed25519PublicKey | None = None) -> VerifyReport:
    """Recompute and check everything in the bundle at `directory` (problems are collected, not raised)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        hint = (
            f" (an interrupted export is still in {partial_dir(directory)}; re-run it to finish)"
            if partial_dir(directory).exists()
            else ""
        )
        raise EvidenceError(f"{directory} is not an evidence bundle: it has no {MANIFEST}{hint}")
    report = VerifyReport(directory)
    data = manifest_path.read_bytes()
    _check_signature(directory, data, trusted, report)
    try:
        manifest = json.loads(data)
        if manifest.get("format") != BUNDLE_FORMAT:
            report.problems.append(f"{MANIFEST}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT}")
            return report
        _check_contents(directory, manifest, report)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        report.problems.append(f"{MANIFEST} is malformed (edited?): {type(exc).__name__}: {exc}")
    return report


def _check_signature(directory: Path, data: bytes, trusted: Ed25519PublicKey | None, report: VerifyReport) -> None:
    path = directory / SIGNATURE
    if not path.exists():
        if trusted is not None:
            report.problems.append(f"the bundle is not signed ({SIGNATURE} is missing), but a public key was given")
        return
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        report.problems.append(f"{SIGNATURE} is not valid JSON: {exc}")
        return
    problems = verify_signature(data, document, trusted)
    report.problems.extend(problems)
    if not problems:
        report.signed_by = str(document.get("key_fingerprint"))
        report.signer_trusted = trusted is not None and report.signed_by == fingerprint(trusted)


def _check_contents(directory: Path, manifest: dict[str, Any], report: VerifyReport) -> None:
    problems = report.problems
    records = manifest["records"]
    hash_list = records["hash_list"]
    listed = _listed(directory / hash_list["name"], hash_list["sha256"], problems)
    known = {entry["name"] for entry in records["files"]} | {MANIFEST, SIGNATURE, hash_list["name"]}
    for extra in sorted(p.name for p in directory.iterdir() if p.name not in known):
        problems.append(f"{extra}: a file the manifest does not list")
    topic = manifest["topic"]
    encoder = RecordEncoder(topic)
    found: dict[Key, bytes] = {}
    for entry in records["files"]:
        path = directory / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing (the manifest lists {entry['records']} record(s) in it)")
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: its SHA-256 differs from the manifest's (the file was changed)")
        reading = (
            _jsonl_records(path, manifest, encoder, problems)
            if records["format"] == "jsonl"
            else _avro_records(path, problems)
        )
        count = 0
        for record_topic, key, digest in reading:
            count += 1
            if record_topic != topic:
                problems.append(
                    f"{entry['name']}: partition {key[0]} offset {key[1]} is from topic '{record_topic}', not '{topic}'"
                )
            if key in found:
                problems.append(f"partition {key[0]} offset {key[1]}: appears twice in the records")
            found[key] = digest
        if count != entry["records"]:
            problems.append(f"{entry['name']}: holds {count} record(s), the manifest says {entry['records']}")
    _compare(listed, found, manifest, report)


def _compare(
    listed: list[tuple[Key, bytes]], found: dict[Key, bytes], manifest: dict[str, Any], report: VerifyReport
) -> None:
    problems = report.problems
    keys = [key for key, _ in listed]
    if keys != sorted(set(keys)):
        problems.append(f"{HASHES}: entries are duplicated or out of (partition, offset) order")
    listed_keys = set(keys)
    for (partition, offset), digest in listed:
        actual = found.get((partition, offset))
        if actual is None:
            problems.append(
                f"partition {partition} offset {offset}: listed in {HASHES} but missing from the records "
                "(a dropped record)"
            )
        elif actual != digest:
            problems.append(
                f"partition {partition} offset {offset}: the record does not match its SHA-256 in "
                f"{HASHES} (an edited record)"
            )
    for partition, offset in sorted(found.keys() - listed_keys):
        problems.append(f"partition {partition} offset {offset}: in the records but not in {HASHES} (an added record)")
    ranges = {int(r["partition"]): (int(r["start"]), int(r["end"])) for r in manifest["plan"]["ranges"]}
    for partition, offset in sorted(found):
        start, end = ranges.get(partition, (0, 0))
        if not start <= offset < end:
            problems.append(
                f"partition {partition} offset {offset}: outside the pinned ranges {manifest['plan']['ranges_arg']}"
            )
    root = merkle_root([digest for _, digest in listed]).hex()
    if root != manifest["merkle_root"]:
        problems.append(
            f"Merkle root of {HASHES} is {root}, the manifest says {manifest['merkle_root']} "
            "(the manifest or the hash list was edited)"
        )
    recomputed = merkle_root([found[key] for key in sorted(found)]).hex()
    if recomputed != manifest["merkle_root"] and root == manifest["merkle_root"]:
        problems.append(f"Merkle root recomputed from the records is {recomputed}, not the manifest's")
    counts = manifest["counts"]
    if counts["records"] != len(found) or counts["records"] != len(listed):
        problems.append(
            f"{MANIFEST} counts {counts['records']} record(s); the bundle holds {len(found)} and "
            f"{HASHES} lists {len(listed)}"
        )
    for partition, entry in counts["by_partition"].items():
        held = sum(1 for key in found if key[0] == int(partition))
        if held != entry["records"]:
            problems.append(
                f"partition {partition}: {MANIFEST} counts {entry['records']} record(s), the bundle holds {held}"
            )
    report.records = len(found)
    report.merkle_root = recomputed


def _listed(path: Path, expected: str, problems: list[str]) -> list[tuple[Key, bytes]]:
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return []
    if file_sha256(path) != expected:
        problems.append(f"{path.name}: its SHA-256 differs from the manifest's (the hash list was changed)")
    listed: list[tuple[Key, bytes]] = []
    for number, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        try:
            partition, offset, digest = line.split()
            listed.append(((int(partition), int(offset)), bytes.fromhex(digest)))
        except ValueError:
            problems.append(f"{path.name}:{number}: not 'partition offset sha256': {line[:80]!r}")
    return listed


def _avro_records(path: Path, problems: list[str]) -> Iterator[tuple[str, Key, bytes]]:
    """(topic, (partition, offset), hash) of each record, from the exact bytes in the container."""
    try:
        container = ContainerReader.open(path)
        fields = {f["name"]: f["type"] for f in container.schema["fields"]}
        typed = "schema_id" in fields
        value = skipper(fields["value"][1], namespace="streams.evidence") if typed else None
        for number, (count, data) in enumerate(container.blocks()):
            pos = 0
            for _ in range(count):
                try:
                    record = read_envelope(data, pos, value)
                except (IndexError, UnicodeDecodeError) as exc:
                    problems.append(
                        f"{path.name} block {number}: a record is not readable ({exc}); the rest of "
                        "the block is unreadable"
                    )
                    break
                yield record.topic, (record.partition, record.offset), _digest(data, pos, record)
                pos = record.end
            else:
                if pos != len(data):
                    problems.append(
                        f"{path.name} block {number}: {len(data) - pos} byte(s) beyond its records "
                        "(the block was changed)"
                    )
    except (EvidenceError, KeyError, IndexError, TypeError) as exc:
        problems.append(f"{path.name}: not a readable records file: {exc}")


def _digest(data: bytes, start: int, record: EnvelopeFields) -> bytes:
    """The record's hash from the bytes in the container (the datum is never re-encoded)."""
    if record.schema_id is None:  # a raw record: the envelope is the canonical encoding itself
        return hashlib.sha256(LEAF + data[start : record.end]).digest()
    prefix = data[start : record.prefix_end]
    if record.value_start is None:
        return hashlib.sha256(LEAF + prefix + NULL).digest()
    value = HEADER.pack(MAGIC, record.schema_id) + data[record.value_start : record.end]
    return hashlib.sha256(b"".join((LEAF, prefix, length_tag(len(value)), value))).digest()


def _jsonl_records(
    path: Path, manifest: dict[str, Any], encoder: RecordEncoder, problems: list[str]
) -> Iterator[tuple[str, Key, bytes]]:
    codecs: dict[int, AvroCodec] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                key, value = decode_blob(record["key"]), decode_b64(record["value"])
                headers = [(name, decode_blob(data)) for name, data in record["headers"]]
                prefix = encoder.prefix(record["partition"], record["offset"], record["timestamp"], key, headers)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path.name}:{number}: not a readable record ({type(exc).__name__}: {exc})")
                continue
            tail = NULL if value is None else length_tag(len(value)) + value
            where = (record["partition"], record["offset"])
            schema_id = record.get("schema_id")
            if schema_id is not None and value is not None:
                _check_payload(path.name, where, value, record.get("payload"), manifest, schema_id, codecs, problems)
            yield record["topic"], where, hashlib.sha256(LEAF + prefix + tail).digest()


def _check_payload(
    name: str,
    where: Key,
    value: bytes,
    payload: Any,
    manifest: dict[str, Any],
    schema_id: int,
    codecs: dict[int, AvroCodec],
    problems: list[str],
) -> None:
    """The readable payload must be what the hashed value bytes decode to."""
    text = manifest["schemas"].get(str(schema_id))
    if text is None:
        problems.append(f"{name}: partition {where[0]} offset {where[1]}: schema id {schema_id} is not in the manifest")
        return
    codec = codecs.get(schema_id) or codecs.setdefault(schema_id, AvroCodec(text, schema_id))
    try:
        decoded = json_safe(codec.decode_datum(value[HEADER.size :]))
    except SchemaError:
        decoded = None
    if decoded != payload:
        problems.append(
            f"{name}: partition {where[0]} offset {where[1]}: the payload does not match the value's "
            "bytes (an edited payload)"
        )
