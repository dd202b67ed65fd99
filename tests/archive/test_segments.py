"""The archive's segments and `archive verify` on a local directory: round trip, hashes shared with evidence
bundles, and each kind of tampering named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from streams.archive.agent import Archiver
from streams.archive.read import ArchiveView
from streams.archive.segments import ArchivedRecord, decode_segment, list_segments, manifest_name
from streams.archive.store import LocalStore, open_store
from streams.archive.verify import verify_archive
from streams.replay.encoding import RecordEncoder, merkle_root, record_hash
from streams.runtime.contract import MARK_KEY
from streams.runtime.state import PartitionState

TOPIC = "shop.order"


def record(offset: int, partition: int = 0, *, value: bytes | None = None) -> ArchivedRecord:
    return ArchivedRecord(
        {
            "topic": TOPIC,
            "partition": partition,
            "offset": offset,
            "timestamp": 1_700_000_000_000 + offset,
            "key": f"k{offset % 7}".encode(),
            "headers": [
                {"name": "ce_tenantid", "value": b"acme" if offset % 2 else b"globex"},
                {"name": "ce_type", "value": b"shop.order"},
                {"name": "empty", "value": None},
            ],
            "value": value if value is not None else b"\x00\x00\x00\x00\x01" + bytes([offset % 256]) * (offset % 50),
        }
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
    back = [r for s in segments for r in decode_segment(store.get(s.name), s.name)]
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
