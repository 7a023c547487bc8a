"""``nubis usage``: CPU-, memory- and GPU-hours per workspace, deployment or job (and day), a cost
from a price table, and each workspace's quota beside what it holds now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pydantic
import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.errors import ValidationError
from nubis.models.resources import format_size
from nubis.models.usage import HOUR_S, Held, Prices, QuotaUse, Usage, UsageBy, UsageRow

OUTPUTS = ("table", "json", "csv")


def load_prices(path: Path) -> Prices:
    """A price table file: ``{"cpu_hour": 0.04, "memory_gib_hour": 0.005, "gpu_hour": 1.2}``."""
    try:
        return Prices.model_validate(json.loads(path.read_text()))
    except OSError as exc:
        raise ValidationError(f"cannot read the price table {str(path)!r}: {exc.strerror or exc}") from None
    except pydantic.ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
                        for e in exc.errors())
        raise _bad_prices(path, why) from None
    except ValueError as exc:
        raise _bad_prices(path, f"not JSON ({exc})") from None


def _bad_prices(path: Path, why: str) -> ValidationError:
    return ValidationError(f"the price table {str(path)!r} is not valid: {why}. Expected JSON such as "
                           '{"cpu_hour": 0.04, "memory_gib_hour": 0.005, "gpu_hour": 1.2} '
                           "(each optional, >= 0)")


def columns(found: Usage) -> list[str]:
    first = {UsageBy.workspace: [], UsageBy.deployment: ["deployment"], UsageBy.job: ["job"]}[found.by]
    return ["workspace", *first, *(["day"] if found.daily else []), "cpu_hours", "memory_gib_hours",
            "gpu_hours", *(["cost"] if found.total.cost is not None else [])]


def cells(found: Usage, row: UsageRow, *, hours: bool) -> list[str]:
    """One row's values: hours with 3 decimals for people, exact hours for csv."""

    def number(seconds: float) -> str:
        return f"{seconds / HOUR_S:.3f}" if hours else repr(seconds / HOUR_S)

    named = [] if found.by == UsageBy.workspace else [row.name or ""]
    day = [row.day.isoformat() if row.day else ""] if found.daily else []
    cost = [f"{row.cost:.2f}" if hours else repr(row.cost)] if row.cost is not None else []
    return [row.workspace, *named, *day, number(row.cpu_seconds), number(row.memory_gib_seconds),
            number(row.gpu_seconds), *cost]


def held_of(held: Held, quota: float | None, kind: str) -> str:
    value = format_size(held.memory) if kind == "memory" else f"{getattr(held, kind):g}"
    if quota is None:
        return f"{value} (no quota)"
    limit = format_size(int(quota)) if kind == "memory" else f"{quota:g}"
    return f"{value}/{limit}"


def quota_row(use: QuotaUse) -> list[str]:
    replicas = f"{use.replicas.cpu:g} cpu, {format_size(use.replicas.memory)}, {use.replicas.gpu} gpu"
    return [use.workspace, held_of(use.jobs, use.cpu_quota, "cpu"),
            held_of(use.jobs, use.memory_quota, "memory"), held_of(use.jobs, use.gpu_quota, "gpu"), replicas]


def usage(
    since: Annotated[str, typer.Option(help="how far back: '1h', '30d', '2w', or an ISO-8601 time")] = "30d",
    by: Annotated[UsageBy, typer.Option(help="one row per workspace, deployment or job")] = UsageBy.workspace,
    daily: Annotated[bool, typer.Option("--daily", help="one row per UTC day as well")] = False,
    all_workspaces: Annotated[bool, typer.Option("--all-workspaces",
                                                 help="every workspace (platform admin only)")] = False,
    prices: Annotated[Path | None, typer.Option(
        help="a JSON price table: cpu_hour, memory_gib_hour, gpu_hour → a cost column")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, json or csv")] = "table",
) -> None:
    """CPU-, memory- (GiB) and GPU-hours that replicas and job workers held (a running one up to now),
    and each workspace's job quota beside what it holds now."""
    if output not in OUTPUTS:
        raise render.BadOutputError(f"--output must be 'table', 'json' or 'csv', not {output!r}")
    table = load_prices(prices) if prices is not None else None
    with Client() as client:
        found = client.usage.get(since, by, daily=daily, all_workspaces=all_workspaces, prices=table)
    if output == "json":
        render.as_json(found.model_dump(mode="json"))
        return
    if output == "csv":
        render.as_csv(columns(found), [cells(found, r, hours=False) for r in found.rows])
        return
    title = f"usage from {render.cell(found.since)} to {render.cell(found.until)} UTC"
    total = found.total.model_copy(update={"workspace": "total", "name": "", "day": None})
    render.table(title, columns(found), [cells(found, r, hours=True) for r in [*found.rows, total]])
    render.table("held now (jobs count against the quota)",
                 ["workspace", "jobs cpu", "jobs memory", "jobs gpu", "replicas"],
                 [quota_row(q) for q in found.quotas])
