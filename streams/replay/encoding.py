"""The canonical encoding of a Kafka record, its SHA-256, and the Merkle tree over a bundle's records.

A record's hash is the RFC 6962 leaf hash of its Avro binary encoding under CANONICAL_SCHEMA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any, Protocol

__all__ = [
    "CANONICAL_SCHEMA",
    "HEADER_SCHEMA",
    "EncodedGroup",
    "RecordEncoder",
    "encode_batch",
    "encode_long",
    "merkle_root",
    "merkle_root_joined",
    "record_hash",
    "sha256_accelerated",
    "value_tail",
]

HEADER_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Header",
    "namespace": "streams.evidence",
    "fields": [{"name": "name", "type": "string"}, {"name": "value", "type": ["null", "bytes"]}],
}
# The hashed form of a record: every field Kafka stores, in this order. `value` holds the value's bytes
# exactly as Kafka has them (for Avro events: magic byte, 4-byte schema id, datum).
CANONICAL_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CanonicalRecord",
    "namespace": "streams.evidence",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "headers", "type": {"type": "array", "items": HEADER_SCHEMA}},
        {"name": "value", "type": ["null", "bytes"]},
    ],
}
LEAF = b"\x00"  # RFC 6962 domain separation: leaves and interior nodes can never be confused
NODE = b"\x01"
NULL = b"\x00"  # union branch 0 ("null")
SOME = b"\x02"  # union branch 1, zig-zag encoded
EMPTY_TREE = hashlib.sha256(b"").digest()


def _varint(z: int) -> bytes:
    """Avro's base-128 varint of a non-negative int, 14 bits per table lookup."""
    if z < _TABLE:
        return _LOW[z]
    high = z >> 14
    return _CONTINUED[z & 0x3FFF] + (_LOW[high] if high < _TABLE else _varint(high))


def _slow_varint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_TABLE = 1 << 14
_LOW: tuple[bytes, ...] = tuple(_slow_varint(z) for z in range(_TABLE))
_CONTINUED: tuple[bytes, ...] = tuple(bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(_TABLE))
_SMALL: tuple[bytes, ...] = tuple(_LOW[n << 1] for n in range(_TABLE >> 1))  # non-negative n, zig-zagged
_SOME_SMALL: tuple[bytes, ...] = tuple(SOME + small for small in _SMALL)  # a present union value's length


def encode_long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of an int or long."""
    return _varint((n << 1) ^ (n >> 63))


def _bytes(data: bytes) -> bytes:
    size = len(data)
    return (_SMALL[size] if size < _HALF else encode_long(size)) + data


_HALF = _TABLE >> 1


class RecordEncoder:
    """Encodes records of one topic: everything before the value is the `prefix`, shared by the hash and
    the evidence container's envelope (which differs only after it)."""

    def __init__(self, topic: str) -> None:
        self._topic = _bytes(topic.encode())
        self._partitions: dict[int, bytes] = {}
        self._names: dict[str, bytes] = {}
        self._time: tuple[int, bytes] = (-1, encode_long(-1))  # records of one millisecond come in runs

    def prefix(
        self,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
    ) -> bytes:
        """topic, partition, offset, timestamp, key and headers in the canonical Avro encoding."""
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = self._topic + encode_long(partition)
        small, some = _SMALL, _SOME_SMALL
        if self._time[0] != timestamp:
            self._time = (timestamp, encode_long(timestamp))
        parts = [
            part,
            small[offset] if offset < _HALF else _varint(offset << 1),
            self._time[1],
            NULL if key is None else (some[len(key)] if len(key) < _HALF else SOME + encode_long(len(key))),
        ]
        if key:
            parts.append(key)
        if headers:
            names = self._names
            parts.append(small[len(headers)] if len(headers) < _HALF else encode_long(len(headers)))
            for name, value in headers:
                encoded = names.get(name)
                if encoded is None:
                    encoded = names[name] = _bytes(name.encode())
                if value is None:
                    parts += (encoded, NULL)
                else:
                    size = len(value)
                    parts += (encoded, some[size] if size < _HALF else SOME + encode_long(size), value)
        parts.append(NULL)  # end of the headers array (an empty array is this byte alone)
        return b"".join(parts)


def value_tail(value: bytes | None) -> bytes:
    """The canonical encoding of the value field: a null branch, or the value's bytes."""
    return NULL if value is None else length_tag(len(value)) + value


def length_tag(size: int) -> bytes:
    """The union branch and length that precede a present `bytes` value of `size` bytes."""
    return _SOME_SMALL[size] if size < _HALF else SOME + encode_long(size)


def record_hash(prefix: bytes, value: bytes | None) -> bytes:
    """SHA-256(0x00 || canonical encoding): the record's hash and its Merkle leaf."""
    return hashlib.sha256(LEAF + prefix + value_tail(value)).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash over leaf hashes in order (SHA-256 of nothing for no leaves).

    Interior node = SHA-256(0x01 || left || right); the split is at the largest power of two below the
    size, which pairing level by level reproduces when an odd last node is carried up unhashed.
    """
    if not leaves:
        return EMPTY_TREE
    level = list(leaves)
    sha256 = hashlib.sha256
    while len(level) > 1:
        paired = [sha256(NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# ---- the native fast path (streams/_native/src/evidence.rs), byte-identical to the definitions above ----

EncodedGroup = tuple[bytes | None, bytes, list[int]]  # (Confluent header or None for raw, datums, datum ends)


class BatchEncoder(Protocol):
    def __call__(
        self, topic: str, partition: int, messages: Sequence[Any], typed: Callable[[bytes], bool], /
    ) -> tuple[bytes, str, list[EncodedGroup]]: ...


_native = import_module("streams._avro_native")  # its .pyi does not list these functions yet

encode_batch: BatchEncoder = _native.encode_evidence_batch
"""Encode and hash one partition's consumed records in one call: (hashes joined, hash-list lines, and per
target file the envelope datums joined with their ends). `typed(header)` says whether the 5-byte Confluent
header names a known schema (its records keep their datum in that schema's file) or not (raw file)."""

merkle_root_joined: Callable[[bytes], bytes] = _native.evidence_merkle_root
"""merkle_root over 32-byte leaf hashes given joined in one bytes object."""

sha256_accelerated: Callable[[], bool] = _native.evidence_sha256_accelerated
"""Whether the native path (the sha2 crate) hashes with the CPU's SHA extensions (else portable rounds)."""
