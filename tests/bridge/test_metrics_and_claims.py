"""Tests for the bridge's metric names and the task side's claim tokens (no services needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from prometheus_client import generate_latest

from streams.bridge.metrics import BridgeMetrics
from streams.bridge.tasks import _dead_here, claim_token


def test_metrics_follow_the_naming_convention_on_their_own_registry() -> None:
    metrics = BridgeMetrics()
    metrics.confirmed.labels("default", "pdf").inc(3)
    metrics.paused.set(2)
    text = generate_latest(metrics.registry).decode()
    for name in (
        "streams_bridge_tasks_published_total",
        "streams_bridge_tasks_confirmed_total",
        "streams_bridge_tasks_failed_total",
        "streams_bridge_tasks_redelivered_total",
        "streams_bridge_inflight_tasks",
        "streams_bridge_paused_partitions",
        "streams_bridge_consumer_lag_messages",
        "streams_bridge_dead_letters_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'streams_bridge_tasks_confirmed_total{queue="default",route="pdf"} 3.0' in text
    assert "streams_bridge_paused_partitions 2.0" in text
    assert BridgeMetrics().registry is not metrics.registry  # two bridges in one process do not clash


def test_a_claim_of_a_dead_process_on_this_host_can_be_taken_over() -> None:
    mine = claim_token()
    assert mine.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert not _dead_here(mine)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    assert _dead_here(f"{socket.gethostname()}:{finished.stdout.strip()}:nonce")
    assert not _dead_here(f"another-host:{finished.stdout.strip()}:nonce")  # only this host can be checked
    assert not _dead_here("garbage")
