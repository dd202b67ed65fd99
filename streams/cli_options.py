"""The command-line options several commands share, defined once (click decorators).

The catalog and its profile, the output format, and where a long-running process serves /metrics.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["CATALOG", "METRICS_HOST", "METRICS_PORT", "OUTPUT_TABLE", "OUTPUT_TEXT", "PROFILE"]

CATALOG = click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The catalog file (default: STREAMS_CATALOG_PATH or ./topics.yaml).",
)
PROFILE = click.option(
    "--profile", default=None, help="Environment profile of the catalog (default: STREAMS_PROFILE or local)."
)
OUTPUT_TABLE = click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Human table, or JSON for scripts.",
)
OUTPUT_TEXT = click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts.",
)
METRICS_PORT = click.option(
    "--metrics-port", default=None, type=click.IntRange(0, 65535), help="Serve /metrics on this port."
)
METRICS_HOST = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Interface of /metrics (0.0.0.0 in a container, so Prometheus can scrape it).",
)
