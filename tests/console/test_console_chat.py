"""The chat box of an LLM deployment in a real browser: the tiny model deployed from the CLI, a
question typed with Enter, the answer streamed in through the control plane (never the gateway
directly: the page fixture fails on any request to another host)."""

from __future__ import annotations

import pytest

import nubis
from console_browser import ConsoleSession
from nubis.llm.tiny import build_tiny_model

from platform_process import PlatformProcess


@pytest.fixture(scope="module")
def tiny(platform: PlatformProcess, client: nubis.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    client.storage.put_dir("llm/tiny", build_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))
    result = platform.cli("llm", "deploy", "tiny", "--model", "storage:llm/tiny", "--memory", "1Gi",
                          "--timeout", "300", timeout=420)
    assert result.returncode == 0, result.stderr + result.stdout
    return "tiny"


def test_the_chat_streams_an_answer(console: ConsoleSession, platform: PlatformProcess, tiny: str) -> None:
    page = console.login(platform.admin_token)
    console.go(f"/deployments/{tiny}")
    assert page.locator("#playground").count() == 1
    page.fill("#chat textarea", "What is the capital of France?")
    page.press("#chat textarea", "Enter")
    answer = page.locator("#chat .msg.assistant").first
    page.wait_for_selector('#chat .msg.assistant[data-state="done"]', timeout=180_000)
    assert answer.inner_text().strip()
    assert page.locator("#chat .msg.user").inner_text() == "What is the capital of France?"
