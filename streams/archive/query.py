"""`streams archive query`: archived records selected by tenant, key, event type and time through a pyarrow dataset.

The records come from the one archive reader (streams.archive.read); pyarrow only holds their columns and filters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.archive.segments import archived_partitions
from streams.errors import StreamsError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streams.archive.read import ArchiveView
    from streams.archive.segments import ArchivedRecord

__all__ = ["query_archive"]


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # noqa: PLC0415 - an optional dependency (the `archive` extra)
        import pyarrow.dataset as ds  # noqa: PLC0415
    except ImportError as exc:
        raise StreamsError("`streams archive query` needs pyarrow: pip install 'streams[archive]'") from exc
    return pa, ds


def header(record: ArchivedRecord, name: str) -> str | None:
    """The first non-null value of header `name`, as text."""
    for key, value in record.headers() or ():
        if key == name and value is not None:
            return bytes(value).decode("utf-8", "replace")
    return None


def query_archive(
    view: ArchiveView,
    *,
    tenant: str | None = None,
    key: str | None = None,
    event_type: str | None = None,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
) -> Iterator[ArchivedRecord]:
    """The archived records of the view's topic that match every given filter, by partition and offset.

    `start`/`end` are epoch ms ([start, end)); tenant and event type are the ce_tenantid and ce_type headers.
    Segments outside the time range are not read (their manifests hold first and last timestamps); each segment
    read is one pyarrow table, filtered as a dataset, so at most one segment's records are in memory.
    """
    pa, ds = _pyarrow()
    condition = _condition(ds, pa, tenant, key, event_type, start, end)
    shown = 0
    for partition in archived_partitions(view.store, view.topic):
        for segment in view.segments(partition):
            if (start is not None and segment.last_timestamp < start and segment.first_timestamp < start) or (
                end is not None and segment.first_timestamp >= end
            ):
                continue
            for batch in view.read(partition, segment.from_offset, segment.next_offset):
                table = pa.table(
                    {
                        "row": pa.array(range(len(batch)), pa.int64()),
                        "timestamp": pa.array([r.timestamp()[1] for r in batch], pa.int64()),
                        "key": pa.array([r.key() for r in batch], pa.binary()),
                        "tenant": pa.array([header(r, "ce_tenantid") for r in batch], pa.string()),
                        "type": pa.array([header(r, "ce_type") for r in batch], pa.string()),
                    }
                )
                rows = ds.dataset(table).to_table(columns=["row"], filter=condition).column("row").to_pylist()
                for row in rows:
                    yield batch[row]
                    shown += 1
                    if limit is not None and shown >= limit:
                        return


def _condition(
    ds: Any, pa: Any, tenant: str | None, key: str | None, event_type: str | None, start: int | None, end: int | None
) -> Any:
    """The filters as one dataset expression; a null column value (no such header, no key) never matches."""
    condition = ds.scalar(True)
    if tenant is not None:
        condition &= ds.field("tenant") == tenant
    if key is not None:
        condition &= ds.field("key") == pa.scalar(key.encode(), pa.binary())
    if event_type is not None:
        condition &= ds.field("type") == event_type
    if start is not None:
        condition &= ds.field("timestamp") >= start
    if end is not None:
        condition &= ds.field("timestamp") < end
    return condition
