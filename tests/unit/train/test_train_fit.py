"""``fit`` in one process: the model directory, checkpoint resume, and the CLI's error lines."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nubis.train.cli import main
from nubis.train.fit import FitConfig, run_fit


def _fit(out: Path, *, epochs: int, env: dict[str, str] | None = None, **kw: object) -> None:
    config = FitConfig(model="logreg", data="builtin:iris", epochs=epochs, out=out, **kw)  # type: ignore[arg-type]
    assert run_fit(config, env=env or {}) == 0


def test_fit_writes_a_complete_model_dir_and_metric_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fit(tmp_path / "iris", epochs=2, name="flowers")
    lines = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()
             if line.startswith("nubis-metric ")]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert set(lines[0]) == {"epoch", "epochs", "loss", "accuracy", "val_accuracy", "samples_per_s",
                             "elapsed_s"}
    assert sorted(p.name for p in (tmp_path / "iris").iterdir()) == [
        "checkpoints", "heldout.npz", "model.json", "model.pt", "result.json"]
    info = json.loads((tmp_path / "iris" / "model.json").read_text())
    assert info["name"] == "flowers" and info["epochs"] == lines
    assert info["input_shape"] is None and len(info["mean"]) == 4


def test_resume_continues_exactly_where_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fit(tmp_path / "straight", epochs=4)
    _fit(tmp_path / "resumed", epochs=2)
    capsys.readouterr()
    _fit(tmp_path / "resumed", epochs=4)
    out = capsys.readouterr().out
    assert "resuming from epoch 2" in out
    assert '"epoch":1,' not in out and '"epoch":3,' in out
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "resumed" / "model.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4]


def test_a_checkpoint_of_other_arguments_is_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"NUBIS_CHECKPOINT_DIR": str(tmp_path / "ck")}
    _fit(tmp_path / "a", epochs=2, env=env)
    _fit(tmp_path / "b", epochs=2, env=env, lr=0.5)
    captured = capsys.readouterr()
    assert "ignoring the checkpoint" in captured.err and "(lr)" in captured.err
    assert "resuming" not in captured.out
    assert (tmp_path / "ck" / "checkpoint.pt").exists()
    assert not (tmp_path / "a" / "checkpoints").exists()


FIT = ["fit", "--epochs", "1"]
IRIS = [*FIT, "--model", "mlp", "--data", "builtin:iris"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*FIT, "--model", "mlp", "--data", "builtin:nope"], "error: unknown builtin data set"),
        ([*FIT, "--model", "cnn", "--data", "builtin:iris"], "error: --model cnn needs square image data"),
        ([*FIT, "--model", "mlp", "--data", "missing.csv"], "error: cannot read data"),
        (["quantize", "--src", "nowhere"], "error: nowhere is not a model directory"),
    ],
)
def test_data_and_model_problems_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*FIT, "--model", "svm", "--data", "builtin:iris"], "argument --model: invalid choice"),
        ([*IRIS, "--epochs", "0"], "argument --epochs: 0 must be >= 1"),
        ([*IRIS, "--test-fraction", "1"], "argument --test-fraction: 1 must be > 0 and < 1"),
        ([*IRIS, "--lr", "x"], "argument --lr: 'x' is not a number"),
        (["fit", "--model", "mlp", "--data", "builtin:iris"], "arguments are required: --epochs"),
        (["export-onnx"], "the following arguments are required: --src"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_distributed_fit_leaves_no_process_group_and_no_ddp_wrapper_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DDP wrapper sits in a reference cycle: left for interpreter exit, it tears gloo down
    there, which now and then aborts a worker whose work is done (SIGABRT, and a retried job)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "1", "RANK": "0"}
    for key, value in env.items():  # the env:// rendezvous reads os.environ
        monkeypatch.setenv(key, value)
    gc.disable()  # as when no collection happens to run before the process exits
    try:
        _fit(tmp_path / "model", epochs=1, env=env)
        left = sum(type(o) is DistributedDataParallel for o in gc.get_objects())
    finally:
        gc.enable()
    assert not dist.is_initialized()
    assert left == 0


def test_a_distributed_worker_exits_with_its_code_flushed_and_no_finalization() -> None:
    script = ("import atexit, sys; from nubis.train.cli import exit_worker; "
              "atexit.register(lambda: print('finalized')); print('trained', end=''); "
              "sys.stderr.write('warned'); exit_worker(3)")
    for env, out in (({"WORLD_SIZE": "2"}, "trained"), ({}, "trainedfinalized\n")):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
        assert (result.returncode, result.stdout, result.stderr) == (3, out, "warned")
