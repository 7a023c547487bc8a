"""The LLM engines nubis knows, by name; each engine's heavy package is imported when it loads.

engine = load_engine("transformers", Path("model.gguf"), model_id="smollm2", max_batch_size=8)
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nubis.errors import BadRequestError, NubisError
from nubis.llm.engine import Engine

DEFAULT_ENGINE = "transformers"


@dataclass(frozen=True)
class EngineEntry:
    module: str
    cls: str
    requires: tuple[str, ...]
    """Top-level packages that must be importable."""
    extra: str
    """The ``nubis[...]`` extra that brings them."""


ENGINES: dict[str, EngineEntry] = {
    "transformers": EngineEntry(
        "nubis.llm.engines.transformers", "TransformersEngine", ("torch", "transformers"), "llm"
    ),
    "llama.cpp": EngineEntry("nubis.llm.engines.llamacpp", "LlamaCppEngine", ("llama_cpp",), "llamacpp"),
    "vllm": EngineEntry("nubis.llm.engines.vllm", "VllmEngine", ("vllm",), "vllm"),
}


def load_engine(name: str, path: Path, *, model_id: str, **options: Any) -> Engine:
    """An engine for the model at ``path`` (not started: ``await engine.start()`` loads it)."""
    entry = ENGINES.get(name)
    if entry is None:
        raise BadRequestError(f"unknown LLM engine {name!r}; known: {', '.join(ENGINES)}")
    missing = [p for p in entry.requires if importlib.util.find_spec(p) is None]
    if missing:
        raise NubisError(f"the {name} engine needs {', '.join(missing)}: pip install 'nubis[{entry.extra}]'")
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    try:
        return cls(Path(path), model_id=model_id, **options)
    except TypeError as e:  # an option this engine does not take
        raise BadRequestError(f"bad option for the {name} engine: {e}") from e
