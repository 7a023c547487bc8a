"""The photon written for a model: its files, its requirements, and how a batch is split back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nubis.errors import ValidationError
from nubis.photon.loader import load_photon
from nubis.train.modeldir import ModelDirError, load_heldout
from nubis.train.predictor import load_predictor
from nubis.train.serving import predict_requests, write_model_photon


@pytest.mark.parametrize(("fmt", "requirements"), [("torch-fp32", ["torch", "numpy"]),
                                                   ("torch-int8-dynamic", ["torch", "numpy"]),
                                                   ("onnx", ["onnxruntime", "numpy"])])
def test_photon_folder_for_each_format(
    tmp_path: Path, model_dirs: dict[str, Path], fmt: str, requirements: list[str]
) -> None:
    dest = write_model_photon(model_dirs[fmt], tmp_path / "ph", name="digits")
    assert sorted(p.name for p in dest.iterdir()) == ["model", "photon.py"]
    files = sorted(p.name for p in (dest / "model").iterdir())
    assert "checkpoints" not in files and "model.json" in files and "heldout.npz" in files
    cls = load_photon(str(dest)).cls
    assert cls.photon_name() == "digits"
    assert cls.requirements == requirements
    assert (cls.resources.cpu, cls.resources.memory) == (1, 2**30)
    predict = cls.handlers["predict"]
    assert predict.batched and predict.params == ("inputs",)


def test_refuses_bad_names_and_used_folders(tmp_path: Path, model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="photon name 'Digits!'"):
        write_model_photon(model_dirs["onnx"], tmp_path / "a", name="Digits!")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ModelDirError, match="already exists"):
        write_model_photon(model_dirs["onnx"], tmp_path / "used", name="d")


def test_batch_of_requests_is_predicted_once_and_split_back(model_dirs: dict[str, Path]) -> None:
    predictor = load_predictor(model_dirs["onnx"])
    x, _ = load_heldout(model_dirs["onnx"])
    calls: list[int] = []
    real = predictor.predict
    predictor.predict = lambda rows: calls.append(len(rows)) or real(rows)  # type: ignore[method-assign]
    requests = [x[:3].tolist(), [[1.0, 2.0]], x[3:4].tolist(), []]
    results = predict_requests(predictor, requests, model="digits")
    assert calls == [4]
    expected, probabilities = real(x[:4])
    assert results[0] == {"predictions": expected[:3], "probabilities": probabilities[:3].tolist(),
                          "model": "digits"}
    assert results[2]["predictions"] == expected[3:4]  # type: ignore[index]
    assert isinstance(results[1], ValidationError)
    assert results[1].message == "invalid request: inputs (each row must have 64 features; got rows of 2)"
    assert isinstance(results[3], ValidationError) and "inputs is empty" in results[3].message
    assert np.allclose(np.sum(results[0]["probabilities"], axis=1), 1.0, atol=1e-5)  # type: ignore[index]
