"""`streams --help` lists every command without importing one; each summary is the command's own first line."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from streams.cli import LAZY_COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_each_listed_summary_is_the_first_line_of_the_commands_help() -> None:
    for name, (module, attribute, summary) in LAZY_COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        first_line = (command.help or "").strip().splitlines()[0]
        assert summary == first_line, f"{name}: update LAZY_COMMANDS in streams/cli.py to {first_line!r}"


def test_root_help_imports_no_command_module() -> None:
    probe = (
        "import sys\n"
        "from streams.cli import main\n"
        "try:\n    main(['--help'], prog_name='streams')\nexcept SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('streams.', 'confluent_kafka', 'faust', 'rich')))\n"
        "print('LOADED', loaded)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # S603: our own interpreter with a fixed script.
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert "Commands:" in result.stdout
    loaded = result.stdout.rsplit("LOADED", 1)[1]
    assert all(f"'{module}'" not in loaded for module, _, _ in LAZY_COMMANDS.values()), loaded
    assert "confluent_kafka" not in loaded
    assert "faust" not in loaded


def test_every_command_is_reachable_and_has_help() -> None:
    runner = CliRunner()
    for name in LAZY_COMMANDS:
        result = runner.invoke(main, [name, "--help"], prog_name="streams")
        assert result.exit_code == 0, (name, result.output)
        assert f"streams {name}" in result.output.splitlines()[0]
    assert sorted(main.list_commands(click.Context(main))) == sorted(LAZY_COMMANDS)
