"""Writing evidence bundles: records (Avro container or JSONL), per-record SHA-256, Merkle root, manifest.

Built in `<dir>.partial` with a checkpoint (an interrupted export resumes), renamed to `<dir>` when sealed.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import SchemaError
from streams.replay.container import ContainerWriter
from streams.replay.encoding import (
    CANONICAL_SCHEMA,
    LEAF,
    NULL,
    RecordEncoder,
    encode_batch,
    encode_long,
    length_tag,
    merkle_root_joined,
)
from streams.replay.errors import EvidenceError
from streams.replay.jsonl import jsonl_line
from streams.replay.reader import consumed
from streams.replay.runner import Progress
from streams.replay.selection import ReplayPlan
from streams.replay.signing import sign
from streams.schemas.registry_client import SCHEMA_NOT_FOUND, RegistryRequestError

if TYPE_CHECKING:
    from confluent_kafka import Message
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.replay.filters import PayloadDecoder

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKPOINT",
    "HASHES",
    "MANIFEST",
    "RAW_FILE",
    "SIGNATURE",
    "EvidenceWriter",
    "envelope_schema",
    "file_sha256",
    "interrupted_export",
    "partial_dir",
]

BUNDLE_FORMAT = "streams-evidence/1"
MANIFEST, SIGNATURE, HASHES, CHECKPOINT = "manifest.json", "manifest.sig", "records.sha256", "checkpoint.json"
DIGESTS, SEALED = "records.digests", "sealed.json"  # of a finished part of a parallel export
RAW_FILE = "records-raw.avro"  # values that are not Avro events of a known schema, as bytes
JSONL_FILE = "records.jsonl"
PENDING = ".pending"  # beside each records file while building: the datums of its unfinished block
FORMATS = ("avro", "jsonl")
RECORD_ENCODING = (
    "SHA-256(0x00 || Avro binary encoding of the record under canonical_schema); value is the "
    "Kafka value exactly as stored (for Avro events: magic byte 0, 4-byte schema id, datum)"
)
MERKLE_TREE = (
    "RFC 6962 Merkle tree hash over the record hashes in (partition, offset) order: the record hash "
    "is the leaf hash; node = SHA-256(0x01 || left || right); split at the largest power of two "
    "below the size; empty = SHA-256('')"
)


def partial_dir(directory: Path) -> Path:
    return directory.with_name(directory.name + ".partial")


def interrupted_export(directory: Path) -> tuple[str, ReplayPlan, str, int] | None:
    """(replay id, pinned plan, format, parallel parts or 0) of an interrupted export into `directory`, if any."""
    path = partial_dir(directory) / CHECKPOINT
    try:
        checkpoint = json.loads(path.read_text())
        return (
            checkpoint["replay_id"],
            ReplayPlan.from_json(checkpoint["plan"]),
            checkpoint["output"],
            int(checkpoint.get("parts", 0)),
        )
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing interrupted here (a path that cannot be a directory fails when written)
    except (OSError, ValueError, KeyError) as exc:
        raise EvidenceError(f"{path} is unreadable ({exc}); remove {partial_dir(directory)} to start over") from exc


def envelope_schema(writer_schema: Any) -> dict[str, Any]:
    """A container record: the canonical fields, the schema id, and the value decoded by its writer schema."""
    fields = [f for f in CANONICAL_SCHEMA["fields"] if f["name"] != "value"]
    return {
        "type": "record",
        "name": "Record",
        "namespace": "streams.evidence",
        "fields": [*fields, {"name": "schema_id", "type": "int"}, {"name": "value", "type": ["null", writer_schema]}],
    }


@dataclass
class _Target:
    """One records file: the container for one schema id (or raw values), with what precedes each value."""

    name: str
    schema_id: int | None
    writer: ContainerWriter
    tag: bytes  # the envelope bytes between the canonical prefix and the datum


class EvidenceWriter:
    """The sink that builds a bundle in `<directory>.partial`; `finish` seals and renames it."""

    def __init__(
        self,
        directory: Path,
        plan: ReplayPlan,
        replay_id: str,
        decoder: PayloadDecoder,
        *,
        output: str = "avro",
        codec: str = "null",
        sign_key: Ed25519PrivateKey | None = None,
        cluster_id: str | None = None,
        part: int | None = None,
    ) -> None:
        """`part`: this writer builds part `part` of a parallel export (`plan` holds the part's ranges)."""
        if output not in FORMATS:
            raise EvidenceError(f"unknown bundle format {output!r}; use avro or jsonl")
        self.directory, self.partial = directory, partial_dir(directory)
        self.plan, self.replay_id, self.decoder = plan, replay_id, decoder
        self.part = part
        self.parts = 0  # parallel parts this bundle is built from (streams.replay.parallel); 0: built here
        self.merged = False  # the parts are in the bundle: only the manifest is left to write
        self._adopted: list[dict[str, Any]] = []  # manifest entries of the parts' records files
        self.output, self.codec, self.sign_key, self.cluster_id = output, codec, sign_key, cluster_id
        self._encoder = RecordEncoder(plan.query.topic)
        self._targets: dict[bytes, _Target] = {}
        self._files: dict[str, _Target] = {}
        self._digests = bytearray()  # the 32-byte record hashes, joined, in (partition, offset) order
        self._lines: list[str] = []
        self._schemas: dict[int, str] = {}
        self._jsonl: Any = None
        self._hashes: Any = None
        self._started = _now()
        # Full container blocks are written and hashed on this thread while the next records are read.
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-writer")

    # ---- ReplaySink ---------------------------------------------------------------------------------

    def resume(self) -> Progress:
        """Open the partial bundle: continue an interrupted export of the same query, or start afresh."""
        if self.directory.exists():
            raise EvidenceError(
                f"{self.directory} already exists; a finished bundle is never overwritten, choose another directory"
            )
        checkpoint = self._read_checkpoint()
        try:
            if checkpoint is None:
                if self.partial.exists():
                    _remove_leftovers(self.partial)
                self.partial.mkdir(parents=True)
                self._hashes = (self.partial / HASHES).open("w", encoding="ascii")
                if self.output == "jsonl":
                    self._jsonl = (self.partial / JSONL_FILE).open("wb")
                return Progress()
            return self._reopen(checkpoint)
        except OSError as exc:
            raise EvidenceError(
                f"cannot write the evidence bundle at {self.partial}: {exc.strerror or exc} "
                "(choose a writable --export directory)"
            ) from exc

    def write(self, partition: int, messages: Sequence[Message]) -> None:
        if self.output == "jsonl":
            self._write_jsonl(partition, messages)
            return
        # One native call encodes and hashes the whole batch (encoding.py holds the definition it matches);
        # envelopes carry each Avro datum as it is: no decoding, no re-encoding.
        digests, lines, groups = encode_batch(self.plan.query.topic, partition, messages, self._typed)
        self._digests += digests
        self._lines.append(lines)
        for header, data, ends in groups:
            target = self._target(None) if header is None else self._targets[header]
            target.writer.extend(data, ends)

    def _typed(self, header: bytes) -> bool:
        """Whether values starting with this Confluent header go to a schema's file (else the raw file)."""
        target = self._targets.get(header) or self._target(header)
        return target.schema_id is not None

    def commit(self, progress: Progress) -> None:
        try:
            pending = {}
            for name, target in self._files.items():
                data, pending[name] = target.writer.pending()
                _write_atomically(self.partial / (name + PENDING), data)
            if self._jsonl is not None:
                self._jsonl.flush()
            self._hashes.write("".join(self._lines))
            self._hashes.flush()
            self._lines.clear()
            state = {
                "format": BUNDLE_FORMAT,
                "replay_id": self.replay_id,
                "plan": self.plan.to_json(),
                "output": self.output,
                "codec": self.codec,
                "started_at": self._started,
                "progress": progress.to_json(),
                "hashes_size": self._hashes.tell(),
                "parts": self.parts,
                "merged": self.merged,
                "adopted": self._adopted,
                "files": {
                    name: {
                        "size": t.writer.size,
                        "count": t.writer.count,
                        "pending": pending[name],
                        "schema_id": t.schema_id,
                    }
                    for name, t in self._files.items()
                },
                "jsonl_size": None if self._jsonl is None else self._jsonl.tell(),
                "schemas": {str(k): v for k, v in self._schemas.items()},
            }
            _write_atomically(self.partial / CHECKPOINT, json.dumps(state, indent=1).encode())
        except OSError as exc:
            raise EvidenceError(f"cannot write the evidence bundle at {self.partial}: {exc.strerror or exc}") from exc

    # ---- sealing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the partial files without sealing (after an error: the checkpoint lets a re-run continue)."""
        for target in self._files.values():
            with contextlib.suppress(OSError):  # the error that stopped the export is the one to report
                target.writer.close()
        self._background.shutdown()
        for stream in (self._jsonl, self._hashes):
            if stream is not None:
                stream.close()

    def finish(self, progress: Progress) -> dict[str, Any]:
        """Write manifest (and signature), make it durable, rename `.partial` to the bundle; the manifest."""
        self.commit(progress)
        try:
            for name, target in self._files.items():
                target.writer.flush_block()
                target.writer.drain()
                (self.partial / (name + PENDING)).unlink()
        except OSError as exc:
            raise EvidenceError(f"cannot write the evidence bundle at {self.partial}: {exc.strerror or exc}") from exc
        self.close()
        manifest = self._manifest(progress)
        data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        try:
            (self.partial / MANIFEST).write_bytes(data)
            if self.sign_key is not None:
                document = sign(data, self.sign_key)
                (self.partial / SIGNATURE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
            (self.partial / CHECKPOINT).unlink()
            for path in self.partial.iterdir():
                _fsync(path)
            self.partial.replace(self.directory)
            _fsync(self.directory.parent)
        except OSError as exc:
            raise EvidenceError(f"cannot seal the evidence bundle {self.directory}: {exc.strerror or exc}") from exc
        return manifest

    # ---- parallel parts (streams.replay.parallel) ----------------------------------------------------

    def seal_part(self, progress: Progress) -> None:
        """End this writer's part of a parallel export: every block written and hashed, then SEALED written.

        The part stays in its `.partial` directory for `merge_parts`; a re-run finds it sealed and skips it.
        """
        try:
            self.commit(progress)
            files = []
            for name, target in sorted(self._files.items()):
                target.writer.flush_block()
                files.append(
                    {
                        "name": name,
                        "schema_id": target.schema_id,
                        "records": target.writer.count,
                        "sha256": target.writer.sha256(),
                    }
                )
            self.close()  # the pending files stay: until SEALED exists, a re-run resumes from the checkpoint
            (self.partial / DIGESTS).write_bytes(bytes(self._digests))
            sealed = {
                "progress": progress.to_json(),
                "files": files,
                "schemas": {str(k): v for k, v in self._schemas.items()},
            }
            _write_atomically(self.partial / SEALED, json.dumps(sealed).encode())
        except OSError as exc:
            raise EvidenceError(f"cannot write the evidence bundle at {self.partial}: {exc.strerror or exc}") from exc
        finally:
            self.close()

    @staticmethod
    def part_sealed(directory: Path) -> bool:
        return (partial_dir(directory) / SEALED).exists()

    def merge_parts(self, parts: Sequence[Path]) -> Progress:
        """Move the sealed parts' records files into this bundle and join their hash lists, in plan order
        (the parts hold consecutive partitions); the whole export's progress."""
        progress = Progress()
        try:
            for part in map(partial_dir, parts):
                sealed = json.loads((part / SEALED).read_text())
                self._schemas |= {int(k): v for k, v in sealed["schemas"].items()}
                for entry in sealed["files"]:
                    moved = self.partial / entry["name"]
                    if (part / entry["name"]).exists() or not moved.exists():  # else moved by an interrupted merge
                        (part / entry["name"]).replace(moved)
                    self._adopted.append(entry)
                with (part / HASHES).open("rb") as lines:
                    shutil.copyfileobj(lines, self._hashes.buffer, 1 << 20)
                self._digests += (part / DIGESTS).read_bytes()
                done = Progress.from_json(sealed["progress"])
                progress.next_offsets |= done.next_offsets
                progress.matched_by_partition |= done.matched_by_partition
                progress.scanned += done.scanned
                progress.matched += done.matched
            self.merged = True
            self.commit(progress)
            for part in parts:
                shutil.rmtree(partial_dir(part))
        except OSError as exc:
            raise EvidenceError(f"cannot write the evidence bundle at {self.partial}: {exc.strerror or exc}") from exc
        return progress

    def _manifest(self, progress: Progress) -> dict[str, Any]:
        files = sorted(
            [
                *self._adopted,
                *(
                    {"name": name, "schema_id": t.schema_id, "records": t.writer.count, "sha256": t.writer.sha256()}
                    for name, t in self._files.items()
                ),
            ],
            key=lambda entry: entry["name"],
        )
        if self.output == "jsonl":
            files = [
                {
                    "name": JSONL_FILE,
                    "schema_id": None,
                    "records": progress.matched,
                    "sha256": file_sha256(self.partial / JSONL_FILE),
                }
            ]
        by_partition = {
            str(r.partition): {
                "start": r.start,
                "end": r.end,
                "records": progress.matched_by_partition.get(r.partition, 0),
                **_sources(self.plan, r.partition, r.start, r.end),
            }
            for r in self.plan.ranges
        }
        return {
            "format": BUNDLE_FORMAT,
            "replay_id": self.replay_id,
            "topic": self.plan.query.topic,
            "cluster_id": self.cluster_id,
            "query": self.plan.query.to_json(),
            "plan": self.plan.to_json(),
            "counts": {
                "offsets_in_range": self.plan.total,
                "scanned": progress.scanned,
                "records": progress.matched,
                "by_partition": by_partition,
            },
            "records": {
                "format": self.output,
                "codec": self.codec if self.output == "avro" else None,
                "files": files,
                "hash_list": {"name": HASHES, "sha256": file_sha256(self.partial / HASHES)},
            },
            "schemas": {str(k): v for k, v in sorted(self._schemas.items())},
            "hashing": {"record": RECORD_ENCODING, "merkle": MERKLE_TREE, "canonical_schema": CANONICAL_SCHEMA},
            "merkle_root": merkle_root_joined(bytes(self._digests)).hex(),
            "run_by": _who(),
            "started_at": self._started,
            "created_at": _now(),
        }

    # ---- internals ----------------------------------------------------------------------------------

    def _target(self, value: bytes | None) -> _Target:
        """The records file for `value`'s schema id (created on first use); raw values go to RAW_FILE."""
        schema_id = _schema_id(value)
        writer_schema = None if schema_id is None else self._writer_schema(schema_id)
        if writer_schema is None:
            schema_id = None
        name = RAW_FILE if schema_id is None else f"records-{schema_id}.avro"
        if self.part is not None:
            name = name.replace(".avro", f".part{self.part}.avro")
        target = self._files.get(name) or self._open_file(name, schema_id)
        if value is not None:
            self._targets[value[:5]] = target
        return target

    def _open_file(self, name: str, schema_id: int | None, *, resume_at: int = 0) -> _Target:
        """A records file of this bundle (its schema's text already in `_schemas`)."""
        schema = CANONICAL_SCHEMA if schema_id is None else envelope_schema(json.loads(self._schemas[schema_id]))
        writer = ContainerWriter(
            self.partial / name,
            schema,
            self.codec,
            _sync(self.plan, name),
            resume_at=resume_at,
            background=self._background,
        )
        tag = b"" if schema_id is None else encode_long(schema_id) + b"\x02"
        target = self._files[name] = _Target(name, schema_id, writer, tag)
        return target

    def _writer_schema(self, schema_id: int) -> Any:
        try:
            text = self.decoder.schema_text(schema_id)
        except RegistryRequestError as exc:
            if exc.error_code == SCHEMA_NOT_FOUND:
                return None  # a value that only looks like the wire format: kept as raw bytes
            raise
        schema = json.loads(text)
        if isinstance(schema, list) or schema == "null":
            return None  # cannot be a branch of the envelope's ["null", schema] union
        self._schemas[schema_id] = text
        return schema

    def _write_jsonl(self, partition: int, messages: Sequence[Message]) -> None:
        prefix_of = self._encoder.prefix
        chunks: list[bytes] = []
        for message in consumed(messages):
            offset, value = message.offset(), message.value()
            prefix = prefix_of(partition, offset, message.timestamp()[1], message.key(), message.headers())
            tail = NULL if value is None else length_tag(len(value)) + value
            digest = hashlib.sha256(LEAF + prefix + tail).digest()
            schema_id, payload = self._decoded(value)
            chunks.append(jsonl_line(message, partition, schema_id, payload))
            self._digests += digest
            self._lines.append(f"{partition} {offset} {digest.hex()}\n")
        self._jsonl.write(b"".join(chunks))

    def _decoded(self, value: bytes | None) -> tuple[int | None, Any]:
        schema_id = _schema_id(value)
        if schema_id is None or value is None or self._writer_schema(schema_id) is None:
            return None, None
        try:
            return schema_id, self.decoder.codec(schema_id).decode_datum(value[5:])
        except SchemaError:
            return schema_id, None

    def _read_checkpoint(self) -> dict[str, Any] | None:
        path = self.partial / CHECKPOINT
        if not path.exists():
            return None
        try:
            checkpoint: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EvidenceError(f"{path} is unreadable ({exc}); remove {self.partial} to start over") from exc
        if checkpoint["plan"] != self.plan.to_json() or checkpoint["output"] != self.output:
            stored = checkpoint["plan"]["query"]
            raise EvidenceError(
                f"{self.partial} holds an interrupted export of a different query ({json.dumps(stored)}, "
                f"{checkpoint['output']}); re-run that query to finish it, or remove {self.partial}"
            )
        if checkpoint["replay_id"] != self.replay_id:
            raise EvidenceError(f"{self.partial} belongs to replay {checkpoint['replay_id']}, not {self.replay_id}")
        return checkpoint

    def _reopen(self, checkpoint: dict[str, Any]) -> Progress:
        self.codec, self._started = checkpoint["codec"], checkpoint["started_at"]
        self.parts, self.merged = checkpoint.get("parts", 0), checkpoint.get("merged", False)
        self._adopted = checkpoint.get("adopted", [])
        self._schemas = {int(k): v for k, v in checkpoint["schemas"].items()}
        hashes = self.partial / HASHES
        if hashes.stat().st_size < checkpoint["hashes_size"]:
            raise EvidenceError(f"{hashes} is shorter than its checkpoint says; remove {self.partial} to start over")
        self._hashes = hashes.open("r+", encoding="ascii")
        self._hashes.truncate(checkpoint["hashes_size"])
        self._hashes.seek(checkpoint["hashes_size"])
        with hashes.open(encoding="ascii") as lines:
            self._digests = bytearray(b"".join(bytes.fromhex(line.split()[2]) for line in lines))
        for name, entry in checkpoint["files"].items():
            writer = self._open_file(name, entry["schema_id"], resume_at=entry["size"]).writer
            writer.count = entry["count"]
            writer.restore_pending((self.partial / (name + PENDING)).read_bytes(), entry["pending"])
        if checkpoint["jsonl_size"] is not None:
            self._jsonl = (self.partial / JSONL_FILE).open("r+b")
            self._jsonl.truncate(checkpoint["jsonl_size"])
            self._jsonl.seek(checkpoint["jsonl_size"])
        return Progress.from_json(checkpoint["progress"])


def _sources(plan: ReplayPlan, partition: int, start: int, end: int) -> dict[str, Any]:
    """Which offsets came from the archive (below Kafka's log start when planned) and which from Kafka."""
    split = plan.archived_below.get(partition)
    if split is None or split <= start:
        return {"from_kafka": [start, end]}
    split = min(split, end)
    return {"from_archive": [start, split], "from_kafka": [split, end], "archive": plan.archive}


def _remove_leftovers(partial: Path) -> None:
    """An export that died before its first checkpoint left nothing resumable: clear it, if it is ours."""
    ours = re.compile(
        r"^(records(-\w+)?(\.part\d+)?\.(avro|jsonl)|records\.sha256|checkpoint\.json|part-\d+\.partial)"
        r"(\.pending)?(\.tmp)?$"
    )
    strangers = [p.name for p in partial.iterdir() if not ours.match(p.name)]
    if strangers:
        raise EvidenceError(
            f"{partial} exists and holds files an export does not write ({', '.join(strangers[:3])}); "
            "move it away or choose another --export directory"
        )
    shutil.rmtree(partial)


def _schema_id(value: bytes | None) -> int | None:
    if value is None or len(value) < 5 or value[0] != 0:
        return None
    return int.from_bytes(value[1:5], "big")


def _sync(plan: ReplayPlan, name: str) -> bytes:
    """A sync marker derived from the query, so the same replay writes the same bytes."""
    return hashlib.sha256(f"{plan.query.topic}\n{plan.ranges_arg()}\n{name}".encode()).digest()[:16]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
