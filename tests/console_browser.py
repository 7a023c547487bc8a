"""The console's browser-test helpers (tests/console/conftest.py makes the fixtures): a watched tab
on the console, where to find chromium, where screenshots go."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright import sync_api

CHROMIUM = os.environ.get("NUBIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "console"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class ConsoleSession:
    """One browser tab on the console, watched: what it did wrong is in ``problems``."""

    page: sync_api.Page
    url: str
    problems: list[str] = field(default_factory=list)

    def go(self, path: str) -> sync_api.Page:
        self.page.goto(self.url + path)
        return self.page

    def login(self, token: str) -> sync_api.Page:
        """The login form as a user fills it: the token, then Enter."""
        self.go("/login")
        self.page.fill("#token", token)
        self.page.press("#token", "Enter")
        self.page.wait_for_url(self.url + "/")
        return self.page

    def screenshots(self, name: str, at: str | None = None) -> None:
        """``docs/console/NAME-desktop.png`` (1440×900) and ``NAME-phone.png`` (390×844), from the top
        of the page or with the element ``at`` (a selector) in view."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for suffix, size in (("desktop", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(size)
            if at is None:
                self.page.evaluate("window.scrollTo(0, 0)")
            else:
                self.page.locator(at).scroll_into_view_if_needed()
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"), type="png")
        self.page.set_viewport_size(DESKTOP)

    def cookie(self) -> str | None:
        found = [c["value"] for c in self.page.context.cookies() if c["name"] == "nubis_session"]
        return found[0] if found else None


def watch(page: sync_api.Page, origin: str, problems: list[str]) -> None:
    def on_request(request: sync_api.Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != origin:
            problems.append(f"request to another host: {request.method} {request.url}")

    def on_console(message: sync_api.ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
