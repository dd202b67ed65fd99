"""The archive's segments and `archive verify` on a local directory: round trip, hashes shared with evidence
bundles, and each kind of tampering named."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, cast

import fastavro
import pytest

from streams.archive import agent as agent_module
from streams.archive.agent import Archiver
from streams.archive.read import ArchiveView
from streams.archive.segments import ArchivedRecord, decode_segment, list_segments, manifest_name
from streams.archive.store import ArchiveError, LocalStore, open_store
from streams.archive.verify import verify_archive
from streams.replay.container import container_header
from streams.replay.encoding import CANONICAL_SCHEMA, RecordEncoder, encode_long, merkle_root, record_hash, value_tail
from streams.runtime.contract import MARK_KEY
from streams.runtime.state import PartitionState

TOPIC = "shop.order"


def record(offset: int, partition: int = 0, *, value: bytes | None = None) -> ArchivedRecord:
    return ArchivedRecord(
        TOPIC,
        partition,
        offset,
        1_700_000_000_000 + offset,
        f"k{offset % 7}".encode(),
        [("ce_tenantid", b"acme" if offset % 2 else b"globex"), ("ce_type", b"shop.order"), ("empty", None)],
        value if value is not None else b"\x00\x00\x00\x00\x01" + bytes([offset % 256]) * (offset % 50),
    )


def archive(store: LocalStore, batches: list[list[ArchivedRecord]]) -> Archiver:
    """Runs the archiver agent's handle and seal as the engine would, one transaction per batch."""
    archiver = Archiver(store, (TOPIC,))
    state = PartitionState()
    for batch in batches:
        archiver.handle(batch, state, None)  # type: ignore[arg-type]
        archiver.seal()
        state[MARK_KEY] = (batch[-1].offset() + 1, "topic-id")  # what the engine's commit leaves
    return archiver


def test_segments_round_trip_byte_for_byte_and_share_evidence_hashes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    records = [record(offset) for offset in range(300) if offset != 100]  # 100: a transaction marker
    archive(store, [records[:100], records[100:249], records[249:]])
    segments, unsealed = list_segments(store, TOPIC, 0)
    assert unsealed == []
    assert [(s.from_offset, s.next_offset, s.count) for s in segments] == [
        (0, 100, 100),
        (100, 250, 149),
        (250, 300, 50),
    ]
    back = [r for s in segments for r in decode_segment(store.get(s.name), s.name)[0]]
    fields = [(r.offset(), r.timestamp(), r.key(), r.headers(), r.value()) for r in back]
    assert fields == [(r.offset(), r.timestamp(), r.key(), r.headers(), r.value()) for r in records]
    encoder = RecordEncoder(TOPIC)
    expected = [
        record_hash(encoder.prefix(0, r.offset(), r.timestamp()[1], r.key(), r.headers()), r.value())
        for r in records[100:249]
    ]
    assert segments[1].manifest["merkle_root"] == merkle_root(expected).hex()  # the evidence bundle's tree
    assert segments[1].manifest["previous_manifest_sha256"] == segments[0].manifest_sha256
    report = verify_archive(store, (TOPIC,))
    assert report.ok, report.problems
    assert (report.segments, report.records, report.covered) == (3, 299, {(TOPIC, 0): (0, 300)})
    view = ArchiveView(store, TOPIC)
    assert [r.offset() for batch in view.read(0, 95, 105) for r in batch] == [95, 96, 97, 98, 99, 101, 102, 103, 104]
    assert view.offset_for_time(0, 1_700_000_000_120, -1) == 120
    assert view.covered(0) == (0, 300)


def test_a_rewritten_segment_replaces_a_torn_one_under_the_same_name(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    records = [record(offset) for offset in range(50)]
    archive(store, [records[:20]])
    # a crash after sealing 20-49 but before the commit: the next run reads from 20 again, in other batches
    archiver = archive(store, [records[:20], records[20:50]])
    state = PartitionState()
    state[MARK_KEY] = (20, "topic-id")
    archiver.handle(records[20:35], state, None)  # type: ignore[arg-type]
    archiver.handle(records[35:40], state, None)  # type: ignore[arg-type]
    archiver.seal()
    archiver.handle(records[40:], state | {MARK_KEY: (40, "t")}, None)  # type: ignore[arg-type]
    archiver.seal()
    report = verify_archive(store, (TOPIC,))
    assert report.ok, report.problems
    assert report.covered == {(TOPIC, 0): (0, 50)}
    assert report.records == 50


@pytest.fixture
def damaged(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path)
    records = [record(offset) for offset in range(400)]
    archive(store, [records[i : i + 100] for i in range(0, 400, 100)])
    assert verify_archive(store, (TOPIC,)).ok
    return store


def test_verify_names_a_flipped_bit(damaged: LocalStore) -> None:
    path = damaged.root / TOPIC / "00000" / f"{100:020d}.avro"
    data = bytearray(path.read_bytes())
    data[-17] ^= 0x04  # the last byte of the last record's value (before the 16-byte sync marker)
    path.write_bytes(bytes(data))
    problems = verify_archive(damaged, (TOPIC,)).problems
    assert (
        f"{TOPIC} partition 0: segment 100: the file {TOPIC}/00000/{100:020d}.avro differs from the SHA-256 "
        "in its manifest" in problems
    )
    assert any(
        p.startswith(f"{TOPIC} partition 0: segment 100: record at offset 199 ") and "altered bytes" in p
        for p in problems
    ), problems


def test_verify_names_a_deleted_segment(damaged: LocalStore) -> None:
    damaged.delete(f"{TOPIC}/00000/{200:020d}.avro")
    damaged.delete(manifest_name(TOPIC, 0, 200))
    assert verify_archive(damaged, (TOPIC,)).problems == [
        f"{TOPIC} partition 0: offsets 200-299 are missing (a segment was deleted)",
        f"{TOPIC} partition 0: manifest of segment 100 was edited or replaced (segment 300 links a different one)",
    ]
    damaged.delete(f"{TOPIC}/00000/{100:020d}.avro")  # the file alone, its manifest kept
    assert f"{TOPIC} partition 0: segment 100: the segment file {TOPIC}/00000/{100:020d}.avro is missing (deleted)" in (
        verify_archive(damaged, (TOPIC,)).problems
    )


def test_verify_names_an_edited_manifest(damaged: LocalStore) -> None:
    name = manifest_name(TOPIC, 0, 100)
    manifest = json.loads(damaged.get(name))
    manifest["records"][5][1] = hashlib.sha256(b"forged").hexdigest()  # claim another record was archived
    damaged.put(name, json.dumps(manifest, separators=(",", ":")).encode())
    problems = verify_archive(damaged, (TOPIC,)).problems
    assert (
        f"{TOPIC} partition 0: segment 100: manifest edited: its Merkle root does not match its record hashes"
        in problems
    )
    assert (
        f"{TOPIC} partition 0: segment 100: record at offset 105 does not match its SHA-256 in the manifest "
        "(altered bytes)" in problems
    )
    assert (
        f"{TOPIC} partition 0: manifest of segment 100 was edited or replaced (segment 200 links a different one)"
        in problems
    )
    # a consistent forgery (root recomputed) still breaks the link from the next segment
    manifest["merkle_root"] = merkle_root([bytes.fromhex(h) for _, h in manifest["records"]]).hex()
    damaged.put(name, json.dumps(manifest, separators=(",", ":")).encode())
    problems = verify_archive(damaged, (TOPIC,)).problems
    assert (
        f"{TOPIC} partition 0: manifest of segment 100 was edited or replaced (segment 200 links a different one)"
        in problems
    )


def test_verify_names_a_torn_segment(damaged: LocalStore) -> None:
    damaged.put(f"{TOPIC}/00000/{400:020d}.avro", b"Obj\x01half")
    assert verify_archive(damaged, (TOPIC,)).problems == [
        (
            f"{TOPIC} partition 0: segment {TOPIC}/00000/{400:020d}.avro has no manifest (torn write: the "
            "archiver rewrites it when it runs again; until then those records are not sealed)"
        )
    ]


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)


def varied(offset: int) -> ArchivedRecord:
    """Records of every shape the canonical encoding has: no key, an empty key, no or empty headers, a null
    value, an empty value, values past one byte of length."""
    shape = offset % 5
    return ArchivedRecord(
        TOPIC,
        3,
        offset,
        1_700_000_000_000 + offset // 3,
        None if shape == 0 else b"" if shape == 1 else f"k{offset}".encode(),
        None if shape == 2 else [("ce_type", b"x"), ("n", None), (f"h{offset}", bytes(offset % 200))],
        None if shape == 3 else b"" if shape == 4 else b"\x00\x00\x00\x00\x07" + bytes([offset % 256]) * (offset % 700),
    )


def test_segments_keep_their_format_across_batches_and_blocks(tmp_path: Path) -> None:
    """The native path writes the bytes the format defines (the evidence encoding, blocks of 4096 records),
    whatever the batches the records came in: segments written before it still verify, and any Avro reader
    reads them."""
    store = LocalStore(tmp_path)
    records = [varied(offset) for offset in range(10_000, 19_000) if offset % 997]  # gaps: transaction markers
    archiver = Archiver(store, (TOPIC,))
    state = PartitionState()
    for start in range(0, len(records), 1234):
        archiver.handle(records[start : start + 1234], state, None)  # type: ignore[arg-type]
    archiver.seal()
    (segment,), _ = list_segments(store, TOPIC, 3)
    data = store.get(segment.name)

    encoder = RecordEncoder(TOPIC)
    datums = [
        encoder.prefix(3, r.offset(), r.timestamp()[1], r.key(), r.headers()) + value_tail(r.value()) for r in records
    ]
    header = container_header(CANONICAL_SCHEMA, "null", b"")
    sync = data[len(header) : len(header) + 16]
    blocks = [datums[i : i + 4096] for i in range(0, len(datums), 4096)]
    assert data == header + sync + b"".join(
        encode_long(len(block)) + encode_long(sum(map(len, block))) + b"".join(block) + sync for block in blocks
    )
    hashes = [
        record_hash(encoder.prefix(3, r.offset(), r.timestamp()[1], r.key(), r.headers()), r.value()) for r in records
    ]
    manifest = json.loads(store.get(manifest_name(TOPIC, 3, 10_000)))
    assert manifest["records"] == [[r.offset(), h.hex()] for r, h in zip(records, hashes, strict=True)]
    assert manifest["merkle_root"] == merkle_root(hashes).hex()
    assert (manifest["from_offset"], manifest["next_offset"], manifest["count"]) == (10_000, 19_000, len(records))
    assert (manifest["first_timestamp"], manifest["last_timestamp"]) == (
        records[0].timestamp()[1],
        records[-1].timestamp()[1],
    )
    assert store.get(manifest_name(TOPIC, 3, 10_000)) == json.dumps(manifest, separators=(",", ":")).encode()

    fields = [
        (r.topic(), r.partition(), r.offset(), r.timestamp(), r.key(), r.headers(), r.value())
        for r in decode_segment(data, segment.name)[0]
    ]
    assert fields == [
        (r.topic(), r.partition(), r.offset(), r.timestamp(), r.key(), r.headers(), r.value()) for r in records
    ]
    by_fastavro = cast("list[dict[str, Any]]", list(fastavro.reader(io.BytesIO(data))))  # any Avro reader
    assert [(d["offset"], d["key"], d["value"]) for d in by_fastavro] == [
        (r.offset(), r.key(), r.value()) for r in records
    ]
    assert decode_segment(data, segment.name, hashes=True)[1] == b"".join(hashes)
    report = verify_archive(store, (TOPIC,))
    assert report.ok, report.problems
    assert report.records == len(records)


def test_a_segment_that_does_not_decode_is_named(damaged: LocalStore) -> None:
    name = f"{TOPIC}/00000/{100:020d}.avro"
    data = damaged.get(name)
    for broken, why in [
        (data[:-40], "past the end"),  # torn: the last block cut short
        (data[:-1] + bytes([data[-1] ^ 1]), "sync marker"),
        (data.replace(b'"null"', b'"nulx"', 1), "header is not that of a streams-archive-segment/1 file"),
    ]:
        with pytest.raises(ArchiveError, match=f"{name}: the segment does not decode as an Avro container .*{why}"):
            decode_segment(broken, name)
        damaged.put(name, broken)
        problems = verify_archive(damaged, (TOPIC,)).problems
        assert any(
            p.startswith(f"{TOPIC} partition 0: segment 100: {name}: the segment does not decode") for p in problems
        ), problems


def test_the_archiver_asks_for_a_commit_when_its_open_segments_reach_the_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`full()` (the engine commits after the batch) once the open segments' encodings reach MAX_OPEN_BYTES,
    across partitions, and not again until new records come after the seal or an abort."""
    monkeypatch.setattr(agent_module, "MAX_OPEN_BYTES", 20_000)
    store = LocalStore(tmp_path)
    archiver = Archiver(store, (TOPIC,))
    state = PartitionState()
    records = [record(offset, partition) for partition in (0, 1) for offset in range(200)]
    archiver.handle(records[:100], state, None)  # type: ignore[arg-type]
    assert not archiver.full()
    archiver.handle(records[200:300], state, None)  # type: ignore[arg-type]  # partition 1: the sum counts
    assert archiver.full()
    archiver.aborted()
    assert not archiver.full()
    archiver.handle(records[:200], state, None)  # type: ignore[arg-type]
    archiver.handle(records[200:], state, None)  # type: ignore[arg-type]
    assert archiver.full()
    archiver.seal()
    assert not archiver.full()
    assert verify_archive(store, (TOPIC,)).records == 400


def test_a_store_writes_an_object_given_in_pieces_as_their_concatenation(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = bytes(range(256)) * 100
    store.put("t/00000/x.avro", b"head", memoryview(data)[10:5000], memoryview(data)[5000:], b"")
    assert store.get("t/00000/x.avro") == b"head" + data[10:]
    assert store.list("t/") == ["t/00000/x.avro"]  # the temporary file is gone
