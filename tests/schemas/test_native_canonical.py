"""Decoder.canonical_json / AvroCodec.canonical_json_datum: zatca.canonical_bytes of the decoded value, natively.

The definition is the Python one: for every datum, `canonical_json(datum) == canonical_bytes(decode(datum))`
byte for byte. Random valid datums of every schema in schemas/ and of synthetic schemas (every supported
type and logical type, record fields in and out of key order, maps with many and duplicate keys, unions,
nested and recursive records, strings with control and astral characters) are held to that, as are the
sample invoices. Malformed data raises decode's errors; schemas with float/double, local timestamps or
times of day are refused up front; values nested deeper than orjson writes are refused.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams._avro_native import Decoder, Encoder
from streams.agents.zatca import canonical_bytes
from streams.demo.samples import invoice_chain
from streams.errors import SchemaError
from streams.schemas.codec import AvroCodec
from tests.schemas.avro_builders import decimal_type, field, fixed_decimal_type, load_schema, record
from tests.schemas.test_native_decoder import (
    CATALOG,
    COLOUR,
    CORRUPT,
    EVERYTHING,
    EXAMPLES,
    FLAT,
    GOOD_FLAT,
    MAX_MICROS,
    MIN_MICROS,
    POINT,
    ROOTS,
    SEED,
    TS_MILLIS,
    Generator,
    RandomSource,
    Source,
    avro_string,
    flat,
    in_threads,
    raises,
    run_property,
    zigzag,
)

UNSUPPORTED_TYPES = (
    '"float"',
    '"double"',
    '"local-timestamp-millis"',
    '"local-timestamp-micros"',
    '"time-millis"',
    '"time-micros"',
)


def supported(avro_type: Any) -> bool:
    text = json.dumps(avro_type)
    return not any(name in text for name in UNSUPPORTED_TYPES)


def canonical_of_decoded(decoder: Decoder, data: bytes) -> bytes:
    return canonical_bytes(decoder.decode(data))


def same_outcome(decoder: Decoder, data: bytes) -> None:
    """canonical_json gives canonical_bytes(decode(data)), or raises what decode (or orjson) raises."""
    try:
        decoded = decoder.decode(data)
    except ValueError as exc:
        with raises(str(exc)):
            decoder.canonical_json(data)
        return
    try:
        expected = canonical_bytes(decoded)
    except TypeError as exc:  # orjson's depth limit, the only way canonical_bytes fails on what decode returns
        refused = str(exc)
    else:
        assert decoder.canonical_json(data) == expected
        return
    assert refused == "Recursion limit reached"
    with pytest.raises(ValueError, match="Recursion limit reached"):
        decoder.canonical_json(data)


# ---------------------------------------------------------------------------------------------------
# Synthetic schemas: every supported type, in records, unions, arrays and maps

SUPPORTED_EVERYTHING = record(
    "Supported",
    *[f for f in EVERYTHING["fields"] if supported(f["type"])],
    field("wide_no_float", ["null", "boolean", "int", "long", "string", "bytes"]),
    field("uuids", {"type": "array", "items": {"type": "string", "logicalType": "uuid"}}),
    field("days", {"type": "map", "values": ["null", {"type": "int", "logicalType": "date"}]}),
    field("micros_by_key", {"type": "map", "values": {"type": "long", "logicalType": "timestamp-micros"}}),
    field("empty", record("Empty")),
    # Keys in code point order: "Zeta" < "_u" < "a" < "b" < "é" (in-place fields, no reordering).
    field(
        "ordered",
        record(
            "Ordered",
            field("Zeta", "string"),
            field("_u", "int"),
            field("a", "boolean"),
            field("b", ["null", "Point"]),
            field("é", "long"),
        ),
    ),
    # The same keys out of order: written in the datum's order, then moved.
    field(
        "unordered",
        record(
            "Unordered",
            field("é", "long"),
            field("b", ["null", "Point"]),
            field("a", "boolean"),
            field("Zeta", "string"),
            field("_u", "int"),
        ),
    ),
    field("nested_maps", {"type": "map", "values": {"type": "map", "values": ["null", "Colour", "t.Ordered"]}}),
)
assert [f["name"] for f in EVERYTHING["fields"] if not supported(f["type"])] == [
    "f",
    "d",
    "lts_ms",
    "lts_us",
    "t_ms",
    "t_us",
    "wide",
]

CASES: dict[str, Any] = {f"catalog {name}": load_schema(name) for name in CATALOG}
CASES["supported everything"] = SUPPORTED_EVERYTHING
CASES.update({f"root {name}": schema for name, schema in ROOTS.items() if supported(schema)})
CASES["root map"] = {"type": "map", "values": ["null", "string", POINT]}
CASES["root bytes"] = "bytes"
CASES["root fixed"] = {"type": "fixed", "name": "F3", "size": 3}
CASES["root date"] = {"type": "int", "logicalType": "date"}
CASES["root uuid"] = {"type": "string", "logicalType": "uuid"}
CASES["root long"] = "long"
CASES["root null"] = "null"


def test_the_cases_cover_the_catalog_and_the_roots() -> None:
    assert len(CATALOG) >= 7
    assert all(Decoder(json.dumps(schema)).canonical_json_unsupported is None for schema in CASES.values())
    assert sorted(name for name, schema in ROOTS.items() if not supported(schema)) == ["array"]  # of doubles


@pytest.mark.parametrize("name", list(CASES))
def test_random_datums_give_canonical_bytes_of_the_decoded_value(name: str) -> None:
    schema = CASES[name]
    text = json.dumps(schema)
    encoder, decoder, generator = Encoder(text), Decoder(text), Generator(schema)
    codec = AvroCodec(schema, 1) if isinstance(schema, dict) and schema["type"] in ("record", "map") else None
    if codec is not None:
        assert codec.has_canonical_json

    def check(src: Source) -> None:
        data = encoder.encode(generator.value(src))
        expected = canonical_of_decoded(decoder, data)
        assert decoder.canonical_json(data) == expected
        if codec is not None:
            assert codec.canonical_json_datum(data) == canonical_bytes(codec.decode_datum(data)) == expected

    run_property(check)


def test_invoice_chain() -> None:
    codec = AvroCodec(load_schema("invoice.created"), 1)
    assert codec.has_canonical_json
    for event in invoice_chain(200):
        data = codec.encode_datum(event)
        assert codec.canonical_json_datum(data) == canonical_bytes(codec.decode_datum(data)) == canonical_bytes(event)


def test_seeded_datums_of_every_case() -> None:
    # The same property from a seeded generator: texts from several scripts and the astral plane.
    for name, schema in CASES.items():
        text = json.dumps(schema)
        encoder, decoder, generator = Encoder(text), Decoder(text), Generator(schema)
        for n in range(40):
            data = encoder.encode(generator.value(RandomSource(SEED + n)))
            assert decoder.canonical_json(data) == canonical_of_decoded(decoder, data), name


# ---------------------------------------------------------------------------------------------------
# Strings and maps

SPECIAL = [chr(c) for c in range(0x21)] + [
    '"',
    "\\",
    "/",
    "\x7f",
    "\x80",
    "\xa0",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\uffff",
    "\U0001f600",
    "\U00010000",
    "\U0010ffff",
    "é",
    "ش",
    "中",
]
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=["Cs"])), max_size=40)
STRINGS = record(
    "Strings",
    field("s", "string"),
    field("maybe", ["null", "string"]),
    field("list", {"type": "array", "items": "string"}),
    field("by_key", {"type": "map", "values": "string"}),
)


@settings(max_examples=300, deadline=None, database=None)
@given(TEXT, st.none() | TEXT, st.lists(TEXT, max_size=5), st.dictionaries(TEXT, TEXT, max_size=8))
def test_strings_are_escaped_like_orjson(s: str, maybe: str | None, items: list[str], by_key: dict[str, str]) -> None:
    text = json.dumps(STRINGS)
    data = Encoder(text).encode({"s": s, "maybe": maybe, "list": items, "by_key": by_key})
    decoder = Decoder(text)
    assert decoder.canonical_json(data) == canonical_of_decoded(decoder, data)


def test_every_escape() -> None:
    decoder = Decoder('"string"')
    every = "".join(SPECIAL)
    out = decoder.canonical_json(avro_string(every))
    assert out == canonical_bytes(every)
    assert out.startswith(b'"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e')
    assert b'\\u001f \\"\\\\/\x7f\xc2\x80' in out


def map_datum(entries: list[tuple[str, int]], block: int) -> bytes:
    """A map<long> in blocks of `block` entries, every other block with its byte size (negative count)."""
    out = bytearray()
    for n, start in enumerate(range(0, len(entries), block)):
        chunk = entries[start : start + block]
        body = b"".join(avro_string(key) + zigzag(value) for key, value in chunk)
        out += zigzag(-len(chunk)) + zigzag(len(body)) + body if n % 2 else zigzag(len(chunk)) + body
    return bytes(out + b"\x00")


KEYS = st.one_of(
    st.sampled_from(["", "a", "A", "b", "aa", "a\n", "é", "e\u0301", "\U0001f600", "\uffff", "Z", "_"]), TEXT
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(KEYS, st.integers(-(2**63), 2**63 - 1)), max_size=80), st.integers(1, 9))
def test_maps_with_many_and_duplicate_keys_sort_like_orjson(entries: list[tuple[str, int]], block: int) -> None:
    decoder = Decoder('{"type": "map", "values": "long"}')
    data = map_datum(entries, block)
    assert decoder.canonical_json(data) == canonical_of_decoded(decoder, data)


def test_duplicate_keys_keep_the_last_value() -> None:
    decoder = Decoder('{"type": "map", "values": "long"}')
    data = map_datum([("b", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5), ("b", 6)], 2)
    assert decoder.canonical_json(data) == b'{"a":4,"b":6,"c":5}' == canonical_of_decoded(decoder, data)
    many = [(f"k{n:04d}", n) for n in reversed(range(1000))]
    assert decoder.canonical_json(map_datum(many, 100)) == canonical_bytes(dict(many))


# ---------------------------------------------------------------------------------------------------
# Logical types at their edges


def test_decimals_are_format_f_of_the_decoded_decimal() -> None:
    for precision, scale in [
        (1, 0),
        (2, 1),
        (4, 2),
        (5, 0),
        (18, 2),
        (38, 0),
        (38, 38),
        (39, 3),
        (60, 10),
        (100, 50),
        (100, 0),
    ]:
        schema = decimal_type(precision, scale)
        decoder = Decoder(json.dumps(schema))
        biggest = 10**precision - 1
        for unscaled in {
            0,
            1,
            -1,
            5,
            -5,
            127,
            -128,
            128,
            -129,
            87_100,
            -87_100,
            2**63,
            -(2**63),
            2**127 - 1,
            -(2**127),
            2**127,
            -(2**127) - 1,
            10 ** (precision - 1),
            biggest,
            -biggest,
        }:
            if abs(unscaled) > biggest:
                continue
            width = (abs(unscaled).bit_length() + 8) // 8
            for extra in (0, 3):  # longer sign extension reads the same
                data = avro_string(unscaled.to_bytes(width + extra, "big", signed=True))
                out = decoder.canonical_json(data)
                assert out == canonical_of_decoded(decoder, data)
                assert out == b'"' + format(Decimal(f"{unscaled}E-{scale}"), "f").encode() + b'"'
        assert decoder.canonical_json(b"\x00") == canonical_of_decoded(decoder, b"\x00")  # empty: zero
    two = Decoder(json.dumps(decimal_type(9, 2)))
    assert [
        two.canonical_json(avro_string(n.to_bytes(4, "big", signed=True))) for n in (87_100, -87_100, 0, 5, -5)
    ] == [b'"871.00"', b'"-871.00"', b'"0.00"', b'"0.05"', b'"-0.05"']
    assert Decoder(json.dumps(decimal_type(5, 0))).canonical_json(avro_string(b"\x00\x96")) == b'"150"'
    fixed = Decoder(json.dumps(fixed_decimal_type("D16", 16, 38, 5)))
    for unscaled in (0, -1, 10**37, -(10**38) + 1):
        data = unscaled.to_bytes(16, "big", signed=True)
        assert fixed.canonical_json(data) == canonical_of_decoded(fixed, data)


def test_negative_zero_cannot_arise() -> None:
    # Two's complement has one zero; the decoder's Decimal of it has no sign, so format(d, "f") has none.
    decoder = Decoder(json.dumps(decimal_type(4, 2)))
    for data in (b"\x00", b"\x02\x00", b"\x04\x00\x00"):
        zero = decoder.decode(data)
        assert isinstance(zero, Decimal)
        assert not zero.is_signed()
        assert decoder.canonical_json(data) == b'"0.00"'


def test_timestamps_are_utc_with_truncated_milliseconds() -> None:
    for logical, unit in [("timestamp-millis", 1000), ("timestamp-micros", 1)]:
        decoder = Decoder(json.dumps({"type": "long", "logicalType": logical}))
        for micros in [
            MIN_MICROS,
            MIN_MICROS + 1000,
            MIN_MICROS + 999_999,
            -1_000_001,
            -1000,
            -999,
            -1,
            0,
            1,
            999,
            1000,
            1_999,
            1_700_000_000_123_999,
            MAX_MICROS - 999,
            MAX_MICROS,
        ]:
            data = zigzag(micros // unit)
            assert decoder.canonical_json(data) == canonical_of_decoded(decoder, data), micros
    in_micros = Decoder('{"type": "long", "logicalType": "timestamp-micros"}')
    assert in_micros.canonical_json(zigzag(-1)) == b'"1969-12-31T23:59:59.999Z"'
    assert in_micros.canonical_json(zigzag(1_999)) == b'"1970-01-01T00:00:00.001Z"'
    assert in_micros.canonical_json(zigzag(MIN_MICROS)) == b'"0001-01-01T00:00:00.000Z"'
    assert in_micros.canonical_json(zigzag(MAX_MICROS)) == b'"9999-12-31T23:59:59.999Z"'


def test_dates() -> None:
    decoder = Decoder('{"type": "int", "logicalType": "date"}')
    for days in [1 - 719_163, 2 - 719_163, 365 * -1900, -1, 0, 1, 11_016, 2_932_896]:
        assert decoder.canonical_json(zigzag(days)) == canonical_of_decoded(decoder, zigzag(days))
    assert decoder.canonical_json(zigzag(1 - 719_163)) == b'"0001-01-01"'


@pytest.mark.parametrize(
    "text",
    [
        "12345678-1234-5678-1234-567812345678",
        "12345678-ABCD-5678-1234-567812345678",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678123456781234567812345678",
        "1234-5678-12345678-1234-5678-12345678",
        "0x345678123456781234567812345678",
        " 2345678123456781234567812345678",
        "1_345678123456781234567812345678",
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668123456781234567812345678",  # Arabic-Indic digits
    ],
)
def test_uuids_are_orjsons_text_of_the_decoded_uuid(text: str) -> None:
    decoder = Decoder('{"type": "string", "logicalType": "uuid"}')
    data = avro_string(text)
    assert decoder.canonical_json(data) == canonical_of_decoded(decoder, data) == f'"{uuid.UUID(text)}"'.encode()


@pytest.mark.parametrize(
    "text",
    [
        "not-a-uuid",
        "-2345678123456781234567812345678",
        "g2345678123456781234567812345678",
        "12345678-1234-5678-1234-56781234567",
    ],
)
def test_bad_uuids_are_decodes_errors(text: str) -> None:
    decoder = Decoder('{"type": "string", "logicalType": "uuid"}')
    with pytest.raises(ValueError, match="is not a UUID") as decoded:
        decoder.decode(avro_string(text))
    with raises(str(decoded.value)):
        decoder.canonical_json(avro_string(text))


def test_bytes_and_fixed_are_base64() -> None:
    raw = Decoder('"bytes"')
    for n in range(8):
        data = avro_string(bytes(range(250, 250 + n)) if n < 6 else b"\xff" * n)
        assert raw.canonical_json(data) == canonical_of_decoded(raw, data)
    empty = Decoder('{"type": "fixed", "name": "Z", "size": 0}')
    assert empty.canonical_json(b"") == b'""' == canonical_of_decoded(empty, b"")


def test_enums_unions_and_records() -> None:
    schema = record(
        "R",
        field("c", COLOUR),
        field("u", ["null", "Colour", POINT, {"type": "array", "items": "Colour"}]),
        field("p", "Point"),
        field("t", TS_MILLIS),
    )
    text = json.dumps(schema)
    data = Encoder(text).encode(
        {
            "c": "GREEN",
            "u": ["RED", "BLUE"],
            "p": {"x": -1, "y": 2**40},
            "t": datetime(2026, 11, 1, 8, 0, 0, 123_456, tzinfo=UTC),
        }
    )
    out = Decoder(text).canonical_json(data)
    assert out == b'{"c":"GREEN","p":{"x":-1,"y":1099511627776},"t":"2026-11-01T08:00:00.123Z","u":["RED","BLUE"]}'
    assert out == canonical_of_decoded(Decoder(text), data)


# ---------------------------------------------------------------------------------------------------
# Refused: float and double, local timestamps, times of day


@pytest.mark.parametrize(
    ("avro_type", "word"),
    [
        ("float", "float"),
        ("double", "float or double"),
        ({"type": "array", "items": ["null", "double"]}, "float or double"),
        ({"type": "map", "values": record("Deep", field("x", ["null", "float"]))}, "float"),
        ({"type": "long", "logicalType": "local-timestamp-millis"}, "local-timestamp"),
        ({"type": "long", "logicalType": "local-timestamp-micros"}, "local-timestamp"),
        ({"type": "int", "logicalType": "time-millis"}, "time-millis"),
        ({"type": "long", "logicalType": "time-micros"}, "time-millis/micros"),
    ],
)
def test_unsupported_schemas_are_refused_before_reading(avro_type: Any, word: str) -> None:
    schema = record("Refused", field("ok", "string"), field("x", ["null", avro_type]))
    decoder = Decoder(json.dumps(schema))
    reason = decoder.canonical_json_unsupported
    assert reason is not None
    assert reason.startswith("canonical_json does not support this schema, which has ")
    assert word in reason
    data = Encoder(json.dumps(schema)).encode({"ok": "x", "x": None})
    assert decoder.decode(data) == {"ok": "x", "x": None}  # decoding is not affected
    with raises(reason):
        decoder.canonical_json(data)  # even when this datum has no such value
    with raises(reason):
        decoder.canonical_json(b"")  # before reading anything
    codec = AvroCodec(schema, 1)
    assert not codec.has_canonical_json
    with pytest.raises(SchemaError, match=f"^schema Refused: {re.escape(reason)}$"):
        codec.canonical_json_datum(data)


def test_every_reason_is_given() -> None:
    reason = Decoder(json.dumps(EVERYTHING)).canonical_json_unsupported
    assert reason is not None
    assert all(word in reason for word in ("float or double", "local-timestamp", "time-millis/micros"))


def test_why_those_are_refused() -> None:
    # Times of day: canonical_bytes has no conversion for datetime.time.
    with pytest.raises(TypeError):
        canonical_bytes({"t": time(1, 2, 3)})
    # Naive datetimes (local-timestamp-*): astimezone() reads them in the machine's zone, so the text
    # depends on where it runs. An aware one gives the same text everywhere.
    naive = datetime(2026, 11, 1, 8, 0)  # noqa: DTZ001 - what the decoder returns for local timestamps
    assert canonical_bytes(naive) == canonical_bytes(naive.astimezone())  # i.e. local wall time, not UTC


# ---------------------------------------------------------------------------------------------------
# Malformed data: decode's errors


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in CORRUPT], ids=[name for name, _, _ in CORRUPT])
def test_malformed_data_raises_decodes_error(data: bytes, message: str) -> None:
    decoder = Decoder(json.dumps(FLAT))
    assert decoder.canonical_json(flat()) == canonical_bytes(GOOD_FLAT | {"id": uuid.UUID(str(GOOD_FLAT["id"]))})
    with raises(message):
        decoder.canonical_json(data)
    codec = AvroCodec(FLAT, 9)
    expected = f"cannot decode Avro datum ({len(data)} bytes): {message}"
    with pytest.raises(SchemaError, match=f"^{re.escape(expected)}$"):
        codec.canonical_json_datum(data)
    with pytest.raises(SchemaError, match=f"^{re.escape(expected)}$"):
        codec.decode_datum(data)


def test_truncating_or_extending_a_valid_datum_anywhere() -> None:
    for schema in [load_schema("invoice.created"), SUPPORTED_EVERYTHING, FLAT]:
        text = json.dumps(schema)
        encoder, decoder, generator = Encoder(text), Decoder(text), Generator(schema)
        datums = [generator.value(RandomSource(SEED + n)) for n in range(3)]
        if schema["name"] == "InvoiceCreated":
            datums.extend(invoice_chain(3))
        for datum in datums:
            data = encoder.encode(datum)
            for cut in range(len(data)):
                same_outcome(decoder, data[:cut])
            same_outcome(decoder, data + b"\x00")


def test_random_corruption_gives_the_same_outcome() -> None:
    # Any byte string: canonical_json is canonical_bytes of what decode returns, or decode's error.
    cases = [(load_schema("invoice.created"), invoice_chain(3)[2]), (FLAT, GOOD_FLAT)]
    for schema, datum in cases:
        decoder = Decoder(json.dumps(schema))
        data = Encoder(json.dumps(schema)).encode(datum)

        def check(src: Source, decoder: Decoder = decoder, data: bytes = data) -> None:
            corrupt = bytearray(data)
            for _ in range(src.integer(1, 4)):
                corrupt[src.integer(0, len(corrupt) - 1)] = src.integer(0, 255)
            same_outcome(decoder, bytes(corrupt))

        run_property(check)


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=60))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    same_outcome(Decoder(json.dumps(SUPPORTED_EVERYTHING)), data)
    same_outcome(Decoder(json.dumps(CASES["root map"])), data)


def test_nesting_is_limited_like_orjson_and_the_decoder() -> None:
    node = record("Node", field("next", ["null", "Node"]))
    decoder = Decoder(json.dumps(node))
    outcomes = {}
    for levels in range(250, 262):
        data = b"\x02" * (levels - 1) + b"\x00"  # `levels` records, each but the last with a next one
        same_outcome(decoder, data)
        try:
            outcomes[levels] = decoder.canonical_json(data)[:1].decode()
        except ValueError as exc:
            outcomes[levels] = "orjson" if "Recursion limit reached" in str(exc) else "decode"
    assert outcomes == {
        **dict.fromkeys(range(250, 255), "{"),
        **dict.fromkeys(range(255, 258), "orjson"),
        **dict.fromkeys(range(258, 262), "decode"),
    }
    # Malformed data is reported as decode reports it, even when it is also too deep for orjson.
    with raises("1 byte left over after the datum, which ends at offset 256"):
        decoder.canonical_json(b"\x02" * 255 + b"\x00" + b"\x00")


def test_a_codec_of_a_non_record_schema_refuses_like_decode_datum() -> None:
    codec = AvroCodec({"type": "array", "items": "long"}, 1)
    with pytest.raises(SchemaError, match=r"^schema None is not a record schema$"):
        codec.canonical_json_datum(b"\x00")
    maps = AvroCodec({"type": "map", "values": "long"}, 1)
    assert maps.canonical_json_datum(map_datum([("b", 1), ("a", 2)], 5)) == b'{"a":2,"b":1}'


def test_a_decoder_is_shared_across_threads() -> None:
    codec = AvroCodec(load_schema("invoice.created"), 1)
    events = invoice_chain(40)
    encoded = [codec.encode_datum(event) for event in events]
    expected = [canonical_bytes(event) for event in events]

    def work() -> None:
        for _ in range(20):
            assert [codec.canonical_json_datum(data) for data in encoded] == expected

    assert in_threads(work) == []
