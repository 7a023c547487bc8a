"""Jinja2 for the console: autoescaped templates, and the filters every page uses (status colours
shared with the CLI, times shown relative with the absolute time as a tooltip, sizes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from nubis._version import __version__
from nubis.cli.render import STATUS_COLOURS
from nubis.server.console.nav import nav_for

TEMPLATES = Path(__file__).parent / "templates"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def status_badge(value: Any) -> Markup:
    """A status with the CLI's colour for it (one mapping: ``nubis.cli.render.STATUS_COLOURS``)."""
    shown = str(getattr(value, "value", value) if value is not None else "-")
    colour = STATUS_COLOURS.get(shown, "none")
    return Markup('<span class="badge c-{}">{}</span>').format(colour, shown)


def ago(seconds: float) -> str:
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def reltime(value: datetime | float | None, now: datetime | None = None) -> Markup:
    """``<time datetime=ISO title="absolute">3 min ago</time>`` (console.js keeps it current)."""
    if value is None:
        return Markup("-")
    at = datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else value
    now = now or datetime.now(UTC)
    delta = (now - at).total_seconds()
    words = f"{ago(delta)} ago" if delta >= 0 else f"in {ago(delta)}"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        at.isoformat(), at.strftime("%Y-%m-%d %H:%M:%S UTC"), words)


def size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in UNITS:
        if amount < 1024 or unit == UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def percent(part: float, whole: float) -> int:
    return 0 if whole <= 0 else max(0, min(100, round(100 * part / whole)))


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(status=status_badge, reltime=reltime, size=size)
    env.globals.update(percent=percent, version=__version__, escape=escape)
    return env


ENV = make_env()


def render_text(template: str, **values: Any) -> str:
    return ENV.get_template(template).render(**values)


def render(request: Request, template: str, values: dict[str, Any], *,
           status_code: int = 200) -> HTMLResponse:
    """A page or fragment. ``values['page']`` (a :class:`~nubis.server.console.auth.ConsolePage`)
    gives the layout its user, workspace, CSRF token and navigation."""
    page = values.get("page")
    nav = nav_for(page.caller if page is not None else None, request.url.path)
    html = render_text(template, request=request, nav=nav, **values)
    return HTMLResponse(html, status_code=status_code)
