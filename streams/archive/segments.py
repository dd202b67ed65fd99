"""Archive segments: one Avro container of a partition's records [from_offset, next_offset) and its manifest.

A record is stored as its canonical encoding (streams.replay.encoding: topic, partition, offset, timestamp,
key, headers, value bytes exactly as Kafka had them), so its archive hash is its evidence-bundle hash.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastavro

from streams.archive.store import ArchiveError
from streams.replay.container import container_header, encode_block
from streams.replay.encoding import CANONICAL_SCHEMA, LEAF, RecordEncoder, merkle_root_joined, value_tail

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streams.archive.store import ArchiveStore
    from streams.replay.reader import ConsumedRecord

__all__ = [
    "SEGMENT_FORMAT",
    "ArchivedRecord",
    "Segment",
    "build_segment",
    "decode_segment",
    "list_segments",
    "manifest_name",
    "segment_name",
]

SEGMENT_FORMAT = "streams-archive-segment/1"
CODEC = "null"  # the values are mostly Avro already; a year of segments compresses better as a whole later
BLOCK_RECORDS = 4096
TIMESTAMP_CREATE_TIME = 1  # confluent-kafka's TIMESTAMP_CREATE_TIME, what Message.timestamp() says first


def _prefix(topic: str, partition: int) -> str:
    return f"{topic}/{partition:05d}/"


def segment_name(topic: str, partition: int, from_offset: int) -> str:
    """Derived from the offsets only: a segment rewritten after a crash replaces its torn predecessor."""
    return f"{_prefix(topic, partition)}{from_offset:020d}.avro"


def manifest_name(topic: str, partition: int, from_offset: int) -> str:
    return f"{_prefix(topic, partition)}{from_offset:020d}.manifest.json"


def _sync(topic: str, partition: int, from_offset: int) -> bytes:
    """The container's sync marker, derived too: the same records always make the same bytes."""
    return hashlib.sha256(f"{topic}\n{partition}\n{from_offset}".encode()).digest()[:16]


@dataclass(frozen=True)
class Segment:
    """A sealed segment as its manifest describes it."""

    topic: str
    partition: int
    from_offset: int  # the partition's position this segment continues from (the previous next_offset)
    next_offset: int  # one past its last record
    count: int
    first_timestamp: int
    last_timestamp: int
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def name(self) -> str:
        return segment_name(self.topic, self.partition, self.from_offset)

    @classmethod
    def parse(cls, data: bytes, where: str) -> Segment:
        try:
            manifest = json.loads(data)
        except ValueError as exc:
            raise ArchiveError(f"{where}: not a readable segment manifest ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != SEGMENT_FORMAT:
            raise ArchiveError(f"{where}: not a segment manifest of format {SEGMENT_FORMAT}")
        try:
            return cls(
                str(manifest["topic"]),
                int(manifest["partition"]),
                int(manifest["from_offset"]),
                int(manifest["next_offset"]),
                int(manifest["count"]),
                int(manifest["first_timestamp"]),
                int(manifest["last_timestamp"]),
                manifest,
                hashlib.sha256(data).hexdigest(),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{where}: not a readable segment manifest ({exc})") from exc


def build_segment(
    topic: str,
    partition: int,
    from_offset: int,
    records: Sequence[ConsumedRecord],
    previous_manifest_sha256: str | None,
) -> tuple[bytes, bytes]:
    """(container bytes, manifest bytes) for `records` (offset order, at least one), which continue the
    partition from `from_offset`; the manifest links the previous segment's manifest by its SHA-256."""
    encoder = RecordEncoder(topic)
    prefix_of, sha256 = encoder.prefix, hashlib.sha256
    datums: list[bytes] = []
    hashes: list[list[Any]] = []
    digests = bytearray()
    for record in records:
        offset = record.offset()
        datum = prefix_of(partition, offset, record.timestamp()[1], record.key(), record.headers()) + value_tail(
            record.value()
        )
        digest = sha256(LEAF + datum).digest()
        datums.append(datum)
        digests += digest
        hashes.append([offset, digest.hex()])
    sync = _sync(topic, partition, from_offset)
    parts = [container_header(CANONICAL_SCHEMA, CODEC, sync)]
    for start in range(0, len(datums), BLOCK_RECORDS):
        block = datums[start : start + BLOCK_RECORDS]
        parts.append(encode_block(b"".join(block), len(block), CODEC, sync))
    container = b"".join(parts)
    manifest = {
        "format": SEGMENT_FORMAT,
        "topic": topic,
        "partition": partition,
        "from_offset": from_offset,
        "next_offset": records[-1].offset() + 1,
        "count": len(records),
        "first_timestamp": records[0].timestamp()[1],
        "last_timestamp": records[-1].timestamp()[1],
        "file": {
            "name": segment_name(topic, partition, from_offset).rsplit("/", 1)[1],
            "sha256": sha256(container).hexdigest(),
            "size": len(container),
            "codec": CODEC,
        },
        "hashing": {
            "record": "SHA-256(0x00 || Avro binary encoding of the record under the file's schema "
            "(streams.evidence.CanonicalRecord))",
            "merkle": "RFC 6962 Merkle tree hash over the record hashes in offset order",
        },
        "merkle_root": merkle_root_joined(bytes(digests)).hex(),
        "previous_manifest_sha256": previous_manifest_sha256,
        "records": hashes,
    }
    return container, json.dumps(manifest, separators=(",", ":")).encode()


class ArchivedRecord:
    """A record read back from the archive, with the methods of a consumed confluent-kafka Message."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(self, datum: dict[str, Any]) -> None:
        self._topic: str = datum["topic"]
        self._partition: int = datum["partition"]
        self._offset: int = datum["offset"]
        self._timestamp: int = datum["timestamp"]
        self._key: bytes | None = datum["key"]
        headers = datum["headers"]
        self._headers = [(h["name"], h["value"]) for h in headers] if headers else None
        self._value: bytes | None = datum["value"]

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def error(self) -> None:
        return None


def decode_segment(data: bytes, where: str) -> list[ArchivedRecord]:
    """The records of a segment's container bytes; ArchiveError if they do not decode."""
    try:
        return [ArchivedRecord(datum) for datum in fastavro.reader(io.BytesIO(data))]  # type: ignore[arg-type]
    except Exception as exc:  # fastavro raises several unrelated types for damaged files
        raise ArchiveError(f"{where}: the segment does not decode as an Avro container ({exc})") from exc


def list_segments(store: ArchiveStore, topic: str, partition: int) -> tuple[list[Segment], list[str]]:
    """(sealed segments in offset order, segment files that have no manifest: torn writes)."""
    names = store.list(_prefix(topic, partition))
    manifests = [name for name in names if name.endswith(".manifest.json")]
    sealed = {name.removesuffix(".manifest.json") + ".avro" for name in manifests}
    unsealed = [name for name in names if name.endswith(".avro") and name not in sealed]
    segments = [Segment.parse(store.get(name), f"{store.url}/{name}") for name in manifests]
    return sorted(segments, key=lambda segment: segment.from_offset), unsealed


def archived_partitions(store: ArchiveStore, topic: str) -> list[int]:
    """The partition numbers the archive has a directory for."""
    found = {name.split("/")[1] for name in store.list(f"{topic}/") if name.count("/") >= 2}
    return sorted(int(part) for part in found if part.isdigit())
