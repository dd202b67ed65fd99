"""The small rules behind a new user's first hour: settings errors, the project from a subdirectory,
replay bounds, JSON-lines errors, and which topics `topics plan` keeps quiet about."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import AwareDatetime, BaseModel

from streams.admin import platform_internal
from streams.errors import ConfigError, PublishError
from streams.events_cli import _json_problem, _refuse_numeric_times
from streams.replay.errors import ReplayError
from streams.replay.selection import parse_bound
from streams.schemas.models import EVENT_MODELS
from streams.settings import Settings, load_settings


def test_a_bad_variable_is_one_line_naming_it_and_the_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_PROFILE", "prod")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert message == (
        "STREAMS_PROFILE='prod' is not valid: Input should be 'local', 'cluster' or 'production'"
        " (fix or unset the variable)"
    )


def test_catalog_and_data_dir_are_found_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "topics.yaml").write_text("version: 1\n")
    deep = tmp_path / "tests" / "unit"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    for name in ("STREAMS_CATALOG_PATH", "STREAMS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.catalog_path == tmp_path / "topics.yaml"
    assert settings.data_dir == tmp_path / ".streams"  # beside the catalog, even before it exists
    (deep / ".streams").mkdir()
    assert Settings().data_dir == Path(".streams")  # a nearer one wins


def test_outside_any_project_relative_paths_stay_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMS_CATALOG_PATH", raising=False)
    monkeypatch.delenv("STREAMS_DATA_DIR", raising=False)
    settings = Settings()
    assert (settings.catalog_path, settings.data_dir) == (Path("topics.yaml"), Path(".streams"))


def test_sub_millisecond_bounds_round_up() -> None:
    assert parse_bound("2026-12-07T10:00:00Z", "--from") == 1_796_637_600_000
    assert parse_bound("2026-12-07T10:00:00.0005Z", "--from") == 1_796_637_600_001
    assert parse_bound("2026-12-07T10:00:00.001Z", "--to") == 1_796_637_600_001
    assert parse_bound("2026-12-07T10:00:00.000001+00:00", "--to") == 1_796_637_600_001


def test_relative_bounds_count_back_from_now() -> None:
    now_ms = time.time() * 1000
    for text, seconds in (("now", 0), ("-1h", 3600), ("now-30m", 1800), ("-2d", 172_800), ("- 15 s", 15)):
        bound = parse_bound(text, "--from")
        assert isinstance(bound, int)
        assert abs(bound - (now_ms - seconds * 1000)) < 5_000, text
    with pytest.raises(ReplayError, match=r"--from '-1x' is neither an ISO-8601 time .* relative to now"):
        parse_bound("-1x", "--from")


def _decode_error(text: str) -> json.JSONDecodeError:
    with pytest.raises(json.JSONDecodeError) as raised:
        json.loads(text)
    return raised.value


def test_json_errors_point_at_the_character_at_fault() -> None:
    assert _json_problem(_decode_error('{"a": 1,}')) == "a trailing comma at column 8 before '}'"
    assert _json_problem(_decode_error("[1, 2 ,  ]")) == "a trailing comma at column 7 before ']'"
    assert _json_problem(_decode_error('{"a": tru}')) == "Expecting value at column 7"
    assert _json_problem(_decode_error('{"a": 1 "b": 2}')) == "Expecting ',' delimiter at column 9"


def test_a_number_in_a_timestamp_field_is_refused_strings_pass() -> None:
    model = EVENT_MODELS["user.action"]
    with pytest.raises(PublishError, match=r"field 'occurred_at': 12 is a number, not a time"):
        _refuse_numeric_times(model, {"occurred_at": 12})
    with pytest.raises(PublishError, match=r"field 'occurred_at': 1\.5 is a number"):
        _refuse_numeric_times(model, {"occurred_at": Decimal("1.5")})
    _refuse_numeric_times(model, {"occurred_at": "2026-12-07T10:00:00Z"})


class _Step(BaseModel):
    at: AwareDatetime


class _Workflow(BaseModel):
    steps: list[_Step]
    finished: _Step | None = None


def test_timestamps_inside_nested_records_and_lists_are_checked_with_their_path() -> None:
    with pytest.raises(PublishError, match=r"field 'steps\.at': 7 is a number"):
        _refuse_numeric_times(_Workflow, {"steps": [{"at": "2026-12-07T10:00:00Z"}, {"at": 7}]})
    with pytest.raises(PublishError, match=r"field 'finished\.at': 8 is a number"):
        _refuse_numeric_times(_Workflow, {"steps": [], "finished": {"at": 8}})
    _refuse_numeric_times(_Workflow, {"steps": [{"at": "2026-12-07T10:00:00Z"}], "finished": None})


def test_the_platforms_own_topics_are_internal_others_are_not() -> None:
    for name in (
        "_schemas",
        "__consumer_offsets",
        "streams-worker-validation-store-changelog",
        "streams-worker-audit-leader",
        "streams-worker-__assignor-__leader",
        "invoice.created.replay.1496b9a696",
        "app-orders-repartition",
    ):
        assert platform_internal(name), name
    for name in ("invoice.created", "invoice.created.dlq", "leaderboard", "changelog.events", "stray"):
        assert not platform_internal(name), name


def test_the_reachability_check_is_the_clis_library_clients_keep_their_own_errors() -> None:
    library = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    assert library.bootstrap_servers() == "127.0.0.1:1"  # no probe: a Publisher reports its own error later
    cli = Settings(kafka_bootstrap_servers="127.0.0.1:1", check_reachable=True, kafka_connect_timeout_s=0.5)
    with pytest.raises(ConfigError) as raised:
        cli.bootstrap_servers()
    assert str(raised.value) == (
        "cannot reach Kafka at 127.0.0.1:1 (STREAMS_KAFKA_BOOTSTRAP_SERVERS): Connection refused (no answer within"
        " 0.5 s); check that variable (host:port of a broker, comma-separated), or unset it to use the local stack"
        " (`streams dev up`)"
    )


def test_the_export_hint_names_the_public_key(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.replay.commands import _print_result  # noqa: PLC0415 - the CLI's text is what is tested

    result = {"records": 2, "scanned": 2, "directory": "evidence/nov", "merkle_root": "ab", "signed_by": "sha256:1f"}
    _print_result({"kind": "export"}, {**result, "public_key": "keys/auditor.pub"})
    assert capsys.readouterr().out.splitlines()[-1] == (
        "verify with: streams evidence verify evidence/nov --public-key keys/auditor.pub"
    )
    _print_result({"kind": "export"}, {**result, "public_key": None})
    assert capsys.readouterr().out.splitlines()[-1].endswith("--public-key <the .pub of sha256:1f>")
    _print_result({"kind": "export"}, {**result, "signed_by": None})
    assert "(unsigned: sign with --sign-key" in capsys.readouterr().out
