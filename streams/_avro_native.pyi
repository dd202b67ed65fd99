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
