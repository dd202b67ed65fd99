"""Container files written from raw datums read back with fastavro, block by block, and after a resume."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastavro import parse_schema, reader, schemaless_writer

from streams.replay.container import ContainerReader, ContainerWriter
from streams.replay.errors import EvidenceError

SCHEMA = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}]}
SYNC = bytes(range(16))


def datum(n: int) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(SCHEMA), {"n": n, "s": f"record {n}"})
    return buffer.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_fastavro_reads_what_the_writer_wrote(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "r.avro"
    writer = ContainerWriter(path, SCHEMA, codec, SYNC)
    for n in range(250):
        writer.append(datum(n)[:3], memoryview(datum(n))[3:])  # a datum may come in pieces
        if n % 100 == 99:
            writer.flush_block()
    writer.flush_block()
    writer.close()
    with path.open("rb") as stream:
        assert [r["n"] for r in reader(stream)] == list(range(250))  # type: ignore[index, call-overload]
    opened = ContainerReader.open(path)
    assert opened.codec == codec
    assert opened.sync == SYNC
    assert [count for count, _ in opened.blocks()] == [100, 100, 50]


def test_resume_truncates_to_the_checkpoint_and_gives_the_same_bytes(tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole.avro", tmp_path / "resumed.avro"
    writer = ContainerWriter(whole, SCHEMA, "null", SYNC)
    for n in range(20):
        writer.append(datum(n))
        if n == 9:
            writer.flush_block()
    writer.flush_block()
    writer.close()

    first = ContainerWriter(resumed, SCHEMA, "null", SYNC)
    for n in range(10):
        first.append(datum(n))
    first.flush_block()
    checkpoint = first.size
    first.append(datum(10))
    first.flush_block()  # written after the checkpoint: a crash loses the record of it
    first.close()
    second = ContainerWriter(resumed, SCHEMA, "null", SYNC, resume_at=checkpoint)
    for n in range(10, 20):
        second.append(datum(n))
    second.flush_block()
    second.close()
    assert resumed.read_bytes() == whole.read_bytes()


def test_a_torn_block_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.avro"
    writer = ContainerWriter(path, SCHEMA, "null", SYNC)
    writer.append(datum(1))
    writer.flush_block()
    writer.close()
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(EvidenceError, match="truncated or its sync marker"):
        list(ContainerReader.open(path).blocks())


def test_not_a_container(tmp_path: Path) -> None:
    path = tmp_path / "r.avro"
    path.write_bytes(b"hello")
    with pytest.raises(EvidenceError, match="bad magic"):
        ContainerReader.open(path)
