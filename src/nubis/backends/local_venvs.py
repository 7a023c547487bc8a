"""Virtualenvs for bundles whose requirements the platform's environment lacks (local backend).

One virtualenv per requirement set and platform environment, under ``state_dir/venvs/<hash>``,
built in the background and reused by every replica that asks for the same set. It sees the
packages of the environment nubis runs in (nubis, torch and everything already installed are
shared; only what is missing is installed): a ``.pth`` file in its site-packages adds the running
interpreter's site-packages folders after its own. ``--system-site-packages`` would not do: it
adds the *base* interpreter's packages, which lack nubis whenever nubis runs in a virtualenv.
While it builds, ``python_for`` raises ``EnvironmentPendingError`` (the replica waits and says
why); a failed build raises ``PhotonLoadError`` with pip's last lines. ``environment`` says the
same as data (job workers: what is installed, how long it took).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import site
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from nubis.backends.base import Environment
from nubis.backends.sandbox import Sandbox
from nubis.errors import EnvironmentPendingError, PhotonLoadError

log = logging.getLogger("nubis.backends.local")

BUILD_TIMEOUT_S = 900.0
MAX_CONCURRENT_BUILDS = 2  # more wait their turn (each is a pip with its downloads and builds)
PIP_CONFIG = ["/etc/pip.conf", "/etc/xdg/pip"]  # what a sandboxed pip may read beyond the system
READY = ".nubis-ready"
PARENT_PTH = "nubis-platform-env.pth"


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


def requirements_key(requirements: list[str], workspace: str = "") -> str:
    """The cache key: the workspace (a build runs a package's code: one workspace's build is never
    another's virtualenv), the requirement set and the environment the virtualenv extends."""
    canonical = "\n".join(sorted({r.strip() for r in requirements if r.strip()}))
    extends = "\n".join(platform_site_dirs())
    return hashlib.sha256(f"{workspace}\n\n{extends}\n\n{canonical}".encode()).hexdigest()[:20]


def platform_site_dirs() -> list[str]:
    """The running interpreter's site-packages folders (its virtualenv's, when it runs in one)."""
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user and user in sys.path:
        dirs.append(user)
    return dirs


def write_parent_pth(venv: Path) -> None:
    """Make ``venv`` see the running environment's packages, after its own (``.pth`` files too)."""
    own = site_packages(venv)
    # a .pth line that starts with "import" is run, in a function's scope: no comprehension
    line = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in platform_site_dirs())
    (own / PARENT_PTH).write_text(line + "\n")


def venv_of(python: str) -> list[str]:
    """The cached virtualenv an interpreter belongs to (read-only to the workload), if any."""
    return [] if python == sys.executable else [str(Path(python).parent.parent)]


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def installed_dists(venv: Path) -> set[str]:
    """``name version`` of each distribution installed in ``venv``'s own site-packages."""
    try:
        names = [p.name.removesuffix(".dist-info") for p in site_packages(venv).glob("*.dist-info")]
    except OSError:
        return set()
    return {" ".join(name.rsplit("-", 1)) for name in names}  # dist-info names: name_x-1.0


def pip_paths(environ: Mapping[str, str]) -> list[str]:
    """Local folders and files the operator's ``PIP_*`` settings name (find-links, constraints,
    ``file://`` indexes): a sandboxed pip may read them."""
    paths = []
    for name, value in environ.items():
        if name.startswith("PIP_"):
            for word in value.split():
                path = word.removeprefix("file://")
                if path.startswith("/") and os.path.exists(path):
                    paths.append(path)
    return paths


class VirtualenvCache:
    """``sandbox``: where ``pip install`` (which runs the packages' build code) is confined — it may
    write only the virtualenv being built and its own tmp, as the workspace's uid when there is one."""

    def __init__(self, root: Path, sandbox: Sandbox | None = None) -> None:
        self.root = root
        self.sandbox = sandbox
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_BUILDS)
        self._started: dict[str, float] = {}
        self._failed: dict[str, str] = {}
        self._built: dict[str, str] = {}  # what a build here installed, and how long it took

    def python_for(self, requirements: list[str], *, workspace: str = "") -> str:
        """The interpreter a bundle of ``workspace`` with these requirements runs on (ours when
        nothing is missing)."""
        missing = missing_requirements(requirements)
        if not missing:
            return sys.executable
        key = requirements_key(requirements, workspace)
        venv = self.root / key
        if (venv / READY).exists():
            return str(venv / "bin" / "python")
        if key in self._failed:
            raise PhotonLoadError(f"installing {', '.join(missing)} failed: {self._failed[key]}",
                                  details={"missing_requirements": missing})
        if key not in self._builds or self._builds[key].done():
            self._started[key] = time.monotonic()
            self._builds[key] = asyncio.create_task(self._build(key, venv, requirements, workspace))
        waited = time.monotonic() - self._started[key]
        raise EnvironmentPendingError(
            f"building a virtualenv for {', '.join(missing)} (missing from the platform's environment; "
            f"{waited:.0f} s so far)", details={"missing_requirements": missing},
        )

    def environment(self, requirements: list[str], *, workspace: str = "") -> Environment:
        """``python_for`` as data: ready (with what a build by this process installed, in how long), building
        (started now if it was not), or failed (pip's last lines)."""
        missing = tuple(missing_requirements(requirements))
        try:
            self.python_for(requirements, workspace=workspace)
        except EnvironmentPendingError as exc:
            return Environment("building", missing, exc.message)
        except PhotonLoadError:
            return Environment("failed", missing, self._failed[requirements_key(requirements, workspace)])
        if not missing:
            return Environment("ready")
        return Environment("ready", missing, self._built.get(requirements_key(requirements, workspace), ""))

    async def _build(self, key: str, venv: Path, requirements: list[str], workspace: str) -> None:
        async with self._slots:
            await self._install(key, venv, requirements, workspace)

    async def _install(self, key: str, venv: Path, requirements: list[str], workspace: str) -> None:
        began = time.monotonic()
        tmp = venv.with_name(f"{key}.building")
        scratch = venv.with_name(f"{key}.pip-tmp")
        for folder in (tmp, scratch):
            shutil.rmtree(folder, ignore_errors=True)
        log.info("building virtualenv %s for %s", key, requirements)
        steps = [[sys.executable, "-m", "venv", str(tmp)],
                 [str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                  "--no-input", "-q", *requirements]]
        env = None
        if self.sandbox is not None and self.sandbox.enabled:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o711)
            for folder in (tmp, scratch):
                self.sandbox.own(folder, workspace, mode=0o755 if folder is tmp else 0o700)
            policy = self.sandbox.policy(workspace=workspace, read=[*PIP_CONFIG, *pip_paths(os.environ)],
                                         write=[str(tmp), str(scratch)])
            steps = [self.sandbox.command(argv, policy) for argv in steps]
            env = {**os.environ, "TMPDIR": str(scratch), "HOME": str(scratch), "PIP_NO_CACHE_DIR": "1"}
        before: set[str] = set()
        try:
            for argv in steps:
                if argv is steps[1]:
                    write_parent_pth(tmp)  # before pip: it must see what is installed already
                    before = installed_dists(tmp)  # pip itself (and setuptools)
                code, output = await _run(argv, env=env)
                if code != 0:
                    lines = [ln for ln in output.splitlines() if ln.strip() and "WARNING" not in ln]
                    self._failed[key] = " | ".join(lines[-3:]) or f"exit code {code}"
                    log.warning("virtualenv %s failed: %s", key, self._failed[key])
                    return
            (tmp / READY).write_text(" ".join(requirements) + "\n")
            shutil.rmtree(venv, ignore_errors=True)
            installed = sorted(installed_dists(tmp) - before)
            tmp.rename(venv)
            took = time.monotonic() - began
            self._built[key] = (f"installed {len(installed)} package{'' if len(installed) == 1 else 's'} "
                                f"in {took:.1f} s: " + (", ".join(installed) or "nothing"))
            log.info("virtualenv %s ready: %s", key, self._built[key])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if tmp.exists() and not (venv / READY).exists():
                shutil.rmtree(tmp, ignore_errors=True)


async def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), BUILD_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return -1, f"took over {BUILD_TIMEOUT_S:.0f} s"
    return process.returncode or 0, output.decode(errors="replace")
