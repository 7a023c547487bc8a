"""Cached virtualenvs for missing requirements, built for real (offline: a wheel made in tmp_path)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nubis.backends.local_venvs import VirtualenvCache
from nubis.errors import EnvironmentPendingError

PROBE = "nubis-venv-probe"


def make_wheel(folder: Path) -> Path:
    """A one-module pure-Python wheel, written by hand: pip installs it with no index and no build."""
    dist = "nubis_venv_probe-1.0.dist-info"
    files = {
        "nubis_venv_probe/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / "nubis_venv_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


async def python_when_built(cache: VirtualenvCache, requirements: list[str], timeout: float = 240) -> str:
    """Ask as the backend does (again and again while the build runs) until an interpreter comes back."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return cache.python_for(requirements)
        except EnvironmentPendingError:
            assert loop.time() < deadline, "the virtualenv did not build in time"
            await asyncio.sleep(0.2)


async def test_a_cached_virtualenv_sees_the_running_environment_and_its_own_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: only the wheel below
    requirement = f"{PROBE} @ {make_wheel(tmp_path).as_uri()}"
    cache = VirtualenvCache(tmp_path / "venvs")

    python = await python_when_built(cache, [requirement])

    assert Path(python).is_relative_to(tmp_path / "venvs")
    probe = ("import json, sys, nubis, pydantic, nubis_venv_probe as probe; "
             "print(json.dumps({'path': sys.path, 'value': probe.VALUE, 'nubis': nubis.__file__}))")
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # before: No module named 'nubis' from a virtualenv
    seen = json.loads(result.stdout)
    assert seen["value"] == 42
    assert Path(seen["nubis"]).resolve() == Path(sys.modules["nubis"].__file__ or "").resolve()
    assert set(site.getsitepackages()) <= set(seen["path"])  # every site folder nubis runs with
    own = [p for p in seen["path"] if Path(p).is_relative_to(tmp_path / "venvs")]
    assert own and seen["path"].index(own[0]) < seen["path"].index(site.getsitepackages()[0])
    assert cache.python_for([requirement]) == python  # reused, not rebuilt
