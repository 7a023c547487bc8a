"""The trainer as real processes: a worker killed mid-training and the job retried, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from servers import ROOT

IRIS = ["fit", "--model", "logreg", "--data", "builtin:iris"]


def run_trainer(*args: str, workers: int | None = None, env: dict[str, str] | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m nubis.train ARGS``, under ``torch.distributed.run`` when ``workers`` is given."""
    launcher = []
    if workers:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NUBIS_") or k == "NUBIS_HOME"}
    return subprocess.run([sys.executable, *launcher, "-m", "nubis.train", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**base, **(env or {})})


def epochs_reported(stdout: str) -> list[int]:
    return [json.loads(line.removeprefix("nubis-metric "))["epoch"] for line in stdout.splitlines()
            if line.startswith("nubis-metric ")]


def test_killed_worker_then_retry_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    env = {"NUBIS_CHECKPOINT_DIR": str(tmp_path / "ck"), "NUBIS_TRAIN_FAIL_AT_EPOCH": "2"}
    args = [*IRIS, "--epochs", "4", "--out", str(tmp_path / "model")]

    first = run_trainer(*args, workers=2, env=env)
    assert first.returncode != 0
    assert re.search(r"rank\s*:\s*1 .*\n\s*exitcode\s*:\s*3\b", first.stderr), first.stderr
    assert "NUBIS_TRAIN_FAIL_AT_EPOCH=2: rank 1 exits with code 3" in first.stderr
    assert epochs_reported(first.stdout) == [1, 2]
    assert (tmp_path / "ck" / ".failed-once").exists()
    checkpoint = torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert not (tmp_path / "model").exists()

    second = run_trainer(*args, workers=2, env=env)  # the platform's retry: same checkpoint folder
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from epoch 2" in second.stdout
    assert epochs_reported(second.stdout) == [3, 4]
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert [e["epoch"] for e in info["epochs"]] == [1, 2, 3, 4]


def test_a_single_worker_fails_with_exit_code_3_once(tmp_path: Path) -> None:
    env = {"NUBIS_CHECKPOINT_DIR": str(tmp_path / "ck"), "NUBIS_TRAIN_FAIL_AT_EPOCH": "1"}
    args = [*IRIS, "--epochs", "2", "--out", str(tmp_path / "model")]
    first = run_trainer(*args, env=env)
    assert first.returncode == 3
    assert "Traceback" not in first.stderr
    second = run_trainer(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "resuming from epoch 1" in second.stdout


def test_exit_codes_and_one_line_errors(tmp_path: Path) -> None:
    bad_args = run_trainer("fit", "--model", "mlp", "--data", "builtin:iris", "--epochs", "-1",
                           "--out", str(tmp_path))
    assert bad_args.returncode == 2
    assert bad_args.stderr == (
        "python -m nubis.train fit: error: argument --epochs: -1 must be >= 1 (see --help)\n")
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    bad_data = run_trainer(*IRIS[:3], "--data", str(csv), "--epochs", "1", "--out", str(tmp_path / "m"))
    assert bad_data.returncode == 1
    assert bad_data.stderr == (
        f"error: {csv}: no label column 'label' (columns: a, b); name it with --label-column\n")
