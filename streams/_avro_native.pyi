"""Native Avro encoder and decoder (Rust, PyO3): each compiles a schema once.

The encoder writes what fastavro.schemaless_writer writes; the decoder returns what
fastavro.schemaless_reader returns. See docs/decisions/0005-native-avro-encoder.md.
"""

from datetime import datetime
from typing import Any, final

@final
class Encoder:
    """Encodes Python values to Avro binary for one schema (no Confluent header).

    Byte-identical to ``fastavro.schemaless_writer`` on values fastavro accepts, and stricter:
    unknown record keys, bool for int/long/float, naive datetimes for timestamps and decimals with
    more digits than the precision are refused. Encoding errors are ValueError (wrong value) or
    TypeError (wrong Python type) and start with the field path, e.g.
    ``field 'lines[2].quantity': expected a Decimal, got str '1.5'``.
    """

    def __init__(self, schema_json: str) -> None:
        """Parse and compile an Avro schema given as JSON text; ValueError when it is invalid."""

    def encode(self, datum: object) -> bytes:
        """The Avro binary encoding of ``datum`` (a dict for a record schema)."""

    def encode_into(self, datum: object, prefix: bytes) -> bytes:
        """``prefix`` followed by the encoding of ``datum``, e.g. after the 5-byte Confluent header."""

@final
class Decoder:
    """Decodes Avro binary (no Confluent header) to Python values for one schema.

    For valid data the result equals ``fastavro.schemaless_reader``'s, types included: dicts with
    keys in schema field order, str, bytes (bytes and fixed), int, float, bool, None, lists, dicts for
    maps, enum symbols as str, union values without branch names, ``decimal.Decimal`` with the
    schema's scale as exponent, aware datetimes in ``datetime.timezone.utc`` for timestamp-millis/
    micros (naive for local-timestamp-*), ``datetime.date``, ``datetime.time`` and ``uuid.UUID``.

    Malformed data raises ValueError starting with the field path, e.g.
    ``field 'lines[2].quantity': decimal length 3 at offset 180 runs past the end of the datum (1 byte left)``.
    That covers truncation, trailing bytes, bad union or enum indexes, invalid UTF-8, negative or
    oversized lengths and counts, and values the schema's types cannot hold (ints beyond 32 bits,
    booleans other than 0/1, decimals with more digits than their precision, dates, timestamps and
    times of day out of range).
    """

    def __init__(self, schema_json: str) -> None:
        """Parse and compile an Avro schema given as JSON text; ValueError when it is invalid."""

    def decode(self, datum: bytes) -> object:
        """The Python value of ``datum``, which must be exactly one encoded value."""

    def canonical_json(self, datum: bytes) -> bytes:
        """``streams.agents.zatca.canonical_bytes(self.decode(datum))``, byte for byte, without building the value.

        One pass over the datum with decode's own reading: malformed data raises decode's ValueError.
        Sorted keys, no spaces, orjson's string escapes; decimals as ``format(d, "f")``, timestamps as
        ``YYYY-MM-DDTHH:MM:SS.mmmZ``, dates ISO, bytes and fixed base64, uuids hyphenated lowercase.
        ValueError for schemas with float/double, local-timestamp-* or time-millis/micros anywhere
        (see ``canonical_json_unsupported``) and for values nested more than 254 containers deep
        (orjson's limit: canonical_bytes raises TypeError for those).
        """

    @property
    def canonical_json_unsupported(self) -> str | None:
        """Why ``canonical_json`` refuses this schema (the ValueError's message), or None when it supports it."""

class EnvelopeError(ValueError):
    """An event's key, tenant, traceparent or size is wrong (the payload itself encoded)."""

@final
class EventWriter:
    """One topic's CloudEvents (binary mode) in one call: wire-format value, key, headers, event id.

    ``build`` raises ValueError/TypeError from the encoder (naming the field) when the payload does not
    fit the schema, and EnvelopeError when the key, tenant, traceparent or size is wrong; it returns
    nothing unless all of it is valid.
    """

    def __init__(
        self, encoder: Encoder, prefix: bytes, source: bytes, ce_type: bytes, key_path: list[str], max_bytes: int
    ) -> None:
        """``prefix`` is the Confluent header; ``key_path`` the key field's dotted path, split (empty: no key)."""

    def build(
        self,
        datum: object,
        key: str | bytes | None = None,
        tenant: object = None,
        event_type: str | bytes | None = None,
        event_id: str | None = None,
        time: bytes | None = None,
        traceparent: object = None,
    ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], str]:
        """``(key, value, headers, event_id)``; ``time`` is ce_time's bytes (the clock's millisecond if None)."""

@final
class InvoiceJudge:
    """The validation agent's fast path: judges an invoice.created record that passes every rule in one call.

    It evaluates the rule table it is given (docs/decisions/0023). ``try_clear`` returns the invoice.cleared
    record ``(key, value, headers, event_id)`` exactly as the Python path builds it, having written the
    seller's and the invoice's state (into ``state`` and ``dirty``); None when the record is anything but a
    clean invoice (a violation, a decoding error, an unusual value), with nothing changed, so the Python path
    judges it; or the record's schema id when ``add_schema`` has not been told it yet.
    """

    def __init__(self, cleared_writer: EventWriter, first_pih: str, max_record_bytes: int, rules: str) -> None:
        """``rules`` is the rule table's JSON (streams/agents/zatca_rules.json); ValueError names a rule whose
        predicate, path or parameter the native side does not implement."""

    @staticmethod
    def predicates() -> list[str]:
        """The predicate kinds the native side implements (rules.rs)."""

    def add_schema(self, schema_id: int, schema_json: str) -> bool:
        """Compile a writer schema; False when the fast path does not cover it (its records always get None)."""

    def try_clear(
        self, message: object, state: dict[str, Any], dirty: set[str], now: datetime, now_micros: int
    ) -> tuple[bytes | None, bytes, list[tuple[str, bytes]], str] | int | None: ...

@final
class ArchivedRecord:
    """A record read back from an archive segment, with the accessors of a consumed confluent-kafka Message.

    ``headers()`` is None when the record has none (as Message.headers() says); ``timestamp()`` is
    ``(TIMESTAMP_CREATE_TIME, ms)``; ``error()`` is always None.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        value: bytes | None = None,
    ) -> None: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def error(self) -> None: ...

def decode_archive_segment(data: bytes, header_len: int, hashes: bool) -> tuple[list[ArchivedRecord], bytes]:
    """The records of an archive segment's container bytes (streams/archive/segments.py checks the header
    before ``header_len``: magic, the canonical record schema, codec null), and with ``hashes`` each
    record's SHA-256(0x00 || its stored bytes) joined; ValueError says what does not decode."""
