"""Process helpers of the local stack on a throwaway `sleep`: ownership marks, group stop, log tails."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from streams.local import processes

if TYPE_CHECKING:
    from pathlib import Path


def test_a_spawned_service_is_owned_running_and_stoppable(tmp_path: Path) -> None:
    log = tmp_path / "sleep.log"
    pid = processes.spawn_detached(["sleep", "60"], log_path=log, owner=tmp_path)
    try:
        assert processes.is_running(pid)
        assert os.getpgid(pid) == pid  # leads its own group, so down can signal the group
        assert processes.owned_by(pid, tmp_path)
        assert not processes.owned_by(pid, tmp_path / "other")
    finally:
        processes.stop_process_group(pid, timeout_s=5)
    assert not processes.is_running(pid)
    assert not processes.owned_by(pid, tmp_path)


def test_free_ports_are_free() -> None:
    port = processes.free_port()
    assert 0 < port < 65536
    assert not processes.port_in_use(port)


def test_log_tail_keeps_the_last_lines_indented(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert processes.log_tail(log, lines=2) == "  line 48\n  line 49"
    assert processes.log_tail(tmp_path / "missing.log") == ""
