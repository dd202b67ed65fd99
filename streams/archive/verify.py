"""`streams archive verify`: every segment against its manifest, every manifest against its neighbours.

A flipped bit names the record (or the segment, when the file no longer decodes), a deleted segment the
offsets it held, an edited manifest the link or hash it broke.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streams.archive.segments import Segment, archived_partitions, decode_segment, list_segments
from streams.archive.store import ArchiveError
from streams.replay.encoding import merkle_root_joined

if TYPE_CHECKING:
    from streams.archive.store import ArchiveStore

__all__ = ["ArchiveReport", "verify_archive"]


@dataclass
class ArchiveReport:
    """What verify found: per (topic, partition) the offsets covered, the counts, and every problem."""

    covered: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    segments: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_archive(store: ArchiveStore, topics: tuple[str, ...], *, records: bool = True) -> ArchiveReport:
    """Check `topics` in `store`; `records=False` skips reading the segment files (manifests only)."""
    report = ArchiveReport()
    for topic in topics:
        for partition in archived_partitions(store, topic):
            _verify_partition(store, topic, partition, report, records=records)
    return report


def _verify_partition(store: ArchiveStore, topic: str, partition: int, report: ArchiveReport, *, records: bool) -> None:
    where = f"{topic} partition {partition}"
    try:
        segments, unsealed = list_segments(store, topic, partition)
    except ArchiveError as exc:
        report.problems.append(f"{where}: {exc}")
        return
    for name in unsealed:
        report.problems.append(
            f"{where}: segment {name} has no manifest (torn write: the archiver rewrites it "
            "when it runs again; until then those records are not sealed)"
        )
    previous: Segment | None = None
    for segment in segments:
        shown = f"{where}: segment {segment.from_offset}"
        if (segment.topic, segment.partition) != (topic, partition):
            report.problems.append(f"{shown}: its manifest says {segment.topic} partition {segment.partition}")
        if previous is not None:
            if segment.from_offset > previous.next_offset:
                report.problems.append(
                    f"{where}: offsets {previous.next_offset}-{segment.from_offset - 1} are "
                    "missing (a segment was deleted)"
                )
            elif segment.from_offset < previous.next_offset:
                report.problems.append(
                    f"{shown}: overlaps the previous segment (it ends at {previous.next_offset - 1})"
                )
            if segment.manifest.get("previous_manifest_sha256") != previous.manifest_sha256:
                report.problems.append(
                    f"{where}: manifest of segment {previous.from_offset} was edited or "
                    f"replaced (segment {segment.from_offset} links a different one)"
                )
        _check_manifest(segment, shown, report)
        if records:
            _check_records(store, segment, shown, report)
        report.segments += 1
        report.records += segment.count
        previous = segment
    if segments:
        report.covered[topic, partition] = (segments[0].from_offset, segments[-1].next_offset)


def _check_manifest(segment: Segment, shown: str, report: ArchiveReport) -> None:
    listed = segment.manifest.get("records") or []
    try:
        digests = b"".join(bytes.fromhex(str(entry[1])) for entry in listed)
        offsets = [int(entry[0]) for entry in listed]
    except (ValueError, TypeError, IndexError):
        report.problems.append(f"{shown}: manifest edited: its record list is not (offset, SHA-256) pairs")
        return
    if len(listed) != segment.count:
        report.problems.append(f"{shown}: manifest edited: count {segment.count} but {len(listed)} record hashes")
    if offsets and (
        offsets[-1] + 1 != segment.next_offset
        or offsets[0] < segment.from_offset
        or any(b <= a for a, b in itertools.pairwise(offsets))
    ):
        report.problems.append(
            f"{shown}: manifest edited: its offsets do not run from {segment.from_offset} "
            f"to {segment.next_offset - 1} in order"
        )
    if merkle_root_joined(digests).hex() != segment.manifest.get("merkle_root"):
        report.problems.append(f"{shown}: manifest edited: its Merkle root does not match its record hashes")


def _check_records(store: ArchiveStore, segment: Segment, shown: str, report: ArchiveReport) -> None:
    try:
        data = store.get(segment.name)
    except ArchiveError:
        report.problems.append(f"{shown}: the segment file {segment.name} is missing (deleted)")
        return
    file = segment.manifest.get("file") or {}
    if hashlib.sha256(data).hexdigest() != file.get("sha256"):
        report.problems.append(f"{shown}: the file {segment.name} differs from the SHA-256 in its manifest")
    try:
        decoded, digests = decode_segment(data, segment.name, hashes=True)
    except ArchiveError as exc:
        report.problems.append(f"{shown}: {exc}")
        return
    expected = {int(entry[0]): str(entry[1]) for entry in segment.manifest.get("records") or []}
    hexed = digests.hex()  # each record's hash over its stored bytes: its canonical encoding
    for index, record in enumerate(decoded):
        wanted = expected.pop(record.offset(), None)
        if wanted is None:
            report.problems.append(f"{shown}: record at offset {record.offset()} is not in the manifest")
        elif wanted != hexed[64 * index : 64 * index + 64]:
            report.problems.append(
                f"{shown}: record at offset {record.offset()} does not match its SHA-256 "
                "in the manifest (altered bytes)"
            )
    for offset in sorted(expected):
        report.problems.append(f"{shown}: record at offset {offset} is in the manifest but not in the file")
