"""The deployments pages in a real browser against a real `nubis up`: a deployment made from the
CLI appears without a reload, its page follows the replica's logs, the playground calls a handler
through the gateway, the charts draw; a viewer sees no write buttons and a forged POST gets 403;
`nubis console --print` gives a link that logs a browser in once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

import nubis
from console_browser import ConsoleSession

from platform_process import PlatformProcess

TALKER = '''
import nubis


class Talker(nubis.Photon):
    resources = nubis.Resources(cpu=0.1, memory="128Mi")

    @nubis.handler
    def say(self, text: str = "hi") -> dict[str, str]:
        print(f"said {text}", flush=True)
        return {"said": text}
'''


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def talker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("talker") / "talker"
    folder.mkdir()
    (folder / "photon.py").write_text(TALKER)
    return folder


def test_a_deployment_from_the_cli_appears_then_its_page_follows_logs_and_calls_a_handler(
    console: ConsoleSession, platform: PlatformProcess, talker: Path
) -> None:
    page = console.login(platform.admin_token)
    console.go("/deployments")
    page.wait_for_selector("#deployments")
    page.evaluate("window.sameDocument = true")
    ok(platform.cli("deploy", str(talker), "--name", "talker", "--min", "1", "--max", "1"))
    page.wait_for_selector('tr[data-deployment="talker"]', timeout=30_000)
    assert page.evaluate("window.sameDocument") is True  # arrived over SSE, no reload

    page.click('a[href="/deployments/talker"]')
    page.wait_for_selector("#state >> text=ready", timeout=120_000)  # the SSE fragment turns ready
    assert page.locator("#actions #delete").count() == 1
    form = page.locator('form.handler:has(input[name="handler"][value="/say"])')
    form.locator("textarea").fill('{"text": "hello-from-the-playground"}')
    form.locator("button[type=submit]").click()
    result = form.locator(".call-result pre")
    result.wait_for(timeout=30_000)
    assert '"said": "hello-from-the-playground"' in result.inner_text()
    assert form.locator(".call-result strong").inner_text() == "HTTP 200"
    # the replica printed the line while answering: the log pane shows it within 2 s
    page.wait_for_selector("#logs >> text=said hello-from-the-playground", timeout=2_000)
    assert "curl -X POST" in (form.locator("details pre.snippet").first.text_content() or "")
    page.wait_for_selector("[data-metrics][data-loaded]")  # (no wait_for_function: CSP forbids eval)
    assert page.locator(".charts .uplot").count() == 3
    console.screenshots("deployment")
    console.go("/deployments")
    console.screenshots("deployments")
    console.go("/nodes")
    assert page.locator("[data-node]").count() >= 1
    console.screenshots("nodes")


def test_the_playground_call_is_in_the_metric_history(
    platform: PlatformProcess, client: nubis.Client
) -> None:
    """The gateway reports each second; `nubis deployment metrics` and the SDK read the history."""
    if "talker" not in [d.name for d in client.deployments.list()]:
        pytest.skip("needs the deployment of the test before")
    deadline = time.monotonic() + 30
    while sum(p.requests_per_s for p in client.deployments.metrics("talker", since="5m").points) == 0:
        assert time.monotonic() < deadline, "the playground's request never reached the metric history"
        time.sleep(0.5)
    shown = json.loads(ok(platform.cli("deployment", "metrics", "talker", "--since", "5m", "-o", "json")))
    busy = [p for p in shown["points"] if p["requests_per_s"]]
    assert busy and all(p["error_rate"] == 0 and p["p50_ms"] is not None for p in busy)
    table = ok(platform.cli("deployment", "metrics", "talker", "--since", "5m"))
    assert "traffic of talker" in table and "p95 ms" in table


def test_a_viewer_sees_no_write_buttons_and_a_forged_post_gets_403(
    console: ConsoleSession, platform: PlatformProcess, client: nubis.Client
) -> None:
    if "talker" not in [d.name for d in client.deployments.list()]:
        pytest.skip("needs the deployment of the test before")
    viewer = client.tokens.create("viewer-in-browser", role="viewer").token
    page = console.login(viewer)
    console.go("/deployments/talker")
    assert page.locator("#actions").count() == 0
    writes = "form[action$='/delete'], form[action$='/scale'], form[action$='/update']"
    assert page.locator(writes).count() == 0
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    forged = page.request.post(f"{platform.url}/deployments/talker/delete", form={"csrf": csrf})
    assert forged.status == 403 and "forbidden" in forged.text()
    assert "talker" in [d.name for d in client.deployments.list()]


def test_nubis_console_prints_a_link_that_logs_in_once(
    new_console: object, platform: PlatformProcess
) -> None:
    printed = ok(platform.cli("console", "--print"))
    url = printed.strip().split()[-1]
    assert url.startswith(platform.url + "/login/")
    first = new_console()  # type: ignore[operator]
    first.page.goto(url)
    first.page.wait_for_url(platform.url + "/")
    assert first.page.locator("header .role").inner_text() == "admin"
    second = new_console()  # type: ignore[operator]
    answer = second.page.goto(url)
    assert answer is not None and answer.status == 401
    assert "used already" in second.page.locator(".flash.error").inner_text()
    expected = ("console error: Failed to load resource: the server responded with a status of 401 "
                "(Unauthorized)")
    second.problems.remove(expected)  # the browser logs the refused link's status: that is the point
