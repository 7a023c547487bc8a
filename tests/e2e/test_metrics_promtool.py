"""Every /metrics nubis serves passes `promtool check metrics`: the control plane, the gateway, a
replica and an LLM replica (the tiny model), each its own process under a real `nubis up`, after
each deployment served a call; and every target the control plane's Prometheus service discovery
lists scrapes as Prometheus would scrape it (replicas through the gateway) and passes too.

promtool comes from Debian's prometheus package (.ci/run unpacks it into .ci/promtool and sets
NUBIS_PROMTOOL); without it the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import nubis
from nubis.llm.tiny import build_tiny_model
from nubis.photon.runtime import REPLICA_KEY_HEADER

from platform_process import PlatformProcess, nubis_up
from servers import EXAMPLES, ROOT

pytestmark = pytest.mark.e2e

Metric = Callable[[str, str], float | None]


def promtool() -> str:
    found = os.environ.get("NUBIS_PROMTOOL") or shutil.which("promtool")
    if found and os.access(found, os.X_OK):
        return found
    why = ("promtool not found: set NUBIS_PROMTOOL to its path (.ci/run unpacks Debian's prometheus "
           "package into .ci/promtool) or put promtool on PATH")
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def check_metrics(tool: str, what: str, text: str) -> None:
    checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, f"promtool on the {what}'s /metrics:\n{checked.stdout}{checked.stderr}"
    assert checked.stdout.strip() == checked.stderr.strip() == "", checked.stdout + checked.stderr
    assert "_created" not in text, what


def nubis_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def scrape_targets(platform: PlatformProcess, token: str) -> dict[str, tuple[dict[str, str], httpx.Response]]:
    """Every target service discovery lists, fetched as Prometheus does with ``authorization:
    credentials_file`` holding ``token``: ``http://<target><__metrics_path__>``; by role/deployment."""
    auth = {"authorization": f"Bearer {token}"}
    groups = httpx.get(f"{platform.url}/api/v1/prometheus/targets", headers=auth, timeout=10)
    assert groups.status_code == 200, groups.text
    scraped = {}
    for group in groups.json():
        labels = group["labels"]
        for target in group["targets"]:
            got = httpx.get(f"http://{target}{labels['__metrics_path__']}", headers=auth, timeout=30)
            scraped[f"{labels['nubis_role']}:{labels.get('deployment', '')}"] = (labels, got)
    return scraped


def deploy_llm(platform: PlatformProcess, tmp_path: Path) -> None:
    with nubis.Client(platform.url, platform.admin_token) as client:
        client.storage.put_dir("llm/tiny", build_tiny_model(tmp_path / "tiny"))
    done = platform.cli("llm", "deploy", "tiny", "--model", "storage:llm/tiny", "--memory", "1Gi",
                        "--timeout", "300", timeout=420)
    assert done.returncode == 0, done.stderr + done.stdout


def test_every_metrics_endpoint_passes_promtool(tmp_path: Path, metric: Metric) -> None:
    tool = promtool()
    with nubis_up(tmp_path / "home") as platform:
        nubis_cli("photon", "push", str(EXAMPLES / "echo"), env=platform.env)
        nubis_cli("deploy", "examples/echo", "--name", "echo", env=platform.env)
        deploy_llm(platform, tmp_path)
        auth = {"authorization": f"Bearer {platform.admin_token}"}
        called = httpx.post(f"{platform.gateway_url}/default/echo/echo", json={"text": "hi"}, headers=auth)
        assert called.status_code == 200, called.text
        hi = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        chat = httpx.post(f"{platform.gateway_url}/default/tiny/v1/chat/completions", headers=auth,
                          json=hi, timeout=120)
        assert chat.status_code == 200, chat.text
        discovered = scrape_targets(platform, platform.admin_token)

        control = httpx.get(f"{platform.url}/metrics", headers=auth, timeout=10)
        gateway = httpx.get(f"{platform.gateway_url}/metrics", headers=auth, timeout=10)
        table = httpx.get(f"{platform.url}/api/v1/gateway/routes", headers=auth, timeout=10).json()
        echo = next(d for d in table["deployments"] if d["name"] == "echo")
        [replica] = echo["replicas"]
        served = httpx.get(f"{replica['endpoint']}/metrics", headers={REPLICA_KEY_HEADER: replica["key"]},
                           timeout=10)
    assert sorted(discovered) == ["control-plane:", "gateway:", "replica:echo", "replica:tiny"]
    for key, (labels, got) in discovered.items():
        assert got.status_code == 200, f"{key} ({labels}): {got.text}"
        check_metrics(tool, f"discovered target {key}", got.text)
    for what, scraped in (("control plane", control), ("gateway", gateway), ("replica", served)):
        assert scraped.status_code == 200, f"{what}: {scraped.text}"
        check_metrics(tool, what, scraped.text)
    labels, llm = discovered["replica:tiny"]
    assert labels["workspace"] == "default" and labels["node"] and labels["replica"]
    assert metric(llm.text, 'nubis_llm_time_to_first_token_seconds_count{model="tiny"}') == 1
    assert (metric(llm.text, 'nubis_llm_generation_tokens_total{model="tiny"}') or 0) >= 1
    echo_labels, via_gateway = discovered["replica:echo"]
    assert echo_labels["__metrics_path__"] == f"/-/replicas/{replica['replica_id']}/metrics"
    assert metric(via_gateway.text, 'nubis_photon_requests_total{handler="echo",status="200"}') == 1
    assert metric(control.text, 'nubis_replicas{status="ready"}') == 2
    assert metric(control.text, 'nubis_api_requests_total{method="GET",route="/api/v1/gateway/routes",'
                                'status="200"}')
    assert metric(gateway.text,
                  'nubis_gateway_requests_total{workspace="default",deployment="echo",status="200"}') == 1
    assert metric(served.text, 'nubis_photon_requests_total{handler="echo",status="200"}') == 1


def test_the_documented_scrape_configs_pass_promtool(tmp_path: Path) -> None:
    """Every ``scrape_configs`` block of docs/observability.md is a valid Prometheus config."""
    tool = promtool()
    token = tmp_path / "nubis.token"
    token.write_text("nbs_x\n")
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "observability.md").read_text(), re.S)
    configs = [b for b in blocks if b.startswith("scrape_configs:")]
    assert len(configs) == 2 and any("http_sd_configs" in c for c in configs)
    for i, block in enumerate(configs):
        config = tmp_path / f"prometheus-{i}.yml"
        config.write_text(re.sub(r"credentials_file: \S+", f"credentials_file: {token}", block))
        checked = subprocess.run([tool, "check", "config", str(config)], capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0, block + checked.stdout + checked.stderr
