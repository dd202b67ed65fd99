"""The `streams` command line: one click group, a sub-group per concern.

Errors the package raises on purpose become one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from streams.errors import StreamsError
from streams.settings import Settings


class StreamsGroup(click.Group):
    """A click group that turns StreamsError into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=StreamsGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """streams: topics as code, Avro events, stream agents, a Celery bridge and replay tooling.

    \b
    Example:
      streams dev up && streams topics apply
    """
    ctx.obj = Settings()


def _register() -> None:
    from streams.admin_cli import topics  # noqa: PLC0415 - keep `streams --help` fast
    from streams.agents.audit_commands import audit  # noqa: PLC0415
    from streams.bridge.commands import bridge  # noqa: PLC0415
    from streams.demo import demo  # noqa: PLC0415
    from streams.dlq import dlq  # noqa: PLC0415
    from streams.events_cli import consume, publish  # noqa: PLC0415
    from streams.local.commands import dev  # noqa: PLC0415
    from streams.outbox.commands import outbox  # noqa: PLC0415
    from streams.registry.commands import registry  # noqa: PLC0415
    from streams.replay.commands import evidence, replay  # noqa: PLC0415
    from streams.schemas.commands import schemas  # noqa: PLC0415
    from streams.webhooks.commands import webhooks  # noqa: PLC0415
    from streams.worker import search, worker  # noqa: PLC0415

    main.add_command(dev)
    main.add_command(topics)
    main.add_command(registry)
    main.add_command(schemas)
    main.add_command(publish)
    main.add_command(consume)
    main.add_command(demo)
    main.add_command(worker)
    main.add_command(search)
    main.add_command(dlq)
    main.add_command(audit)
    main.add_command(replay)
    main.add_command(evidence)
    main.add_command(bridge)
    main.add_command(webhooks)
    main.add_command(outbox)


_register()

if __name__ == "__main__":
    main()
