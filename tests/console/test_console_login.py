"""The console in a real browser: log in with Enter, the overview, logout revokes the session."""

from __future__ import annotations

import httpx

from console_browser import ConsoleSession

from platform_process import PlatformProcess


def test_log_in_with_enter_see_the_overview_and_log_out(
    console: ConsoleSession, platform: PlatformProcess
) -> None:
    page = console.go("/")
    assert page.url.startswith(platform.url + "/login")
    console.login(platform.admin_token)
    assert page.locator("h1").first.inner_text().startswith("Overview")
    assert page.locator("header nav a[aria-current=page]").inner_text() == "Overview"
    console.screenshots("overview")
    cookie = console.cookie()
    assert cookie
    page.click("#logout")
    page.wait_for_url(platform.url + "/login")
    assert console.cookie() is None
    old = httpx.get(platform.url + "/", cookies={"nubis_session": cookie}, follow_redirects=False)
    assert old.status_code == 303 and old.headers["location"] == "/login"
