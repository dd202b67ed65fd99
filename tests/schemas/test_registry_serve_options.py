"""`streams registry serve` options as the server receives them (the server itself is not started here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.registry import server
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The RegistryOptions each `registry serve` would have run with."""
    configs: list[Any] = []

    async def run_registry(config: Any, ready: Callable[[str], None]) -> None:
        del ready
        configs.append(config)

    monkeypatch.setattr(server, "run_registry", run_registry)
    # No broker here: the start-up reachability check (tests/test_cli_errors.py covers it) is skipped.
    monkeypatch.setattr(Settings, "check_kafka_reachable", lambda *_args, **_kwargs: None)
    return configs


@pytest.mark.parametrize(
    ("environment", "arguments", "profile"),
    [
        ({}, [], "local"),
        ({"STREAMS_PROFILE": "production"}, [], "production"),
        ({"STREAMS_PROFILE": "production"}, ["--profile", "local"], "local"),
    ],
)
def test_the_catalog_profile_comes_from_the_option_else_the_settings(
    served: list[Any], environment: dict[str, str], arguments: list[str], profile: str
) -> None:
    result = CliRunner().invoke(
        main,
        ["registry", "serve", "--bootstrap-servers", "127.0.0.1:9", *arguments],
        env={"STREAMS_PROFILE": None, **environment},
    )
    assert result.exit_code == 0, result.output
    assert [config.profile for config in served] == [profile]
