"""Signed checkpoints of the audit chain, on exported chains (no cluster): a cut tail, a rollback to an earlier
checkpoint and a forked chain each fail `streams audit verify --checkpoint`, naming the first missing sequence."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from click.testing import CliRunner

from streams.agents.audit_chain import ChainEntry, write_jsonl
from streams.agents.audit_commands import audit
from streams.replay.signing import generate_keypair

if TYPE_CHECKING:
    from pathlib import Path

GENESIS = "0" * 64


def chain(count: int, *, tenant: str = "acme", start: list[ChainEntry] | None = None) -> list[ChainEntry]:
    entries = list(start or [])
    for sequence in range(len(entries), count):
        previous = entries[-1].entry_hash if entries else GENESIS
        entries.append(
            ChainEntry(
                sequence,
                tenant,
                "invoice.created",
                0,
                sequence,
                f"e{sequence}-{tenant}",
                "invoice.created",
                None,
                1_700_000_000_000 + sequence,
                "ab" * 32,
                previous,
            ).sealed()
        )
    return entries


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit, list(args), obj=None)
    return result.exit_code, result.output


def test_checkpoints_catch_a_cut_tail_a_rollback_and_a_fork(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "auditor")
    full = chain(30)
    exported = tmp_path / "chain.jsonl"
    checkpoints = tmp_path / "chain.checkpoints"
    for head in (10, 20, 30):  # the writer's periodic checkpoints, as the chain grows
        write_jsonl(exported, full[:head])
        code, output = run("checkpoint", str(checkpoints), "--file", str(exported), "--sign-key", str(keys.private))
        assert code == 0, output
        assert f"checkpoint of sequence {head - 1}" in output
    write_jsonl(exported, full)
    code, output = run(
        "verify", "--file", str(exported), "--checkpoint", str(checkpoints), "--public-key", str(keys.public)
    )
    assert code == 0, output
    assert "every signed head" in output

    cut = tmp_path / "cut.jsonl"
    write_jsonl(cut, full[:27])  # the last three entries dropped: the hash chain alone is still intact
    assert run("verify", "--file", str(cut))[0] == 0
    code, output = run("verify", "--file", str(cut), "--checkpoint", str(checkpoints))
    assert code == 1
    assert "the chain ends at sequence 26, but sequence 29 was checkpointed" in output
    assert "the first missing sequence is 27" in output

    rolled_back = tmp_path / "rolled-back.jsonl"
    write_jsonl(rolled_back, full[:20])  # back to the second checkpoint exactly
    code, output = run("verify", "--file", str(rolled_back), "--checkpoint", str(checkpoints), "-o", "json")
    assert code == 1
    document = json.loads(output)
    assert document["ok"] is False
    assert document["checkpoints"]["problems"] == [
        (
            f"the chain ends at sequence 19, but sequence 29 was checkpointed at "
            f"{json.loads(checkpoints.read_text().splitlines()[2])['time']}: its tail was cut or rolled back; "
            "the first missing sequence is 20"
        )
    ]

    forked = tmp_path / "forked.jsonl"
    write_jsonl(forked, chain(30, tenant="other", start=full[:15]))  # rewritten from sequence 15 on, re-linked
    assert run("verify", "--file", str(forked))[0] == 0  # a consistent rewrite: the links alone cannot tell
    code, output = run("verify", "--file", str(forked), "--checkpoint", str(checkpoints))
    assert code == 1
    assert "the chain forked: sequence 19 has hash" in output
    assert "the signed history after sequence 9 is missing (the first missing sequence is 10 or later" in output


def test_an_edited_or_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    keys, other = generate_keypair(tmp_path / "auditor"), generate_keypair(tmp_path / "other")
    exported, checkpoints = tmp_path / "chain.jsonl", tmp_path / "chain.checkpoints"
    write_jsonl(exported, chain(5))
    assert run("checkpoint", str(checkpoints), "--file", str(exported), "--sign-key", str(keys.private))[0] == 0
    code, output = run(
        "verify", "--file", str(exported), "--checkpoint", str(checkpoints), "--public-key", str(other.public)
    )
    assert code == 1
    assert "not the trusted" in output
    edited = json.loads(checkpoints.read_text())
    edited["sequence"] = 2  # claim an earlier head, to hide a later cut
    checkpoints.write_text(json.dumps(edited) + "\n")
    code, output = run("verify", "--file", str(exported), "--checkpoint", str(checkpoints))
    assert code == 1
    assert "its signature does not verify: the checkpoint was edited" in output


def test_the_writer_signs_its_committed_head_at_an_interval_and_on_shutdown(tmp_path: Path) -> None:
    from streams.agents.audit import AuditAgent  # noqa: PLC0415
    from streams.agents.audit_checkpoint import read_checkpoints, verify_checkpoints  # noqa: PLC0415
    from streams.catalog import load_catalog  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415

    (tmp_path / "topics.yaml").write_text(
        "version: 1\ndefaults: {partitions: 1, replication_factor: 1}\n"
        "topics:\n  shop.order: {owner: t, audit: true, legal_retention: 7d, archive: true}\n"
        "  shop.trail: {owner: t, dlq: false}\n"
    )
    keys = generate_keypair(tmp_path / "writer")
    settings = Settings(
        data_dir=tmp_path / ".streams", audit_checkpoint_key=keys.private, audit_checkpoint_interval_s=3600
    )
    agent = AuditAgent(settings, load_catalog(tmp_path / "topics.yaml").topic("shop.trail"), ("shop.order",))
    full = chain(12)
    agent._head = (4, full[4].entry_hash)  # what handle() leaves for the open transaction
    agent.aborted()  # an aborted transaction's head is never signed
    agent.committed()
    assert not (tmp_path / ".streams" / "audit.checkpoints").exists()
    agent._head = (4, full[4].entry_hash)
    agent.committed()  # the first commit signs at once
    agent._head = (9, full[9].entry_hash)
    agent.committed()  # within the interval: not yet
    agent.close()  # shutdown: the last committed head
    checkpoints = read_checkpoints(tmp_path / ".streams" / "audit.checkpoints")
    assert [c["sequence"] for c in checkpoints] == [4, 9]
    assert verify_checkpoints(full[:10], checkpoints) == []
    assert verify_checkpoints(full[:8], checkpoints)[0].endswith("the first missing sequence is 8")
