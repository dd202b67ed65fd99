"""The bench's own logic that decides what it reports: output matching and count checks, the faust peer's
wire-format codec, and run_all's partial regeneration of docs/benchmarks.md (no Kafka, no timing)."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402
import user_agents  # noqa: E402
from faust_velocity import ConfluentAvro  # noqa: E402

SCHEMA = json.loads((BENCH / "catalog" / "user.velocity.avsc").read_text())


def wire(record: dict[str, Any], schema_id: int = 7) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(SCHEMA), record)
    return out.getvalue()


def message(user: str, window: int, count: int) -> Any:
    value = wire({"user_id": user, "window_start_ms": window, "count": count})
    return SimpleNamespace(key=user.encode, value=lambda: value)


def test_sequence_ids_number_each_users_events_across_phases() -> None:
    seen: Counter[str] = Counter()
    first = user_agents.sequence_ids([{"user_id": "a"}, {"user_id": "b"}, {"user_id": "a"}], seen)
    second = user_agents.sequence_ids([{"user_id": "a"}], seen)
    assert first == ["a#1", "b#1", "a#2"]
    assert second == ["a#3"]
    assert seen == Counter({"a": 3, "b": 1})


def test_output_check_accepts_counts_that_restart_per_window() -> None:
    check = user_agents.OutputCheck()
    ids = [
        check.match(message("a", 0, 1)),
        check.match(message("a", 0, 2)),
        check.match(message("b", 0, 1)),
        check.match(message("a", 60_000, 1)),
    ]
    assert ids == ["a#1", "a#2", "b#1", "a#3"]
    result = check.verify(Counter({"a": 3, "b": 1}))
    assert result == {
        "outputs": 4,
        "count_errors": 0,
        "first_errors": [],
        "users_with_outputs_missing": 0,
        "users_with_outputs_extra": 0,
    }


def test_output_check_flags_a_doubled_output_and_a_missing_one() -> None:
    check = user_agents.OutputCheck()
    for user, window, count in [("a", 0, 1), ("a", 0, 1), ("a", 0, 2), ("b", 0, 1)]:  # a's first came twice
        check.match(message(user, window, count))
    result = check.verify(Counter({"a": 2, "b": 2}))
    assert result["count_errors"] == 1
    assert result["first_errors"] == ["a: count 1 in window 0, expected 2"]
    assert result["users_with_outputs_extra"] == 1  # a: 3 outputs for 2 events
    assert result["users_with_outputs_missing"] == 1  # b: 1 output for 2 events


def test_faust_codec_reads_and_writes_the_registry_wire_format() -> None:
    codec = ConfluentAvro("http://registry.invalid")  # no subject: no registry call at construction
    codec.readers[7] = fastavro.parse_schema(SCHEMA)
    record = {"user_id": "user-00001", "window_start_ms": 1_800_000, "count": 3}
    assert codec._loads(wire(record)) == record
    codec.writer = struct.pack(">bI", 0, 9), fastavro.parse_schema(SCHEMA)
    encoded = codec._dumps(record)
    assert encoded[:5] == struct.pack(">bI", 0, 9)
    assert codec._loads(encoded[:1] + struct.pack(">I", 7) + encoded[5:]) == record


def test_faust_codec_refuses_bytes_that_are_not_the_wire_format() -> None:
    codec = ConfluentAvro("http://registry.invalid")
    with pytest.raises(ValueError, match="magic byte 1"):
        codec._loads(b"\x01\x00\x00\x00\x07rest")


def test_a_partial_run_keeps_the_other_benches_sections(tmp_path: Path) -> None:
    document = tmp_path / "benchmarks.md"
    document.write_text(
        "# Benchmarks\n\nintro\n\n## bench/publish\n\nold publish numbers\n\n## bench/replay\n\nold replay numbers\n"
    )
    kept = run_all.kept_sections(document)
    assert set(kept) == {"publish", "replay"}
    run = {
        "name": "user_agents",
        "command": "python bench/user_agents.py",
        "exit_code": 0,
        "when": "now",
        "seconds": 1.0,
        "load_before": 0.1,
        "load_after": 0.2,
        "output": "new numbers",
    }
    text = run_all.render([run], dt.datetime(2026, 12, 7, tzinfo=dt.UTC), kept)
    assert "This run redid user_agents" in text
    order = [text.index(f"## bench/{name}") for name in ("publish", "user_agents", "replay")]
    assert order == sorted(order)  # the document keeps run_all's order of benches
    for text_kept in ("old publish numbers", "old replay numbers", "new numbers"):
        assert text_kept in text
