"""`streams registry serve` and `python -m streams.registry`: one set of options, one way to start.

Both run the server in the foreground until SIGINT/SIGTERM and print the URL once it answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streams.errors import StreamsError
from streams.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_EXAMPLE = """\b
Example:
  streams registry serve --bootstrap-servers 127.0.0.1:9092 --port 8081 --catalog topics.yaml
"""


def _serve_options(command: F) -> F:
    options = [
        click.option("--bootstrap-servers", default=None, help="Kafka bootstrap servers (default: settings)."),
        click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on."),
        click.option("--port", default=8081, show_default=True, type=int, help="Port; 0 picks a free one."),
        click.option(
            "--catalog",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="topics.yaml; subjects of `audit: true` topics can then never be hard-deleted.",
        ),
        click.option("--profile", default=None, help="Catalog profile [default: STREAMS_PROFILE, else local]."),
        click.option("--topic", default="_schemas", show_default=True, help="The schemas topic."),
        click.option(
            "--compatibility",
            "default_compatibility",
            default="BACKWARD_TRANSITIVE",
            show_default=True,
            help="Global compatibility level until one is set with PUT /config.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def serve_registry(settings: Settings, bootstrap_servers: str | None, **options: Any) -> None:
    """Run the registry in the foreground with `settings`' Kafka security options."""
    from streams.registry.server import RegistryOptions, run_registry  # noqa: PLC0415 - keeps CLI start fast

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bootstrap_servers:
        settings.check_kafka_reachable(
            bootstrap_servers,
            origin="--bootstrap-servers",
            fix="check the option (host:port of a broker, comma-separated)",
        )
    bootstrap = bootstrap_servers or settings.bootstrap_servers()
    settings.check_kafka_login(bootstrap)  # a refused password is one clear error, not a metadata time-out
    options["profile"] = options.get("profile") or settings.profile
    config = RegistryOptions(kafka_config=settings.kafka_config(bootstrap), **options)

    def ready(url: str) -> None:
        click.echo(f"registry listening on {url}")
        logging.getLogger("streams.registry").info("registry listening on %s (topic %s)", url, config.topic)

    asyncio.run(run_registry(config, ready))


@click.group(name="registry")
def registry() -> None:
    """Run the Confluent-compatible schema registry backed by the `_schemas` topic.

    \b
    Example:
      streams registry serve --port 8081
    """


@registry.command(name="serve", epilog=_EXAMPLE)
@_serve_options
@click.pass_context
def serve(ctx: click.Context, /, bootstrap_servers: str | None, **options: Any) -> None:
    """Serve the registry's REST API (Confluent paths and error codes) until interrupted."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    serve_registry(settings, bootstrap_servers, **options)


@click.command(name="registry", epilog=_EXAMPLE)
@_serve_options
def standalone(bootstrap_servers: str | None, **options: Any) -> None:
    """Serve the schema registry (what `python -m streams.registry` runs)."""
    try:
        serve_registry(Settings(), bootstrap_servers, **options)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
