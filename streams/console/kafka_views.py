"""What the console reads from Kafka: messages of a topic (decoded, PII masked by the catalog) and dead letters.

Every function takes plain values and returns plain data for the templates; bad input raises ConsoleInputError.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.errors import StreamsError
from streams.replay.jsonl import json_safe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from confluent_kafka import Consumer, Message
    from confluent_kafka.admin import AdminClient

    from streams.catalog import Catalog, TopicSpec
    from streams.records import EventDecoder
    from streams.settings import KafkaConfig

MASK = "[masked]"
SCAN_LIMIT = 200_000  # records a filtered browse reads at most before it stops and says so
STALL_S = 10.0


class ConsoleInputError(StreamsError):
    """Input the console refuses: shown on the page with `status` (a 4xx); nothing was changed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BrowseQuery:
    """A message page's selection: where to start (offset or time), where to stop, what to keep."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    key: str | None = None
    tenant: str | None = None
    limit: int = 100


@dataclass
class BrowseResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    watermarks: dict[int, tuple[int, int]] = field(default_factory=dict)
    truncated: bool = False


def catalog_topic(catalog: Catalog, name: str) -> TopicSpec:
    """The catalog's topic, or a 404 ConsoleInputError naming close matches."""
    if name not in catalog.names():
        from streams.errors import CatalogError  # noqa: PLC0415

        try:
            catalog.topic(name)
        except CatalogError as exc:
            raise ConsoleInputError(
                f"topic {name!r} is not in the catalog ({str(exc).split('; ', 1)[-1]})", 404
            ) from None
    return catalog.topic(name)


_INT = re.compile(r"^\s*\d+\s*$")


def parse_browse(params: Mapping[str, str], catalog: Catalog, max_rows: int) -> BrowseQuery:
    """The query string of the message page as a BrowseQuery; ConsoleInputError names the bad field."""
    from streams.replay.errors import ReplayError  # noqa: PLC0415
    from streams.replay.selection import parse_bound  # noqa: PLC0415

    spec = catalog_topic(catalog, params.get("topic", "").strip())

    def number(name: str) -> int | None:
        text = params.get(name, "").strip()
        if not text:
            return None
        if not _INT.match(text):
            raise ConsoleInputError(f"{name} {text!r} is not a whole number of 0 or more")
        return int(text)

    partition, offset, limit = number("partition"), number("offset"), number("limit")
    if partition is not None and partition >= spec.partitions:
        raise ConsoleInputError(
            f"partition {partition} does not exist: {spec.name} has partitions 0-{spec.partitions - 1} in the catalog"
        )
    if offset is not None and partition is None:
        raise ConsoleInputError("an offset needs a partition (offsets are per partition)")
    times: list[int | None] = []
    for name in ("from", "to"):
        try:
            bound = parse_bound(params.get(name) or None, name)
        except ReplayError as exc:
            raise ConsoleInputError(str(exc)) from None
        if isinstance(bound, dict):
            raise ConsoleInputError(
                f"{name}: give a time (ISO-8601 with a zone, or -1h); offsets go in the offset field"
            )
        times.append(bound)
    if offset is not None and times[0] is not None:
        raise ConsoleInputError("give a start offset or a from time, not both")
    if times[0] is not None and times[1] is not None and times[1] <= times[0]:
        raise ConsoleInputError("the to time must be after the from time")
    if limit is not None and not 1 <= limit <= max_rows:
        raise ConsoleInputError(f"limit must be between 1 and {max_rows}")
    return BrowseQuery(
        spec.name,
        partition,
        offset,
        times[0],
        times[1],
        params.get("key") or None,
        params.get("tenant") or None,
        limit or min(100, max_rows),
    )


def reader(kafka_config: KafkaConfig) -> Consumer:
    from confluent_kafka import Consumer  # noqa: PLC0415

    # A page wants what is there now: the broker answers a fetch at once (not after fetch.wait.max.ms).
    return Consumer(
        {
            **kafka_config,
            "group.id": "streams-console",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
            "enable.partition.eof": False,
        }
    )


def browse(
    consumer: Consumer,
    admin: AdminClient,
    decoder: EventDecoder,
    spec: TopicSpec,
    query: BrowseQuery,
    *,
    unmasked: bool,
) -> BrowseResult:
    """The records `query` selects, oldest first per partition, decoded and masked unless `unmasked`."""
    from confluent_kafka import KafkaException  # noqa: PLC0415

    result = BrowseResult()
    partitions = [query.partition] if query.partition is not None else list(range(spec.partitions))
    try:
        result.watermarks = watermarks(admin, spec.name, partitions)
        if query.offset is not None and query.partition is not None:
            low, high = result.watermarks[query.partition]
            if query.offset > high:
                raise ConsoleInputError(
                    f"offset {query.offset} is beyond the end of {spec.name} partition "
                    f"{query.partition} (offsets {low}-{high - 1 if high else 0}, next {high})",
                    416,
                )
        starts = _starts(admin, spec.name, query, result.watermarks)
    except KafkaException as exc:
        raise StreamsError(f"cannot read '{spec.name}': {exc.args[0]}") from exc
    for partition, start in starts.items():
        high = result.watermarks[partition][1]
        if start < high and len(result.rows) < query.limit:
            _read_partition(consumer, decoder, spec, query, partition, (start, high), result, unmasked)
    return result


def watermarks(admin: AdminClient, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """{partition: (first offset, end offset)} in one ListOffsets round per bound (read_committed: the end is the
    last stable offset). A consumer's get_watermark_offsets asks one partition at a time, waiting behind its
    fetches: 6 partitions took ~0.5 s, most of a 1,000-record page."""
    low = _offsets(admin, topic, partitions, "earliest")
    high = _offsets(admin, topic, partitions, "latest")
    return {p: (low[p], high[p]) for p in partitions}


def _offsets(admin: AdminClient, topic: str, partitions: list[int], spec: str | int) -> dict[int, int]:
    from confluent_kafka import IsolationLevel, TopicPartition  # noqa: PLC0415
    from confluent_kafka.admin import OffsetSpec  # noqa: PLC0415

    if spec == "earliest":
        wanted = OffsetSpec.earliest()
    elif spec == "latest":
        wanted = OffsetSpec.latest()
    else:
        wanted = OffsetSpec.for_timestamp(int(spec))
    futures = admin.list_offsets(
        {TopicPartition(topic, p): wanted for p in partitions},
        isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=STALL_S,
    )
    return {tp.partition: int(future.result().offset) for tp, future in futures.items()}


def _starts(admin: AdminClient, topic: str, query: BrowseQuery, marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    if query.offset is not None:
        return {p: max(query.offset, low) for p, (low, _) in marks.items()}
    if query.from_ms is None:
        return {p: low for p, (low, _) in marks.items()}
    found = _offsets(admin, topic, list(marks), query.from_ms)
    # -1: no record at or after that time in the partition, so it starts at its end.
    return {p: marks[p][1] if offset < 0 else offset for p, offset in found.items()}


def _read_partition(
    consumer: Consumer,
    decoder: EventDecoder,
    spec: TopicSpec,
    query: BrowseQuery,
    partition: int,
    bounds: tuple[int, int],
    result: BrowseResult,
    unmasked: bool,
) -> None:
    from confluent_kafka import TopicPartition  # noqa: PLC0415

    start, high = bounds
    consumer.assign([TopicPartition(spec.name, partition, start)])
    read_here = 0
    deadline = time.monotonic() + STALL_S
    try:
        # Transaction markers take offsets that are never delivered: the position says when the end is reached.
        while consumer.position([TopicPartition(spec.name, partition)])[0].offset < high:
            # consume(n) waits until n records or the timeout: ask for no more than the range still holds.
            wanted = max(1, min(500, high - start - read_here, query.limit - len(result.rows)))
            messages = consumer.consume(wanted, 0.2)
            if messages:
                deadline = time.monotonic() + STALL_S
            elif time.monotonic() > deadline:
                raise StreamsError(f"reading '{spec.name}' partition {partition} stalled for {STALL_S:g} s")
            for message in messages:
                if message.error() is not None or (message.offset() or 0) >= high:
                    continue
                result.scanned += 1
                read_here += 1
                if query.to_ms is not None and message.timestamp()[1] >= query.to_ms:
                    return  # timestamps rise within a partition as producers set them (CreateTime, ours)
                if _selected(message, query):
                    result.rows.append(row(message, decoder, spec, unmasked=unmasked))
                    if len(result.rows) >= query.limit:
                        return
                if result.scanned >= SCAN_LIMIT:
                    result.truncated = True
                    return
    finally:
        consumer.unassign()


def _selected(message: Message, query: BrowseQuery) -> bool:
    if query.key is not None and text(message.key()) != query.key:
        return False
    if query.tenant is not None:
        tenants = [v for k, v in headers(message) if k == "ce_tenantid"]
        return bool(tenants) and text(tenants[0]) == query.tenant
    return True


def text(data: str | bytes | None) -> str:
    """A key or header value as text (invalid UTF-8 replaced); None as ''."""
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def headers(message: Message) -> list[tuple[str, str | bytes | None]]:
    """A consumed record's headers (a list of pairs once consumed)."""
    return list(message.headers() or [])  # type: ignore[arg-type]


def row(message: Message, decoder: EventDecoder, spec: TopicSpec, *, unmasked: bool) -> dict[str, Any]:
    """One record for the page and the JSON Lines download: position, key, headers, decoded value (masked)."""
    from streams.records import UndecodableRecordError  # noqa: PLC0415

    try:
        schema_id, payload = decoder.decode(message.value())
        value: Any = json_safe(payload)
        error = None
    except UndecodableRecordError as exc:
        schema_id, value, error = None, None, str(exc)
    if value is not None and not unmasked and spec.pii_fields:
        value = mask(value, spec.pii_fields)
    key = message.key()
    return {
        "topic": spec.name,
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
        "key": text(key) if key is not None else None,
        "headers": {k: text(v) for k, v in headers(message)},
        "schema_id": schema_id,
        "value": value,
        "error": error,
    }


def mask(value: dict[str, Any], pii_fields: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `value` with each dotted `pii_fields` path replaced by MASK (where present and not null)."""
    masked = dict(value)
    for dotted in pii_fields:
        _mask_path(masked, dotted.split("."))
    return masked


def _mask_path(node: dict[str, Any], parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if head not in node or node[head] is None:
        return
    if not rest:
        node[head] = MASK
    elif isinstance(node[head], dict):
        node[head] = dict(node[head])
        _mask_path(node[head], rest)
    elif isinstance(node[head], list):  # a path through an array masks the field in every element
        node[head] = [dict(item) if isinstance(item, dict) else item for item in node[head]]
        for item in node[head]:
            if isinstance(item, dict):
                _mask_path(item, rest)


# Dead letters ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which pending dead letters a redrive takes: all, one position, or those matching error class / agent / text."""

    partition: int | None = None
    offset: int | None = None
    error_class: str | None = None
    agent: str | None = None
    text: str | None = None

    def describe(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("partition", self.partition),
                ("offset", self.offset),
                ("error_class", self.error_class),
                ("agent", self.agent),
                ("text", self.text),
            )
            if value is not None
        ]
        return ", ".join(parts) or "all"

    def matches(self, described: Mapping[str, Any]) -> bool:
        if self.partition is not None and described["dlq_partition"] != self.partition:
            return False
        if self.offset is not None and described["dlq_offset"] != self.offset:
            return False
        if self.error_class is not None and described.get("error_class") != self.error_class:
            return False
        if self.agent is not None and described.get("agent") != self.agent:
            return False
        return self.text is None or self.text.lower() in str(described.get("error_message", "")).lower()


def parse_dlq_filter(form: Mapping[str, str]) -> DeadLetterFilter:
    def number(name: str) -> int | None:
        text = (form.get(name) or "").strip()
        if not text:
            return None
        if not _INT.match(text):
            raise ConsoleInputError(f"{name} {text!r} is not a whole number of 0 or more")
        return int(text)

    partition, offset = number("partition"), number("offset")
    if (partition is None) != (offset is None):
        raise ConsoleInputError("one dead letter is named by both its partition and its offset")
    return DeadLetterFilter(
        partition,
        offset,
        (form.get("error_class") or "").strip() or None,
        (form.get("agent") or "").strip() or None,
        (form.get("text") or "").strip() or None,
    )


def dead_letters(kafka_config: KafkaConfig, topic: str) -> list[dict[str, Any]]:
    """Every dead letter of TOPIC (read from `<topic>.dlq`) with its dlq_* fields and whether it is still pending."""
    from streams.dlq import _dead_letters, describe, pending  # noqa: PLC0415

    waiting = {(m.partition(), m.offset()) for m in pending(kafka_config, topic)}
    described = []
    for message in _dead_letters(kafka_config, f"{topic}.dlq", group=None):
        item = describe(message)
        item["pending"] = (message.partition(), message.offset()) in waiting
        described.append(item)
    return described


def select_pending(kafka_config: KafkaConfig, topic: str, wanted: DeadLetterFilter) -> tuple[list[Any], list[Any]]:
    """(selected, every pending) dead letters of TOPIC; the selection is what a redrive would send."""
    from streams.dlq import describe, pending  # noqa: PLC0415

    waiting = pending(kafka_config, topic)
    return [m for m in waiting if wanted.matches(describe(m))], waiting
