"""Everything the CLI prints: errors, tables, JSON. The only place with colours.

Text from the server or the user (names, paths, reasons, log lines, events) is never read as Rich
markup: a worker line with ``[/bold]`` or a file named ``x[/b].csv`` prints as it is. Data goes
into :class:`rich.text.Text` (tables, :func:`line`, :func:`success`) or through :func:`escape_text`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from nubis.errors import NubisError

out = Console()
err = Console(stderr=True)


def error(exc: NubisError) -> None:
    """One readable block on stderr (multi-line only when the error itself is a block)."""
    err.print(Text.assemble(("error", "bold red"), " ", (f"({exc.code})", "dim"), f": {exc.message}"),
              highlight=False, soft_wrap=True)


def as_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def as_csv(columns: list[str], rows: list[list[Any]]) -> None:
    """A header line and the rows, as RFC 4180 CSV on stdout (for spreadsheets and scripts)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


def table(title: str, columns: list[str], rows: list[list[Any]], *, keep: tuple[str, ...] = ()) -> None:
    """Cells print literally (a :class:`Text`, e.g. :func:`status`, keeps its style); the ``keep``
    columns (ids a later command takes) are never cut or wrapped, however narrow the terminal."""
    cells = [[text("" if v is None else v) for v in row] for row in rows]
    t = Table(title=Text(title), title_justify="left")
    for i, column in enumerate(columns):
        widest = max((row[i].cell_len for row in cells), default=0)
        t.add_column(column, no_wrap=column in keep, min_width=widest if column in keep else None)
    for row in cells:
        t.add_row(*row)
    out.print(t)


def text(value: Any) -> Text:
    """A value as literal text: never read as markup. A :class:`Text` is kept as it is."""
    return value if isinstance(value, Text) else Text(value if isinstance(value, str) else cell(value))


def line(*parts: str | Text | tuple[str, str], console: Console | None = None) -> None:
    """One line from literal pieces: ``str`` (printed as it is), ``(str, style)`` or :class:`Text`."""
    (console or out).print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def success(message: str) -> None:
    line(("✓", "green"), " ", message)


OUTPUT_HELP = "table or json"


def check_output(output: str) -> str:
    if output not in ("table", "json"):
        raise BadOutputError(f"--output must be 'table' or 'json', not {output!r}")
    return output


class BadOutputError(NubisError):
    code = "bad_output"
    http_status = 400


def models(title: str, items: list[Any], columns: list[str], output: str) -> None:
    """Print pydantic models as a table, or as a JSON list with ``--output json``."""
    if check_output(output) == "json":
        as_json([i.model_dump(mode="json") for i in items])
        return
    rows = [[cell(getattr(i, c)) for c in columns] for i in items]
    table(title, columns, rows)


def model(item: Any, output: str) -> None:
    if check_output(output) == "json":
        as_json(item.model_dump(mode="json"))
        return
    t = Table(show_header=False, box=None)
    for key, value in item.model_dump().items():
        t.add_row(Text(key, style="bold"), text(value))
    out.print(t)


def escape_text(text: str) -> str:
    """Text from users or processes, printed literally (no rich markup)."""
    return escape(text)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if hasattr(value, "isoformat"):
        return value.strftime("%Y-%m-%d %H:%M")
    if hasattr(value, "value"):
        return str(value.value)
    return str(value)


@contextlib.contextmanager
def transfer(description: str, total: int) -> Iterator[Callable[[int], object]]:
    """A progress bar for bytes on the move (on stderr: stdout stays clean for ``--output json``);
    yields the function to call with each number of bytes moved."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(escape(description), total=total)
        yield lambda n: progress.update(task, advance=n)


STATUS_COLOURS = {
    "ready": "green",
    "scaled_to_zero": "cyan",
    "pending": "yellow", "starting": "yellow", "deploying": "yellow", "updating": "yellow",
    "draining": "yellow", "stopping": "yellow",
    "degraded": "dark_orange", "crash_loop": "red", "failed": "red",
    "stopped": "dim", "unknown": "magenta",
    "queued": "yellow", "running": "cyan", "succeeded": "green", "cancelled": "dim",
    "firing": "red", "resolved": "green",
}


def status(value: Any) -> Text:
    """A deployment, replica, job, worker or alert status with its colour."""
    shown = cell(value)
    return Text(shown, style=STATUS_COLOURS.get(shown, ""))

