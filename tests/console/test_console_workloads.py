"""Jobs, models, storage, tokens, secrets, workspaces and the audit log in a real browser against a
real `nubis up`: a 2-worker job's per-epoch chart grows and both ranks' logs follow; a long job is
cancelled from its page; a model's quantize action from its page registers the next version; a
token is shown once; a file uploaded from the page (with and without JavaScript) downloads back
identical; screenshots of each page at 1440×900 and 390×844."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from playwright import sync_api
from playwright.sync_api import expect

import nubis
from console_browser import DESKTOP, ConsoleSession, watch

from platform_process import PlatformProcess
from servers import EXAMPLES

LONG = 180_000


def submit(platform: PlatformProcess, *args: str) -> str:
    result = platform.cli("job", "submit", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_two_worker_jobs_chart_grows_and_both_ranks_logs_follow(
    console: ConsoleSession, platform: PlatformProcess, client: nubis.Client
) -> None:
    page = console.login(platform.admin_token)
    submit(platform, "--name", "ddp", "--workers", "2", "--cpu", "0.5", "--workdir",
           str(EXAMPLES / "ddp_metrics"),
           "--", "python", "train.py", "--epochs", "10", "--epoch-seconds", "0.6")
    job = client.jobs.get("ddp")
    console.go(f"/jobs/{job.id}")
    chart = page.locator("#job-chart")
    seen: list[int] = []
    deadline = time.monotonic() + LONG / 1000
    while time.monotonic() < deadline:
        epochs = int(chart.get_attribute("data-epochs") or 0)
        if not seen or epochs != seen[-1]:
            seen.append(epochs)
        if epochs == 10:
            break
        page.wait_for_timeout(100)
    assert seen[-1] == 10, seen
    assert len([n for n in seen if 0 < n < 10]) >= 2, f"the chart did not grow epoch by epoch: {seen}"
    assert seen == sorted(seen)
    expect(chart.locator(".uplot")).to_have_count(2)  # loss, r2
    expect(page.locator("#logs-0")).to_contain_text("rank 0/2 epoch 10/10", timeout=LONG)
    expect(page.locator("#logs-1")).to_contain_text("rank 1/2 epoch 10/10", timeout=LONG)
    expect(page.locator("#job-state h1")).to_contain_text("succeeded", timeout=LONG)  # over SSE
    expect(page.locator("#workers")).to_contain_text("succeeded")
    assert client.jobs.get(job.id).status == "succeeded"
    console.screenshots("job")
    console.go("/jobs")
    expect(page.locator("#job-rows")).to_contain_text("ddp")
    console.screenshots("jobs")


def test_a_long_job_is_cancelled_from_its_page(
    console: ConsoleSession, platform: PlatformProcess, client: nubis.Client
) -> None:
    page = console.login(platform.admin_token)
    console.go("/jobs")
    page.evaluate("window.sameDocument = true")
    submit(platform, "--name", "forever", "--no-code", "--", "python", "-c",
           "import time; print('working', flush=True); time.sleep(600)")
    job = client.jobs.get("forever")
    row = page.locator(f'#job-rows a[href="/jobs/{job.id}"]')
    expect(row).to_have_count(1, timeout=30_000)  # the list refreshes itself
    assert page.evaluate("window.sameDocument") is True
    row.click()
    page.wait_for_url(f"{platform.url}/jobs/{job.id}")
    expect(page.locator("#logs-0")).to_contain_text("working", timeout=LONG)
    page.click("#cancel-job")
    expect(page.locator("#job-state h1")).to_contain_text("cancelled", timeout=60_000)
    assert client.jobs.get(job.id).status == "cancelled"
    expect(page.locator("#cancel-job")).to_have_count(0)


def test_quantize_from_the_model_page_registers_the_next_version(
    console: ConsoleSession, platform: PlatformProcess, client: nubis.Client
) -> None:
    page = console.login(platform.admin_token)
    trained = client.jobs.train("mlp", "builtin:digits", epochs=3, name="digits-mlp")
    console.go("/models")
    deadline = time.monotonic() + LONG / 1000
    while client.jobs.get(trained.id).status not in ("succeeded", "failed") and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert client.jobs.get(trained.id).status == "succeeded"
    console.go(f"/jobs/{trained.id}")  # the built-in trainer's per-epoch report, drawn
    expect(page.locator("#job-chart")).to_have_attribute("data-epochs", "3")
    groups = page.locator("#job-chart .chart .u-title").all_inner_texts()
    assert groups[:2] == ["loss", "accuracy"] and "elapsed_s" not in groups, groups
    console.go("/models/digits-mlp")
    first = page.locator("#v1")
    expect(first).to_contain_text("torch-fp32")
    expect(first.locator(f'a[href="/jobs/{trained.id}"]')).to_have_count(1)  # lineage: the job
    expect(first).to_contain_text("builtin:digits")
    first.locator("button", has_text="quantize").click()
    page.wait_for_url(f"{platform.url}/jobs/*")
    expect(page.locator("#job-state h1")).to_contain_text("succeeded", timeout=LONG)
    console.go("/models/digits-mlp")
    expect(page.locator("#v2")).to_contain_text("torch-int8-dynamic")
    expect(page.locator('#v2 a[href="#v1"]')).to_have_text("digits-mlp:1")  # lineage: the parent
    console.screenshots("model")
    deploy = page.locator('#v2 form[action="/models/digits-mlp/2/deploy"]')
    deploy.locator('input[name="deployment"]').fill("digits-int8")
    deploy.locator('select[name="min_replicas"]').select_option("0")  # scale to zero: no replica starts
    deploy.locator("button").click()
    page.wait_for_url(f"{platform.url}/deployments/digits-int8", timeout=LONG)
    expect(page.locator("h1")).to_contain_text("digits-int8")
    assert client.deployments.get("digits-int8").photon.startswith("digits-mlp-2:")
    console.go("/models")
    console.screenshots("models")


def test_a_token_is_shown_once(console: ConsoleSession, platform: PlatformProcess) -> None:
    page = console.login(platform.admin_token)
    console.go("/tokens")
    page.fill("#token-name", "ci-bot")
    page.select_option("#token-role", "viewer")
    page.click("#create-token button[type=submit]")
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("nbs_")
    who = httpx.get(f"{platform.url}/api/v1/whoami", headers={"authorization": f"Bearer {secret}"})
    assert who.json()["token_name"] == "ci-bot" and who.json()["role"] == "viewer"
    console.screenshots("token-created")
    console.go("/tokens")
    expect(page.locator("#tokens")).to_contain_text("ci-bot")
    assert secret not in page.content()
    console.screenshots("tokens")


def test_a_file_uploaded_from_the_page_downloads_back_identical(
    console: ConsoleSession, platform: PlatformProcess, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    local = tmp_path / "weights.bin"
    local.write_bytes(data)
    page = console.login(platform.admin_token)
    console.go("/storage?prefix=uploads/")
    page.set_input_files("#upload-file", str(local))
    # On a quiet machine the upload can end and the page reload before a check of the status line
    # runs: every text the status line shows is kept in sessionStorage, which the reload keeps.
    page.evaluate("""() => {
        const status = document.getElementById("upload-status");
        new MutationObserver(() => sessionStorage.setItem(
            "seen", (sessionStorage.getItem("seen") || "") + "|" + status.textContent,
        )).observe(status, {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#upload button[type=submit]")
    link = page.locator('#files a[href="/storage/download?path=uploads/weights.bin"]')
    expect(link).to_have_count(1, timeout=60_000)
    seen = page.evaluate('() => sessionStorage.getItem("seen")').split("|")
    assert "0 %" in seen and "100 %" in seen and "uploaded" in seen, seen  # the progress the XHR reports
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == data
    console.screenshots("storage")
    page.click('#files a[href="/storage/delete?path=uploads/weights.bin"]')
    page.click("#confirm")
    expect(page.locator("#files")).not_to_contain_text("weights.bin")


def test_the_upload_form_works_without_javascript(
    browser: sync_api.Browser, platform: PlatformProcess, tmp_path: Path
) -> None:
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    session = ConsoleSession(page=context.new_page(), url=platform.url)
    watch(session.page, platform.url, session.problems)
    try:
        page = session.login(platform.admin_token)
        session.go("/storage")
        local = tmp_path / "plain.txt"
        local.write_bytes(b"no javascript here\n" * 1000)
        page.set_input_files("#upload-file", str(local))
        page.click("#upload button[type=submit]")
        page.wait_for_url(f"{platform.url}/storage?prefix=")
        expect(page.locator("#files")).to_contain_text("plain.txt")
        got = page.request.get(f"{platform.url}/storage/download?path=plain.txt")
        assert got.body() == local.read_bytes()
    finally:
        context.close()
    assert session.problems == []


def test_secrets_workspaces_photons_and_audit_pages(
    console: ConsoleSession, platform: PlatformProcess, client: nubis.Client
) -> None:
    client.photons.push(EXAMPLES / "echo")
    page = console.login(platform.admin_token)
    console.go("/secrets")
    page.fill("#secret-name", "HF_TOKEN")
    page.fill("#secret-value", "never-shown-again")
    page.click("#set-secret button[type=submit]")
    expect(page.locator("#secrets")).to_contain_text("HF_TOKEN")
    assert "never-shown-again" not in page.content()
    console.screenshots("secrets")
    console.go("/photons")
    page.click('a[href="/photons/echo"]')
    expect(page.locator("h1")).to_contain_text("echo")
    console.screenshots("photon")
    console.go("/workspaces")
    page.fill('#create-workspace input[name="name"]', "team-a")
    page.click("#create-workspace button[type=submit]")
    page.fill('input[aria-label="CPU quota of team-a"]', "4")
    page.click("#quota-team-a button")
    expect(page.locator('input[aria-label="CPU quota of team-a"]')).to_have_value("4.0")
    console.screenshots("workspaces")
    console.go("/audit")
    expect(page.locator("#audit")).to_contain_text("workspace.create")
    expect(page.locator("#audit")).to_contain_text("secret.set")
    console.screenshots("audit")
    console.go("/usage?by=job&all=true")
    expect(page.locator("#usage")).to_contain_text("CPU-hours")
    expect(page.locator("#quotas")).to_contain_text("team-a")
    console.screenshots("usage")


@pytest.fixture(autouse=True)
def _left_running(client: nubis.Client) -> None:
    """Each test starts with no job still running (the module shares one platform)."""
    for job in client.jobs.list(status="running"):
        client.jobs.cancel(job.id)
