"""Container files written from raw datums read back with fastavro, block by block, and after a resume."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
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


def joined(numbers: range) -> tuple[bytes, list[int]]:
    data, ends = b"", []
    for n in numbers:
        data += datum(n)
        ends.append(len(data))
    return data, ends


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_joined_datums_and_a_background_thread_make_the_same_bytes(tmp_path: Path, codec: str) -> None:
    one_by_one, joined_path = tmp_path / "a.avro", tmp_path / "b.avro"
    writer = ContainerWriter(one_by_one, SCHEMA, codec, SYNC, block_records=64)
    for n in range(300):
        writer.append(datum(n))
    writer.flush_block()
    writer.close()
    with ThreadPoolExecutor(max_workers=1) as background:
        other = ContainerWriter(joined_path, SCHEMA, codec, SYNC, block_records=64, background=background)
        for batch in (range(10), range(10, 150), range(150, 151), range(151, 300)):
            other.extend(*joined(batch))  # blocks are cut across batches at the same record counts
        other.flush_block()
        assert other.size == joined_path.stat().st_size
        assert other.sha256() == hashlib.sha256(joined_path.read_bytes()).hexdigest()
        other.close()
    assert joined_path.read_bytes() == one_by_one.read_bytes()
    assert [count for count, _ in ContainerReader.open(joined_path).blocks()] == [64, 64, 64, 64, 44]


def test_the_digest_after_a_resume_covers_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "r.avro"
    first = ContainerWriter(path, SCHEMA, "null", SYNC)
    first.extend(*joined(range(10)))
    first.flush_block()
    checkpoint = first.size
    first.extend(*joined(range(10, 12)))  # written after the checkpoint, then lost
    first.flush_block()
    first.close()
    second = ContainerWriter(path, SCHEMA, "null", SYNC, resume_at=checkpoint)
    second.extend(*joined(range(10, 20)))
    second.flush_block()
    assert second.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    second.close()


def test_a_failed_background_write_is_raised_and_stops_later_blocks(tmp_path: Path) -> None:
    path = tmp_path / "r.avro"
    with ThreadPoolExecutor(max_workers=1) as background:
        writer = ContainerWriter(path, SCHEMA, "null", SYNC, block_records=2, background=background)
        size = writer.size
        writer._file.close()  # every write after this fails, as a full disk would make it
        writer.extend(*joined(range(6)))  # three blocks queued
        with pytest.raises(ValueError, match="closed file"):
            writer.drain()
        with pytest.raises(ValueError, match="closed file"):
            _ = writer.size  # the failure stays: no later checkpoint can look complete
    assert path.stat().st_size == size
