"""Virtualenvs for bundles whose requirements the platform's environment lacks (local backend).

One virtualenv per requirement set, under ``state_dir/venvs/<hash>``, built in the background
with ``--system-site-packages`` (so nubis, torch and everything already installed are shared and
only what is missing is installed) and reused by every replica that asks for the same set. While
it builds, ``python_for`` raises ``EnvironmentPendingError`` (the replica waits and says why);
a failed build raises ``PhotonLoadError`` with pip's last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from nubis.errors import EnvironmentPendingError, PhotonLoadError

log = logging.getLogger("nubis.backends.local")

BUILD_TIMEOUT_S = 900.0
READY = ".nubis-ready"


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements whose distribution is not installed here (names only, versions unchecked)."""
    missing = []
    for req in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(req.strip())
    return missing


def requirements_key(requirements: list[str]) -> str:
    canonical = "\n".join(sorted({r.strip() for r in requirements if r.strip()}))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


class VirtualenvCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._started: dict[str, float] = {}
        self._failed: dict[str, str] = {}

    def python_for(self, requirements: list[str]) -> str:
        """The interpreter a bundle with these requirements runs on (ours when nothing is missing)."""
        missing = missing_requirements(requirements)
        if not missing:
            return sys.executable
        key = requirements_key(requirements)
        venv = self.root / key
        if (venv / READY).exists():
            return str(venv / "bin" / "python")
        if key in self._failed:
            raise PhotonLoadError(f"installing {', '.join(missing)} failed: {self._failed[key]}",
                                  details={"missing_requirements": missing})
        if key not in self._builds or self._builds[key].done():
            self._started[key] = time.monotonic()
            self._builds[key] = asyncio.create_task(self._build(key, venv, requirements))
        waited = time.monotonic() - self._started[key]
        raise EnvironmentPendingError(
            f"building a virtualenv for {', '.join(missing)} (missing from the platform's environment; "
            f"{waited:.0f} s so far)", details={"missing_requirements": missing},
        )

    async def _build(self, key: str, venv: Path, requirements: list[str]) -> None:
        tmp = venv.with_name(f"{key}.building")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("building virtualenv %s for %s", key, requirements)
        steps = [[sys.executable, "-m", "venv", "--system-site-packages", str(tmp)],
                 [str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                  "--no-input", "-q", *requirements]]
        try:
            for argv in steps:
                code, output = await _run(argv)
                if code != 0:
                    lines = [ln for ln in output.splitlines() if ln.strip() and "WARNING" not in ln]
                    self._failed[key] = " | ".join(lines[-3:]) or f"exit code {code}"
                    log.warning("virtualenv %s failed: %s", key, self._failed[key])
                    return
            (tmp / READY).write_text(" ".join(requirements) + "\n")
            shutil.rmtree(venv, ignore_errors=True)
            tmp.rename(venv)
            log.info("virtualenv %s ready", key)
        finally:
            if tmp.exists() and not (venv / READY).exists():
                shutil.rmtree(tmp, ignore_errors=True)


async def _run(argv: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), BUILD_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return -1, f"took over {BUILD_TIMEOUT_S:.0f} s"
    return process.returncode or 0, output.decode(errors="replace")
