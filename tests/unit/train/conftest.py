"""Small model directories of every format, trained in-process once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubis.train.derive import export_onnx_model_dir, quantize_model_dir
from nubis.train.fit import FitConfig, run_fit


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"torch-fp32": dir, "torch-int8-dynamic": dir, "onnx": dir}: a digits mlp after 3 epochs."""
    root = tmp_path_factory.mktemp("models")
    fp32 = root / "mlp"
    run_fit(FitConfig(model="mlp", data="builtin:digits", epochs=3, out=fp32), env={})
    quantize_model_dir(fp32, root / "mlp-int8")
    export_onnx_model_dir(fp32, root / "mlp-onnx")
    return {"torch-fp32": fp32, "torch-int8-dynamic": root / "mlp-int8", "onnx": root / "mlp-onnx"}
