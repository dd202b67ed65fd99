"""Reading the archive the way replay reads Kafka: what a partition's archive covers, offsets for times,
and the records of an offset range in batches.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from streams.archive.segments import Segment, decode_segment, list_segments
from streams.archive.store import open_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streams.archive.segments import ArchivedRecord
    from streams.archive.store import ArchiveStore

__all__ = ["ArchiveView", "open_view"]


class ArchiveView:
    """One topic's archive, its manifests read once per partition."""

    def __init__(self, store: ArchiveStore, topic: str) -> None:
        self.store, self.topic = store, topic
        self._segments: dict[int, list[Segment]] = {}

    @property
    def url(self) -> str:
        return self.store.url

    def segments(self, partition: int) -> list[Segment]:
        if partition not in self._segments:
            self._segments[partition] = list_segments(self.store, self.topic, partition)[0]
        return self._segments[partition]

    def covered(self, partition: int) -> tuple[int, int] | None:
        """[first, next) offsets the archive holds without a gap, ending at its newest segment."""
        segments = self.segments(partition)
        if not segments:
            return None
        first = segments[-1].from_offset
        for earlier, later in zip(reversed(segments[:-1]), reversed(segments[1:]), strict=True):
            if earlier.next_offset != later.from_offset:
                break
            first = earlier.from_offset
        return first, segments[-1].next_offset

    def offset_for_time(self, partition: int, ms: int, default: int) -> int:
        """The first archived offset whose timestamp is at or after `ms` (`default` if none is)."""
        for segment in self.segments(partition):
            if segment.last_timestamp < ms and segment.first_timestamp < ms:
                continue
            for record in self._records(segment):
                if record.timestamp()[1] >= ms:
                    return record.offset()
        return default

    def read(self, partition: int, start: int, end: int) -> Iterator[list[ArchivedRecord]]:
        """The archived records in [start, end), one batch per segment."""
        segments = self.segments(partition)
        if not segments or segments[-1].next_offset < end:  # sealed since they were listed, maybe
            self._segments.pop(partition, None)
            segments = self.segments(partition)
        index = max(0, bisect.bisect_right([s.from_offset for s in segments], start) - 1)
        for segment in segments[index:]:
            if segment.from_offset >= end:
                return
            if segment.next_offset <= start:
                continue
            yield [r for r in self._records(segment) if start <= r.offset() < end]

    def _records(self, segment: Segment) -> list[ArchivedRecord]:
        return decode_segment(self.store.get(segment.name), f"{self.store.url}/{segment.name}")[0]


def open_view(location: str, topic: str) -> ArchiveView | None:
    """The archive of `topic` at `location` (endpoint options from the settings), None if it has none."""
    from streams.settings import Settings  # noqa: PLC0415 - the endpoint of an S3-compatible store

    options = Settings().archive_location()[1] if "://" in location else {}
    store = open_store(location, options)
    return ArchiveView(store, topic) if store.list(f"{topic}/") else None
