"""`streams archive query` on a local archive: the pyarrow dataset filters (tenant, key, event type, time) select
exactly the records a plain scan of the same segments selects, with the command's JSON lines unchanged."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from streams.archive.commands import archive as archive_command
from streams.archive.query import header, query_archive
from streams.archive.read import ArchiveView
from streams.archive.segments import ArchivedRecord
from streams.archive.store import LocalStore
from streams.settings import Settings
from tests.archive.test_segments import TOPIC, archive, record

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BASE = 1_700_000_000_000  # record(offset)'s timestamp is BASE + offset


def typed(offset: int, partition: int) -> ArchivedRecord:
    """record() with a second event type on every third offset and no ce_tenantid on every fifth."""
    source = record(offset)
    return ArchivedRecord(
        TOPIC,
        partition,
        offset,
        source.timestamp()[1],
        source.key(),
        [
            (name, b"shop.refund" if name == "ce_type" and offset % 3 == 0 else value)
            for name, value in source.headers() or ()
            if not (name == "ce_tenantid" and offset % 5 == 0)
        ],
        source.value(),
    )


@pytest.fixture
def archived(tmp_path: Path) -> list[ArchivedRecord]:
    store = LocalStore(tmp_path / "archive")
    everything: list[ArchivedRecord] = []
    for partition in (0, 1):
        records = [typed(offset, partition) for offset in range(240)]
        archive_partition(store, records)
        everything += records
    return everything


def archive_partition(store: LocalStore, records: list[ArchivedRecord]) -> None:
    archive(store, [records[:80], records[80:170], records[170:]])


def run_query(tmp_path: Path, *args: str) -> tuple[int, str]:
    settings = Settings(data_dir=tmp_path)  # the archive at <data_dir>/archive
    result = CliRunner().invoke(archive_command, ["query", TOPIC, *args], obj=settings)
    return result.exit_code, result.output


FILTERS: list[tuple[list[str], Callable[[ArchivedRecord], bool]]] = [
    (["--tenant", "acme"], lambda r: header(r, "ce_tenantid") == "acme"),
    (["--key", "k3"], lambda r: r.key() == b"k3"),
    (["--type", "shop.refund"], lambda r: header(r, "ce_type") == "shop.refund"),
    (
        ["--from", "2023-11-14T22:13:20.100Z", "--to", "2023-11-14T22:13:20.200Z"],
        lambda r: BASE + 100 <= r.timestamp()[1] < BASE + 200,
    ),
    (
        ["--tenant", "globex", "--type", "shop.order", "--from", "2023-11-14T22:13:20.050Z"],
        lambda r: (
            header(r, "ce_tenantid") == "globex"
            and header(r, "ce_type") == "shop.order"
            and r.timestamp()[1] >= BASE + 50
        ),
    ),
]


@pytest.mark.parametrize(("args", "wanted"), FILTERS, ids=["tenant", "key", "type", "time", "combined"])
def test_query_selects_what_a_plain_scan_selects(
    tmp_path: Path, archived: list[ArchivedRecord], args: list[str], wanted: Callable[[ArchivedRecord], bool]
) -> None:
    expected = [(r.partition(), r.offset()) for r in archived if wanted(r)]
    assert expected  # each filter selects some records and leaves others out
    assert len(expected) < len(archived)
    code, output = run_query(tmp_path, *args, "--limit", "10000")
    assert code == 0, output
    rows = [json.loads(line) for line in output.splitlines()]
    assert [(row["partition"], row["offset"]) for row in rows] == expected


def test_query_rows_keep_their_shape_and_the_limit_holds(tmp_path: Path, archived: list[ArchivedRecord]) -> None:
    code, output = run_query(tmp_path, "--key", "k1", "--limit", "5")
    assert code == 0, output
    rows = [json.loads(line) for line in output.splitlines()]
    originals = {(r.partition(), r.offset()): r for r in archived}
    assert len(rows) == 5
    for row in rows:
        source = originals[(row["partition"], row["offset"])]
        assert row == {
            "topic": TOPIC,
            "partition": source.partition(),
            "offset": source.offset(),
            "timestamp": source.timestamp()[1],
            "key": "k1",
            "headers": {name: None if value is None else value.decode() for name, value in source.headers() or ()},
            "value_bytes": len(source.value() or b""),
        }


def test_time_range_skips_segments_outside_it(tmp_path: Path, archived: list[ArchivedRecord]) -> None:
    view = ArchiveView(LocalStore(tmp_path / "archive"), TOPIC)
    read: list[tuple[int, int]] = []
    original = view.read

    def counting(partition: int, start: int, end: int) -> Any:
        read.append((partition, start))
        return original(partition, start, end)

    view.read = counting  # type: ignore[method-assign]
    found = list(query_archive(view, start=BASE + 200, end=BASE + 230))
    assert [(r.partition(), r.offset()) for r in found] == [(p, o) for p in (0, 1) for o in range(200, 230)]
    assert read == [(0, 170), (1, 170)]  # only the last segment of each partition was read


def test_query_of_an_unarchived_topic_is_one_line_error(tmp_path: Path, archived: list[ArchivedRecord]) -> None:
    result = CliRunner().invoke(archive_command, ["query", "no.such.topic"], obj=Settings(data_dir=tmp_path))
    assert result.exit_code != 0
    assert "has nothing of 'no.such.topic'" in str(result.exception or result.output)
