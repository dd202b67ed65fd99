"""Signed checkpoints of the audit chain, on exported chains (no cluster): a cut tail, a rollback to an earlier
checkpoint and a forked chain each fail `streams audit verify --checkpoint`, naming the first missing sequence;
the checkpoints the chain carries catch a rewrite from the chain alone, and an earlier export is a reference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from streams.agents.audit_chain import ChainEntry, read_jsonl, write_jsonl
from streams.agents.audit_checkpoint import embedded_line, sign_head
from streams.agents.audit_commands import audit
from streams.replay.signing import generate_keypair, load_private_key, load_public_key

ROOT = Path(__file__).resolve().parents[2]

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


def carrying(entries: list[ChainEntry], at: tuple[int, ...], key_path: Path) -> list[ChainEntry]:
    """`entries` where those at `at` carry a signed checkpoint of themselves, as the writer writes them."""
    key = load_private_key(key_path)
    return [
        dataclasses.replace(e, checkpoint=embedded_line(sign_head("audit.trail", e.sequence, e.entry_hash, key)))
        if e.sequence in at
        else e
        for e in entries
    ]


def test_checkpoints_carried_by_the_chain_verify_and_catch_a_rewrite_from_the_chain_alone(tmp_path: Path) -> None:
    keys, forger = generate_keypair(tmp_path / "auditor"), generate_keypair(tmp_path / "forger")
    full = carrying(chain(30), (9, 19, 29), keys.private)
    exported = tmp_path / "chain.jsonl"
    write_jsonl(exported, full)
    code, output = run("verify", "--file", str(exported), "--public-key", str(keys.public))
    assert code == 0, output
    assert "checkpoints in the chain: 3 signed heads, each agrees with the chain" in output
    assert read_jsonl(exported) == full  # the field survives export and import; entry hashes are unchanged
    assert [e.entry_hash for e in full] == [e.entry_hash for e in chain(30)]

    # Rewritten from sequence 15 on and re-linked, keeping the carried checkpoints: the links alone pass,
    # the checkpoint carried at 19 (signed over the old hash) does not.
    rewritten = chain(30, tenant="other", start=full[:15])
    forged = [dataclasses.replace(e, checkpoint=full[e.sequence].checkpoint) for e in rewritten]
    forked = tmp_path / "forked.jsonl"
    write_jsonl(forked, forged)
    code, output = run("verify", "--file", str(forked), "-o", "json")
    assert code == 1
    document = json.loads(output)
    assert document["ok"] is False
    assert document["first_break"] is None  # the hash chain itself is consistent
    problems = document["carried_checkpoints"]["problems"]
    assert problems[0].startswith("sequence 19 carries a checkpoint of sequence 19 (")
    assert any("the chain forked: sequence 19 has hash" in p for p in problems)

    # The forger re-signs with a key of their own: only the trusted public key tells.
    resigned = tmp_path / "resigned.jsonl"
    write_jsonl(resigned, carrying(rewritten, (9, 19, 29), forger.private))
    assert run("verify", "--file", str(resigned))[0] == 0
    code, output = run("verify", "--file", str(resigned), "--public-key", str(keys.public))
    assert code == 1
    assert "not the trusted" in output

    # A carried checkpoint edited in place (to claim another head) no longer verifies.
    edited = json.loads(full[29].checkpoint or "")
    edited["time"] = "2030-01-01T00:00:00.000Z"
    tampered = tmp_path / "tampered.jsonl"
    write_jsonl(tampered, [*full[:29], dataclasses.replace(full[29], checkpoint=json.dumps(edited))])
    code, output = run("verify", "--file", str(tampered))
    assert code == 1
    assert "checkpoints in the chain: BROKEN: checkpoint of sequence 29" in output
    assert "the checkpoint was edited" in output


def test_an_earlier_export_is_the_reference_a_cut_or_rolled_back_chain_fails_against(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "auditor")
    full = carrying(chain(30), (9, 19, 29), keys.private)
    reference = tmp_path / "kept-by-the-auditor.jsonl"  # an export kept away from the cluster
    write_jsonl(reference, full)
    cut = tmp_path / "cut.jsonl"
    write_jsonl(cut, full[:25])  # the tail cut below the last carried checkpoint
    assert run("verify", "--file", str(cut))[0] == 0  # what is left is consistent, checkpoints included
    code, output = run("verify", "--file", str(cut), "--checkpoint", str(reference), "--public-key", str(keys.public))
    assert code == 1
    assert "the chain ends at sequence 24, but sequence 29 was checkpointed" in output
    assert "the first missing sequence is 25" in output
    rolled_back = tmp_path / "rolled-back.jsonl"
    write_jsonl(rolled_back, full[:20])
    code, output = run("verify", "--file", str(rolled_back), "--checkpoint", str(reference))
    assert code == 1
    assert "the first missing sequence is 20" in output


class _Record:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "shop.order"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return [("ce_tenantid", b"acme")]

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000 + self._offset


def fake(offsets: range) -> Any:
    """Records as the engine hands them (confluent-kafka Messages), for handle()."""
    return [_Record(offset) for offset in offsets]


class _Out:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, _topic: str, _key: bytes | None, value: bytes, _headers: list[Any]) -> None:
        self.sent.append(value)


def test_the_writer_puts_a_signed_checkpoint_in_the_transaction_of_the_entries_it_covers(tmp_path: Path) -> None:
    from streams.agents.audit import AuditAgent  # noqa: PLC0415
    from streams.agents.audit_checkpoint import verify_embedded  # noqa: PLC0415
    from streams.catalog import load_catalog  # noqa: PLC0415
    from streams.runtime.state import PartitionState  # noqa: PLC0415
    from streams.schemas.codec import AvroCodec  # noqa: PLC0415
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
    codec = agent._codec = AvroCodec((ROOT / "schemas" / "audit.trail.avsc").read_text(), 1)
    state, out = PartitionState(), _Out()
    agent.handle(fake(range(5)), state, out)  # type: ignore[arg-type]
    agent.aborted()  # the transaction failed: its retry carries the checkpoint again
    state, out = PartitionState(), _Out()
    agent.handle(fake(range(5)), state, out)  # type: ignore[arg-type]
    agent.committed()
    agent.handle(fake(range(5, 9)), state, out)  # type: ignore[arg-type]  # within the interval
    entries = [ChainEntry.from_json(codec.decode(value)) for value in out.sent]
    assert [e.sequence for e in entries if e.checkpoint is not None] == [4]  # the first batch's last entry
    assert verify_embedded(entries, load_public_key(keys.public)) == (1, [])
    assert [e.entry_hash for e in entries] == [e.sealed().entry_hash for e in entries]  # outside the hash
