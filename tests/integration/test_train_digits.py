"""The trainer end to end on digits: 2 DDP workers under torchrun, metric POSTs over real HTTP,
quantize and ONNX versions, and the model served as a photon (in-process and as a bundle)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from nubis.photon.loader import load_photon
from nubis.photon.testing import photon_http
from nubis.train.modeldir import load_heldout
from nubis.train.predictor import load_predictor
from nubis.train.serving import write_model_photon

from servers import ROOT, photon_process

TOKEN = "job-token-123"
Trained = tuple[Path, subprocess.CompletedProcess[str]]


def run_trainer(*args: str, workers: int | None = None, env: dict[str, str] | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m nubis.train ARGS``, under ``torch.distributed.run`` when ``workers`` is given."""
    launcher = []
    if workers:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NUBIS_") or k == "NUBIS_HOME"}
    return subprocess.run([sys.executable, *launcher, "-m", "nubis.train", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**base, **(env or {})})


def metric_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("nubis-metric ")) for line in stdout.splitlines()
            if line.startswith("nubis-metric ")]


class MetricsSink(BaseHTTPRequestHandler):
    received: list[tuple[str, str | None, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, self.headers.get("authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[tuple[str, list[tuple[str, str | None, dict[str, Any]]]]]:
    received: list[tuple[str, str | None, dict[str, Any]]] = []
    handler = type("Sink", (MetricsSink,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory, metrics_server: Any) -> Trained:
    """The digits mlp, 10 epochs on 2 workers, reporting to the metrics server."""
    url, _ = metrics_server
    root = tmp_path_factory.mktemp("digits")
    env = {"NUBIS_API_URL": url, "NUBIS_JOB_ID": "job-7", "NUBIS_JOB_TOKEN": TOKEN,
           "NUBIS_CHECKPOINT_DIR": str(root / "ck")}
    proc = run_trainer("fit", "--model", "mlp", "--data", "builtin:digits", "--epochs", "10",
                       "--out", str(root / "mlp"), workers=2, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "mlp", proc


def test_two_workers_reach_95_percent_on_digits(mlp: Trained) -> None:
    model_dir, proc = mlp
    lines = metric_lines(proc.stdout)
    assert [m["epoch"] for m in lines] == list(range(1, 11))  # rank 0 alone reports
    assert all(m["epochs"] == 10 and m["samples_per_s"] > 0 for m in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]
    info = json.loads((model_dir / "model.json").read_text())
    assert info["metrics"]["accuracy"] >= 0.95
    assert info["epochs"] == lines
    assert info["metrics"]["size_bytes"] == (model_dir / "model.pt").stat().st_size
    assert "Traceback" not in proc.stderr


def test_each_epoch_is_posted_with_the_job_token(
    mlp: Trained, metrics_server: Any
) -> None:
    _, proc = mlp
    _, received = metrics_server
    assert [path for path, _, _ in received] == ["/api/v1/jobs/job-7/metrics"] * 10
    assert {auth for _, auth, _ in received} == {f"Bearer {TOKEN}"}
    assert [body for _, _, body in received] == metric_lines(proc.stdout)


def test_quantized_mlp_is_3x_smaller_and_as_accurate(
    mlp: Trained, tmp_path: Path
) -> None:
    model_dir, _ = mlp
    proc = run_trainer("quantize", "--src", str(model_dir), "--out", str(tmp_path / "int8"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "int8" / "result.json").read_text())
    assert result == json.loads(proc.stdout)
    comparison = result["comparison"]
    assert comparison["size_ratio"] >= 3.0
    assert abs(comparison["accuracy_delta"]) <= 0.01
    assert result["metrics"]["size_bytes"] == (tmp_path / "int8" / "model.pt").stat().st_size
    info = json.loads((tmp_path / "int8" / "model.json").read_text())
    assert info["format"] == "torch-int8-dynamic"
    assert info["parent"] == {"format": "torch-fp32", "metrics": comparison["parent"]}


@pytest.fixture(scope="module")
def onnx_dir(mlp: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "mlp-onnx"
    proc = run_trainer("export-onnx", "--src", str(mlp[0]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_onnx_export_scores_like_its_parent(onnx_dir: Path) -> None:
    result = json.loads((onnx_dir / "result.json").read_text())
    assert result["comparison"]["agreement"] >= 0.99
    assert abs(result["comparison"]["accuracy_delta"]) <= 0.01
    assert json.loads((onnx_dir / "model.json").read_text())["weights"] == "model.onnx"


def test_onnx_bundle_served_by_a_photon_process_predicts_like_the_parent(
    mlp: Trained, onnx_dir: Path, tmp_path: Path
) -> None:
    folder = write_model_photon(onnx_dir, tmp_path / "photon", name="digits-onnx")
    bundle = tmp_path / "digits.photon"
    build = subprocess.run([sys.executable, "-m", "nubis.cli.main", "photon", "build", str(folder),
                            "-o", str(bundle)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    x, _ = load_heldout(onnx_dir)
    expected, _ = load_predictor(mlp[0]).predict(x)
    with photon_process(bundle) as photon:
        with httpx.Client(base_url=photon.url, timeout=30) as http:
            served: list[Any] = []
            for start in range(0, len(x), 50):
                r = http.post("/predict", json={"inputs": x[start:start + 50].tolist()})
                assert r.status_code == 200, r.text
                assert r.json()["model"] == "digits-onnx"
                served += r.json()["predictions"]
            bad = http.post("/predict", json={"inputs": [[1.0, 2.0]]})
            info = http.get("/info").json()
    assert np.mean(np.array(served) == np.array(expected)) >= 0.99
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == (
        "invalid request: inputs (each row must have 64 features; got rows of 2)")
    assert info["format"] == "onnx" and info["input_dim"] == 64


async def test_photon_in_process_batches_requests_and_rejects_bad_input(
    mlp: Trained, tmp_path: Path
) -> None:
    model_dir, _ = mlp
    folder = write_model_photon(model_dir, tmp_path / "photon", name="digits-mlp")
    cls = load_photon(str(folder)).cls
    x, y = load_heldout(model_dir)
    async with photon_http(cls) as http:
        good = [http.post("/predict", json={"inputs": x[i:i + 4].tolist()}) for i in range(0, 80, 4)]
        bad = [
            http.post("/predict", json={"inputs": [[0.0] * 63]}),
            http.post("/predict", json={"inputs": []}),
            http.post("/predict", json={"inputs": [["seven"] * 64]}),
            http.post("/predict", json={"rows": [[0.0] * 64]}),
        ]
        responses = await asyncio.gather(*good, *bad)
        metrics = (await http.get("/metrics")).text
    answers = responses[:len(good)]
    assert all(r.status_code == 200 for r in answers)
    predictions = [p for r in answers for p in r.json()["predictions"]]
    assert np.mean(np.array(predictions) == y[:80]) >= 0.9
    first = answers[0].json()
    assert len(first["probabilities"]) == 4 and len(first["probabilities"][0]) == 10
    assert [r.status_code for r in responses[len(good):]] == [422, 422, 422, 422]
    assert responses[len(good)].json()["error"] == {
        "code": "validation_error",
        "message": "invalid request: inputs (each row must have 64 features; got rows of 63)",
        "details": [{"field": "inputs", "message": "each row must have 64 features; got rows of 63",
                     "type": "value_error"}],
    }
    assert "inputs is empty" in responses[len(good) + 1].json()["error"]["message"]
    batches = [line for line in metrics.splitlines()
               if line.startswith('nubis_photon_batch_size_count{handler="predict"}')]
    assert float(batches[0].split()[-1]) < len(good)  # concurrent requests shared batches


def test_cnn_reaches_95_percent_on_digits_in_10_epochs(tmp_path: Path) -> None:
    proc = run_trainer("fit", "--model", "cnn", "--data", "builtin:digits", "--epochs", "10",
                       "--out", str(tmp_path / "cnn"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = json.loads((tmp_path / "cnn" / "model.json").read_text())
    assert info["arch"] == "cnn" and info["arch_config"]["input_shape"] == [1, 8, 8]
    assert info["metrics"]["accuracy"] >= 0.95
