"""The life of a model on a real `nubis up`: train with 2 DDP workers, quantize, export, deploy,
predict through the gateway; a worker killed mid-training; the control plane restarted mid-job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import nubis

from platform_process import RestartablePlatform
from servers import ROOT, free_port, stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartablePlatform]:
    p = RestartablePlatform(tmp_path_factory.mktemp("training") / "home", free_port(), free_port())
    p.up()
    try:
        yield p
    finally:
        if p.proc is not None:
            stop(p.proc, timeout=60)


@pytest.fixture(scope="module")
def client(platform: RestartablePlatform) -> Iterator[nubis.Client]:
    token = (platform.home / "admin.token").read_text().strip()
    with nubis.Client(f"http://127.0.0.1:{platform.port}", token) as c:
        yield c


def cli(platform: RestartablePlatform, *args: str, timeout: float = 300) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUBIS_TOKEN", "NUBIS_URL")}
    env["NUBIS_HOME"] = str(platform.home)
    result = subprocess.run([sys.executable, "-m", "nubis.cli.main", *args, "--output", "json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_train_quantize_export_deploy_predict(platform: RestartablePlatform, client: nubis.Client) -> None:
    job = cli(platform, "train", "--model", "mlp", "--data", "builtin:digits", "--epochs", "10",
              "--workers", "2")
    assert job["status"] == "succeeded", job
    assert job["metrics"]["accuracy"] >= 0.95
    assert job["model"] == "digits-mlp:1"
    assert [h["epoch"] for h in job["history"]] == list(range(1, 11))  # reported live, each epoch

    quantized = cli(platform, "model", "quantize", "digits-mlp:1")
    assert quantized["ref"] == "digits-mlp:2" and quantized["format"] == "torch-int8-dynamic"
    assert quantized["comparison"]["size_ratio"] >= 3
    assert abs(quantized["comparison"]["accuracy_delta"]) <= 0.01
    assert quantized["lineage"]["parent"] == "digits-mlp:1"

    onnx = cli(platform, "model", "export", "digits-mlp:1", "--onnx")
    assert onnx["ref"] == "digits-mlp:3" and onnx["format"] == "onnx"

    deployment = cli(platform, "model", "deploy", "digits-mlp:2", "--name", "digits")
    assert deployment["status"] == "ready", deployment
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    url = f"http://127.0.0.1:{platform.gateway_port}/default/digits/predict"
    r = httpx.post(url, json={"inputs": x[:40].tolist()}, headers=platform.headers, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sum(int(p == t) for p, t in zip(body["predictions"], y[:40], strict=True)) >= 36
    assert len(body["probabilities"]) == 40 and len(body["probabilities"][0]) == 10
    assert httpx.post(url, json={"inputs": x[:1].tolist()}, timeout=30).status_code == 401
    bad = httpx.post(url, json={"inputs": [[1, 2, 3]]}, headers=platform.headers, timeout=30)
    assert bad.status_code == 422 and "64 features" in bad.json()["error"]["message"]
    scoped = client.tokens.create("digits-caller", role="viewer", deployment="digits").token
    deadline = time.monotonic() + 10  # the gateway polls its routing table
    while (r := httpx.post(url, json={"inputs": x[:1].tolist()}, timeout=30,
                           headers={"authorization": f"Bearer {scoped}"})).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    api = httpx.get(f"http://127.0.0.1:{platform.port}/api/v1/whoami",
                    headers={"authorization": f"Bearer {scoped}"})
    assert api.status_code == 403
    client.deployments.delete("digits")


def worker_pid(job_id: str, attempt: int, rank: int) -> int | None:
    """The trainer process of one worker (the child of its exit-code wrapper)."""
    marker = f"NUBIS_REPLICA_ID={job_id}-{attempt}-{rank}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        is_trainer = b"nubis.train.tasks" in cmdline and b"worker_exit" not in cmdline
        if is_trainer and marker in environ.split(b"\0"):
            return int(entry.name)
    return None


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint(client: nubis.Client) -> None:
    job = client.jobs.train("mlp", "builtin:digits", epochs=25, workers=2, name="killed", batch_size=16)
    deadline = time.monotonic() + 120
    while client.jobs.get(job.id).metrics.get("epoch", 0) < 3:
        assert time.monotonic() < deadline, client.jobs.get(job.id)
        time.sleep(0.1)
    pid = worker_pid(job.id, 1, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    done = client.jobs.wait(job.id, timeout=240)
    assert done.status == "succeeded", done
    assert done.attempt == 2
    assert done.metrics["accuracy"] >= 0.95
    events = " ".join(e.message for e in client.jobs.events(job.id))
    assert "worker 1 was killed by signal 9" in events
    assert any("resuming from epoch" in line for line in client.jobs.logs(job.id, worker=0, tail=500))


def test_the_job_keeps_running_across_a_control_plane_restart(platform: RestartablePlatform) -> None:
    token = (platform.home / "admin.token").read_text().strip()
    with nubis.Client(f"http://127.0.0.1:{platform.port}", token) as c:
        job = c.jobs.train("logreg", "builtin:iris", epochs=60, workers=1, name="survivor", batch_size=8)
        deadline = time.monotonic() + 120
        while c.jobs.get(job.id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert platform.proc is not None
    platform.proc.kill()  # the control plane crashes mid-job
    platform.proc.wait()
    time.sleep(1)
    platform.up()
    with nubis.Client(f"http://127.0.0.1:{platform.port}", token) as c:
        done = c.jobs.wait(job.id, timeout=240)
        assert done.status == "succeeded", done
        assert done.attempt == 1  # never restarted: adopted and tracked to its end
        assert done.model is not None and done.model == "survivor:1"
        assert any(e.kind == "adopted" for e in c.jobs.events(job.id))


def test_train_through_a_pipe_prints_each_step_as_a_plain_line(
    platform: RestartablePlatform, client: nubis.Client, tmp_path: Path
) -> None:
    """`nubis train | tee` (a CI log): queued with the reason, started, each epoch, the result;
    one plain line each, no terminal control codes."""
    client.workspaces.create("progress")
    client.workspaces.set_quota("progress", cpu=2)
    token = (platform.home / "admin.token").read_text().strip()
    with nubis.Client(f"http://127.0.0.1:{platform.port}", token, workspace="progress") as ws:
        ws.jobs.submit(["python", "-c", "import time; time.sleep(600)"], name="blocker",
                       resources={"cpu": 1, "memory": "64Mi"})  # half the quota: the train job waits
        env = {k: v for k, v in os.environ.items() if k not in ("NUBIS_TOKEN", "NUBIS_URL", "FORCE_COLOR")}
        env.update(NUBIS_HOME=str(platform.home), NUBIS_WORKSPACE="progress")
        with (tmp_path / "stderr").open("w") as stderr:
            train = subprocess.Popen(
                [sys.executable, "-m", "nubis.cli.main", "train", "--model", "logreg",
                 "--data", "builtin:iris", "--epochs", "3", "--workers", "2", "--memory", "512Mi"],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT)
        assert train.stdout is not None
        lines: list[str] = []
        blocking = True
        give_up = threading.Timer(300, train.kill)  # a wait that never ends fails, not hangs
        give_up.start()
        for line in train.stdout:  # read as it comes: the reason is on screen while it waits
            if blocking and line.startswith("queued (") and "quota" in line:  # why, while it waits
                ws.jobs.cancel("blocker")
                blocking = False
            lines.append(line)
        give_up.cancel()
        assert train.wait(timeout=60) == 0, [*lines, (tmp_path / "stderr").read_text()]
    printed = "".join(lines)
    assert "\x1b" not in printed and "\r" not in printed, printed
    expected = ["training job ", "queued (waiting for admission)", "queued (workspace quota: needs 2 CPU",
                "starting 2 workers\n", "epoch 1/3 loss=", "epoch 2/3 loss=", "epoch 3/3 loss=",
                "succeeded", "✓ held-out accuracy"]
    steps = [next(i for i, line in enumerate(lines) if line.startswith(e)) for e in expected]
    assert steps == sorted(steps), printed
    assert len(lines) == len(set(lines)), printed  # each change once, not once a poll


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model_name": "transformer", "data_path": "builtin:digits"}, 422, "model_name"),
        ({"model_name": "mlp", "data_path": "datasets/missing.csv"}, 422, "nubis storage put"),
        ({"model_name": "mlp", "data_path": "builtin:mnist"}, 422, "builtin:digits"),
        ({"model_name": "mlp", "data_path": "builtin:digits", "num_workers": 0}, 422, "num_workers"),
        ({"model_name": "cnn", "data_path": "builtin:iris"}, 422, "image"),
        ({"model_name": "mlp", "data_path": "builtin:digits", "num_workers": 64}, 422, "more than"),
    ],
)
def test_malformed_train_requests_get_a_clear_4xx(
    platform: RestartablePlatform, body: dict[str, Any], status: int, words: str
) -> None:
    r = httpx.post(f"http://127.0.0.1:{platform.port}/api/v1/train", json=body, headers=platform.headers)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_the_readme_demo_runs_the_whole_life(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "examples/demo.py", "--home", str(tmp_path / "home")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "registered digits-mlp:1" in out and "digits-mlp:2:" in out
    assert "digits is ready at http://127.0.0.1:" in out and "curl -H" in out
    accuracy = float(out.split("held-out accuracy ")[-1].split()[0])
    assert accuracy >= 0.95
