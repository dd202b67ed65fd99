"""Record filters of a replay: exact key, tenant and type headers, and field=value on the decoded payload.

Only `--where` decodes a value (through the registry, one codec per schema id); the rest compare bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from streams.errors import SchemaError
from streams.replay.errors import ReplayError
from streams.replay.reader import consumed
from streams.replay.selection import parse_where
from streams.schemas.codec import HEADER, AvroCodec, split_header

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.replay.selection import ReplayQuery
    from streams.schemas.registry_client import RegistryClient

__all__ = ["PayloadDecoder", "RecordFilter"]

TENANT_HEADER = "ce_tenantid"
TYPE_HEADER = "ce_type"


class PayloadDecoder:
    """Decodes Confluent wire-format values, fetching each writer schema from the registry once."""

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._codecs: dict[int, AvroCodec] = {}

    def schema_text(self, schema_id: int) -> str:
        return self.registry.schema_by_id(schema_id)

    def codec(self, schema_id: int) -> AvroCodec:
        codec = self._codecs.get(schema_id)
        if codec is None:
            codec = self._codecs[schema_id] = AvroCodec(self.schema_text(schema_id), schema_id)
        return codec

    def decode(self, value: bytes) -> tuple[int, dict[str, Any]]:
        """(schema id, payload); SchemaError when the value is not an Avro event of a known schema."""
        _, schema_id = split_header(value)
        return schema_id, self.codec(schema_id).decode_datum(value[HEADER.size :])


class RecordFilter:
    """All of the query's filters, ANDed; `matches(message)` is exact (no prefix or case folding)."""

    def __init__(self, query: ReplayQuery, decoder: PayloadDecoder | None) -> None:
        self.topic = query.topic
        self.key = None if query.key is None else query.key.encode()
        self.headers = [
            (name, value.encode())
            for name, value in ((TENANT_HEADER, query.tenant), (TYPE_HEADER, query.type_))
            if value is not None
        ]
        self.where = [(path, _comparer(expected)) for path, expected in map(parse_where, query.where)]
        if self.where and decoder is None:
            raise ReplayError("--where needs the schema registry to decode payloads")
        self.decoder = decoder
        self._checked: set[int] = set()
        self.active = self.key is not None or bool(self.headers) or bool(self.where)

    def matches(self, message: Message) -> bool:
        if self.key is not None and message.key() != self.key:
            return False
        if self.headers:
            present = consumed([message])[0].headers() or []
            for name, expected in self.headers:
                if not any(h_name == name and h_value == expected for h_name, h_value in present):
                    return False
        if self.where:
            return self._where(message)
        return True

    def _where(self, message: Message) -> bool:
        assert self.decoder is not None  # noqa: S101 - checked in __init__
        value = message.value()
        if value is None:
            return False
        try:
            schema_id, payload = self.decoder.decode(value)
        except SchemaError:
            return False  # not an Avro event of this platform: it has no fields to match
        if schema_id not in self._checked:
            self._check_paths(schema_id)
        for path, compare in self.where:
            current: Any = payload
            for part in path:
                if not isinstance(current, Mapping) or part not in current:
                    return False
                current = current[part]
            if not compare(current):
                return False
        return True

    def _check_paths(self, schema_id: int) -> None:
        """A path the writer schema does not have is a typo, not a filter that matches nothing."""
        assert self.decoder is not None  # noqa: S101
        schema = self.decoder.codec(schema_id).schema
        for path, _ in self.where:
            current: Any = schema
            for index, part in enumerate(path):
                record = _record_of(current)
                fields = {f["name"]: f["type"] for f in record.get("fields", ())} if record else {}
                if part not in fields:
                    where = ".".join(path[:index]) or "the payload"
                    raise ReplayError(
                        f"--where {'.'.join(path)}: {where} of topic '{self.topic}' (schema id {schema_id}) has "
                        f"no field {part!r}; its fields: {', '.join(fields) or 'none'}"
                    )
                current = fields[part]
        self._checked.add(schema_id)


def _record_of(avro_type: Any) -> dict[str, Any] | None:
    if isinstance(avro_type, list):
        records = [b for b in avro_type if isinstance(b, dict) and b.get("type") == "record"]
        return records[0] if len(records) == 1 else None
    return avro_type if isinstance(avro_type, dict) and avro_type.get("type") == "record" else None


def _comparer(expected: str) -> Callable[[Any], bool]:
    """Compares a decoded value with the text the user typed, by the value's type."""
    number: Decimal | None
    try:
        number = Decimal(expected)
    except InvalidOperation:
        number = None
    moment: datetime | None
    try:
        moment = datetime.fromisoformat(expected)
    except ValueError:
        moment = None

    def compare(value: Any) -> bool:
        if value is None:
            return expected in {"null", ""}
        if isinstance(value, bool):
            return expected.lower() == str(value).lower()
        if isinstance(value, int | float | Decimal):
            return number is not None and Decimal(str(value)) == number
        if isinstance(value, datetime):
            return moment is not None and moment.tzinfo is not None and value == moment
        return str(value) == expected

    return compare
