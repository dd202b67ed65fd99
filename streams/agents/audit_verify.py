"""Verification of the audit chain: hash links, sequence continuity, and (optionally) the source records.

Finds the first broken link and says what kind of tampering explains it; also exactly-once violations.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.agents.audit_chain import GENESIS_HASH, ChainEntry, UnreadableEntry
from streams.errors import StreamsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streams.settings import KafkaConfig

__all__ = [
    "ChainBreak",
    "SourceProblem",
    "VerifyReport",
    "check_sources",
    "duplicate_sources",
    "find_first_break",
    "verify_entries",
]

# Source findings that break the exactly-once promise or point at records that do not exist. A record
# deleted by the source topic's retention (unavailable) is expected on a chain that outlives its sources.
FAILING_SOURCE_KINDS = frozenset({"duplicate_source", "missing_source", "payload_mismatch", "unknown_source"})
SHOWN_PER_KIND = 100  # reports list at most this many source problems of each kind (counts stay exact)


@dataclass(frozen=True)
class ChainBreak:
    """The first broken link: what `kind` of change explains it, at which `position` and `sequence`.

    kind: modified | deleted | inserted | reordered | duplicated | unreadable. check: the test that failed
    (entry_hash | sequence | previous_entry_hash | decode). `position` counts entries as read, from 0.
    """

    kind: str
    check: str
    position: int
    sequence: int | None
    expected: str
    found: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "check": self.check,
            "position": self.position,
            "sequence": self.sequence,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SourceProblem:
    """A finding about the audited records: duplicate, missing, unknown or changed source, or unavailable."""

    kind: str
    topic: str
    partition: int
    offset: int
    sequences: tuple[int, ...]
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "sequences": list(self.sequences),
            "detail": self.detail,
        }


@dataclass
class VerifyReport:
    """What `streams audit verify` found; `ok` when the chain is intact and every source check passed."""

    origin: str
    entries: int
    tip_sequence: int | None
    tip_hash: str | None
    first_break: ChainBreak | None
    source_problems: list[SourceProblem] = field(default_factory=list)
    sources_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.first_break is None and not any(p.kind in FAILING_SOURCE_KINDS for p in self.source_problems)

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = defaultdict(int)
        for problem in self.source_problems:
            counted[problem.kind] += 1
        return dict(sorted(counted.items()))

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, int] = defaultdict(int)
        problems = []
        for problem in self.source_problems:
            shown[problem.kind] += 1
            if shown[problem.kind] <= SHOWN_PER_KIND:
                problems.append(problem.to_json())
        return {
            "ok": self.ok,
            "origin": self.origin,
            "entries": self.entries,
            "tip": {"sequence": self.tip_sequence, "entry_hash": self.tip_hash},
            "first_break": None if self.first_break is None else self.first_break.to_json(),
            "sources_checked": self.sources_checked,
            "source_problem_counts": self.counts(),
            "source_problems": problems,
        }


def verify_entries(
    entries: Sequence[ChainEntry | UnreadableEntry],
    origin: str,
    kafka: KafkaConfig | None = None,
    archive: str | None = None,
) -> VerifyReport:
    """Check the chain; with `kafka`, also re-read every source record (payload hash, missing records)."""
    readable = [entry for entry in entries if isinstance(entry, ChainEntry)]
    tip = readable[-1] if readable else None
    report = VerifyReport(
        origin,
        len(entries),
        tip.sequence if tip else None,
        tip.entry_hash if tip else None,
        find_first_break(entries),
        duplicate_sources(readable),
    )
    if kafka is not None:
        report.source_problems += check_sources(kafka, readable, archive=archive)
        report.sources_checked = True
    return report


def find_first_break(entries: Sequence[ChainEntry | UnreadableEntry]) -> ChainBreak | None:
    """The first entry whose hash, sequence or link is wrong, explained; None when the chain is intact.

    Read in order, entry i must recompute to its entry_hash, carry sequence i and link to entry i-1's hash.
    """
    expected, tip = 0, GENESIS_HASH
    intact: list[ChainEntry] = []  # entries[:position], all of them good so far
    linked: dict[str, int] = {}  # entry_hash -> position, within `intact`
    for position, entry in enumerate(entries):
        if isinstance(entry, UnreadableEntry):
            return ChainBreak(
                "unreadable",
                "decode",
                position,
                None,
                "an AuditEntry",
                entry.reason,
                f"the record at position {position} is not an audit entry: {entry.reason}",
            )
        computed = _computed(entry)
        if computed != entry.entry_hash:
            return _bad_hash(entries, position, entry, computed, expected, tip)
        if entry.sequence == expected and entry.previous_entry_hash == tip:
            intact.append(entry)
            linked[entry.entry_hash] = position
            expected, tip = expected + 1, entry.entry_hash
            continue
        return _bad_link(entries, intact, entry, expected, tip, linked)
    return None


def _computed(entry: ChainEntry) -> str:
    try:
        return entry.computed_hash()
    except UnicodeEncodeError:  # a lone surrogate smuggled into an exported file: not UTF-8, not hashable
        return "(not UTF-8)"


def _bad_hash(
    entries: Sequence[ChainEntry | UnreadableEntry],
    position: int,
    entry: ChainEntry,
    computed: str,
    expected: int,
    tip: str,
) -> ChainBreak:
    following = entries[position + 1] if position + 1 < len(entries) else None
    if isinstance(following, ChainEntry) and following.sequence == expected and following.previous_entry_hash == tip:
        return ChainBreak(
            "inserted",
            "entry_hash",
            position,
            entry.sequence,
            computed,
            entry.entry_hash,
            f"the entry at position {position} does not recompute and the chain continues past it "
            f"from position {position - 1}: it was inserted",
        )
    return ChainBreak(
        "modified",
        "entry_hash",
        position,
        entry.sequence,
        computed,
        entry.entry_hash,
        f"sequence {entry.sequence} (position {position}) was changed after it was written: its "
        "fields no longer hash to its entry_hash",
    )


def _bad_link(
    entries: Sequence[ChainEntry | UnreadableEntry],
    intact: list[ChainEntry],
    entry: ChainEntry,
    expected: int,
    tip: str,
    linked: dict[str, int],
) -> ChainBreak:
    """The entry after `intact` hashes correctly but does not continue the chain: say which change explains it."""
    position, found, link = len(intact), entry.sequence, entry.previous_entry_hash
    if link == tip:  # it links to its predecessor, so its own sequence was rewritten (and rehashed)
        return ChainBreak(
            "modified",
            "sequence",
            position,
            found,
            str(expected),
            str(found),
            f"the entry at position {position} links to its predecessor but claims sequence {found}",
        )
    if found == expected:
        if position == 0:
            return ChainBreak(
                "modified",
                "previous_entry_hash",
                0,
                found,
                GENESIS_HASH,
                link,
                "the first entry does not start from the genesis hash",
            )
        previous = intact[-1]
        return ChainBreak(
            "modified",
            "previous_entry_hash",
            position - 1,
            previous.sequence,
            link,
            tip,
            f"sequence {previous.sequence} (position {position - 1}) was changed and rehashed: the "
            f"next entry recorded a different hash for it",
        )
    later = [e for e in entries[position + 1 :] if isinstance(e, ChainEntry)]
    if found > expected:
        if any(e.sequence == expected for e in later):
            return ChainBreak(
                "reordered",
                "sequence",
                position,
                expected,
                str(expected),
                str(found),
                f"position {position} holds sequence {found}; sequence {expected} comes later",
            )
        missing = f"sequence {expected}" if found == expected + 1 else f"sequences {expected}..{found - 1}"
        return ChainBreak(
            "deleted",
            "sequence",
            position,
            expected,
            str(expected),
            str(found),
            f"{missing} missing before position {position}",
        )
    if entry.entry_hash in linked:
        return ChainBreak(
            "duplicated",
            "sequence",
            position,
            found,
            str(expected),
            str(found),
            f"position {position} repeats sequence {found} from position {linked[entry.entry_hash]}",
        )
    if link in linked:  # the chain resumes from an earlier entry: what lies between was inserted
        start = linked[link] + 1
        forged = intact[start]
        return ChainBreak(
            "inserted",
            "previous_entry_hash",
            start,
            forged.sequence,
            forged.entry_hash,
            link,
            f"the entry at position {position} continues the chain from position {start - 1}: "
            f"position{'s' if position - start > 1 else ''} {start}"
            f"{f'..{position - 1}' if position - start > 1 else ''} were inserted",
        )
    return ChainBreak(
        "reordered",
        "sequence",
        position,
        expected,
        str(expected),
        str(found),
        f"position {position} holds sequence {found}, which belongs earlier",
    )


def duplicate_sources(entries: Sequence[ChainEntry]) -> list[SourceProblem]:
    """Source records chained more than once (an exactly-once violation), in chain order."""
    by_source: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for entry in entries:
        by_source[(entry.topic, entry.partition, entry.offset)].append(entry.sequence)
    return [
        SourceProblem("duplicate_source", t, p, o, tuple(seqs), f"chained {len(seqs)} times")
        for (t, p, o), seqs in by_source.items()
        if len(seqs) > 1
    ]


def check_sources(
    kafka: KafkaConfig, entries: Sequence[ChainEntry], *, stall_timeout_s: float = 30.0, archive: str | None = None
) -> list[SourceProblem]:
    """Re-read each audited partition (read_committed) up to its highest chained offset and compare.

    Every record in that range must be chained with the SHA-256 of its value; a chained offset with no
    record is unknown_source, or unavailable when retention already deleted it and the `archive`
    (streams.archive, a location) does not hold it either: offsets below Kafka's log start are read there.
    """
    chained: dict[tuple[str, int], dict[int, ChainEntry]] = defaultdict(dict)
    for entry in entries:
        chained[(entry.topic, entry.partition)].setdefault(entry.offset, entry)
    if not chained:
        return []
    consumer = Consumer(
        {
            **kafka,
            "group.id": "streams-audit-verify",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    problems: list[SourceProblem] = []
    try:
        ranges = _ranges(consumer, chained, stall_timeout_s)
        seen = _compare(consumer, chained, ranges, problems, stall_timeout_s)
        if archive is not None:
            ranges = _compare_archived(archive, chained, ranges, problems, seen)
    except KafkaException as exc:
        raise StreamsError(f"re-reading the audited source records: {exc.args[0]}") from exc
    finally:
        consumer.close()
    for (topic, partition), offsets in chained.items():
        low = ranges[(topic, partition)][0]
        for offset in sorted(set(offsets) - seen[(topic, partition)]):
            kind = "unavailable" if offset < low else "unknown_source"
            reason = (
                "deleted by the topic's retention"
                if offset < low
                else "no committed record at that offset: the entry points at nothing"
            )
            problems.append(SourceProblem(kind, topic, partition, offset, (offsets[offset].sequence,), reason))
    return problems


def _compare_archived(
    location: str,
    chained: dict[tuple[str, int], dict[int, ChainEntry]],
    ranges: dict[tuple[str, int], tuple[int, int]],
    problems: list[SourceProblem],
    seen: dict[tuple[str, int], set[int]],
) -> dict[tuple[str, int], tuple[int, int]]:
    """The records retention removed from Kafka, read from the archive and compared like Kafka's; returns
    the ranges with each low moved down to what the archive holds."""
    from streams.archive.read import open_view  # noqa: PLC0415 - only with an archive

    moved = dict(ranges)
    for (topic, partition), (low, _) in ranges.items():
        view = open_view(location, topic) if low > 0 else None
        covered = view.covered(partition) if view is not None else None
        if view is None or covered is None or not covered[0] < low <= covered[1]:
            continue
        moved[(topic, partition)] = (covered[0], ranges[(topic, partition)][1])
        end = min(low, max(chained[(topic, partition)]) + 1)
        for batch in view.read(partition, covered[0], end):
            for record in batch:
                offset = record.offset()
                seen[(topic, partition)].add(offset)
                entry = chained[(topic, partition)].get(offset)
                digest = hashlib.sha256(record.value() or b"").hexdigest()
                if entry is None:
                    problems.append(
                        SourceProblem("missing_source", topic, partition, offset, (), "archived record never chained")
                    )
                elif entry.payload_sha256 != digest:
                    problems.append(
                        SourceProblem(
                            "payload_mismatch",
                            topic,
                            partition,
                            offset,
                            (entry.sequence,),
                            f"chain says sha256 {entry.payload_sha256}, the archived record has {digest}",
                        )
                    )
    return moved


def _ranges(
    consumer: Consumer, chained: dict[tuple[str, int], dict[int, ChainEntry]], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low watermark, end to read to) per partition: through its highest chained offset, or its end."""
    ranges = {}
    for (topic, partition), offsets in chained.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        ranges[(topic, partition)] = (low, min(max(offsets) + 1, high))
    return ranges


def _compare(
    consumer: Consumer,
    chained: dict[tuple[str, int], dict[int, ChainEntry]],
    ranges: dict[tuple[str, int], tuple[int, int]],
    problems: list[SourceProblem],
    timeout: float,
) -> dict[tuple[str, int], set[int]]:
    seen: dict[tuple[str, int], set[int]] = {key: set() for key in chained}
    pending = {key for key, (low, end) in ranges.items() if end > low}
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in pending])
    deadline = time.monotonic() + timeout
    while pending:
        messages = consumer.consume(1000, 0.2)
        for message in messages:
            if (error := message.error()) is not None:
                raise StreamsError(f"re-reading {message.topic()}: {error.str()}")
            key, offset = (message.topic() or "", message.partition() or 0), message.offset() or 0
            if key not in pending or offset >= ranges[key][1]:
                continue
            seen[key].add(offset)
            entry = chained[key].get(offset)
            digest = hashlib.sha256(message.value() or b"").hexdigest()
            if entry is None:
                problems.append(SourceProblem("missing_source", *key, offset, (), "record never chained"))
            elif entry.payload_sha256 != digest:
                problems.append(
                    SourceProblem(
                        "payload_mismatch",
                        *key,
                        offset,
                        (entry.sequence,),
                        f"chain says sha256 {entry.payload_sha256}, the record has {digest}",
                    )
                )
        if messages:
            deadline = time.monotonic() + timeout
        positions = consumer.position([TopicPartition(t, p) for t, p in pending])
        pending -= {(tp.topic, tp.partition) for tp in positions if tp.offset >= ranges[(tp.topic, tp.partition)][1]}
        if pending and time.monotonic() > deadline:
            raise StreamsError(f"re-reading the audited sources stalled for {timeout:g}s on {sorted(pending)}")
    return seen
