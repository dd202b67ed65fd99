"""`streams audit ...`: verify the audit hash chain, export it as JSONL, run the chain writer on its own.

Verify exits 0 when the chain is intact and 1 when it is broken, naming the first broken link.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from streams.agents import DEFAULT_APP_ID
from streams.agents.audit_chain import ChainDecoder, ChainEntry, UnreadableEntry, read_chain, read_jsonl, write_jsonl
from streams.agents.audit_verify import verify_entries
from streams.catalog import load_catalog
from streams.cli_options import CATALOG, OUTPUT_TEXT
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from types import FrameType

    from streams.agents.audit_verify import VerifyReport

__all__ = ["audit"]

CHAIN_TOPIC = click.option(
    "--chain-topic",
    default="audit.trail",
    show_default=True,
    metavar="TOPIC",
    help="The chain's topic.",
)


@click.group(name="audit")
def audit() -> None:
    """The tamper-evident audit trail: verify the hash chain, export it, run its writer.

    \b
    Example:
      streams audit verify --check-sources && streams audit export chain.jsonl
    """


@audit.command()
@CHAIN_TOPIC
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Verify an exported JSONL file instead of the topic.",
)
@click.option(
    "--check-sources",
    is_flag=True,
    help="Also re-read every audited source record: payload SHA-256, missing and unknown records.",
)
@click.option(
    "--checkpoint",
    "checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signed checkpoints (`streams audit checkpoint`, or an earlier `audit export` carrying them): a cut "
    "tail, rollback or fork is a failure.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The key the checkpoints (the file's and those the chain carries) must be signed with (else the key each "
    "one embeds).",
)
@OUTPUT_TEXT
@click.pass_obj
def verify(
    obj: object,
    chain_topic: str,
    file_: Path | None,
    check_sources: bool,
    checkpoint: Path | None,
    public_key: Path | None,
    output: str,
) -> None:
    """Check every link of the chain; exit 1 and name the first broken one when it is not intact.

    Each entry must recompute to its entry_hash, carry the next sequence (from 0) and hold the previous
    entry's hash. A break is reported as modified, deleted, inserted, reordered, duplicated or unreadable,
    with its position and sequence. Source records chained twice are reported too.

    \b
    Examples:
      streams audit verify
      streams audit verify --file chain.jsonl --output json | jq .first_break
    """
    settings = obj if isinstance(obj, Settings) else Settings()
    if file_ is not None:
        entries, origin = read_jsonl(file_), str(file_)
    else:
        entries, origin = _read_topic(settings, chain_topic), f"topic {chain_topic}"
    kafka = settings.kafka_config(settings.bootstrap_servers()) if check_sources else None
    location = settings.archive_location()[0]  # where sources retention removed from Kafka are read
    archive = location if "://" in location or Path(location).is_dir() else None
    report = verify_entries(entries, origin, kafka, archive)
    from streams.agents.audit_checkpoint import read_checkpoints, verify_checkpoints, verify_embedded  # noqa: PLC0415
    from streams.replay.signing import load_public_key  # noqa: PLC0415

    trusted = load_public_key(public_key) if public_key is not None else None
    checkpoint_problems: list[str] = []
    if checkpoint is not None:
        checkpoint_problems = verify_checkpoints(entries, read_checkpoints(checkpoint), trusted)
    # The checkpoints the chain carries (the writer's, at its interval): checked whenever there are any.
    carried, carried_problems = verify_embedded(entries, trusted)
    ok = report.ok and not checkpoint_problems and not carried_problems
    if output == "json":
        document = report.to_json()
        if checkpoint is not None:
            document["checkpoints"] = {"file": str(checkpoint), "problems": checkpoint_problems}
        if carried or carried_problems:
            document["carried_checkpoints"] = {"count": carried, "problems": carried_problems}
        document["ok"] = ok
        click.echo(json.dumps(document, indent=2))
    else:
        _show(report)
        if checkpoint is not None:
            for problem in checkpoint_problems:
                click.echo(f"checkpoints: BROKEN: {problem}")
            if not checkpoint_problems:
                click.echo(f"checkpoints: every signed head in {checkpoint} is in the chain")
        for problem in carried_problems:
            click.echo(f"checkpoints in the chain: BROKEN: {problem}")
        if carried and not carried_problems:
            click.echo(f"checkpoints in the chain: {carried} signed heads, each agrees with the chain")
    sys.exit(0 if ok else 1)


@audit.command()
@click.argument("checkpoints", type=click.Path(dir_okay=False, path_type=Path))
@CHAIN_TOPIC
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint an exported JSONL chain instead of the topic.",
)
@click.option(
    "--sign-key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 private key (PEM), as `streams evidence keygen` makes.",
)
@click.pass_obj
def checkpoint(obj: object, checkpoints: Path, chain_topic: str, file_: Path | None, sign_key: Path) -> None:
    """Append a signed checkpoint of the chain's head (sequence, entry hash, time) to CHECKPOINTS.

    Keep the file away from the cluster: `streams audit verify --checkpoint CHECKPOINTS` then fails on a chain
    whose tail was cut, that was rolled back, or that was forked, naming the first missing sequence.

    \b
    Example:
      streams audit checkpoint /secure/chain.checkpoints --sign-key auditor.key
    """
    from streams.agents.audit_checkpoint import append_checkpoint, make_checkpoint  # noqa: PLC0415
    from streams.replay.signing import load_private_key  # noqa: PLC0415

    settings = obj if isinstance(obj, Settings) else Settings()
    entries = read_jsonl(file_) if file_ is not None else _read_topic(settings, chain_topic)
    signed = make_checkpoint(entries, str(file_) if file_ is not None else chain_topic, load_private_key(sign_key))
    append_checkpoint(checkpoints, signed)
    click.echo(f"checkpoint of sequence {signed['sequence']} ({signed['entry_hash'][:16]}…) appended to {checkpoints}")


@audit.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@CHAIN_TOPIC
@click.pass_obj
def export(obj: object, file: Path, chain_topic: str) -> None:
    """Write the committed chain to FILE as JSON lines, one entry per line in chain order.

    Each line is the entry's canonical JSON plus entry_hash: an auditor can recompute every hash with
    any SHA-256 tool, and `streams audit verify --file FILE` checks a copy offline.

    \b
    Example:
      streams audit export /tmp/chain.jsonl && streams audit verify --file /tmp/chain.jsonl
    """
    settings = obj if isinstance(obj, Settings) else Settings()
    entries = _read_topic(settings, chain_topic)
    count = write_jsonl(file, entries)
    readable = [e for e in entries if isinstance(e, ChainEntry)]
    span = f"sequences {readable[0].sequence}..{readable[-1].sequence}" if readable else "no entries"
    click.echo(f"exported {count} entries ({span}) of {chain_topic} to {file}")


@audit.command()
@CHAIN_TOPIC
@click.option(
    "--app-id",
    default=DEFAULT_APP_ID,
    show_default=True,
    help="The workers' --app-id: the writer's names below start with it (the principal's ACL prefix), "
    "so this writer and the workers' fence each other.",
)
@click.option(
    "--group-id", default=None, help="Consumer group that elects the single writer [default: <app id>-audit-leader]."
)
@click.option(
    "--transactional-id",
    default=None,
    help="Fixed transactional.id: a new writer fences the previous one [default: <app id>-audit-chain].",
)
@click.option(
    "--leader-topic",
    default=None,
    help="1-partition topic whose owner in the group writes (created when missing) [default: <app id>-audit-leader].",
)
@click.option(
    "--batch-size",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Entries per transaction, at most.",
)
@CATALOG
@click.pass_obj
def run(
    obj: object,
    chain_topic: str,
    app_id: str,
    group_id: str | None,
    transactional_id: str | None,
    leader_topic: str | None,
    batch_size: int,
    catalog_path: Path | None,
) -> None:
    """Run the audit chain writer alone until SIGTERM or Ctrl-C (`streams worker` also runs it).

    Start several for failover: the group elects one writer; the others wait and take over.

    \b
    Example:
      streams audit run --chain-topic audit.trail
    """
    from streams.agents.audit import AuditChainWriter  # noqa: PLC0415 - keep `streams --help` fast
    from streams.observability import configure_logging  # noqa: PLC0415

    settings = obj if isinstance(obj, Settings) else Settings()
    configure_logging()
    catalog = load_catalog(catalog_path or settings.catalog_path, settings.profile)
    writer = AuditChainWriter(
        settings,
        catalog,
        chain_topic=chain_topic,
        app_id=app_id,
        group_id=group_id,
        transactional_id=transactional_id,
        leader_topic=leader_topic,
        batch_size=batch_size,
    )
    stop = threading.Event()

    def request_stop(_signal: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    writer.run(stop)


def _read_topic(settings: Settings, chain_topic: str) -> list[ChainEntry | UnreadableEntry]:
    kafka = settings.kafka_config(settings.bootstrap_servers())
    console = Console(stderr=True)
    with (
        RegistryClient(settings.registry_url()) as registry,
        Progress(
            SpinnerColumn(),
            TextColumn("reading {task.description}: {task.completed} entries"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress,
    ):
        task = progress.add_task(chain_topic)
        entries: list[ChainEntry | UnreadableEntry] = []
        for _, entry in read_chain(kafka, ChainDecoder(registry), chain_topic):
            entries.append(entry)
            if len(entries) % 1000 == 0:
                progress.update(task, completed=len(entries))
    return entries


def _show(report: VerifyReport) -> None:
    tip = "" if report.tip_hash is None else f", tip sequence {report.tip_sequence} {report.tip_hash[:16]}…"
    click.echo(f"audit chain ({report.origin}): {report.entries} entries{tip}")
    found = report.first_break
    if found is None:
        click.echo("hash chain: intact")
    else:
        where = f"position {found.position}" + ("" if found.sequence is None else f", sequence {found.sequence}")
        click.echo(f"hash chain: BROKEN at {where}: {found.kind} ({found.check} check failed)")
        click.echo(f"  expected: {found.expected}\n  found:    {found.found}\n  {found.detail}")
    if report.sources_checked or report.source_problems:
        counts = ", ".join(f"{kind} {count}" for kind, count in report.counts().items()) or "none"
        click.echo(f"source problems: {counts}" + ("" if report.sources_checked else " (sources not re-read)"))
        for problem in report.source_problems[:20]:
            click.echo(
                f"  {problem.kind} {problem.topic}/{problem.partition}/{problem.offset} "
                f"sequences {list(problem.sequences)}: {problem.detail}"
            )
    click.echo("verified: intact" if report.ok else "verified: BROKEN")
