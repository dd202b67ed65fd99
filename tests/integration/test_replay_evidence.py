"""Evidence bundles from the real broker: signed export, verify, each tampering named, kill -9 and resume.

Bad input here (unwritable directory, wrong key) fails before a partial bundle could look complete.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, reader, writer

from streams.replay.evidence import partial_dir
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.test_replay import T0, ReplayWorld, replay_world_fixture  # noqa: F401
from tests.integration.test_replay_targets import launch


def records_file(bundle: Path) -> Path:
    manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    names: list[str] = [f["name"] for f in manifest["records"]["files"]]
    assert len(names) == 1, names
    return bundle / names[0]


@dataclass(frozen=True)
class Signed:
    """A bundle of 30 events exported with --sign-key, and the key files."""

    world: ReplayWorld
    bundle: Path
    keys: Path

    def copy(self, name: str) -> Path:
        copied = self.world.tmp / name
        shutil.copytree(self.bundle, copied)
        return copied


@pytest.fixture
def signed(replay_world: ReplayWorld) -> Signed:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(30)])
    keys = world.tmp / "keys"
    keys.mkdir()
    made = world.ok("evidence", "keygen", str(keys / "auditor")).output
    assert "auditor.key (keep it secret)" in made
    world.ok("evidence", "keygen", str(keys / "stranger"))
    bundle = world.tmp / "bundle"
    exported = world.ok(
        "replay", world.topic, "--tenant", "acme", "--export", str(bundle), "--sign-key", str(keys / "auditor.key")
    ).output
    assert "exported 30 record(s) (of 30 read)" in exported
    return Signed(world, bundle, keys)


def test_a_signed_bundle_verifies_against_the_signers_key(signed: Signed) -> None:
    world, bundle = signed.world, signed.bundle
    assert not partial_dir(bundle).exists()
    verified = world.ok("evidence", "verify", str(bundle), "--public-key", str(signed.keys / "auditor.pub")).output
    assert verified.startswith(f"OK {bundle}: 30 record(s), Merkle root ")
    assert "signed by the trusted key sha256:" in verified
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["query"]["tenant"] == "acme"
    assert manifest["plan"]["ranges_arg"] == "0:0-10,1:0-10,2:0-10"
    assert manifest["counts"]["records"] == 30
    assert manifest["run_by"].count("@") == 1
    assert list(manifest["schemas"]) == [records_file(bundle).stem.removeprefix("records-")]
    wrong = world.cli("evidence", "verify", str(bundle), "--public-key", str(signed.keys / "stranger.pub")).output
    assert wrong.count("error: ") == 1
    assert "wrong signature key: the bundle was signed by key sha256:" in wrong


def test_an_edited_record_fails_verification(signed: Signed) -> None:
    edited = signed.copy("edited")
    data = records_file(edited).read_bytes()
    assert data.count(b"INV-00000005") == 1
    records_file(edited).write_bytes(data.replace(b"INV-00000005", b"INV-00000555"))
    message = signed.world.fails("evidence", "verify", str(edited), "--public-key", str(signed.keys / "auditor.pub"))
    assert "FAILED verification" in message
    failed = signed.world.cli("evidence", "verify", str(edited)).output
    assert "partition 2 offset 1: the record does not match its SHA-256 in records.sha256 (an edited record)" in failed


def test_a_dropped_record_fails_verification(signed: Signed) -> None:
    dropped = signed.copy("dropped")
    with records_file(dropped).open("rb") as stream:
        container = reader(stream)
        schema = container.writer_schema
        kept = [r for r in container if isinstance(r, dict) and (r["partition"], r["offset"]) != (1, 3)]
    rewritten = io.BytesIO()
    writer(rewritten, parse_schema(schema), kept)
    records_file(dropped).write_bytes(rewritten.getvalue())
    failed = signed.world.cli("evidence", "verify", str(dropped), "--output", "json")
    assert failed.exit_code == 1
    report = json.loads(failed.output[: failed.output.rindex("}") + 1])
    assert report["ok"] is False
    assert (
        "partition 1 offset 3: listed in records.sha256 but missing from the records (a dropped record)"
        in report["problems"]
    )


def test_an_edited_manifest_fails_verification(signed: Signed) -> None:
    edited = signed.copy("manifest-edited")
    text = (edited / "manifest.json").read_text()
    (edited / "manifest.json").write_text(text.replace('"records": 30', '"records": 29', 1))
    message = signed.world.fails("evidence", "verify", str(edited), "--public-key", str(signed.keys / "auditor.pub"))
    assert "FAILED" in message
    assert "manifest.json was edited after signing" in signed.world.cli("evidence", "verify", str(edited)).output


def test_export_bad_input_leaves_nothing_that_looks_complete(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(0, T0, 0)])
    keys = world.tmp / "keys"
    world.ok("evidence", "keygen", str(keys))
    blocker = world.tmp / "a-file"
    blocker.write_text("not a directory")
    message = world.fails("replay", world.topic, "--export", str(blocker / "bundle"))
    assert "cannot write the evidence bundle at" in message
    assert "choose a writable --export directory" in message

    target = world.tmp / "bundle"
    wrong_key = world.fails("replay", world.topic, "--export", str(target), "--sign-key", str(world.tmp / "keys.pub"))
    assert "it is a public key; sign with the .key file" in wrong_key
    assert "unknown topic" in world.fails("replay", "t.missing.u1", "--export", str(target))
    assert not target.exists()
    assert not partial_dir(target).exists()

    world.ok("replay", world.topic, "--export", str(target))
    again = world.fails("replay", world.topic, "--export", str(target))
    assert "already exists; a finished bundle is never overwritten" in again
    not_a_bundle = world.fails("evidence", "verify", str(world.tmp))
    assert "is not an evidence bundle: it has no manifest.json" in not_a_bundle


def test_an_export_killed_mid_way_resumes_to_the_same_bundle(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(450)])
    reference = world.tmp / "reference"
    world.ok("replay", world.topic, "--export", str(reference))

    bundle = world.tmp / "bundle"
    checkpoint = partial_dir(bundle) / "checkpoint.json"
    process = launch(world, "replay", world.topic, "--export", str(bundle), "--rate", "75")
    deadline = time.monotonic() + 60
    while not (checkpoint.exists() and json.loads(checkpoint.read_text())["progress"]["matched"] > 0):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the export wrote no checkpoint"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()
    progress = json.loads(checkpoint.read_text())["progress"]
    assert 0 < progress["matched"] < 450
    assert not bundle.exists()
    assert not (partial_dir(bundle) / "manifest.json").exists()
    assert "an interrupted export is still in" in world.fails("evidence", "verify", str(bundle))

    replay_id = json.loads(checkpoint.read_text())["replay_id"]
    resumed = world.ok("replay", world.topic, "--export", str(bundle)).output
    assert f"replay {replay_id} of {world.topic}" in resumed
    assert not partial_dir(bundle).exists()
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (reference, bundle)]
    assert manifests[0]["merkle_root"] == manifests[1]["merkle_root"]
    assert manifests[1]["counts"]["records"] == manifests[1]["counts"]["scanned"] == 450
    assert records_file(bundle).read_bytes() == records_file(reference).read_bytes()
    assert (bundle / "records.sha256").read_bytes() == (reference / "records.sha256").read_bytes()
    world.ok("evidence", "verify", str(bundle))


def test_a_parallel_export_holds_the_same_records_hashes_and_root(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(300)])
    single, parallel = world.tmp / "single", world.tmp / "parallel"
    world.ok("replay", world.topic, "--export", str(single), "--jobs", "1")
    world.ok("replay", world.topic, "--export", str(parallel), "--jobs", "2")

    manifests = [json.loads((d / "manifest.json").read_text()) for d in (single, parallel)]
    assert manifests[0]["merkle_root"] == manifests[1]["merkle_root"]
    assert manifests[0]["counts"] == manifests[1]["counts"]
    assert (single / "records.sha256").read_bytes() == (parallel / "records.sha256").read_bytes()
    files = manifests[1]["records"]["files"]
    schema_id = manifests[0]["records"]["files"][0]["schema_id"]
    assert [f["name"] for f in files] == [f"records-{schema_id}.part0.avro", f"records-{schema_id}.part1.avro"]
    # two parts of consecutive partitions with about equal offsets: partitions 0-1, then 2
    held = []
    for entry in files:
        with (parallel / entry["name"]).open("rb") as stream:
            held.append(sorted({record["partition"] for record in reader(stream) if isinstance(record, dict)}))
    assert held == [[0, 1], [2]]
    assert [f["records"] for f in files] == [200, 100]
    assert world.ok("evidence", "verify", str(parallel)).output.startswith(f"OK {parallel}: 300 record(s)")


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_a_parallel_export_killed_mid_way_resumes_to_the_same_records(replay_world: ReplayWorld) -> None:
    world = replay_world
    world.produce_many([(seq % 3, T0 + seq, seq) for seq in range(450)])
    reference = world.tmp / "reference"
    world.ok("replay", world.topic, "--export", str(reference), "--jobs", "1")

    bundle = world.tmp / "bundle"
    parts = [partial_dir(bundle) / f"part-{index}.partial" / "checkpoint.json" for index in range(2)]
    process = launch(world, "replay", world.topic, "--export", str(bundle), "--jobs", "2", "--rate", "100")
    deadline = time.monotonic() + 60
    while not all(p.exists() and json.loads(p.read_text())["progress"]["matched"] > 0 for p in parts):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the parts wrote no checkpoint"
        time.sleep(0.1)
    workers = child_pids(process.pid)
    process.send_signal(signal.SIGKILL)  # the command dies; its part processes must stop by themselves
    process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, f"part processes {workers} outlived the killed export"
        time.sleep(0.1)
    matched = [json.loads(p.read_text())["progress"]["matched"] for p in parts]
    assert 0 < sum(matched) < 450
    assert not bundle.exists()

    resumed = world.ok("replay", world.topic, "--export", str(bundle)).output
    assert "exported 450 record(s) (of 450 read)" in resumed
    assert not partial_dir(bundle).exists()
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (reference, bundle)]
    assert manifests[0]["merkle_root"] == manifests[1]["merkle_root"]
    assert (bundle / "records.sha256").read_bytes() == (reference / "records.sha256").read_bytes()
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["manifest.json", "records.sha256", *(f["name"] for f in manifests[1]["records"]["files"])]
    )
    world.ok("evidence", "verify", str(bundle))
