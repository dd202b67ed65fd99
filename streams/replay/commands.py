"""`streams replay` (shadow topic, consumer-group re-drive, evidence export) and `streams evidence verify|keygen`.

Text for people (rich progress on stderr), `--output json` for scripts; errors are ReplayError lines.
"""

from __future__ import annotations

import json
import shlex
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.cli_options import OUTPUT_TEXT
from streams.replay.container import CODECS
from streams.replay.errors import ReplayError
from streams.replay.selection import (
    PARALLEL_MIN_OFFSETS,
    ReplayPlan,
    ReplayQuery,
    format_ms,
    parse_bound,
    resolve_plan,
)
from streams.replay.state import check_replay_id, load_state, new_replay_id, save_state

# The readers, writers, targets, signing and the registry client are imported where they are used:
# `streams replay --help` and `streams evidence --help` then load none of Kafka, httpx or cryptography.

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Consumer

    from streams.replay.filters import RecordFilter
    from streams.replay.runner import OnProgress, ReplaySink
    from streams.replay.runner import Progress as RunProgress
    from streams.replay.targets import GroupResetPlan
    from streams.settings import Settings

__all__ = ["evidence", "replay"]


@click.command()
@click.argument("topic")
@click.option(
    "--from",
    "from_",
    metavar="TIME|P:OFFSET,...",
    help="Start (inclusive): an ISO-8601 time with zone, a time relative to now (-1h, now-30m), or"
    " per-partition offsets like 0:100,1:250.",
)
@click.option("--to", "to", metavar="TIME|P:OFFSET,...", help="End (exclusive), same forms as --from.")
@click.option(
    "--ranges",
    metavar="P:START-END,...",
    help="Exact pinned offsets (end exclusive), as printed by a previous replay; repeats it exactly.",
)
@click.option(
    "--partition", "partitions", type=click.IntRange(0), multiple=True, help="Only this partition (repeatable)."
)
@click.option("--key", help="Only records whose key is exactly this (UTF-8).")
@click.option("--tenant", help="Only records whose ce_tenantid header is exactly this.")
@click.option("--type", "type_", help="Only records whose ce_type header is exactly this.")
@click.option(
    "--where",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only records whose decoded payload has FIELD (a dotted path) equal to VALUE (repeatable; all must hold).",
)
@click.option(
    "--to-topic",
    "to_topic",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Copy into NAME (default: the shadow topic <topic>.replay.<id>).",
)
@click.option("--group", help="A stopped consumer group to move back to the range start (with --reset).")
@click.option("--reset", is_flag=True, help="Move --group's committed offsets (required, to make it explicit).")
@click.option(
    "--export",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write an evidence bundle into this new directory.",
)
@click.option(
    "--format",
    "bundle_format",
    type=click.Choice(["avro", "jsonl"]),
    default="avro",
    show_default=True,
    help="Records of the bundle: an Avro container file, or JSON lines.",
)
@click.option(
    "--codec", type=click.Choice(CODECS), default="null", show_default=True, help="Avro container block compression."
)
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Ed25519 private key (PEM) to sign the manifest with (see `streams evidence keygen`).",
)
@click.option("--id", "replay_id", help="Replay id; re-running with the id of an interrupted replay continues it.")
@click.option("--rate", type=click.FloatRange(min=1), help="At most this many records per second.")
@click.option(
    "--jobs",
    type=click.IntRange(1),
    help="Processes an --export runs in, each taking whole partitions "
    f"[default: one per CPU from {PARALLEL_MIN_OFFSETS:,} offsets in range, else 1; JSONL: 1].",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the pinned ranges and counts (and a group reset plan); change nothing."
)
@OUTPUT_TEXT
@click.pass_obj
def replay(
    settings: Settings,
    topic: str,
    from_: str | None,
    to: str | None,
    ranges: str | None,
    partitions: tuple[int, ...],
    key: str | None,
    tenant: str | None,
    type_: str | None,
    where: tuple[str, ...],
    to_topic: str | None,
    group: str | None,
    reset: bool,
    export: Path | None,
    bundle_format: str,
    codec: str,
    sign_key: Path | None,
    replay_id: str | None,
    rate: float | None,
    jobs: int | None,
    dry_run: bool,
    output: str,
) -> None:
    """Replay TOPIC's records in a time or offset range into a shadow topic, a consumer group or a bundle.

    The range is [--from, --to): a record at exactly --from is in it, one at exactly --to is not. Times
    resolve to offsets with offsets_for_times; the pinned offsets are printed (and recorded in the bundle)
    so `--ranges` repeats the replay exactly.

    \b
    Examples:
      streams replay invoice.created --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z --dry-run
      streams replay invoice.created --tenant acme --to-topic
      streams replay invoice.created --group audit-agent --reset --from 2026-11-01T00:00:00Z --dry-run
      streams replay invoice.created --where seller.vat_number=300000000000003 \\
          --export evidence/acme-nov --sign-key auditor.key
    """
    from streams.replay.reader import reader_consumer  # noqa: PLC0415 - see the note at the imports
    from streams.replay.signing import load_private_key  # noqa: PLC0415
    from streams.replay.targets import apply_group_reset, plan_group_reset, refuse_active  # noqa: PLC0415

    query = ReplayQuery(topic, from_, to, ranges, partitions, key, tenant, type_, where)
    _check_options(query, to_topic, group, reset, export, bundle_format, codec, sign_key, dry_run, jobs)
    parse_bound(from_, "--from"), parse_bound(to, "--to")  # a malformed time is named before any connection
    replay_id = check_replay_id(replay_id) if replay_id else None
    signer = load_private_key(sign_key) if sign_key is not None else None
    kafka_config = settings.kafka_config(settings.bootstrap_servers())
    settings.check_kafka_login(settings.bootstrap_servers())  # a refused login: one clear error, not retries
    consumer = reader_consumer(kafka_config)
    try:
        plan, replay_id = _plan(consumer, query, settings, replay_id, export, to_topic)
        report: dict[str, Any] = {"replay_id": replay_id, "plan": plan.to_json()}
        if group is not None:
            reset_plan = plan_group_reset(kafka_config, group, plan)
            report["group_reset"] = reset_plan.to_json()
            if not dry_run:
                refuse_active(group, reset_plan.state, reset_plan.members)
                apply_group_reset(kafka_config, reset_plan)
            _emit(output, report, lambda: _print_reset(plan, replay_id, reset_plan, dry_run=dry_run))
            return
        if dry_run:
            _emit(output, report, lambda: _print_plan(plan, replay_id))
            return
        if output == "text":
            _print_plan(plan, replay_id)
        target, result = _copy(
            settings,
            consumer,
            plan,
            replay_id,
            to_topic,
            export,
            (rate, jobs),
            {"output": bundle_format, "codec": codec, "sign_key": signer},
        )
        if sign_key is not None and target["kind"] == "export":
            public = sign_key.with_suffix(".pub")  # keygen writes STEM.key beside STEM.pub
            result["public_key"] = str(public) if public.exists() else None
        report |= {"target": target, "result": result}
        _emit(output, report, lambda: _print_result(target, result))
    finally:
        consumer.close()


def _copy(
    settings: Settings,
    consumer: Consumer,
    plan: ReplayPlan,
    replay_id: str,
    to_topic: str | None,
    export: Path | None,
    pace: tuple[float | None, int | None],
    bundle: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the replay into an evidence bundle or a shadow topic; (target, result). `pace`: (--rate, --jobs)."""
    from streams.replay.evidence import EvidenceWriter, interrupted_export  # noqa: PLC0415
    from streams.replay.filters import PayloadDecoder, RecordFilter  # noqa: PLC0415
    from streams.replay.parallel import PartsJob, export_in_parts, parts_for  # noqa: PLC0415
    from streams.replay.signing import fingerprint  # noqa: PLC0415
    from streams.replay.targets import ShadowTopicSink, shadow_topic_name  # noqa: PLC0415
    from streams.schemas.registry_client import RegistryClient  # noqa: PLC0415

    rate, jobs = pace
    if export is not None:
        interrupted = interrupted_export(export)
        parts = interrupted[3] if interrupted is not None else parts_for(plan, bundle["output"], jobs)
        with RegistryClient(settings.registry_url()) as registry:  # a bundle embeds every writer schema
            decoder = PayloadDecoder(registry)
            target = {"kind": "export", "directory": str(export.resolve()), "format": bundle["output"]}
            writer = EvidenceWriter(export, plan, replay_id, decoder, cluster_id=_cluster_id(consumer), **bundle)
            save_state(settings.data_dir, replay_id, plan, target, "running")
            try:
                if parts > 1:
                    job = PartsJob(
                        settings.kafka_config(settings.bootstrap_servers()),
                        settings.registry_url(),
                        replay_id,
                        bundle["codec"],
                        rate,
                    )
                    progress = _with_progress(
                        plan, replay_id, lambda advance: export_in_parts(writer, job, parts, on_progress=advance)
                    )
                else:
                    progress = _run(consumer, plan, writer, RecordFilter(plan.query, decoder), rate, replay_id)
            except BaseException:
                writer.close()  # the checkpoint in <dir>.partial lets the same command continue
                raise
            manifest = writer.finish(progress)
        signer = bundle["sign_key"]
        result = {
            "directory": str(export),
            "merkle_root": manifest["merkle_root"],
            "records": manifest["counts"]["records"],
            "scanned": manifest["counts"]["scanned"],
            "signed_by": fingerprint(signer.public_key()) if signer else None,
        }
    else:
        name = to_topic or shadow_topic_name(plan.query.topic, replay_id)
        target = {"kind": "topic", "name": name}
        where = RegistryClient(settings.registry_url()) if plan.query.where else None  # --where decodes payloads
        with where if where is not None else nullcontext():
            record_filter = RecordFilter(plan.query, PayloadDecoder(where) if where is not None else None)
            shadow = ShadowTopicSink(settings.kafka_config(settings.bootstrap_servers()), plan, replay_id, name)
            shadow.prepare()
            save_state(settings.data_dir, replay_id, plan, target, "running")
            progress = _run(consumer, plan, shadow, record_filter, rate, replay_id)
        result = {"scanned": progress.scanned, "records": progress.matched}
    save_state(settings.data_dir, replay_id, plan, target, "done", result)
    return target, result


def _check_options(
    query: ReplayQuery,
    to_topic: str | None,
    group: str | None,
    reset: bool,
    export: Path | None,
    bundle_format: str,
    codec: str,
    sign_key: Path | None,
    dry_run: bool,
    jobs: int | None,
) -> None:
    targets = [
        name
        for name, given in (
            ("--to-topic", to_topic is not None),
            ("--group", group is not None),
            ("--export", export is not None),
        )
        if given
    ]
    if len(targets) > 1:
        raise ReplayError(f"choose one target, not {' and '.join(targets)}")
    if not targets and not dry_run:
        raise ReplayError(
            "choose a target: --to-topic [NAME], --group NAME --reset, or --export DIR "
            "(or --dry-run to see the pinned ranges)"
        )
    if group is not None and not reset:
        raise ReplayError(
            f"--group {group}: add --reset to move its committed offsets (or --dry-run with --reset to see the plan)"
        )
    if reset and group is None:
        raise ReplayError("--reset needs --group NAME")
    if group is not None and query.has_filters():
        raise ReplayError(
            "--key, --tenant, --type and --where cannot apply to --group: a consumer group re-reads "
            "every record from the range start"
        )
    if export is None and (sign_key is not None or bundle_format != "avro" or codec != "null" or jobs is not None):
        raise ReplayError("--sign-key, --format, --codec and --jobs apply to --export only")


def _plan(
    consumer: Consumer,
    query: ReplayQuery,
    settings: Settings,
    replay_id: str | None,
    export: Path | None,
    to_topic: str | None,
) -> tuple[ReplayPlan, str]:
    """The pinned plan: an interrupted run's (same query), else resolved against the cluster now."""
    from streams.replay.evidence import interrupted_export  # noqa: PLC0415
    from streams.replay.targets import shadow_topic_name  # noqa: PLC0415

    stored: ReplayPlan | None = None
    stored_id: str | None = None
    if export is not None:
        interrupted = interrupted_export(export)
        if interrupted is not None:
            stored_id, stored, _, _ = interrupted
    elif replay_id is not None and (found := load_state(settings.data_dir, replay_id)) is not None:
        stored, target = found
        stored_id = replay_id
        wanted = to_topic or shadow_topic_name(query.topic, replay_id)
        if target.get("kind") != "topic" or target.get("name") != wanted:
            raise ReplayError(
                f"replay {replay_id} wrote to {target}; re-run it with the same target, or pick a new --id"
            )
    if stored is not None and stored_id is not None:
        if stored.query != query:
            raise ReplayError(
                f"replay {stored_id} was started with a different query "
                f"({json.dumps(stored.query.to_json())}); re-run that query to continue it, or use a "
                "new --id / export directory"
            )
        if replay_id is not None and replay_id != stored_id:
            raise ReplayError(f"{export} holds interrupted replay {stored_id}, not {replay_id}")
        return stored, stored_id
    from streams.archive.read import open_view  # noqa: PLC0415 - offsets Kafka no longer has, if archived

    location = settings.archive_location()[0]
    archive = open_view(location, query.topic) if "://" in location or Path(location).is_dir() else None
    identity = settings.kafka_config(settings.bootstrap_servers())
    return resolve_plan(consumer, query, archive, identity=identity), replay_id or new_replay_id()


def _run(
    consumer: Consumer,
    plan: ReplayPlan,
    sink: ReplaySink,
    record_filter: RecordFilter,
    rate: float | None,
    replay_id: str,
) -> RunProgress:
    """run_replay with a progress bar and ETA on stderr (when it is a terminal)."""
    from streams.replay.runner import run_replay  # noqa: PLC0415

    return _with_progress(
        plan, replay_id, lambda advance: run_replay(consumer, plan, sink, record_filter, rate=rate, on_progress=advance)
    )


def _with_progress(plan: ReplayPlan, replay_id: str, run: Callable[[OnProgress], RunProgress]) -> RunProgress:
    """`run(advance)` with a progress bar and ETA on stderr (when it is a terminal)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=False) as bar:
        task = bar.add_task(plan.query.topic, total=plan.total)
        try:
            return run(lambda n: bar.advance(task, n))
        except KeyboardInterrupt:
            raise ReplayError(
                f"interrupted; run the same command with --id {replay_id} to continue where it stopped"
            ) from None


def _cluster_id(consumer: Consumer) -> str | None:
    cluster: str | None = consumer.list_topics(timeout=10).cluster_id
    return cluster


def _emit(output: str, report: dict[str, Any], text: Any) -> None:
    if output == "json":
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        text()


def _print_plan(plan: ReplayPlan, replay_id: str) -> None:
    query = plan.query
    click.echo(
        f"replay {replay_id} of {query.topic}: {len(plan.ranges)} partition(s), {plan.total} offset(s) in "
        "range (before filters)"
    )
    if plan.from_ms is not None or plan.to_ms is not None:
        start = format_ms(plan.from_ms) if plan.from_ms is not None else "the earliest record"
        end = format_ms(plan.to_ms) if plan.to_ms is not None else "the end"
        click.echo(f"  time range [{start}, {end})  (from inclusive, to exclusive)")
    for pinned in plan.ranges:
        removed = plan.removed_below.get(pinned.partition)
        note = f"  (offsets below {removed} already removed by retention)" if removed else ""
        click.echo(f"  partition {pinned.partition}: offsets {pinned.start}-{pinned.end} ({pinned.size}){note}")
    filters = [
        f"{name} {value}"
        for name, value in (("key", query.key), ("tenant", query.tenant), ("type", query.type_))
        if value is not None
    ]
    filters += [f"where {w}" for w in query.where]
    if filters:
        click.echo("  filters: " + ", ".join(filters))
    click.echo(f"  repeat exactly with: --ranges {plan.ranges_arg() or '(empty)'}")


def _print_reset(plan: ReplayPlan, replay_id: str, reset: GroupResetPlan, *, dry_run: bool) -> None:
    _print_plan(plan, replay_id)
    verb = "would move" if dry_run else "moved"
    click.echo(f"consumer group '{reset.group}' (state {reset.state}, {len(reset.members)} member(s)) {verb}:")
    for move in reset.moves:
        committed = "none" if move.committed is None else str(move.committed)
        click.echo(
            f"  {reset.topic} partition {move.partition}: committed {committed} -> {move.target} "
            f"(re-reads {max(0, move.end - move.target)} record(s))"
        )
    if dry_run:
        click.echo("dry run: nothing changed; run again without --dry-run to move the offsets")


def _print_result(target: dict[str, Any], result: dict[str, Any]) -> None:
    if target["kind"] == "export":
        signed = f", signed by {result['signed_by']}" if result.get("signed_by") else ", unsigned"
        click.echo(
            f"exported {result['records']} record(s) (of {result['scanned']} read) to {result['directory']}"
            f"; Merkle root {result['merkle_root']}{signed}"
        )
        if result.get("signed_by"):
            # Without --public-key, verify accepts a bundle re-signed by anyone; the hint names the key.
            known = result.get("public_key")
            public = shlex.quote(known) if known else f"<the .pub of {result['signed_by']}>"
            click.echo(f"verify with: streams evidence verify {shlex.quote(result['directory'])} --public-key {public}")
        else:
            click.echo(
                f"verify with: streams evidence verify {shlex.quote(result['directory'])}"
                " (unsigned: sign with --sign-key for a bundle no one can alter unnoticed)"
            )
    else:
        click.echo(f"copied {result['records']} record(s) (of {result['scanned']} read) to {target['name']}")


@click.group()
def evidence() -> None:
    """Evidence bundles: verify one, or make the Ed25519 key pair that signs them.

    \b
    Example:
      streams evidence keygen auditor && streams evidence verify evidence/acme-nov --public-key auditor.pub
    """


@evidence.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The signer's Ed25519 public key (PEM); without it a signature proves integrity, not who.",
)
@OUTPUT_TEXT
def verify(directory: Path, public_key: Path | None, output: str) -> None:
    """Recompute every record hash, the Merkle root and the signature of the bundle in DIRECTORY.

    Exits 1 and names each problem: an edited, dropped or added record, an edited manifest or hash list,
    a signature by another key.

    \b
    Example:
      streams evidence verify evidence/acme-nov --public-key auditor.pub
    """
    from streams.replay.signing import load_public_key  # noqa: PLC0415
    from streams.replay.verify import verify_bundle  # noqa: PLC0415

    trusted = load_public_key(public_key) if public_key is not None else None
    report = verify_bundle(directory, trusted)
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    elif report.ok:
        if report.signed_by is None:
            signer = "unsigned"
        elif report.signer_trusted:
            signer = f"signed by the trusted key {report.signed_by}"
        else:
            signer = f"signed by {report.signed_by} (not checked against a trusted key: pass --public-key)"
        click.echo(f"OK {directory}: {report.records} record(s), Merkle root {report.merkle_root}, {signer}")
    report.raise_if_failed()


@evidence.command()
@click.argument("stem", type=click.Path(path_type=Path, dir_okay=False))
def keygen(stem: Path) -> None:
    """Write an Ed25519 key pair: STEM.key (private, mode 0600) and STEM.pub.

    \b
    Example:
      streams evidence keygen keys/auditor
    """
    from streams.replay.signing import generate_keypair  # noqa: PLC0415

    pair = generate_keypair(stem)
    click.echo(f"wrote {pair.private} (keep it secret) and {pair.public}; key {pair.fingerprint}")
