"""Parallel exports without processes: how a plan is split, and parts sealed and merged into one bundle."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from streams.replay import parallel
from streams.replay.evidence import EvidenceWriter, partial_dir
from streams.replay.selection import PinnedRange, ReplayPlan, ReplayQuery
from streams.replay.verify import verify_bundle
from tests.replay.fakes import decoder, invoice_messages
from tests.replay.test_evidence import TOPIC, build, feed, plan_for

if TYPE_CHECKING:
    from pathlib import Path


def plan(*sizes: int) -> ReplayPlan:
    return ReplayPlan(ReplayQuery(TOPIC), tuple(PinnedRange(p, 10, 10 + n) for p, n in enumerate(sizes)), len(sizes))


def partitions(parts: list[ReplayPlan]) -> list[list[int]]:
    return [[r.partition for r in part.ranges] for part in parts]


def test_a_plan_splits_into_consecutive_partitions_of_about_equal_offsets() -> None:
    assert partitions(parallel.split_plan(plan(5, 5, 5, 5, 5, 5), 2)) == [[0, 1, 2], [3, 4, 5]]
    assert partitions(parallel.split_plan(plan(5, 5, 5, 5, 5, 5), 4)) == [[0, 1], [2], [3, 4], [5]]
    assert partitions(parallel.split_plan(plan(100, 1, 1, 1), 2)) == [[0], [1, 2, 3]]
    assert partitions(parallel.split_plan(plan(5, 5), 3)) == [[0], [1]]
    assert partitions(parallel.split_plan(plan(5, 5, 5), 1)) == [[0, 1, 2]]
    whole = plan(3, 0, 7, 2)
    split = parallel.split_plan(whole, 2)
    assert [r for part in split for r in part.ranges] == list(whole.ranges)  # every range once, in order
    assert all(part.query == whole.query for part in split)


def test_parts_are_one_per_cpu_for_large_avro_exports_and_never_more_than_partitions_with_records() -> None:
    large = parallel.PARALLEL_MIN_OFFSETS
    assert parallel.parts_for(plan(large, large, 0), "avro", None) == min(2, os.cpu_count() or 1)
    assert parallel.parts_for(plan(10, 10), "avro", None) == 1  # small: starting processes costs more
    assert parallel.parts_for(plan(large, large), "jsonl", 4) == 1
    assert parallel.parts_for(plan(10, 0, 10), "avro", 8) == 2
    assert parallel.parts_for(plan(10, 10, 10), "avro", 1) == 1


def test_sealed_parts_merge_into_the_bundle_a_single_writer_makes(tmp_path: Path) -> None:
    messages = invoice_messages(TOPIC, 40)
    whole = plan_for(messages)
    reference = build(tmp_path / "single", messages)

    bundle = EvidenceWriter(tmp_path / "parallel", whole, "r1", decoder())
    bundle.resume()
    directories = []
    for index, part in enumerate(parallel.split_plan(whole, 2)):
        directory = bundle.partial / f"part-{index}"
        writer = EvidenceWriter(directory, part, "r1", decoder(), part=index)
        progress = writer.resume()
        mine = {r.partition for r in part.ranges}
        feed(writer, [m for m in messages if m.partition_ in mine], progress)
        writer.seal_part(progress)
        assert EvidenceWriter.part_sealed(directory)
        directories.append(directory)
    manifest = bundle.finish(bundle.merge_parts(directories))

    assert manifest["merkle_root"] == reference["merkle_root"]
    assert manifest["counts"] == reference["counts"]
    hashes = [(tmp_path / name / "records.sha256").read_bytes() for name in ("single", "parallel")]
    assert hashes[0] == hashes[1]
    files = manifest["records"]["files"]
    schema_id = reference["records"]["files"][0]["schema_id"]
    assert [f["name"] for f in files] == [f"records-{schema_id}.part0.avro", f"records-{schema_id}.part1.avro"]
    assert sum(f["records"] for f in files) == 40
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == sorted(
        ["manifest.json", "records.sha256", *(f["name"] for f in files)]
    )
    report = verify_bundle(tmp_path / "parallel")
    assert report.ok, report.problems
    assert report.records == 40


def test_a_merge_recorded_before_an_interruption_is_not_repeated(tmp_path: Path) -> None:
    messages = invoice_messages(TOPIC, 20)
    whole = plan_for(messages)
    bundle = EvidenceWriter(tmp_path / "b", whole, "r1", decoder())
    bundle.resume()
    bundle.parts = 1
    directory = bundle.partial / "part-0"
    writer = EvidenceWriter(directory, whole, "r1", decoder(), part=0)
    progress = writer.resume()
    feed(writer, messages, progress)
    writer.seal_part(progress)
    bundle.merge_parts([directory])
    bundle.close()  # interrupted here: merged, not sealed

    again = EvidenceWriter(tmp_path / "b", whole, "r1", decoder())
    job = parallel.PartsJob({}, "http://unused", "r1", "null", None)
    resumed = parallel.export_in_parts(again, job, 1)  # starts no process: the checkpoint says merged
    assert resumed.matched == 20
    assert not partial_dir(directory).exists()
    manifest = again.finish(resumed)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["merkle_root"] == manifest["merkle_root"]
    assert verify_bundle(tmp_path / "b").ok


def test_a_merge_interrupted_after_moving_files_completes_on_the_re_run(tmp_path: Path) -> None:
    messages = invoice_messages(TOPIC, 20)
    whole = plan_for(messages)
    bundle = EvidenceWriter(tmp_path / "b", whole, "r1", decoder())
    bundle.resume()
    directory = bundle.partial / "part-0"
    writer = EvidenceWriter(directory, whole, "r1", decoder(), part=0)
    progress = writer.resume()
    feed(writer, messages, progress)
    writer.seal_part(progress)
    sealed = json.loads((partial_dir(directory) / "sealed.json").read_text())
    for entry in sealed["files"]:  # the first merge moved the files, then died before its checkpoint
        (partial_dir(directory) / entry["name"]).replace(bundle.partial / entry["name"])

    manifest = bundle.finish(bundle.merge_parts([directory]))
    assert manifest["counts"]["records"] == 20
    report = verify_bundle(tmp_path / "b")
    assert report.ok, report.problems
