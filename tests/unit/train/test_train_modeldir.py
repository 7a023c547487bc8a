"""The model directory contract: model.json round-trip, held-out set, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nubis.train.modeldir import (
    ModelDirError,
    ModelInfo,
    load_heldout,
    read_model_info,
    staging_dir,
    write_json,
)


def test_trained_model_json_round_trips_with_the_contract_keys(model_dirs: dict[str, Path]) -> None:
    raw = json.loads((model_dirs["torch-fp32"] / "model.json").read_text())
    assert {"format", "arch", "arch_config", "input_dim", "input_shape", "classes", "mean", "std",
            "weights", "dataset", "metrics", "epochs", "parent"} <= set(raw)
    assert raw["format"] == "torch-fp32" and raw["weights"] == "model.pt"
    assert raw["input_shape"] == [1, 8, 8] and raw["classes"] == list(range(10))
    assert set(raw["metrics"]) == {"accuracy", "f1_macro", "per_class", "size_bytes",
                                   "latency_ms_b1", "latency_ms_b64"}
    assert set(raw["metrics"]["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert [e["epoch"] for e in raw["epochs"]] == [1, 2, 3]
    assert raw["parent"] is None
    info = read_model_info(model_dirs["torch-fp32"])
    assert json.loads(info.model_dump_json()) == raw
    result = json.loads((model_dirs["torch-fp32"] / "result.json").read_text())
    assert result == {"metrics": raw["metrics"], "comparison": None}


def test_derived_model_names_its_parent(model_dirs: dict[str, Path]) -> None:
    raw = json.loads((model_dirs["torch-int8-dynamic"] / "model.json").read_text())
    assert raw["format"] == "torch-int8-dynamic"
    assert raw["parent"]["format"] == "torch-fp32"
    result = json.loads((model_dirs["torch-int8-dynamic"] / "result.json").read_text())
    assert set(result["comparison"]) >= {"size_ratio", "accuracy_delta", "latency_ratio_b1",
                                         "latency_ratio_b64", "parent"}


def test_heldout_is_raw_float32_rows_and_class_indices(model_dirs: dict[str, Path]) -> None:
    x, y = load_heldout(model_dirs["onnx"])
    assert x.dtype == np.float32 and x.shape[1] == 64 and x.max() > 1  # not standardised
    assert y.dtype == np.int64 and set(y.tolist()) == set(range(10))


def test_weights_must_be_a_file_inside_the_directory() -> None:
    with pytest.raises(ValueError, match="weights must be a file name"):
        ModelInfo(format="onnx", arch="mlp", arch_config={}, input_dim=2, classes=[0, 1],
                  mean=[0, 0], std=[1, 1], weights="../../etc/passwd", dataset="x")


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"has no model\.json"):
        read_model_info(tmp_path)


def _info() -> ModelInfo:
    return ModelInfo(format="torch-fp32", arch="logreg", arch_config={}, input_dim=1, classes=["a", "b"],
                     mean=[0.0], std=[1.0], weights="model.pt", dataset="builtin:iris")


def test_staging_replaces_an_old_model_and_keeps_its_checkpoints(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    (dest / "checkpoints").mkdir(parents=True)
    (dest / "checkpoints" / "checkpoint.pt").write_bytes(b"ck")
    (dest / "model.json").write_text("old")
    with staging_dir(dest) as tmp:
        assert not (dest / "model.pt").exists()  # nothing shows before the block ends
        write_json(tmp / "model.json", _info())
        (tmp / "model.pt").write_bytes(b"w")
    assert read_model_info(dest).classes == ["a", "b"]
    assert (dest / "checkpoints" / "checkpoint.pt").read_bytes() == b"ck"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staging_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staging_dir(tmp_path / "model") as tmp:
        (tmp / "model.pt").write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staging_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelDirError, match=r"holds files that are not a model's \(notes.txt\)"), \
            staging_dir(tmp_path):
        pass
    assert (tmp_path / "notes.txt").exists()
