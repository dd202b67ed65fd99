"""`streams demo`: the reference pipeline end to end on the embedded local stack (streams.demo.pipeline).

The command alone, so `streams demo --help` loads none of the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from streams.settings import Settings


@click.command()
@click.option("--invoices", default=200, show_default=True, help="How many sample invoices to publish.")
@click.pass_obj
def demo(settings: Settings, invoices: int) -> None:
    """Run the reference pipeline on the local stack and report each step.

    \b
    Example:
      streams demo --invoices 500
    """
    from streams.demo.pipeline import run_demo  # noqa: PLC0415 - the pipeline loads only when it runs

    run_demo(settings, invoices)
