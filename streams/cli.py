"""The `streams` command line: one click group, a sub-group per concern, each imported on first use.

Errors the package raises on purpose become one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

import click

from streams.errors import StreamsError

# confluent-kafka's schema registry client imports authlib's httpx integration, which warns on import that
# it is deprecated; a user can do nothing about it, so it is not printed on every command.
warnings.filterwarnings("ignore", message=r"The httpx module is deprecated")

# name: (module, attribute, the one-line summary `streams --help` lists). Listing the summaries here lets
# `streams --help` answer without importing every command's module and its libraries (Kafka, faust,
# rich, ...); tests/test_cli_help.py checks each against the first line of the command's own help.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "dev": ("streams.local.commands", "dev",
            "Run the local stack: Apache Kafka (KRaft), the schema registry and Redis on loopback."),
    "topics": ("streams.admin_cli", "topics", "Topics as code: lint, plan and apply topics.yaml."),
    "acls": ("streams.acls_cli", "acls",
             "ACLs from the catalog: plan and apply who may read, write and join what."),
    "registry": ("streams.registry.commands", "registry",
                 "Run the Confluent-compatible schema registry backed by the `_schemas` topic."),
    "schemas": ("streams.schemas.commands", "schemas",
                "Avro schemas: check compatibility, register them in the registry, generate typed models."),
    "publish": ("streams.events_cli", "publish", "Publish JSON-lines events to TOPIC, schema-checked, all or nothing."),
    "consume": ("streams.events_cli", "consume",
                "Print TOPIC's records as JSON lines: decoded value, key, headers, partition, offset."),
    "demo": ("streams.demo.command", "demo", "Run the reference pipeline on the local stack and report each step."),
    "worker": ("streams.worker", "worker",
               "Run stream agents until SIGTERM: the built-ins, and the apps given with --app."),
    "search": ("streams.worker", "search",
               "Search the events the indexing agent indexed: plain words, each matched as written."),
    "dlq": ("streams.dlq", "dlq",
            "Dead-letter topics: list what was parked and why; redrive it once the cause is fixed."),
    "audit": ("streams.agents.audit_commands", "audit",
              "The tamper-evident audit trail: verify the hash chain, export it, run its writer."),
    "replay": ("streams.replay.commands", "replay",
               "Replay TOPIC's records in a time or offset range into a shadow topic, a consumer group or a bundle."),
    "evidence": ("streams.replay.commands", "evidence",
                 "Evidence bundles: verify one, or make the Ed25519 key pair that signs them."),
    "bridge": ("streams.bridge.commands", "bridge",
               "Feed Celery from Kafka: routed events become tasks in Redis; offsets commit after Redis confirms."),
    "webhooks": ("streams.webhooks.commands", "webhooks",
                 "Deliver events to HTTP endpoints: signed CloudEvents POSTs, retried; offsets commit once settled."),
    "console": ("streams.console.commands", "console",
                "Serve the web console: topics, lag, messages, dead letters, tasks, the audit chain and evidence."),
    "archive": ("streams.archive.commands", "archive",
                "The legal archive: copy archived topics into sealed segments, verify them, query them."),
    "outbox": ("streams.outbox.commands", "outbox",
               "The transactional outbox: services add events in their own transaction; the relay publishes them."),
}  # fmt: skip


class StreamsGroup(click.Group):
    """A click group that turns StreamsError into one clear line and exit code 1.

    `lazy` commands ({name: (module, attribute, summary)}) are imported only when run or asked for help.
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            module, attribute, _ = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}.{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries, importing nothing (click would load every command)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, self.lazy[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as click shows it
                raise
            # A bad option value or a missing file is bad input like any other: one line, exit 1, and where
            # to read more (click's own form is three lines and exit 2).
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(1)


@click.group(cls=StreamsGroup, lazy=LAZY_COMMANDS)
@click.version_option(package_name="streams", prog_name="streams", message="%(prog)s %(version)s")
@click.option("--verbose", is_flag=True, envvar="STREAMS_VERBOSE",
              help="Also show librdkafka's own log lines (connection retries and the like) on stderr.")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """streams: topics as code, Avro events, stream agents, a Celery bridge and replay tooling.

    \b
    Example:
      streams dev up && streams topics apply
    """
    if ctx.resilient_parsing or "--help" in sys.argv[1:]:
        return  # help needs no settings; a bad variable is reported when a command runs
    from streams.settings import load_settings  # noqa: PLC0415 - `streams --help` skips pydantic

    try:
        # check_reachable: a command whose broker does not answer fails in one line (decision 0019).
        ctx.obj = load_settings(check_reachable=True, **({"verbose": True} if verbose else {}))
    except StreamsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _register() -> None:
    """Load every command now (click's own tools and tests that walk `main.commands` want them all)."""
    for name in LAZY_COMMANDS:
        main.get_command(click.Context(main), name)


if __name__ == "__main__":
    main(prog_name="streams")
