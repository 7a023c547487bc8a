"""Browser tests of the web console: a module's own real `nubis up`, Debian's headless chromium
driven by Playwright (``executable_path``; never ``playwright install``), and page fixtures that
fail the test on any request to another host than the control plane, on any console error and on
any uncaught page error. Skipped, with the reason, only where chromium or Playwright is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

from playwright import sync_api

from console_browser import CHROMIUM, DESKTOP, ConsoleSession, watch

from platform_process import PlatformProcess, module_client, module_platform  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (or set NUBIS_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_console(
    browser: sync_api.Browser, platform: PlatformProcess
) -> Iterator[Callable[[], ConsoleSession]]:
    """``new_console()``: a fresh browser context (its own cookies) on the console, watched; call it
    again for a second user in the same test. Every one's problems fail the test at the end."""
    opened: list[tuple[sync_api.BrowserContext, ConsoleSession]] = []

    def open_one() -> ConsoleSession:
        context = browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(15_000)
        session = ConsoleSession(page=context.new_page(), url=platform.url)
        watch(session.page, platform.url, session.problems)
        opened.append((context, session))
        return session

    yield open_one
    for context, _ in opened:
        context.close()
    problems = [p for _, session in opened for p in session.problems]
    assert problems == [], "\n".join(problems)


@pytest.fixture
def console(new_console: Callable[[], ConsoleSession]) -> ConsoleSession:
    """One watched tab on the console (not logged in yet: ``console.login(token)``)."""
    return new_console()
