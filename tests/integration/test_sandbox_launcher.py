"""The sandbox launcher's ``--pdeathsig``: a workload does not outlive the process that started it
(the Ray backend's actors rely on it: Ray leaves such children running when it stops a node)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nubis.backends.sandbox import LAUNCHER
from nubis.backends.sandbox_exec import landlock_abi

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
    pytest.mark.skipif(sys.platform != "linux" or landlock_abi() == 0, reason="the launcher needs Landlock"),
]


SLEEP = shutil.which("sleep") or "/bin/sleep"  # by path: the workload's uid may not read Python's stdlib
STARTER = """
import ctypes, subprocess, sys
libc = ctypes.CDLL(None)
p = subprocess.Popen(sys.argv[2:], start_new_session=True, preexec_fn=lambda: libc.prctl(1, 9, 0, 0, 0))
open(sys.argv[1], "w").write(str(p.pid))
while open(f"/proc/{p.pid}/comm").read().strip() != "sleep" and p.poll() is None:
    pass
"""
"""Starts its arguments as the Ray actor starts a workload (SIGKILL on its death, set before exec),
and ends once the launcher has become the workload."""


def launched_by_a_parent_that_exits(tmp_path: Path, *options: str) -> int:
    """Start ``sleep`` as another uid through the launcher, from a process that then exits; the
    sleep's pid."""
    pid_file = tmp_path / "pid"
    launch = [sys.executable, "-I", "-S", str(LAUNCHER), "--ro", "/", "--uid", "65534", *options,
              "--", SLEEP, "60"]
    subprocess.run([sys.executable, "-c", STARTER, str(pid_file), *launch], check=True, timeout=30)
    return int(pid_file.read_text())


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(os.geteuid() != 0, reason="the launcher changes uid only as root")
def test_the_launcher_kills_the_workload_when_its_starter_ends(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the workload's uid writes nothing, but its cwd must be reachable
    orphan = launched_by_a_parent_that_exits(tmp_path)
    try:
        assert running(orphan)  # the uid change cleared the parent-death signal set before exec
    finally:
        os.kill(orphan, signal.SIGKILL)
    guarded = launched_by_a_parent_that_exits(tmp_path, "--pdeathsig", "9")
    deadline = time.monotonic() + 30
    while running(guarded):
        assert time.monotonic() < deadline, "the workload outlived its starter"
        time.sleep(0.05)
