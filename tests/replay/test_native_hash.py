"""The native evidence hashing (streams/_native/src/evidence.rs) is byte-identical to the Python definition.

encoding.py defines the canonical record encoding, the record hash and the Merkle root; the export uses the
native batch encoder. Every digest, hash-list line and container datum must match the definition exactly.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

from streams import _avro_native
from streams.replay.encoding import (
    RecordEncoder,
    encode_batch,
    encode_long,
    merkle_root,
    merkle_root_joined,
    record_hash,
    sha256_accelerated,
    value_tail,
)
from streams.replay.evidence import HASHES, EvidenceWriter
from streams.replay.selection import PinnedRange, ReplayPlan, ReplayQuery
from streams.replay.verify import verify_bundle
from tests.replay.fakes import SCHEMA_ID, FakeMessage, decoder, invoice_messages

TOPIC = "t.invoice.created"
native_sha256: Any = getattr(_avro_native, "evidence_sha256")  # noqa: B009 - not in the module's .pyi


def test_sha256_matches_hashlib_for_every_padding_case() -> None:
    # The sha2 crate's digest, on this CPU's path (SHA extensions or not).
    rng = random.Random(5)
    sizes = [*range(200), 447, 448, 503, 504, 4095, 4096, 65_537, 1_000_003]
    for size in sizes:
        data = rng.randbytes(size)
        assert native_sha256(data) == hashlib.sha256(data).digest(), size


def test_the_accelerated_flag_is_a_bool() -> None:
    assert sha256_accelerated() in {True, False}


@pytest.mark.parametrize("leaves", [*range(34), 100, 1000, 1025])
def test_merkle_root_matches_the_python_definition(leaves: int) -> None:
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(leaves)]
    assert merkle_root_joined(b"".join(digests)) == merkle_root(digests)


def test_merkle_root_refuses_a_torn_digest_list() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        merkle_root_joined(b"\x00" * 33)


def wire(schema_id: int, datum: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + datum


def odd_records() -> list[FakeMessage]:
    """Every shape a Kafka record can take, with lengths and numbers on each side of the varint steps."""
    rng = random.Random(11)
    big = rng.randbytes(9000)  # a length of more than two varint bytes' worth of the table
    shapes: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]] = [
        (None, None, None),
        (b"", b"", []),
        (b"k", wire(SCHEMA_ID, b"datum"), [("ce_id", b"1"), ("x-null", None), ("x-empty", b"")]),
        (b"k2", wire(SCHEMA_ID, b""), [("ünïcode-名前", "värde".encode())]),
        (big, wire(99, big), [(f"h{i}", rng.randbytes(i * 40)) for i in range(12)]),
        (None, b"\x00\x00\x00", [("short", b"value")]),  # shorter than the Confluent header
        (b"plain", b"not the wire format", None),
        (rng.randbytes(200), wire(SCHEMA_ID + 1, rng.randbytes(400)), [("n" * 300, rng.randbytes(9000))]),
        (None, wire(SCHEMA_ID, big), []),
    ]
    offsets = [0, 1, 63, 64, 8191, 8192, 2**31, 2**40 + 7, 2**62]
    timestamps = [-1, 0, 1_790_000_000_000, 63, -65, 2**45, 5, 6, 7]
    return [
        FakeMessage(TOPIC, 3, offset, ts, key, value, headers)
        for offset, ts, (key, value, headers) in zip(offsets, timestamps, shapes, strict=True)
    ]


def test_a_batch_encodes_and_hashes_exactly_as_the_definition() -> None:
    messages = odd_records()
    asked: list[bytes] = []

    def typed(header: bytes) -> bool:
        asked.append(header)
        return header[1:5] != (99).to_bytes(4, "big")  # schema 99 is unknown: raw file

    digests, lines, groups = encode_batch(TOPIC, 3, messages, typed)
    assert asked == [wire(SCHEMA_ID, b""), wire(99, b""), wire(SCHEMA_ID + 1, b"")]  # once per header, in order
    encoder = RecordEncoder(TOPIC)
    expected_digests, expected_lines = b"", ""
    expected: dict[bytes | None, list[bytes]] = {}
    for m in messages:
        prefix = encoder.prefix(3, m.offset_, m.timestamp_, m.key_, m.headers_)
        digest = record_hash(prefix, m.value_)
        expected_digests += digest
        expected_lines += f"3 {m.offset_} {digest.hex()}\n"
        value = m.value_
        if value is not None and len(value) >= 5 and value[0] == 0 and typed(value[:5]):
            schema_id = int.from_bytes(value[1:5], "big")
            expected.setdefault(value[:5], []).append(prefix + encode_long(schema_id) + b"\x02" + value[5:])
        else:
            expected.setdefault(None, []).append(prefix + value_tail(value))
    assert digests == expected_digests
    assert lines == expected_lines
    got: dict[bytes | None, list[bytes]] = {}
    for header, data, ends in groups:
        starts = [0, *ends[:-1]]
        got[header] = [data[a:b] for a, b in zip(starts, ends, strict=True)]
        assert ends[-1] == len(data)
    assert got == expected


def test_a_batch_is_the_same_when_split_anywhere() -> None:
    messages = invoice_messages(TOPIC, 30, partitions=1)
    whole = encode_batch(TOPIC, 0, messages, lambda _h: True)
    first = encode_batch(TOPIC, 0, messages[:7], lambda _h: True)
    rest = encode_batch(TOPIC, 0, messages[7:], lambda _h: True)
    assert first[0] + rest[0] == whole[0]
    assert first[1] + rest[1] == whole[1]
    assert first[2][0][1] + rest[2][0][1] == whole[2][0][1]


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("headers_", [("ok", b"v"), ("no value",)], TypeError),
        ("headers_", [(b"bytes name", b"v")], TypeError),
        ("headers_", {"a": b"b"}, TypeError),
        ("value_", "text", TypeError),
        ("key_", 5, TypeError),
        ("offset_", None, ValueError),
    ],
)
def test_a_record_of_the_wrong_shape_is_refused(field: str, bad: object, error: type[Exception]) -> None:
    message = odd_records()[2]
    setattr(message, field, bad)
    with pytest.raises(error):
        encode_batch(TOPIC, 3, [message], lambda _h: True)
    digests, _, _ = encode_batch(TOPIC, 3, odd_records()[:2], lambda _h: True)  # and the next batch is clean
    assert len(digests) == 64


def test_an_error_from_the_schema_callback_propagates() -> None:
    def typed(_header: bytes) -> bool:
        raise LookupError("registry down")

    with pytest.raises(LookupError, match="registry down"):
        encode_batch(TOPIC, 3, odd_records(), typed)


def test_a_bundle_lists_the_hashes_of_the_python_definition(tmp_path: Path) -> None:
    """End to end: records.sha256 and the Merkle root are what encoding.py defines; verify agrees."""
    messages = invoice_messages(TOPIC, 50, partitions=2)
    messages.append(FakeMessage(TOPIC, 1, 25, 1, None, os.urandom(40), None))  # a raw value as well
    ends = {0: 25, 1: 26}
    plan = ReplayPlan(ReplayQuery(TOPIC), tuple(PinnedRange(p, 0, e) for p, e in ends.items()), 2)
    bundle = EvidenceWriter(tmp_path / "b", plan, "r1", decoder())
    progress = bundle.resume()
    for partition in (0, 1):
        batch = [m for m in messages if m.partition_ == partition]
        bundle.write(partition, batch)  # type: ignore[arg-type]
        progress.next_offsets[partition] = ends[partition]
        progress.scanned += len(batch)
        progress.matched += len(batch)
        progress.matched_by_partition[partition] = len(batch)
    manifest = bundle.finish(progress)
    encoder = RecordEncoder(TOPIC)
    hashes = [
        record_hash(encoder.prefix(m.partition_, m.offset_, m.timestamp_, m.key_, m.headers_), m.value_)
        for m in sorted(messages, key=lambda m: (m.partition_, m.offset_))
    ]
    listed = [bytes.fromhex(line.split()[2]) for line in (tmp_path / "b" / HASHES).read_text().splitlines()]
    assert listed == hashes
    assert manifest["merkle_root"] == merkle_root(hashes).hex()
    report = verify_bundle(tmp_path / "b")
    assert report.ok, report.problems
    assert report.records == 51
