"""Tables for people: the one rule that a name column (topic, subject) is never cut or wrapped.

Rich shrinks every column to fit the terminal; a topic name broken over two lines cannot be copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.table import Table


def add_name_column(table: Table, header: str, names: Iterable[str]) -> None:
    """A column as wide as its longest name, which the other columns wrap around."""
    width = max([len(header), *(len(name) for name in names)])
    table.add_column(header, no_wrap=True, min_width=width, overflow="ignore")
