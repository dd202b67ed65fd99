"""The archiver: a batch agent on the one runtime that seals each transaction's records into segments.

Segments are written and sealed before the transaction that advances the offsets commits, and named by the
offset they continue from, so a crash leaves at most one torn segment per partition, which the next run
writes again under the same name (docs/decisions/0025-archive.md).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from streams.archive.segments import Segment, SegmentBuffer, manifest_name, segment_name
from streams.archive.store import open_store
from streams.errors import ConfigError
from streams.observability import AgentMetrics
from streams.replay.reader import consumed
from streams.runtime.contract import mark_key

if TYPE_CHECKING:
    from confluent_kafka import Message

    from streams.archive.store import ArchiveStore
    from streams.catalog import Catalog
    from streams.runtime.app import App
    from streams.runtime.state import Output, PartitionState
    from streams.settings import Settings

__all__ = ["ARCHIVER_ID", "Archiver", "archive_app", "archived_topics"]

ARCHIVER_ID = "streams-archiver"  # the app id: group streams-archiver-archive
MAX_WRITERS = 8  # partitions sealed at once: their hashing, writes and fsyncs overlap
# While behind, a transaction (one segment per partition) commits at this many records or bytes held, or
# the engine's backlog_commit_s: each commit costs the broker 12-25 ms of CPU and the seal a round of fsyncs,
# the archiver has no outputs whose visibility would wait, and larger segments suit an archive.
MAX_OPEN_RECORDS = 100_000
MAX_OPEN_BYTES = 32 * 1024 * 1024  # the records' encodings held in memory until the seal
log = structlog.get_logger("streams.archive")


def archived_topics(catalog: Catalog, wanted: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The catalog's `archive: true` topics (or the `wanted` ones, each of which must be one)."""
    archived = tuple(spec.name for spec in catalog.topics if spec.archive)
    for name in wanted:
        if catalog.topic(name).archive is False:
            raise ConfigError(f"topic '{name}' is not archived: set 'archive: true' on it in {catalog.path}")
    chosen = wanted or archived
    if not chosen:
        raise ConfigError(f"no topic in {catalog.path} has 'archive: true'; nothing to archive")
    return chosen


class Archiver:
    """The batch agent: buffers each partition's records, seals them into one segment per transaction."""

    name = "archive"

    def __init__(self, store: ArchiveStore, topics: tuple[str, ...], metrics: AgentMetrics | None = None) -> None:
        self.store = store
        self.sources = topics
        self.segments = 0  # sealed by this instance
        self.records = 0  # in those segments
        self._marks = {topic: mark_key(self, topic) for topic in topics}
        self._open: dict[tuple[str, int], SegmentBuffer] = {}  # the open transaction's, per partition
        self._open_bytes = 0
        self._links: dict[tuple[str, int], tuple[int, str]] = {}  # last sealed: (next offset, manifest SHA-256)
        self._writers: ThreadPoolExecutor | None = None  # made on the first seal, idle between seals
        self._archived = (metrics or AgentMetrics()).events.labels(agent=self.name, outcome="archived")

    def handle(self, records: list[Message], state: PartitionState, _out: Output) -> None:
        topic, partition = records[0].topic() or "", records[0].partition() or 0
        buffer = self._open.get((topic, partition))
        if buffer is None:
            # The engine's mark is the position the last commit left (the next offset to process): the new
            # segment continues from it, so offsets between segments (transaction markers) belong to one.
            mark = state.get(self._marks[topic])
            first = records[0].offset() or 0
            start = int(mark[0]) if mark is not None and int(mark[0]) <= first else first
            buffer = self._open[topic, partition] = SegmentBuffer(topic, partition, start)
        held = buffer.size
        buffer.add(consumed(records))
        self._open_bytes += buffer.size - held

    def full(self) -> bool:
        """The open segments hold MAX_OPEN_BYTES: the engine commits (and seals them) after this batch."""
        return self._open_bytes >= MAX_OPEN_BYTES

    def seal(self) -> None:
        """Write and seal every open segment (the engine's before-commit hook): container, then manifest.

        The records were encoded as they came (handle); what is left per partition (joining the container,
        hashing it, write, fsync, rename: mostly without the GIL) runs in writer threads, one partition's I/O
        beside another's. Every segment is sealed, or the first failure raised (the transaction aborts and
        its records come again), before the commit."""
        if self._writers is None:
            self._writers = ThreadPoolExecutor(MAX_WRITERS, thread_name_prefix="archive-writer")
        opened = list(self._open.values())
        sealed = [self._writers.submit(self._seal_one, buffer) for buffer in opened]
        manifests = [written.result() for written in sealed]
        for buffer, manifest in zip(opened, manifests, strict=True):
            self._links[buffer.topic, buffer.partition] = (buffer.next_offset, hashlib.sha256(manifest).hexdigest())
            self.segments += 1
            self.records += buffer.count
            self._archived.inc(buffer.count)
        self._open.clear()
        self._open_bytes = 0

    def _seal_one(self, buffer: SegmentBuffer) -> bytes:
        """Write one partition's segment, then its manifest (which seals it); the manifest's bytes."""
        topic, partition, from_offset = buffer.topic, buffer.partition, buffer.from_offset
        container, manifest = buffer.seal(self._previous(topic, partition, from_offset))
        self.store.put(segment_name(topic, partition, from_offset), *container)
        self.store.put(manifest_name(topic, partition, from_offset), manifest)  # sealed
        return manifest

    def dead_letter(self, _record: Message, _error: BaseException) -> None:
        """Never park a record (the engine's last resort against a poison record): one missing from the
        archive would be lost unseen. A failing store is retried until it answers again."""
        return

    def aborted(self) -> None:
        """The transaction failed: its records come again from the last commit (their segments are rewritten)."""
        self._open.clear()
        self._open_bytes = 0
        self._links.clear()

    def _previous(self, topic: str, partition: int, from_offset: int) -> str | None:
        """The SHA-256 of the manifest of the segment ending where this one starts (None for the first)."""
        link = self._links.get((topic, partition))
        if link is not None and link[0] == from_offset:
            return link[1]
        prefix = f"{topic}/{partition:05d}/"
        earlier = [
            name
            for name in self.store.list(prefix)
            if name.endswith(".manifest.json") and int(name[len(prefix) :].split(".")[0]) < from_offset
        ]
        if not earlier:
            return None
        data = self.store.get(earlier[-1])
        segment = Segment.parse(data, f"{self.store.url}/{earlier[-1]}")
        if segment.next_offset != from_offset:
            log.warning(
                "archive.gap",
                topic=topic,
                partition=partition,
                archived_to=segment.next_offset,
                continues_from=from_offset,
            )
        return segment.manifest_sha256


def archive_app(
    settings: Settings,
    catalog: Catalog,
    *,
    topics: tuple[str, ...] = (),
    app_id: str = ARCHIVER_ID,
    commit_interval: float = 1.0,
    metrics: AgentMetrics | None = None,
) -> App:
    """The archiver as an App (`streams archive run`, `streams worker --agents archive`)."""
    from streams.runtime.app import App  # noqa: PLC0415 - keeps `streams archive --help` light

    location, options = settings.archive_location()
    store = open_store(location, options)
    archiver = Archiver(store, archived_topics(catalog, topics), metrics)
    app = App(
        app_id,
        settings=settings,
        catalog=catalog,
        commit_interval=commit_interval,
        max_open_records=MAX_OPEN_RECORDS,
        metrics=metrics,
    )
    app.agent(list(archiver.sources), name=archiver.name, batch=True, typed=False)(archiver)
    app.before_commit(archiver.seal)
    log.info("archive.configured", location=store.url, topics=list(archiver.sources))
    return app
