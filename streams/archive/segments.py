"""Archive segments: one Avro container of a partition's records [from_offset, next_offset) and its manifest.

A record is stored as its canonical encoding (streams.replay.encoding: topic, partition, offset, timestamp,
key, headers, value bytes exactly as Kafka had them), so its archive hash is its evidence-bundle hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams._avro_native import ArchivedRecord, decode_archive_segment
from streams.archive.store import ArchiveError
from streams.replay.container import block_parts, container_header
from streams.replay.encoding import CANONICAL_SCHEMA, encode_batch, merkle_root_joined

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streams.archive.store import ArchiveStore
    from streams.replay.reader import ConsumedRecord

__all__ = [
    "SEGMENT_FORMAT",
    "ArchivedRecord",
    "Segment",
    "SegmentBuffer",
    "build_segment",
    "decode_segment",
    "list_segments",
    "manifest_name",
    "segment_name",
]

SEGMENT_FORMAT = "streams-archive-segment/1"
CODEC = "null"  # the values are mostly Avro already; a year of segments compresses better as a whole later
BLOCK_RECORDS = 4096


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


class SegmentBuffer:
    """A partition's records of the open transaction, encoded as they arrive (while they are still in the
    CPU's caches), sealed into a segment's container and manifest just before the commit."""

    def __init__(self, topic: str, partition: int, from_offset: int) -> None:
        self.topic, self.partition, self.from_offset = topic, partition, from_offset
        self.count = 0
        self.size = 0  # bytes of the records' encodings held
        self.next_offset = from_offset
        self.first_timestamp = self.last_timestamp = 0
        self._digests: list[bytes] = []
        self._lines: list[str] = []
        self._datums: list[tuple[bytes, list[int]]] = []

    def add(self, records: Sequence[ConsumedRecord]) -> None:
        """Records that continue the partition (offset order)."""
        if not records:
            return
        # The evidence export's native encoder (one canonical encoding): with no schema "known", every
        # record lands in its raw group, whose datums are the canonical encodings themselves.
        digests, lines, groups = encode_batch(self.topic, self.partition, records, _untyped)
        ((_, datums, ends),) = groups
        self._digests.append(digests)
        self._lines.append(lines)
        self._datums.append((datums, ends))
        self.size += len(datums)
        if not self.count:
            self.first_timestamp = records[0].timestamp()[1]
        self.count += len(records)
        self.last_timestamp = records[-1].timestamp()[1]
        self.next_offset = records[-1].offset() + 1

    def seal(self, previous_manifest_sha256: str | None) -> tuple[list[bytes | memoryview], bytes]:
        """(container in pieces, manifest bytes) of the records added (at least one); the manifest links the
        previous segment's manifest by its SHA-256. The pieces are written and hashed as they are: the
        container is never joined into one copy."""
        sync = _sync(self.topic, self.partition, self.from_offset)
        parts: list[bytes | memoryview] = [_HEADER, sync]
        block: list[memoryview] = []
        in_block = 0
        for datums, ends in self._datums:  # blocks of BLOCK_RECORDS across the batches' boundaries
            start, taken = 0, 0
            while taken < len(ends):
                take = min(BLOCK_RECORDS - in_block, len(ends) - taken)
                end = ends[taken + take - 1]
                block.append(memoryview(datums)[start:end])
                start, taken, in_block = end, taken + take, in_block + take
                if in_block == BLOCK_RECORDS:
                    parts += block_parts(block, in_block, CODEC, sync)
                    block, in_block = [], 0
        if in_block:
            parts += block_parts(block, in_block, CODEC, sync)
        container = hashlib.sha256()
        for part in parts:
            container.update(part)
        digests, lines = b"".join(self._digests), "".join(self._lines)
        manifest = {
            "format": SEGMENT_FORMAT,
            "topic": self.topic,
            "partition": self.partition,
            "from_offset": self.from_offset,
            "next_offset": self.next_offset,
            "count": self.count,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "file": {
                "name": segment_name(self.topic, self.partition, self.from_offset).rsplit("/", 1)[1],
                "sha256": container.hexdigest(),
                "size": sum(len(part) for part in parts),
                "codec": CODEC,
            },
            "hashing": {
                "record": "SHA-256(0x00 || Avro binary encoding of the record under the file's schema "
                "(streams.evidence.CanonicalRecord))",
                "merkle": "RFC 6962 Merkle tree hash over the record hashes in offset order",
            },
            "merkle_root": merkle_root_joined(digests).hex(),
            "previous_manifest_sha256": previous_manifest_sha256,
        }
        head = json.dumps(manifest, separators=(",", ":"))  # then the hashes, the manifest's last key
        return parts, f'{head[:-1]},"records":{_records_json(self.partition, lines)}}}'.encode()


def build_segment(
    topic: str,
    partition: int,
    from_offset: int,
    records: Sequence[ConsumedRecord],
    previous_manifest_sha256: str | None,
) -> tuple[bytes, bytes]:
    """(container bytes, manifest bytes) for `records` (offset order, at least one), which continue the
    partition from `from_offset`; the manifest links the previous segment's manifest by its SHA-256."""
    buffer = SegmentBuffer(topic, partition, from_offset)
    buffer.add(records)
    parts, manifest = buffer.seal(previous_manifest_sha256)
    return b"".join(parts), manifest


def _untyped(_header: bytes) -> bool:
    return False


def _records_json(partition: int, lines: str) -> str:
    """The manifest's `[[offset, "sha256hex"], ...]` from the encoder's `"partition offset sha256hex\n"`
    lines, by string replacement (what json.dumps makes of the pairs, without a Python list per record)."""
    if not lines:
        return "[]"
    pairs = ("\n" + lines).replace(f"\n{partition} ", '"],[').replace(" ", ',"')
    return f'[{pairs[3:-1]}"]]'


# What every segment's container starts with, up to its sync marker: the canonical schema, codec null.
_HEADER = container_header(CANONICAL_SCHEMA, CODEC, b"")


def decode_segment(data: bytes, where: str, *, hashes: bool = False) -> tuple[list[ArchivedRecord], bytes]:
    """The records of a segment's container bytes, and with `hashes` their leaf hashes (32 bytes each,
    joined) over the bytes stored; ArchiveError if they do not decode."""
    if not data.startswith(_HEADER):
        raise ArchiveError(
            f"{where}: the segment does not decode as an Avro container (its header is not that of a "
            f"{SEGMENT_FORMAT} file: magic, the canonical record schema, codec {CODEC})"
        )
    try:
        return decode_archive_segment(data, len(_HEADER), hashes)
    except ValueError as exc:
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
