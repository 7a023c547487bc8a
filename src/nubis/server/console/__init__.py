"""The web console: server-rendered pages (Jinja2 + htmx, live by Server-Sent Events) on the
control plane's own port, over the same services as the API. See docs/console.md."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from fastapi import FastAPI

from nubis.server.console import pages
from nubis.server.console.responses import ConsoleStatic

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Serve ``/static/…`` and every page module's routes (``console/pages/*.py``)."""
    app.mount("/static", ConsoleStatic(directory=STATIC), name="console-static")
    for module in sorted(pkgutil.iter_modules(pages.__path__), key=lambda m: m.name):
        app.include_router(importlib.import_module(f"{pages.__name__}.{module.name}").router)
