"""The canonical record encoding agrees with fastavro; the Merkle tree is RFC 6962's."""

from __future__ import annotations

import hashlib
import io
import random
from typing import cast

import pytest
from fastavro import parse_schema, schemaless_writer

from streams.replay.encoding import (
    CANONICAL_SCHEMA,
    EMPTY_TREE,
    RecordEncoder,
    encode_long,
    merkle_root,
    record_hash,
    value_tail,
)

PARSED = parse_schema(CANONICAL_SCHEMA)


def fastavro_bytes(record: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, PARSED, record)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "n",
    [
        0,
        1,
        -1,
        63,
        64,
        -64,
        -65,
        8191,
        8192,
        16383,
        16384,
        2**21,
        2**31 - 1,
        -(2**31),
        1_790_000_000_000,
        2**62,
        2**63 - 1,
        -(2**63),
    ],
)
def test_encode_long_matches_avro(n: int) -> None:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema("long"), n)
    assert encode_long(n) == buffer.getvalue()


def random_record(rng: random.Random) -> dict[str, object]:
    def blob(limit: int) -> bytes | None:
        return None if rng.random() < 0.1 else rng.randbytes(rng.choice([0, 1, 5, 63, 64, 8191, 8192, limit]))

    headers = [
        {"name": rng.choice(["ce_id", "ce_type", "ünïcode", "", "x" * 70]), "value": blob(300)}
        for _ in range(rng.choice([0, 1, 8, 70]))
    ]
    return {
        "topic": rng.choice(["invoice.created", "t.ä.u1"]),
        "partition": rng.choice([0, 5, 9000]),
        "offset": rng.choice([0, 1, 8191, 8192, 10**6, 2**40]),
        "timestamp": rng.choice([-1, 0, 1_790_000_000_123]),
        "key": blob(20_000),
        "headers": headers,
        "value": blob(20_000),
    }


def test_prefix_and_tail_are_the_avro_encoding_of_the_canonical_record() -> None:
    rng = random.Random(5)
    for _ in range(300):
        record = random_record(rng)
        encoder = RecordEncoder(str(record["topic"]))
        headers = [(h["name"], h["value"]) for h in record["headers"]]  # type: ignore[attr-defined]
        partition, offset = cast("int", record["partition"]), cast("int", record["offset"])
        timestamp, key = cast("int", record["timestamp"]), cast("bytes | None", record["key"])
        prefix = encoder.prefix(partition, offset, timestamp, key, headers)
        value = record["value"]
        assert prefix + value_tail(value) == fastavro_bytes(record)  # type: ignore[arg-type]
        expected = hashlib.sha256(b"\x00" + fastavro_bytes(record)).digest()
        assert record_hash(prefix, value) == expected  # type: ignore[arg-type]


def test_no_headers_and_none_headers_encode_alike() -> None:
    encoder = RecordEncoder("a.b")
    assert encoder.prefix(0, 1, 2, None, None) == encoder.prefix(0, 1, 2, None, [])


def rfc6962(leaves: list[bytes]) -> bytes:
    """The recursive definition from RFC 6962 section 2.1, over leaf hashes."""
    if not leaves:
        return EMPTY_TREE
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962(leaves[:split]) + rfc6962(leaves[split:])).digest()


def test_merkle_root_matches_the_recursive_definition() -> None:
    for size in range(70):
        leaves = [hashlib.sha256(b"\x00" + bytes([i])).digest() for i in range(size)]
        assert merkle_root(leaves) == rfc6962(leaves), size


# Certificate Transparency's reference vectors (the inputs of its merkle_tree tests, roots by size).
CT_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_merkle_root_matches_certificate_transparency_vectors(size: int) -> None:
    leaves = [hashlib.sha256(b"\x00" + data).digest() for data in CT_INPUTS[:size]]
    assert merkle_root(leaves).hex() == CT_ROOTS[size]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
