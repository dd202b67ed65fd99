"""`streams worker` hosting the audit agent signs the committed chain head when it stops (SIGTERM drain), as
`streams audit run` does, and its chain carries signed checkpoints itself: the real worker process on a local
stack of its own (decision 0025)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.demo.samples import invoice_chain
from streams.local.processes import free_port
from streams.publish import Publisher
from streams.replay.signing import generate_keypair
from tests.integration.worker_harness import catalog_stack, read_topic, start_worker, stop_worker, wait_for, worker_env

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.timeout(300)
def test_worker_signs_the_committed_head_when_it_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keypair(tmp_path / "auditor")
    checkpoints = tmp_path / "audit.checkpoints"
    monkeypatch.setenv("STREAMS_AUDIT_CHECKPOINT_KEY", str(keys.private))
    monkeypatch.setenv("STREAMS_AUDIT_CHECKPOINT_FILE", str(checkpoints))
    # Only the first commit's checkpoint falls in the run: a later head can come only from the shutdown.
    monkeypatch.setenv("STREAMS_AUDIT_CHECKPOINT_INTERVAL_S", "3600")
    with catalog_stack(tmp_path / "stack") as stack:
        process = start_worker(stack, "audit", free_port(), tmp_path / "worker.log")
        try:
            with Publisher(stack, source="billing-api") as publisher:
                for event in invoice_chain(20, tenant="acme"):
                    publisher.publish("invoice.created", event)
            wait_for(lambda: len(read_topic(stack, "audit.trail")) >= 20, 120, lambda: "the first 20 entries")
            wait_for(checkpoints.exists, 30, lambda: "the first commit's checkpoint")
            first = json.loads(checkpoints.read_text().splitlines()[0])
            with Publisher(stack, source="billing-api") as publisher:
                for event in invoice_chain(15, tenant="beta"):
                    publisher.publish("invoice.created", event)
            wait_for(lambda: len(read_topic(stack, "audit.trail")) >= 35, 120, lambda: "all 35 entries")
        finally:
            stop_worker(process)
        assert process.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

        lines = [json.loads(line) for line in checkpoints.read_text().splitlines()]
        assert first["sequence"] <= 19
        assert lines[-1]["sequence"] == 34, lines  # the head committed last, signed on the way out
        exported = tmp_path / "chain.jsonl"
        env = worker_env(stack)
        result = CliRunner().invoke(main, ["audit", "export", str(exported)], env=env)
        assert result.exit_code == 0, result.output
        assert lines[-1]["entry_hash"] == json.loads(exported.read_text().splitlines()[-1])["entry_hash"]
        # The chain carries the first commit's checkpoint itself (in the transaction of the entries it covers).
        result = CliRunner().invoke(
            main, ["audit", "verify", "--file", str(exported), "--public-key", str(keys.public), "-o", "json"], env=env
        )
        assert result.exit_code == 0, result.output
        carried = json.loads(result.output)["carried_checkpoints"]
        assert carried["count"] >= 1
        assert carried["problems"] == []
        verify = ["audit", "verify", "--file", str(exported), "--checkpoint", str(checkpoints)]
        result = CliRunner().invoke(main, [*verify, "--public-key", str(keys.public)], env=env)
        assert result.exit_code == 0, result.output
        cut = tmp_path / "cut.jsonl"
        cut.write_text("".join(exported.read_text().splitlines(keepends=True)[:34]))
        result = CliRunner().invoke(
            main, ["audit", "verify", "--file", str(cut), "--checkpoint", str(checkpoints)], env=env
        )
        assert result.exit_code == 1
        assert "the first missing sequence is 34" in result.output, result.output
