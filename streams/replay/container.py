"""Avro object container files written from already-encoded datums, and read back block by block.

The format is the Avro 1.x spec's: magic, metadata (avro.schema, avro.codec), sync marker, then blocks.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streams.replay.encoding import encode_long
from streams.replay.errors import EvidenceError

__all__ = ["CODECS", "ContainerReader", "ContainerWriter", "block_parts", "container_header"]

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
BLOCK_RECORDS = 4096
CODECS = ("null", "deflate")


class ContainerWriter:
    """Appends raw Avro datums to one container file in blocks of `block_records`; `size` is a block boundary.

    Blocks are cut by record count and the sync marker is given, so the same records make the same bytes
    however often the caller checkpoints (`pending` hands over the datums of the unfinished block). With a
    `background` executor (one thread, shared by a bundle's files), full blocks are joined, compressed,
    written and hashed there, beside the consume loop: all of that releases the GIL. `size`, `sha256()` and
    `close()` wait for the queued blocks and raise the first error a write met.
    """

    def __init__(
        self,
        path: Path,
        schema: dict[str, Any],
        codec: str,
        sync: bytes,
        *,
        resume_at: int = 0,
        block_records: int = BLOCK_RECORDS,
        background: Executor | None = None,
    ) -> None:
        if codec not in CODECS:
            raise EvidenceError(f"unknown container codec {codec!r}; use one of {', '.join(CODECS)}")
        self.path = path
        self.codec = codec
        self.sync = sync
        self.count = 0  # records in written (or queued) blocks
        self.block_records = block_records
        self._parts: list[bytes | memoryview] = []
        self._pending = 0
        self._background = background
        self._queued: Future[None] | None = None
        self._error: BaseException | None = None
        self._digest = hashlib.sha256()  # of the file's bytes, kept as they are written
        if resume_at:
            self._file: IO[bytes] = path.open("r+b")
            self._file.truncate(resume_at)
            self._file.seek(0)
            left = resume_at
            while left and (chunk := self._file.read(min(left, 1 << 20))):
                self._digest.update(chunk)
                left -= len(chunk)
            self._file.seek(resume_at)
        else:
            self._file = path.open("wb")
            header = _header(schema, codec, sync)
            self._file.write(header)
            self._digest.update(header)
        self._size = self._file.tell()

    @property
    def size(self) -> int:
        """Bytes in the file, all blocks written (a block boundary)."""
        self.drain()
        return self._size

    def sha256(self) -> str:
        """Hex SHA-256 of the file's bytes, all blocks written."""
        self.drain()
        return self._digest.hexdigest()

    def append(self, *parts: bytes | memoryview) -> None:
        """One datum, given as the pieces of its encoding; a full block is written out."""
        self._parts.extend(parts)
        self._pending += 1
        if self._pending >= self.block_records:
            self.flush_block()

    def extend(self, data: bytes, ends: Sequence[int]) -> None:
        """Datums already joined: `data` holds len(ends) of them, datum i ending at `ends[i]`.

        Blocks are cut at the same record counts as `append` would cut them."""
        start, index, total = 0, 0, len(ends)
        while index < total:
            take = min(self.block_records - self._pending, total - index)
            end = ends[index + take - 1]
            self._parts.append(data if start == 0 and end == len(data) else memoryview(data)[start:end])
            self._pending += take
            index += take
            start = end
            if self._pending >= self.block_records:
                self.flush_block()

    def pending(self) -> tuple[bytes, int]:
        """The datums of the unfinished block (bytes, count), for a checkpoint to keep."""
        data = b"".join(self._parts)
        self._parts = [data]
        return data, self._pending

    def restore_pending(self, data: bytes, count: int) -> None:
        """Take back the unfinished block a checkpoint kept."""
        self._parts = [data]
        self._pending = count

    def flush_block(self) -> None:
        """Write the pending datums as one block (nothing when there are none); the file's last block."""
        if not self._pending:
            return
        parts, count = self._parts, self._pending
        self._parts, self._pending = [], 0
        self.count += count
        if self._background is None:
            self._write_block(parts, count)
        else:
            self._queued = self._background.submit(self._write_block, parts, count)

    def drain(self) -> None:
        """Wait until every queued block is written; raise the first error a write met."""
        if self._queued is not None:
            queued, self._queued = self._queued, None
            queued.result()
        self._raise_error()

    def close(self) -> None:
        """Close the file after the queued blocks; the unfinished block is written only by `flush_block`."""
        try:
            self.drain()
        finally:
            self._file.close()

    def _write_block(self, parts: list[bytes | memoryview], count: int) -> None:
        if self._error is not None:
            return  # a block failed: nothing after it may be written
        try:
            data = b"".join(parts)
            if self.codec == "deflate":
                compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
                data = compressor.compress(data) + compressor.flush()
            head = encode_long(count) + encode_long(len(data))
            for piece in (head, data, self.sync):
                self._file.write(piece)
                self._digest.update(piece)
            self._file.flush()
            self._size += len(head) + len(data) + len(self.sync)
        except BaseException as exc:
            self._error = exc  # drain() raises it, also when later blocks were queued behind this one
            raise

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


@dataclass(frozen=True)
class ContainerReader:
    """A container file's schema, codec, sync marker and raw blocks."""

    path: Path
    schema: dict[str, Any]
    codec: str
    sync: bytes
    metadata: dict[str, bytes]
    data_start: int

    @classmethod
    def open(cls, path: Path) -> ContainerReader:
        with path.open("rb") as stream:
            if stream.read(4) != MAGIC:
                raise EvidenceError(f"{path.name}: not an Avro object container file (bad magic bytes)")
            metadata: dict[str, bytes] = {}
            while (count := _read_long(stream, path)) != 0:
                if count < 0:
                    _read_long(stream, path)  # a negative count is followed by the block's byte size
                    count = -count
                for _ in range(count):
                    key = _read_bytes(stream, path).decode()
                    metadata[key] = _read_bytes(stream, path)
            sync = stream.read(SYNC_SIZE)
            start = stream.tell()
        try:
            schema = json.loads(metadata["avro.schema"])
        except (KeyError, ValueError) as exc:
            raise EvidenceError(f"{path.name}: the container has no readable avro.schema") from exc
        codec = metadata.get("avro.codec", b"null").decode()
        if codec not in CODECS:
            raise EvidenceError(f"{path.name}: unsupported codec {codec!r}")
        return cls(path, schema, codec, sync, metadata, start)

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """(datum count, decompressed datum bytes) per block; EvidenceError on a torn or altered block."""
        with self.path.open("rb") as stream:
            stream.seek(self.data_start)
            while True:
                head = stream.peek(1) if isinstance(stream, io.BufferedReader) else b""
                if not head:
                    return
                count = _read_long(stream, self.path)
                size = _read_long(stream, self.path)
                data = stream.read(size)
                if len(data) != size or stream.read(SYNC_SIZE) != self.sync:
                    raise EvidenceError(f"{self.path.name}: a block is truncated or its sync marker is wrong")
                if self.codec == "deflate":
                    try:
                        data = zlib.decompress(data, -15)
                    except zlib.error as exc:
                        raise EvidenceError(f"{self.path.name}: a deflate block does not decompress: {exc}") from exc
                yield count, data


def container_header(schema: dict[str, Any], codec: str, sync: bytes) -> bytes:
    """The bytes a container file starts with: magic, metadata (schema, codec) and the sync marker."""
    return _header(schema, codec, sync)


def block_parts(datums: Sequence[bytes | memoryview], count: int, codec: str, sync: bytes) -> list[bytes | memoryview]:
    """One container block of `count` datums (given in pieces, compressed by `codec`), ending in the sync
    marker, as pieces to join: with codec null the datums are not copied."""
    if codec == "deflate":
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        datums = [compressor.compress(b"".join(datums)) + compressor.flush()]
    size = sum(len(piece) for piece in datums)
    return [encode_long(count) + encode_long(size), *datums, sync]


def _header(schema: dict[str, Any], codec: str, sync: bytes) -> bytes:
    meta = {
        "avro.schema": json.dumps(schema, separators=(",", ":"), sort_keys=True).encode(),
        "avro.codec": codec.encode(),
    }
    parts = [MAGIC, encode_long(len(meta))]
    for key, value in meta.items():
        parts += (encode_long(len(key)), key.encode(), encode_long(len(value)), value)
    parts += (encode_long(0), sync)
    return b"".join(parts)


def _read_long(stream: IO[bytes], path: Path) -> int:
    shift = result = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise EvidenceError(f"{path.name}: unexpected end of file")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7


def _read_bytes(stream: IO[bytes], path: Path) -> bytes:
    size = _read_long(stream, path)
    data = stream.read(size)
    if len(data) != size:
        raise EvidenceError(f"{path.name}: unexpected end of file")
    return data
