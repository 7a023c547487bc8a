"""Every /metrics nubis serves passes `promtool check metrics`: the control plane, the gateway and a
replica, each its own process under a real `nubis up`, after a deployment served a call.

promtool comes from Debian's prometheus package (.ci/run unpacks it into .ci/promtool and sets
NUBIS_PROMTOOL); without it the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from nubis.photon.runtime import REPLICA_KEY_HEADER

from platform_process import nubis_up
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


def test_every_metrics_endpoint_passes_promtool(tmp_path: Path, metric: Metric) -> None:
    tool = promtool()
    with nubis_up(tmp_path / "home") as platform:
        nubis_cli("photon", "push", str(EXAMPLES / "echo"), env=platform.env)
        nubis_cli("deploy", "examples/echo", "--name", "echo", env=platform.env)
        auth = {"authorization": f"Bearer {platform.admin_token}"}
        called = httpx.post(f"{platform.gateway_url}/default/echo/echo", json={"text": "hi"}, headers=auth)
        assert called.status_code == 200, called.text

        control = httpx.get(f"{platform.url}/metrics", headers=auth, timeout=10)
        gateway = httpx.get(f"{platform.gateway_url}/metrics", headers=auth, timeout=10)
        table = httpx.get(f"{platform.url}/api/v1/gateway/routes", headers=auth, timeout=10).json()
        [echo] = table["deployments"]
        [replica] = echo["replicas"]
        served = httpx.get(f"{replica['endpoint']}/metrics", headers={REPLICA_KEY_HEADER: replica["key"]},
                           timeout=10)
    for what, scraped in (("control plane", control), ("gateway", gateway), ("replica", served)):
        assert scraped.status_code == 200, f"{what}: {scraped.text}"
        check_metrics(tool, what, scraped.text)
    assert metric(control.text, 'nubis_replicas{status="ready"}') == 1
    assert metric(control.text, 'nubis_api_requests_total{method="GET",route="/api/v1/gateway/routes",'
                                'status="200"}')
    assert metric(gateway.text,
                  'nubis_gateway_requests_total{workspace="default",deployment="echo",status="200"}') == 1
    assert metric(served.text, 'nubis_photon_requests_total{handler="echo",status="200"}') == 1
