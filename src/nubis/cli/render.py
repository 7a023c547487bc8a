"""Everything the CLI prints: errors, tables, JSON. The only place with colours."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from nubis.errors import NubisError

out = Console()
err = Console(stderr=True)


def error(exc: NubisError) -> None:
    """One readable block on stderr (multi-line only when the error itself is a block)."""
    err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}", highlight=False,
              markup=True, soft_wrap=True)


def as_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)


def success(text: str) -> None:
    out.print(f"[green]✓[/] {text}", highlight=False)
