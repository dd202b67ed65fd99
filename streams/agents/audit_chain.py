"""The audit chain itself: the entry model, the canonical form its hashes cover, and reading it back.

Shared by the writer (streams.agents.audit), `streams audit verify` and `streams audit export`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import SchemaError, StreamsError
from streams.schemas.codec import AvroCodec, split_header
from streams.schemas.registry_client import RegistryClient, RegistryRequestError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from pathlib import Path

    from streams.settings import KafkaConfig

__all__ = [
    "DECODE_ERRORS",
    "EPOCH",
    "GENESIS_HASH",
    "ONE_MS",
    "ChainDecoder",
    "ChainEntry",
    "UnreadableEntry",
    "read_chain",
    "read_jsonl",
    "write_jsonl",
]

GENESIS_HASH = "0" * 64  # previous_entry_hash of sequence 0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
# What decoding a bad Avro datum or a wrong-shaped record can raise; none of it may stop a reader.
DECODE_ERRORS = (SchemaError, ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError, MemoryError)
_T = TypeVar("_T", int, str)
_json_str = json.encoder.encode_basestring  # how json.dumps(..., ensure_ascii=False) writes a str


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One link of the chain (the AuditEntry record, source flattened); `occurred_at` in epoch ms, UTC."""

    sequence: int
    tenant_id: str
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    actor: str | None
    occurred_at: int
    payload_sha256: str
    previous_entry_hash: str
    entry_hash: str = ""
    # A signed checkpoint of this entry as the chain's head (decision 0025), or None. Outside body() and so
    # outside entry_hash: chains written before the field existed hash as they did, and its signature covers it.
    checkpoint: str | None = None

    def body(self) -> dict[str, Any]:
        """Every field except entry_hash and checkpoint, shaped like the Avro record."""
        return {
            "tenant_id": self.tenant_id,
            "sequence": self.sequence,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "event_id": self.event_id,
            "event_type": self.event_type,
            "actor": self.actor,
            "occurred_at": self.occurred_at,
            "payload_sha256": self.payload_sha256,
            "previous_entry_hash": self.previous_entry_hash,
        }

    def canonical_bytes(self) -> bytes:
        """What entry_hash covers: body() as UTF-8 JSON, keys sorted, no whitespace, times as epoch ms.

        Written out by hand because it is on the hot path; a test holds it byte-equal to
        `json.dumps(body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
        """
        actor = "null" if self.actor is None else _json_str(self.actor)
        return (
            f'{{"actor":{actor},"event_id":{_json_str(self.event_id)},"event_type":{_json_str(self.event_type)},'
            f'"occurred_at":{self.occurred_at},"payload_sha256":{_json_str(self.payload_sha256)},'
            f'"previous_entry_hash":{_json_str(self.previous_entry_hash)},"sequence":{self.sequence},'
            f'"source":{{"offset":{self.offset},"partition":{self.partition},"topic":{_json_str(self.topic)}}},'
            f'"tenant_id":{_json_str(self.tenant_id)}}}'
        ).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def sealed(self) -> ChainEntry:
        """This entry with entry_hash set to its computed hash."""
        return ChainEntry(  # positional, not dataclasses.replace: 5x cheaper on the hot path
            self.sequence,
            self.tenant_id,
            self.topic,
            self.partition,
            self.offset,
            self.event_id,
            self.event_type,
            self.actor,
            self.occurred_at,
            self.payload_sha256,
            self.previous_entry_hash,
            self.computed_hash(),
            self.checkpoint,
        )

    def to_json(self) -> dict[str, Any]:
        """The Avro record / one exported JSON line: body() plus entry_hash (and its checkpoint, if it has one)."""
        if self.checkpoint is None:
            return {**self.body(), "entry_hash": self.entry_hash}
        return {**self.body(), "entry_hash": self.entry_hash, "checkpoint": self.checkpoint}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ChainEntry:
        """From a decoded Avro record or an exported line; TypeError naming the field that is wrong."""
        source = record.get("source")
        if not isinstance(source, dict):
            raise TypeError(f"field 'source' must be an object, got {source!r}")
        moment = record.get("occurred_at")
        millis = (moment - EPOCH) // ONE_MS if isinstance(moment, datetime) else moment
        actor = record.get("actor")
        if actor is not None and not isinstance(actor, str):
            raise TypeError(f"field 'actor' must be a string or null, got {actor!r}")
        checkpoint = record.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise TypeError(f"field 'checkpoint' must be a string or null, got {checkpoint!r}")
        return cls(
            sequence=_typed(record, "sequence", int),
            tenant_id=_typed(record, "tenant_id", str),
            topic=_typed(source, "topic", str),
            partition=_typed(source, "partition", int),
            offset=_typed(source, "offset", int),
            event_id=_typed(record, "event_id", str),
            event_type=_typed(record, "event_type", str),
            actor=actor,
            occurred_at=_typed({"occurred_at": millis}, "occurred_at", int),
            payload_sha256=_typed(record, "payload_sha256", str),
            previous_entry_hash=_typed(record, "previous_entry_hash", str),
            entry_hash=_typed(record, "entry_hash", str),
            checkpoint=checkpoint,
        )


def _typed(record: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"field '{name}' must be {'an integer' if kind is int else 'a string'}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class UnreadableEntry:
    """A chain record that is not an AuditEntry (undecodable, or a JSON line of the wrong shape)."""

    reason: str


class ChainDecoder:
    """Decodes chain records by their schema id (so entries written under older schema versions still read)."""

    def __init__(self, registry: RegistryClient) -> None:
        self._registry = registry
        self._codecs: dict[int, AvroCodec] = {}

    def decode(self, value: bytes | None) -> ChainEntry | UnreadableEntry:
        """The entry, or why the record is not one; SchemaError only when the registry cannot be reached."""
        try:
            _, schema_id = split_header(value or b"")
        except SchemaError as exc:
            return UnreadableEntry(str(exc))
        codec = self._codecs.get(schema_id)
        if codec is None:
            try:
                text = self._registry.schema_by_id(schema_id)
            except RegistryRequestError as exc:
                return UnreadableEntry(f"schema id {schema_id}: {exc.message}")
            codec = self._codecs[schema_id] = AvroCodec(text, schema_id)  # the registry checked it
        try:
            return ChainEntry.from_json(codec.decode(value or b""))
        except DECODE_ERRORS as exc:
            return UnreadableEntry(str(exc))


def read_chain(
    kafka: KafkaConfig, decoder: ChainDecoder, topic: str, *, start: int = 0, stall_timeout_s: float = 30.0
) -> Iterator[tuple[int, ChainEntry | UnreadableEntry]]:
    """Every committed chain record from offset `start` to the end offset of now, as (offset, entry)."""
    consumer = Consumer(
        {
            **kafka,
            "group.id": "streams-audit-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    partition = TopicPartition(topic, 0)
    try:
        low, high = consumer.get_watermark_offsets(partition, timeout=stall_timeout_s, cached=False)
        if max(start, low) >= high:
            return
        consumer.assign([TopicPartition(topic, 0, max(start, low))])
        deadline = time.monotonic() + stall_timeout_s
        # Transaction markers and aborted records take offsets that are never delivered: ask the position.
        while consumer.position([partition])[0].offset < high:
            messages = consumer.consume(1000, 0.2)
            for message in messages:
                if (error := message.error()) is not None:
                    raise StreamsError(f"reading the audit chain '{topic}': {error.str()}")
                yield message.offset() or 0, decoder.decode(message.value())
            if messages:
                deadline = time.monotonic() + stall_timeout_s
            elif time.monotonic() > deadline:
                raise StreamsError(
                    f"reading the audit chain '{topic}' stalled for {stall_timeout_s:g}s before "
                    f"its end offset {high} (an open transaction from another producer?)"
                )
    except KafkaException as exc:
        if exc.args[0].code() in {KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART}:
            raise StreamsError(
                f"the audit chain topic '{topic}' does not exist; run `streams topics apply`, "
                "or name the chain with --chain-topic"
            ) from exc
        raise StreamsError(f"reading the audit chain '{topic}': {exc.args[0]}") from exc
    finally:
        consumer.close()


def write_jsonl(path: Path, entries: Iterable[ChainEntry | UnreadableEntry]) -> int:
    """One canonical JSON object per line (keys sorted, entry_hash included); the number of lines written.

    An unreadable record keeps its place as `{"unreadable": "<why>"}`, so positions stay those of the chain.
    """
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for entry in entries:
            line = entry.to_json() if isinstance(entry, ChainEntry) else {"unreadable": entry.reason}
            out.write(json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[ChainEntry | UnreadableEntry]:
    """The entries of an exported file in line order; a line that is not an entry is an UnreadableEntry."""
    with path.open(encoding="utf-8") as lines:
        return [_from_line(line, f"{path}:{number}") for number, line in enumerate(lines, start=1) if line.strip()]


def _from_line(line: str, where: str) -> ChainEntry | UnreadableEntry:
    try:
        record = json.loads(line)
    except ValueError as exc:
        return UnreadableEntry(f"{where}: not JSON: {exc}")
    if not isinstance(record, dict):
        return UnreadableEntry(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "unreadable" in record:  # exported from an unreadable chain record
        return UnreadableEntry(f"{where}: {record['unreadable']}")
    try:
        return ChainEntry.from_json(record)
    except TypeError as exc:
        return UnreadableEntry(f"{where}: {exc}")
