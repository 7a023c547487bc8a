"""The workload sandbox of the local backend: what a replica or job worker may touch.

Every workload process starts through ``sandbox_exec.py`` (standalone, by path) with a policy made
here: read-only the Python installation and the system's libraries, its own bundle or code, and
read-write only its own folders (working folder, checkpoints, private tmp, its workspace's storage
folder when storage is local). Landlock bounds the file system, signals and abstract unix sockets
and, through its ptrace rules, ``/proc/<pid>/environ`` of every process outside the sandbox. When
the control plane runs as root, a workload also runs under an unprivileged uid of its own
workspace (``UidMap``), and the control plane's state is 0700/0600 (``harden_home``).

``Sandbox.detect`` decides once, at start, what this machine allows; ``describe`` is the line
``nubis up`` prints. ``Sandbox.off()`` is ``--trust-members``: workloads run as the control plane.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import site
import stat
import sys
import sysconfig
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nubis
from nubis.backends import sandbox_exec
from nubis.home import write_private

log = logging.getLogger("nubis.backends.sandbox")

LAUNCHER = Path(sandbox_exec.__file__).resolve()
UID_BASE = 200_000
"""First uid (and gid) given to a workspace's workloads when nubis runs as root."""
UID_SPAN = 100_000

SYSTEM_READ = (
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc", "/sys",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts", "/etc/host.conf",
    "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/passwd", "/etc/group", "/etc/mime.types",
    "/etc/os-release", "/etc/alternatives", "/etc/protocols", "/etc/services", "/etc/debian_version",
    "/etc/lsb-release", "/etc/redhat-release", "/etc/system-release", "/etc/machine-id",
)
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")


def _python_paths() -> list[str]:
    """Where this interpreter and its packages live (nubis included, also when installed editable)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(nubis.__file__).resolve().parent),
             str(Path(sys.executable).resolve().parent)}
    paths.update(v for v in sysconfig.get_paths().values() if v)
    paths.update(site.getsitepackages())
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    return sorted(paths)


def _safe_reads(paths: Iterable[str], *, private: Path) -> list[str]:
    """Drop what would open too much: ``/``, the private state folder or any folder above it."""
    private = private.resolve()
    keep = []
    for path in paths:
        resolved = Path(path).resolve()
        if resolved == Path("/") or resolved == private or resolved in private.parents:
            continue
        if private in resolved.parents and "venvs" not in resolved.parts:
            continue
        keep.append(str(resolved))
    return keep


def closed_to_others(path: str) -> Path | None:
    """The first folder on the way to ``path`` (resolved) that other users cannot search, or
    ``path`` itself if it is a file they cannot read; None when they reach it."""
    target = Path(path).resolve()
    for folder in [*reversed(target.parents), target]:
        if not folder.exists():
            return None  # nubis creates the rest, searchable
        mode = os.stat(folder).st_mode
        needed = stat.S_IROTH if stat.S_ISREG(mode) else stat.S_IXOTH
        if not mode & needed:
            return folder
    return None


@dataclass
class UidMap:
    """One unprivileged uid (= gid) per workspace, kept in ``$NUBIS_HOME/workload-uids.json``."""

    file: Path
    base: int = UID_BASE
    _uids: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        try:
            self._uids = {str(k): int(v) for k, v in json.loads(self.file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            self._uids = {}

    def uid_for(self, workspace: str) -> int:
        with self._lock:
            if workspace not in self._uids:
                used = set(self._uids.values())
                uid = next(u for u in range(self.base + 1, self.base + UID_SPAN) if u not in used)
                self._uids[workspace] = uid
                write_private(self.file, json.dumps(self._uids, indent=1).encode())
            return self._uids[workspace]


@dataclass(frozen=True)
class Policy:
    ro: tuple[str, ...]
    rw: tuple[str, ...]
    uid: int | None
    scope: tuple[str, ...]


def launcher_options(policy: Policy) -> list[str]:
    """``policy`` as ``sandbox_exec.py``'s options (the part before ``--``)."""
    options = [*(x for p in policy.ro for x in ("--ro", p)), *(x for p in policy.rw for x in ("--rw", p)),
               *(x for s in policy.scope for x in ("--scope", s))]
    if policy.uid is not None:
        options += ["--uid", str(policy.uid), "--gid", str(policy.uid)]
    return options


class Sandbox:
    """What this machine allows; builds each workload's launch command."""

    def __init__(self, *, abi: int, uids: UidMap | None, state_dir: Path, note: str = "") -> None:
        self.abi = abi
        self.uids = uids
        self.state_dir = state_dir
        self.note = note
        self._python = _safe_reads(_python_paths(), private=state_dir) if abi else []

    @classmethod
    def off(cls, state_dir: Path, note: str = "") -> Sandbox:
        return cls(abi=0, uids=None, state_dir=state_dir, note=note)

    @classmethod
    def detect(cls, state_dir: Path, *, uid_base: int = UID_BASE) -> Sandbox:
        """Landlock if the kernel has it; a uid per workspace if we are root and the Python
        installation is readable by other users (else say why not)."""
        if not sys.platform.startswith("linux"):
            return cls.off(state_dir, f"no sandbox on {sys.platform}")
        abi = sandbox_exec.landlock_abi()
        if abi == 0:
            return cls.off(state_dir, "this kernel has no Landlock (Linux >= 5.13 with landlock in lsm=)")
        if os.geteuid() != 0:
            return cls(abi=abi, uids=None, state_dir=state_dir)
        for needed in (sys.executable, sys.prefix, sys.base_prefix, nubis.__file__, state_dir.parent):
            closed = closed_to_others(str(needed))
            if closed is not None:
                return cls(abi=abi, uids=None, state_dir=state_dir,
                           note=f"no uid per workspace: other users cannot reach {closed} (on the way to "
                                f"{needed}); install Python and NUBIS_HOME where they can, or chmod o+x it")
        uids = UidMap(state_dir.parent / "workload-uids.json", uid_base)
        return cls(abi=abi, uids=uids, state_dir=state_dir)

    @property
    def enabled(self) -> bool:
        return self.abi > 0

    def describe(self) -> str:
        if not self.enabled:
            return f"workloads: NOT sandboxed ({self.note or 'members are trusted (--trust-members)'})"
        who = (f"uid {self.uids.base + 1}+ per workspace" if self.uids is not None
               else "capabilities dropped" if os.geteuid() == 0 else f"uid {os.geteuid()}")
        extra = f"; {self.note}" if self.note else ""
        return f"workloads: sandboxed (landlock ABI {self.abi}, {who}{extra})"

    def uid_for(self, workspace: str) -> int | None:
        return self.uids.uid_for(workspace) if self.uids is not None else None

    def policy(self, *, workspace: str, read: Iterable[str], write: Iterable[str],
               gang: bool = False) -> Policy:
        """``read``/``write``: the workload's own paths. A gang's ranks may share abstract unix
        sockets (NCCL's proxy uses them), so only signals are scoped for them."""
        devices = [p for pattern in GPU_DEVICES for p in glob.glob(pattern)]
        return Policy(
            ro=tuple([*SYSTEM_READ, *self._python, *read]),
            rw=tuple([*DEVICES_RW, *devices, *write]),
            uid=self.uid_for(workspace),
            scope=("signal",) if gang else ("signal", "abstract_unix_socket"),
        )

    def command(self, argv: list[str], policy: Policy) -> list[str]:
        """``argv`` started inside ``policy``; unchanged when the sandbox is off."""
        if not self.enabled:
            return argv
        return [sys.executable, "-I", "-S", str(LAUNCHER), *launcher_options(policy), "--", *argv]

    def env(self, workspace: str, *, tmp: Path, home: Path) -> dict[str, str]:
        """A private tmp and home, and a user name when the workload runs as a uid of its own
        (no passwd entry: ``getpass`` reads ``USER``)."""
        env = {"TMPDIR": str(tmp), "HOME": str(home)}
        uid = self.uid_for(workspace)
        if uid is not None:
            env.update({"USER": f"nubis-{uid}", "LOGNAME": f"nubis-{uid}"})
        return env

    def give(self, folder: Path, workspace: str) -> None:
        """Hand a folder the control plane filled (a job's unpacked code) to the workspace's uid."""
        uid = self.uid_for(workspace)
        if uid is None:
            return
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, uid)
        os.chown(folder, uid, uid)

    def own(self, folder: Path, workspace: str, *, mode: int = 0o700) -> None:
        """Create ``folder`` for one workspace's workloads: theirs (uid) and closed to others."""
        folder.mkdir(parents=True, exist_ok=True)
        uid = self.uid_for(workspace)
        if uid is not None:
            os.chown(folder, uid, uid)
        folder.chmod(mode)

    def share_storage(self, folder: Path, workspace: str) -> None:
        """A local storage folder the control plane (root) and the workspace's uid both write:
        group-owned by the workspace's gid, setgid, closed to others."""
        folder.mkdir(parents=True, exist_ok=True)
        gid = self.uid_for(workspace)
        if gid is None:
            return
        folder.parent.chmod(0o711)  # workspaces/<ws>: its photons/ stay the control plane's
        for sibling in folder.parent.iterdir():
            if sibling != folder and sibling.is_dir():
                sibling.chmod(0o700)
        for root, dirs, files in os.walk(folder):
            os.chown(root, -1, gid)
            os.chmod(root, 0o2770)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o2770)  # os.walk visits and chowns them next
            for name in files:
                path = os.path.join(root, name)
                os.chown(path, -1, gid)
                os.chmod(path, 0o660)
        os.chmod(folder, 0o2770)


def harden_home(home: Path, *, open_dirs: Iterable[Path] = ()) -> None:
    """The control plane's state is its own: ``home`` searchable (not listable) by others only so
    that workloads reach their own folders below it, secrets 0600, everything else 0700.
    ``open_dirs`` (on the way to workloads' folders) get 0711."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o711)
    for name in ("admin.token", "master.key", "server.json", "credentials.json", "gateway.token",
                 "nubis.db", "nubis.db-wal", "nubis.db-shm", "workload-uids.json"):
        path = home / name
        if path.exists():
            path.chmod(0o600)
    for child in home.iterdir():
        if child.is_dir() and child not in set(open_dirs):
            child.chmod(0o700)
    for folder in open_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o711)
