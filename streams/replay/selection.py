"""Replay selectors (times, offsets, partitions, key, tenant, type, field) resolved to pinned offset ranges.

A range is [start, end): `--from` is inclusive, `--to` exclusive, for times and offsets alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.replay.errors import ReplayError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from confluent_kafka import Consumer

    from streams.archive.read import ArchiveView

__all__ = [
    "PinnedRange",
    "ReplayPlan",
    "ReplayQuery",
    "format_ms",
    "format_ranges",
    "parse_bound",
    "parse_ranges",
    "parse_where",
    "resolve_plan",
]
# Exports of at least this many offsets run in one process per CPU (streams.replay.parallel); smaller ones
# would spend more on starting the processes than they save. Here, with the plan, so the CLI's help needs
# nothing heavier.
PARALLEL_MIN_OFFSETS = 200_000

_RELATIVE = re.compile(r"^\s*(?:now\s*)?(?:-\s*(\d+)\s*([smhdw]))?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_OFFSETS = re.compile(r"^\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*$")
_RANGES = re.compile(r"^\s*\d+\s*:\s*\d+\s*-\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*-\s*\d+\s*)*$")
_WHERE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)$", re.DOTALL)
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ReplayQuery:
    """What the user asked for, exactly as given (it is recorded in state files and manifests)."""

    topic: str
    from_: str | None = None
    to: str | None = None
    ranges: str | None = None
    partitions: tuple[int, ...] = ()
    key: str | None = None
    tenant: str | None = None
    type_: str | None = None
    where: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "from": self.from_,
            "to": self.to,
            "ranges": self.ranges,
            "partitions": list(self.partitions),
            "key": self.key,
            "tenant": self.tenant,
            "type": self.type_,
            "where": list(self.where),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayQuery:
        return cls(
            topic=data["topic"],
            from_=data.get("from"),
            to=data.get("to"),
            ranges=data.get("ranges"),
            partitions=tuple(data.get("partitions") or ()),
            key=data.get("key"),
            tenant=data.get("tenant"),
            type_=data.get("type"),
            where=tuple(data.get("where") or ()),
        )

    def has_filters(self) -> bool:
        return any(v is not None for v in (self.key, self.tenant, self.type_)) or bool(self.where)


@dataclass(frozen=True)
class PinnedRange:
    """Offsets [start, end) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ReplayPlan:
    """A query resolved against the cluster: the exact offsets a replay reads, repeatable with `--ranges`."""

    query: ReplayQuery
    ranges: tuple[PinnedRange, ...]
    partition_count: int  # of the source topic
    from_ms: int | None = None
    to_ms: int | None = None
    removed_below: dict[int, int] = field(default_factory=dict)  # partition -> log start offset, when > 0
    archive: str | None = None  # where offsets Kafka no longer has are read from (streams.archive)
    archived_below: dict[int, int] = field(default_factory=dict)  # partition -> Kafka's log start when planned

    @property
    def total(self) -> int:
        """Offsets in range (an upper bound on records: compaction and transaction markers leave gaps)."""
        return sum(r.size for r in self.ranges)

    def ranges_arg(self) -> str:
        return format_ranges(self.ranges)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query.to_json(),
            "ranges": [{"partition": r.partition, "start": r.start, "end": r.end} for r in self.ranges],
            "ranges_arg": self.ranges_arg(),
            "partition_count": self.partition_count,
            "from": None if self.from_ms is None else {"ms": self.from_ms, "time": format_ms(self.from_ms)},
            "to": None if self.to_ms is None else {"ms": self.to_ms, "time": format_ms(self.to_ms)},
            "removed_below": {str(p): o for p, o in sorted(self.removed_below.items())},
            "archive": self.archive,
            "archived_below": {str(p): o for p, o in sorted(self.archived_below.items())},
            "offsets_in_range": self.total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayPlan:
        def ms(bound: dict[str, Any] | None) -> int | None:
            return None if bound is None else int(bound["ms"])

        return cls(
            query=ReplayQuery.from_json(data["query"]),
            ranges=tuple(PinnedRange(int(r["partition"]), int(r["start"]), int(r["end"])) for r in data["ranges"]),
            partition_count=int(data["partition_count"]),
            from_ms=ms(data.get("from")),
            to_ms=ms(data.get("to")),
            removed_below={int(p): int(o) for p, o in (data.get("removed_below") or {}).items()},
            archive=data.get("archive"),
            archived_below={int(p): int(o) for p, o in (data.get("archived_below") or {}).items()},
        )


def format_ms(ms: int) -> str:
    """`2026-11-01T08:00:00.001Z` for epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_ranges(ranges: tuple[PinnedRange, ...] | list[PinnedRange]) -> str:
    """The `--ranges` argument that repeats these ranges: `0:100-200,1:250-300`."""
    return ",".join(f"{r.partition}:{r.start}-{r.end}" for r in ranges)


def parse_bound(text: str | None, option: str) -> int | dict[int, int] | None:
    """An ISO-8601 instant as epoch ms, or per-partition offsets `0:100,1:250` as {partition: offset}.

    Also a time relative to now: `now`, `-1h`, `now-30m` (units s, m, h, d, w).
    """
    if text is None or not text.strip():
        return None
    relative = _RELATIVE.match(text)
    if relative is not None and text.strip():
        amount, unit = relative.groups()
        seconds = int(amount) * _UNIT_SECONDS[unit] if amount else 0
        return int((datetime.now(UTC).timestamp() - seconds) * 1000)
    if _OFFSETS.match(text):
        offsets: dict[int, int] = {}
        for item in text.split(","):
            partition, offset = (int(part) for part in item.split(":"))
            if partition in offsets:
                raise ReplayError(f"{option} {text!r}: partition {partition} is given twice")
            offsets[partition] = offset
        return offsets
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayError(
            f"{option} {text!r} is neither an ISO-8601 time (2026-11-01T08:00:00.000Z), a time relative to now"
            " (-1h, now-30m, now) nor per-partition offsets (0:100,1:250)"
        ) from None
    if moment.tzinfo is None:
        raise ReplayError(f"{option} {text!r} has no timezone; add one, e.g. {text.strip()}Z or {text.strip()}+03:00")
    # Kafka timestamps are whole milliseconds: a bound between two rounds up, so `--from` keeps only records
    # at or after it and `--to` keeps every record before it (rounding down would do the opposite).
    return -(-(moment - datetime(1970, 1, 1, tzinfo=UTC)) // _ONE_MS)


def parse_ranges(text: str) -> dict[int, tuple[int, int]]:
    """`--ranges 0:100-200,1:250-300` as {partition: (start, end)} (end exclusive)."""
    if not _RANGES.match(text):
        raise ReplayError(f"--ranges {text!r} is not a list of partition:start-end (e.g. 0:100-200,1:250-300)")
    ranges: dict[int, tuple[int, int]] = {}
    for item in text.split(","):
        partition_text, span = item.split(":")
        start, end = (int(part) for part in span.split("-"))
        partition = int(partition_text)
        if partition in ranges:
            raise ReplayError(f"--ranges {text!r}: partition {partition} is given twice")
        if start > end:
            raise ReplayError(f"--ranges {text!r}: partition {partition} starts at {start}, after its end {end}")
        ranges[partition] = (start, end)
    return ranges


def parse_where(text: str) -> tuple[tuple[str, ...], str]:
    """`seller.vat_number=300000000000003` as (("seller", "vat_number"), "300000000000003")."""
    match = _WHERE.match(text)
    if match is None:
        raise ReplayError(f"--where {text!r} is not FIELD=VALUE with a dotted field path (seller.vat_number=3...3)")
    return tuple(match[1].split(".")), match[2]


def resolve_plan(
    consumer: Consumer,
    query: ReplayQuery,
    archive: ArchiveView | None = None,
    *,
    identity: Mapping[str, Any] | None = None,
) -> ReplayPlan:
    """Pin `query` to offsets on the cluster now; ReplayError for every selector that cannot be honoured.

    With `archive`, offsets retention removed from Kafka are taken from the archive where it holds them
    without a gap up to what Kafka still has (the plan's `archived_below` records where that was).
    `identity` (the client's Kafka settings) names the principal when the topic's ACLs refuse it.
    """
    count = _partition_count(consumer, query.topic, identity or {})
    for partition in query.partitions:
        if not 0 <= partition < count:
            raise ReplayError(f"--partition {partition}: topic '{query.topic}' has partitions 0-{count - 1}")
    watermarks = {p: _watermarks(consumer, query.topic, p) for p in range(count)}
    archived_below: dict[int, int] = {}
    for partition, (low, high) in list(watermarks.items()):
        covered = archive.covered(partition) if archive is not None and low > 0 else None
        if covered is not None and covered[0] < low <= covered[1]:
            archived_below[partition] = low
            watermarks[partition] = (covered[0], high)
    if query.ranges is not None:
        if query.from_ is not None or query.to is not None:
            raise ReplayError("--ranges pins the offsets already; drop --from/--to")
        plan = _pinned(query, parse_ranges(query.ranges), watermarks, count)
        return _through_archive(plan, archive, archived_below)
    start = parse_bound(query.from_, "--from")
    end = parse_bound(query.to, "--to")
    if isinstance(start, int) and isinstance(end, int) and start >= end:
        raise ReplayError(f"--from {query.from_} is not before --to {query.to}; the range [from, to) would be empty")
    chosen = _chosen(query, count, start, end)
    ranges: list[PinnedRange] = []
    problems: list[str] = []
    for partition in chosen:
        kafka_low = archived_below.get(partition)
        pinned, problem = _pin(
            consumer,
            query,
            partition,
            start,
            end,
            watermarks[partition] if kafka_low is None else (kafka_low, watermarks[partition][1]),
        )
        if kafka_low is not None and archive is not None:
            pinned, problem = _archived(archive, pinned, start, end, kafka_low, watermarks[partition][0]), None
        ranges.append(pinned)
        if problem:
            problems.append(problem)
    if problems:
        raise ReplayError(f"topic '{query.topic}': the range is partly beyond retention: " + "; ".join(problems))
    removed = {p: watermarks[p][0] for p in chosen if watermarks[p][0] > 0}
    plan = ReplayPlan(
        query,
        tuple(ranges),
        count,
        start if isinstance(start, int) else None,
        end if isinstance(end, int) else None,
        removed,
    )
    return _through_archive(plan, archive, archived_below)


def _archived(
    archive: ArchiveView,
    pinned: PinnedRange,
    start: int | dict[int, int] | None,
    end: int | dict[int, int] | None,
    kafka_low: int,
    archive_low: int,
) -> PinnedRange:
    """`pinned` (resolved against Kafka alone) with bounds Kafka no longer has resolved in the archive."""
    partition = pinned.partition
    first, last = pinned.start, pinned.end
    if start is None:
        first = archive_low
    elif isinstance(start, int) and first == kafka_low:  # Kafka's oldest: older matches may be archived
        first = archive.offset_for_time(partition, start, kafka_low)
    elif isinstance(start, dict) and partition in start:
        first = start[partition]
        if first < archive_low:
            raise ReplayError(
                f"partition {partition}: offsets below {archive_low} are neither in Kafka (it starts "
                f"at {kafka_low}) nor in the archive; requested from offset {first}"
            )
    if isinstance(end, int) and last == kafka_low:
        last = archive.offset_for_time(partition, end, kafka_low)
    return PinnedRange(partition, first, max(first, last))


def _through_archive(plan: ReplayPlan, archive: ArchiveView | None, archived_below: dict[int, int]) -> ReplayPlan:
    used = {
        r.partition: archived_below[r.partition]
        for r in plan.ranges
        if r.partition in archived_below and r.start < archived_below[r.partition]
    }
    if archive is None or not used:
        return plan
    return replace(plan, archive=archive.url, archived_below=used)


def _pin(
    consumer: Consumer,
    query: ReplayQuery,
    partition: int,
    start: int | dict[int, int] | None,
    end: int | dict[int, int] | None,
    watermarks: tuple[int, int],
) -> tuple[PinnedRange, str | None]:
    """One partition's range, and what retention already removed from it (None: nothing in range)."""
    low, high = watermarks
    first = _resolve(consumer, query.topic, partition, start, low, high, "--from")
    last = _resolve(consumer, query.topic, partition, end, high, high, "--to")
    problem = None
    if isinstance(start, dict) and partition in start and first < low:
        problem = _removed(partition, low, f"offset {first}", _first_time(consumer, query.topic, low, high, partition))
    elif isinstance(start, int) and low > 0 and first == low:
        # offsets_for_times gave the oldest record left: older ones, removed by retention, may be in range.
        oldest = _first_time(consumer, query.topic, low, high, partition)
        if oldest is None or start <= oldest[1]:
            problem = _removed(partition, low, format_ms(start), oldest)
    if first > high:
        raise ReplayError(f"--from {query.from_}: partition {partition} ends at offset {high} (nothing at {first} yet)")
    if last > high:
        raise ReplayError(f"--to {query.to}: partition {partition} ends at offset {high} (nothing at {last} yet)")
    if first > last and problem is None:
        raise ReplayError(
            f"--from {query.from_} is after --to {query.to} on partition {partition} (offset {first} > {last})"
        )
    return PinnedRange(partition, first, max(first, last)), problem


_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def _chosen(query: ReplayQuery, count: int, start: object, end: object) -> list[int]:
    if query.partitions:
        return sorted(set(query.partitions))
    named = {p for bound in (start, end) if isinstance(bound, dict) for p in bound}
    for partition in sorted(named):
        if partition >= count:
            raise ReplayError(
                f"partition {partition} in --from/--to: topic '{query.topic}' has partitions 0-{count - 1}"
            )
    return sorted(named) if named else list(range(count))


def _pinned(
    query: ReplayQuery, given: dict[int, tuple[int, int]], watermarks: dict[int, tuple[int, int]], count: int
) -> ReplayPlan:
    chosen = set(query.partitions) or set(given)
    ranges: list[PinnedRange] = []
    problems: list[str] = []
    for partition in sorted(chosen):
        if partition not in given:
            raise ReplayError(f"--partition {partition} is not in --ranges {query.ranges}")
        if partition not in watermarks:
            raise ReplayError(f"--ranges: topic '{query.topic}' has partitions 0-{count - 1}, not {partition}")
        (start, end), (low, high) = given[partition], watermarks[partition]
        if start < low:
            problems.append(_removed(partition, low, f"offset {start}", None))
        if end > high:
            raise ReplayError(f"--ranges: partition {partition} ends at offset {high}; {start}-{end} goes beyond it")
        ranges.append(PinnedRange(partition, start, end))
    if problems:
        raise ReplayError(f"topic '{query.topic}': the range is partly beyond retention: " + "; ".join(problems))
    removed = {p: watermarks[p][0] for p in chosen if watermarks[p][0] > 0}
    return ReplayPlan(query, tuple(ranges), count, None, None, removed)


def _removed(partition: int, low: int, requested: str, oldest: tuple[int, int] | None) -> str:
    left = "nothing is left"
    if oldest is not None:
        left = f"the earliest available is offset {oldest[0]} at {format_ms(oldest[1])}"
    return f"partition {partition}: retention already removed offsets 0-{low - 1}; {left}; requested from {requested}"


def _partition_count(consumer: Consumer, topic: str, identity: Mapping[str, Any]) -> int:
    from confluent_kafka import KafkaException  # noqa: PLC0415 - `--help` stays fast

    from streams.kafka_util import denial  # noqa: PLC0415

    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot reach Kafka to look up '{topic}': {exc.args[0]}") from exc
    found = metadata.topics.get(topic)
    refused = denial(found.error if found is not None else None, dict(identity), "Read", topic=topic)
    if refused is not None:  # without Describe the brokers will not even say whether it exists
        raise ReplayError(str(refused))
    if found is None or found.error is not None or not found.partitions:
        raise ReplayError(f"unknown topic '{topic}': it does not exist on the cluster (see `streams topics plan`)")
    return len(found.partitions)


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    from confluent_kafka import KafkaException, TopicPartition  # noqa: PLC0415 - `--help` stays fast

    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ReplayError(f"cannot read the offsets of '{topic}' partition {partition}: {exc.args[0]}") from exc
    return int(low), int(high)


def _resolve(
    consumer: Consumer,
    topic: str,
    partition: int,
    bound: int | dict[int, int] | None,
    default: int,
    high: int,
    option: str,
) -> int:
    from confluent_kafka import KafkaException, TopicPartition  # noqa: PLC0415 - `--help` stays fast

    if bound is None:
        return default
    if isinstance(bound, dict):
        return bound.get(partition, default)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, partition, bound)], timeout=TIMEOUT_S)[0]
    except KafkaException as exc:
        raise ReplayError(f"{option}: cannot look up offsets by time on partition {partition}: {exc.args[0]}") from exc
    # -1: no record at or after that time, so the range ends (or starts) at the partition's end.
    return high if found.offset < 0 else int(found.offset)


def _first_time(consumer: Consumer, topic: str, low: int, high: int, partition: int) -> tuple[int, int] | None:
    """(offset, timestamp) of the oldest record still in the partition, or None when it is empty."""
    from confluent_kafka import TopicPartition  # noqa: PLC0415 - `--help` stays fast

    if high <= low:
        return None
    consumer.assign([TopicPartition(topic, partition, low)])
    try:
        messages = consumer.consume(1, TIMEOUT_S)
    finally:
        consumer.unassign()
    for message in messages:
        if message.error() is None:
            return int(message.offset() or 0), int(message.timestamp()[1])
    return None
