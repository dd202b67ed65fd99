"""Native Avro encoder (Rust, PyO3): compiles a schema once, encodes like fastavro.schemaless_writer.

Decoding stays on fastavro. See docs/decisions/0005-native-avro-encoder.md.
"""

from typing import final

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
