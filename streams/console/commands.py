"""`streams console`: serve the web console with uvicorn, or print a password hash for STREAMS_CONSOLE_USERS.

Settings come from STREAMS_* (the cluster) and STREAMS_CONSOLE_* (users, session key); see README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from streams.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--hash-password",
    "hash_password",
    is_flag=True,
    help="Read a password (prompted, not echoed) and print its bcrypt hash for STREAMS_CONSOLE_USERS.",
)
@click.pass_obj
def console(settings: Settings, host: str, port: int, hash_password: bool) -> None:
    """Serve the web console: topics, lag, messages, dead letters, tasks, the audit chain and evidence.

    Users, roles (viewer, operator, auditor) and the session key come from STREAMS_CONSOLE_USERS and
    STREAMS_CONSOLE_SESSION_SECRET; `--hash-password` makes a hash for the first.

    \b
    Example:
      streams console --hash-password
      STREAMS_CONSOLE_USERS='{"ana": {"role": "auditor", "password_hash": "$2b$12$..."}}' \\
      STREAMS_CONSOLE_SESSION_SECRET=... streams console --port 8088
    """
    if hash_password:
        from streams.console.auth import hash_password as make_hash  # noqa: PLC0415

        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
        click.echo(make_hash(password))
        return
    import uvicorn  # noqa: PLC0415 - `streams --help` stays fast

    from streams.console.app import create_app  # noqa: PLC0415
    from streams.console.settings import ConsoleSettings  # noqa: PLC0415

    app = create_app(settings, ConsoleSettings())
    click.echo(f"streams console on http://{host}:{port}/ (metrics at /metrics)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=True)
