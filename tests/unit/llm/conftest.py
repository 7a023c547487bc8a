"""The tiny random Llama model (``nubis.llm.tiny``), built once per session for every LLM test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from nubis.llm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llm"))
