"""Bundles built from fake records: verify passes, names each kind of tampering, is deterministic, resumes."""

from __future__ import annotations

import io
import json
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, reader, writer

from streams.demo.samples import invoice
from streams.replay.errors import EvidenceError
from streams.replay.evidence import CHECKPOINT, EvidenceWriter, partial_dir
from streams.replay.runner import Progress
from streams.replay.selection import PinnedRange, ReplayPlan, ReplayQuery
from streams.replay.signing import generate_keypair, load_private_key, load_public_key
from streams.replay.verify import verify_bundle
from tests.replay.fakes import FakeMessage, decoder, invoice_messages

TOPIC = "t.invoice.created"


def plan_for(messages: list[FakeMessage], partitions: int = 2) -> ReplayPlan:
    ends = dict.fromkeys(range(partitions), 0)
    for m in messages:
        ends[m.partition_] = max(ends[m.partition_], m.offset_ + 1)
    return ReplayPlan(ReplayQuery(TOPIC), tuple(PinnedRange(p, 0, e) for p, e in ends.items()), partitions)


def feed(bundle: EvidenceWriter, messages: list[FakeMessage], progress: Progress) -> None:
    for partition, group in groupby(messages, key=lambda m: m.partition_):
        batch = list(group)
        bundle.write(partition, batch)  # type: ignore[arg-type]
        progress.next_offsets[partition] = batch[-1].offset_ + 1
        progress.scanned += len(batch)
        progress.matched += len(batch)
        progress.matched_by_partition[partition] = progress.matched_by_partition.get(partition, 0) + len(batch)


def build(directory: Path, messages: list[FakeMessage], replay_id: str = "r1", **options: object) -> dict[str, Any]:
    bundle = EvidenceWriter(directory, plan_for(messages), replay_id, decoder(), **options)  # type: ignore[arg-type]
    progress = bundle.resume()
    feed(bundle, messages, progress)
    return bundle.finish(progress)


@pytest.fixture
def messages() -> list[FakeMessage]:
    return invoice_messages(TOPIC, 40)


def test_a_fresh_bundle_verifies(tmp_path: Path, messages: list[FakeMessage]) -> None:
    manifest = build(tmp_path / "b", messages)
    report = verify_bundle(tmp_path / "b")
    assert report.ok, report.problems
    assert report.records == 40
    assert report.merkle_root == manifest["merkle_root"]
    assert not partial_dir(tmp_path / "b").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["manifest.json", "records-7.avro", "records.sha256"]


def test_records_decode_with_the_embedded_schema_alone(tmp_path: Path, messages: list[FakeMessage]) -> None:
    build(tmp_path / "b", messages)
    with (tmp_path / "b" / "records-7.avro").open("rb") as stream:
        records = list(reader(stream))
    first = records[0]
    assert isinstance(first, dict)
    assert first["value"]["invoice_number"] == "INV-00000000"
    assert first["headers"][0] == {"name": "ce_id", "value": b"id-0"}
    assert first["headers"][3] == {"name": "x-empty", "value": None}


def test_same_records_give_the_same_hashes_root_and_files(tmp_path: Path, messages: list[FakeMessage]) -> None:
    one = build(tmp_path / "one", messages, replay_id="first")
    two = build(tmp_path / "two", messages, replay_id="second")
    assert one["merkle_root"] == two["merkle_root"]
    for name in ("records-7.avro", "records.sha256"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_deflate_blocks_change_the_file_not_the_hashes(tmp_path: Path, messages: list[FakeMessage]) -> None:
    plain = build(tmp_path / "plain", messages)
    deflated = build(tmp_path / "deflated", messages, codec="deflate")
    assert plain["merkle_root"] == deflated["merkle_root"]
    assert verify_bundle(tmp_path / "deflated").ok
    with (tmp_path / "deflated" / "records-7.avro").open("rb") as stream:
        assert len(list(reader(stream))) == 40


def test_jsonl_bundle_hashes_like_the_avro_one(tmp_path: Path, messages: list[FakeMessage]) -> None:
    avro = build(tmp_path / "avro", messages)
    lines = build(tmp_path / "jsonl", messages, output="jsonl")
    assert avro["merkle_root"] == lines["merkle_root"]
    assert verify_bundle(tmp_path / "jsonl").ok
    first = json.loads((tmp_path / "jsonl" / "records.jsonl").read_text().splitlines()[0])
    assert first["headers"][1] == ["ce_type", {"text": "invoice.created"}]
    assert first["payload"]["vat_total"] == str(invoice(0, tenant="globex")["vat_total"])  # readable decimals
    assert first["value"] is not None


def test_an_edited_record_is_named(tmp_path: Path, messages: list[FakeMessage]) -> None:
    build(tmp_path / "b", messages)
    path = tmp_path / "b" / "records-7.avro"
    data = path.read_bytes()
    assert data.count(b"INV-00000003") == 1
    path.write_bytes(data.replace(b"INV-00000003", b"INV-00000099"))  # same length: still decodes
    report = verify_bundle(tmp_path / "b")
    edited = next(m for m in messages if m.headers_ and m.headers_[0][1] == b"id-3")
    expected = (
        f"partition {edited.partition_} offset {edited.offset_}: the record does not match its SHA-256 "
        "in records.sha256 (an edited record)"
    )
    assert expected in report.problems
    assert "records-7.avro: its SHA-256 differs from the manifest's (the file was changed)" in report.problems
    with pytest.raises(EvidenceError, match="FAILED verification"):
        report.raise_if_failed()


def test_a_dropped_record_is_named(tmp_path: Path, messages: list[FakeMessage]) -> None:
    build(tmp_path / "b", messages)
    path = tmp_path / "b" / "records-7.avro"
    with path.open("rb") as stream:
        container = reader(stream)
        schema = container.writer_schema
        records = [r for r in container if isinstance(r, dict) and not (r["partition"] == 1 and r["offset"] == 4)]
    buffer = io.BytesIO()
    writer(buffer, parse_schema(schema), records)  # re-encoding leaves the other records' bytes as they were
    path.write_bytes(buffer.getvalue())
    report = verify_bundle(tmp_path / "b")
    assert (
        "partition 1 offset 4: listed in records.sha256 but missing from the records (a dropped record)"
        in report.problems
    )
    assert not any("an edited record" in p for p in report.problems)


def test_a_dropped_jsonl_line_and_an_edited_payload(tmp_path: Path, messages: list[FakeMessage]) -> None:
    build(tmp_path / "b", messages, output="jsonl")
    path = tmp_path / "b" / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    edited = json.loads(lines[1])
    edited["payload"]["currency"] = "USD"
    path.write_text(lines[0] + json.dumps(edited) + "\n" + "".join(lines[3:]))
    problems = verify_bundle(tmp_path / "b").problems
    assert "partition 0 offset 2: listed in records.sha256 but missing from the records (a dropped record)" in problems
    assert (
        "records.jsonl: partition 0 offset 1: the payload does not match the value's bytes (an edited payload)"
        in problems
    )


def test_edited_manifest_and_wrong_key(tmp_path: Path, messages: list[FakeMessage]) -> None:
    ours, theirs = generate_keypair(tmp_path / "ours"), generate_keypair(tmp_path / "theirs")
    build(tmp_path / "b", messages, sign_key=load_private_key(ours.private))
    trusted = load_public_key(ours.public)
    report = verify_bundle(tmp_path / "b", trusted)
    assert report.ok
    assert report.signer_trusted
    assert report.signed_by == ours.fingerprint

    wrong = verify_bundle(tmp_path / "b", load_public_key(theirs.public))
    assert wrong.problems == [
        (
            f"wrong signature key: the bundle was signed by key {ours.fingerprint}, not by the "
            f"trusted key {theirs.fingerprint}"
        )
    ]

    manifest = tmp_path / "b" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"run_by": "', '"run_by": "mallory-'))
    edited = verify_bundle(tmp_path / "b", trusted)
    assert edited.problems == [
        (
            f"manifest signature does not verify with key {ours.fingerprint}: manifest.json "
            "was edited after signing (or manifest.sig was)"
        )
    ]


def test_unsigned_manifest_edits_are_caught_by_recomputation(tmp_path: Path, messages: list[FakeMessage]) -> None:
    manifest = build(tmp_path / "b", messages)
    path = tmp_path / "b" / "manifest.json"
    data = json.loads(path.read_text())
    data["merkle_root"] = "00" * 32
    data["counts"]["records"] = 39
    path.write_text(json.dumps(data))
    problems = verify_bundle(tmp_path / "b").problems
    assert any(p.startswith(f"Merkle root of records.sha256 is {manifest['merkle_root']}") for p in problems)
    assert "manifest.json counts 39 record(s); the bundle holds 40 and records.sha256 lists 40" in problems
    unsigned_with_key = verify_bundle(tmp_path / "b", load_public_key(generate_keypair(tmp_path / "k").public))
    assert unsigned_with_key.problems[0].startswith("the bundle is not signed")


def test_an_interrupted_export_resumes_to_the_same_bundle(tmp_path: Path, messages: list[FakeMessage]) -> None:
    whole = build(tmp_path / "whole", messages)
    plan = plan_for(messages)
    first = EvidenceWriter(tmp_path / "b", plan, "r1", decoder())
    progress = first.resume()
    feed(first, messages[:15], progress)
    first.commit(progress)
    first.close()  # the process dies in its next commit: blocks written, checkpoint not yet
    staging = partial_dir(tmp_path / "b")
    with (staging / "records-7.avro").open("ab") as torn:
        torn.write(b"\x06half a block")
    with (staging / "records.sha256").open("a") as torn:
        torn.write("1 9 00ff\n")
    assert (partial_dir(tmp_path / "b") / CHECKPOINT).exists()
    with pytest.raises(EvidenceError, match=r"has no manifest\.json"):
        verify_bundle(tmp_path / "b")

    second = EvidenceWriter(tmp_path / "b", plan, "r1", decoder())
    resumed = second.resume()
    assert resumed.matched == 15
    rest = [m for m in messages if m.offset_ >= resumed.next_offsets.get(m.partition_, 0)]
    feed(second, rest, resumed)
    manifest = second.finish(resumed)
    assert manifest["merkle_root"] == whole["merkle_root"]
    assert (tmp_path / "b" / "records-7.avro").read_bytes() == (tmp_path / "whole" / "records-7.avro").read_bytes()
    assert verify_bundle(tmp_path / "b").ok


def test_a_different_query_does_not_resume(tmp_path: Path, messages: list[FakeMessage]) -> None:
    first = EvidenceWriter(tmp_path / "b", plan_for(messages), "r1", decoder())
    progress = first.resume()
    feed(first, messages[:5], progress)
    first.commit(progress)
    first.close()
    other = ReplayPlan(ReplayQuery(TOPIC, tenant="acme"), plan_for(messages).ranges, 2)
    with pytest.raises(EvidenceError, match="interrupted export of a different query"):
        EvidenceWriter(tmp_path / "b", other, "r1", decoder()).resume()


def test_values_that_are_not_avro_events_go_to_the_raw_file(tmp_path: Path) -> None:
    odd = [
        FakeMessage(TOPIC, 0, 0, 5, None, None, None),
        FakeMessage(TOPIC, 0, 1, 5, b"k", b"plain text", []),
        FakeMessage(TOPIC, 0, 2, 5, b"k", b"\x00\x00\x00\x03\x09rest", []),
    ]  # schema id 777 is unknown
    manifest = build(tmp_path / "b", odd)
    assert [f["name"] for f in manifest["records"]["files"]] == ["records-raw.avro"]
    assert verify_bundle(tmp_path / "b").ok
    with (tmp_path / "b" / "records-raw.avro").open("rb") as stream:
        assert [r["value"] for r in reader(stream) if isinstance(r, dict)] == [
            None,
            b"plain text",
            b"\x00\x00\x00\x03\x09rest",
        ]


def test_an_existing_bundle_is_never_overwritten(tmp_path: Path, messages: list[FakeMessage]) -> None:
    build(tmp_path / "b", messages)
    with pytest.raises(EvidenceError, match="already exists"):
        EvidenceWriter(tmp_path / "b", plan_for(messages), "r2", decoder()).resume()


def test_an_unwritable_place_is_one_clear_error(tmp_path: Path, messages: list[FakeMessage]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EvidenceError, match=r"cannot write the evidence bundle at .*choose a writable --export"):
        EvidenceWriter(blocker / "b", plan_for(messages), "r1", decoder()).resume()


def test_leftovers_without_a_checkpoint_are_cleared_only_when_they_are_ours(
    tmp_path: Path, messages: list[FakeMessage]
) -> None:
    partial = partial_dir(tmp_path / "b")
    partial.mkdir()
    (partial / "records-7.avro").write_bytes(b"torn")
    (partial / "records.sha256").write_text("")
    build(tmp_path / "b", messages)
    assert verify_bundle(tmp_path / "b").ok

    foreign = partial_dir(tmp_path / "c")
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(EvidenceError, match="holds files an export does not write"):
        EvidenceWriter(tmp_path / "c", plan_for(messages), "r1", decoder()).resume()
    assert (foreign / "thesis.docx").exists()
