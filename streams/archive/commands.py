"""`streams archive ...`: run the archiver, verify the archive, query it.

Verify exits 0 when every segment matches its manifest and the offsets run on without a gap, else 1
naming each problem.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from streams.errors import StreamsError

if TYPE_CHECKING:
    from streams.archive.store import ArchiveStore
    from streams.settings import Settings

__all__ = ["archive"]

TOPICS = click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="TOPIC",
    help="Only this archived topic (repeatable); default: every `archive: true` topic.",
)


@click.group(name="archive")
def archive() -> None:
    """The legal archive: copy archived topics into sealed segments, verify them, query them.

    \b
    Example:
      streams archive run
      streams archive verify
      streams archive query invoice.created --tenant acme --from 2026-01-01T00:00:00Z
    """


def _store(settings: Settings) -> ArchiveStore:
    from streams.archive.store import open_store  # noqa: PLC0415 - `--help` stays light

    location, options = settings.archive_location()
    return open_store(location, options)


@archive.command()
@TOPICS
@click.option(
    "--commit-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds per transaction; each seals one segment per partition that had records.",
)
@click.option("--web-port", default=6068, show_default=True, help="Port of /metrics and /health.")
@click.option("--web-host", default="127.0.0.1", show_default=True, help="Interface of the web server.")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_obj
def run(
    settings: Settings, topics: tuple[str, ...], commit_interval: float, web_port: int, web_host: str, log_level: str
) -> None:
    """Copy every record of the archived topics into the archive until SIGTERM (exactly once).

    The archive is STREAMS_ARCHIVE_URL (a directory or s3://bucket/prefix; default .streams/archive).
    `streams worker --agents archive` hosts the same agent.
    """
    from streams.archive.agent import archive_app  # noqa: PLC0415
    from streams.catalog import load_catalog  # noqa: PLC0415
    from streams.observability import configure_logging  # noqa: PLC0415
    from streams.worker import Worker  # noqa: PLC0415

    configure_logging(log_level)
    settings.bootstrap_servers()
    catalog = load_catalog(settings.catalog_path, settings.profile)
    app = archive_app(settings, catalog, topics=topics, commit_interval=commit_interval)
    Worker(settings, catalog, [app], web_host=web_host, web_port=web_port).run()


@archive.command()
@TOPICS
@click.option("--manifests-only", is_flag=True, help="Check manifests and offsets, not the segment files' bytes.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def verify(settings: Settings, topics: tuple[str, ...], manifests_only: bool, output: str) -> None:
    """Check every segment against its manifest and the offsets' continuity; exit 1 naming each problem.

    Each record must match its SHA-256 in the manifest, each manifest its Merkle root and the manifest of the
    segment before it, and each segment must start where the previous one ended.
    """
    from streams.archive.agent import archived_topics  # noqa: PLC0415
    from streams.archive.verify import verify_archive  # noqa: PLC0415
    from streams.catalog import load_catalog  # noqa: PLC0415

    catalog = load_catalog(settings.catalog_path, settings.profile)
    store = _store(settings)
    report = verify_archive(store, archived_topics(catalog, topics), records=not manifests_only)
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "archive": store.url,
                    "ok": report.ok,
                    "segments": report.segments,
                    "records": report.records,
                    "covered": [
                        {"topic": t, "partition": p, "from_offset": a, "next_offset": b}
                        for (t, p), (a, b) in sorted(report.covered.items())
                    ],
                    "problems": report.problems,
                },
                indent=2,
            )
        )
    else:
        for (topic, partition), (first, after) in sorted(report.covered.items()):
            click.echo(f"{topic} partition {partition}: offsets {first}-{after - 1}")
        for problem in report.problems:
            click.echo(f"BROKEN {problem}", err=True)
        state = "intact" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"archive {store.url}: {report.segments} segments, {report.records} records: {state}")
    if not report.ok:
        sys.exit(1)


@archive.command()
@click.argument("topic")
@click.option("--tenant", help="Only records whose ce_tenantid header is this.")
@click.option("--key", help="Only records whose key is exactly this (UTF-8).")
@click.option("--type", "type_", help="Only records whose ce_type header is this.")
@click.option("--from", "from_", metavar="TIME", help="Records at or after this time (ISO 8601).")
@click.option("--to", "to", metavar="TIME", help="Records before this time (ISO 8601).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.pass_obj
def query(
    settings: Settings,
    topic: str,
    tenant: str | None,
    key: str | None,
    type_: str | None,
    from_: str | None,
    to: str | None,
    limit: int,
) -> None:
    """Print archived records of TOPIC as JSON lines, by tenant, key, time and event type (no cluster needed).

    The archive's segments are read by the archive reader and filtered as pyarrow datasets (the `archive` extra).
    """
    from streams.archive.query import query_archive  # noqa: PLC0415
    from streams.archive.read import open_view  # noqa: PLC0415
    from streams.replay.selection import parse_bound  # noqa: PLC0415

    start, end = (parse_bound(text, option) for text, option in ((from_, "--from"), (to, "--to")))
    if isinstance(start, dict) or isinstance(end, dict):
        raise StreamsError("--from and --to take times here (the archive is queried by time, not offsets)")
    view = open_view(settings.archive_location()[0], topic)
    if view is None:
        raise StreamsError(f"the archive at {settings.archive_location()[0]} has nothing of '{topic}'")
    for record in query_archive(view, tenant=tenant, key=key, event_type=type_, start=start, end=end, limit=limit):
        click.echo(json.dumps(_row(record)))


def _row(record: Any) -> dict[str, Any]:
    key = record.key()
    return {
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "timestamp": record.timestamp()[1],
        "key": None if key is None else key.decode("utf-8", "replace"),
        "headers": {
            name: None if value is None else bytes(value).decode("utf-8", "replace")
            for name, value in record.headers() or ()
        },
        "value_bytes": None if record.value() is None else len(record.value()),
    }
