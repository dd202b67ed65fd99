"""Avro codec for one writer schema in the Confluent wire format (magic 0, 4-byte schema id, datum).

Both directions run natively (Rust, docs/decisions/0005): the encoder writes exactly what fastavro
writes, which makes publishing fast with decimal and timestamp fields, and the decoder returns exactly
what fastavro reads, which makes consuming them fast. The decoder refuses malformed data that fastavro
reads as something (trailing bytes, wrapped union indexes, rounded decimals).

`canonical_json_datum` goes from the datum straight to the canonical JSON the validation agent hashes
(`zatca.canonical_bytes` of the decoded record), natively and without building the record; schemas
with float/double, local-timestamp-* or time-* fields are not supported (`has_canonical_json`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from streams._avro_native import Decoder, Encoder
from streams.errors import SchemaError

MAGIC = 0
HEADER = struct.Struct(">bI")


class EncodeError(SchemaError):
    """A datum does not fit the schema; the message names the field path."""


class AvroCodec:
    """Encode and decode one schema; safe to share, holds no per-call state."""

    def __init__(self, schema: Mapping[str, Any] | str, schema_id: int) -> None:
        raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
        self.schema_id = schema_id
        self.schema: dict[str, Any] = raw
        text = json.dumps(raw)
        try:
            self._encoder = Encoder(text)
            self._decoder = Decoder(text)
        except ValueError as exc:
            raise SchemaError(str(exc)) from exc
        self._header = HEADER.pack(MAGIC, schema_id)
        self._canonical_unsupported = self._decoder.canonical_json_unsupported

    @property
    def native_encoder(self) -> Encoder:
        """The compiled native encoder, for callers that build whole events natively (EventWriter)."""
        return self._encoder

    @property
    def wire_header(self) -> bytes:
        """The 5-byte Confluent header (magic 0, schema id) that starts every encoded value."""
        return self._header

    def encode(self, datum: Mapping[str, Any]) -> bytes:
        """The wire-format bytes of `datum`; raises EncodeError naming the field that is wrong."""
        try:
            return self._encoder.encode_into(datum, self._header)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"payload does not match schema {self.schema.get('name')}: {exc}") from exc

    def encode_datum(self, datum: Mapping[str, Any]) -> bytes:
        """The Avro datum alone (no wire header)."""
        return self.encode(datum)[HEADER.size :]

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode wire-format bytes written with this codec's schema id."""
        _, schema_id = split_header(data)
        if schema_id != self.schema_id:
            raise SchemaError(f"record has schema id {schema_id}, this codec reads id {self.schema_id}")
        return self.decode_datum(data[HEADER.size :])

    def decode_datum(self, datum: bytes) -> dict[str, Any]:
        """The record in `datum` (no wire header), which must hold exactly one record of this schema."""
        try:
            result = self._decoder.decode(datum)
        except ValueError as exc:
            raise SchemaError(f"cannot decode Avro datum ({len(datum)} bytes): {exc}") from exc
        if not isinstance(result, dict):
            raise SchemaError(f"schema {self.schema.get('name')} is not a record schema")
        return result

    @property
    def has_canonical_json(self) -> bool:
        """Whether `canonical_json_datum` supports this schema: false when it has float or double
        (orjson's float text is not reproduced), local-timestamp-* (canonical_bytes reads naive
        datetimes in the machine's time zone) or time-millis/micros (canonical_bytes refuses times)."""
        return self._canonical_unsupported is None

    def canonical_json_datum(self, datum: bytes) -> bytes:
        """`zatca.canonical_bytes(self.decode_datum(datum))`, byte for byte, in one native pass.

        SchemaError as decode_datum's (same messages) for malformed data or a non-record value, and
        when the schema is not supported (see `has_canonical_json`) or the record is nested deeper
        than orjson writes (254 levels; canonical_bytes would raise TypeError).
        """
        if self._canonical_unsupported is not None:
            raise SchemaError(f"schema {self.schema.get('name')}: {self._canonical_unsupported}")
        try:
            text = self._decoder.canonical_json(datum)
        except ValueError as exc:
            raise SchemaError(f"cannot decode Avro datum ({len(datum)} bytes): {exc}") from exc
        if not text.startswith(b"{"):  # what decode_datum returns is a dict exactly when this is an object
            raise SchemaError(f"schema {self.schema.get('name')} is not a record schema")
        return text


def split_header(data: bytes) -> tuple[int, int]:
    """(magic, schema id) of a Confluent wire-format record; SchemaError when it is not one."""
    if len(data) < HEADER.size:
        raise SchemaError(f"record of {len(data)} bytes is shorter than the 5-byte Confluent header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SchemaError(f"unknown magic byte {magic}; Confluent wire format starts with 0")
    return magic, schema_id
