"""The sandbox's policy (pure) and its launcher on this kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nubis.backends import sandbox_exec
from nubis.backends.local_venvs import pip_paths, requirements_key
from nubis.backends.sandbox import LAUNCHER, Sandbox, UidMap, _safe_reads, harden_home

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Landlock is Linux's")


def test_reads_never_open_the_root_or_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "home" / "backend"
    state.mkdir(parents=True)
    venv = state / "venvs" / "abc"
    venv.mkdir(parents=True)
    kept = _safe_reads(["/", str(tmp_path), str(tmp_path / "home"), str(state), str(state / "jobs"),
                        str(venv), "/usr/lib"], private=state)
    assert kept == [str(venv.resolve()), "/usr/lib"]


def test_uids_are_one_per_workspace_and_survive_a_restart(tmp_path: Path) -> None:
    uids = UidMap(tmp_path / "uids.json", base=300_000)
    a, b = uids.uid_for("ws-a"), uids.uid_for("ws-b")
    assert a != b and 300_000 < a < 400_000 and uids.uid_for("ws-a") == a
    assert UidMap(tmp_path / "uids.json", base=300_000).uid_for("ws-b") == b
    assert (tmp_path / "uids.json").stat().st_mode & 0o777 == 0o600


def test_off_runs_the_command_unchanged(tmp_path: Path) -> None:
    sandbox = Sandbox.off(tmp_path, "no Landlock here")
    policy = sandbox.policy(workspace="w", read=[], write=[])
    assert sandbox.command(["python", "x.py"], policy) == ["python", "x.py"]
    assert sandbox.describe() == "workloads: NOT sandboxed (no Landlock here)"
    assert "trust-members" in Sandbox.off(tmp_path).describe()


def test_a_gang_shares_abstract_sockets_but_not_signals(tmp_path: Path) -> None:
    sandbox = Sandbox(abi=6, uids=None, state_dir=tmp_path)
    assert sandbox.policy(workspace="w", read=[], write=[], gang=True).scope == ("signal",)
    single = sandbox.policy(workspace="w", read=["/code"], write=["/work"])
    assert single.scope == ("signal", "abstract_unix_socket")
    assert "/code" in single.ro and "/work" in single.rw and "/dev/sda" not in single.rw


def test_harden_home_closes_state_and_keeps_the_way_to_workloads_open(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "admin.token").write_text("t")
    (home / "nubis.db").write_text("db")
    harden_home(home, open_dirs=[home / "backend"])
    assert home.stat().st_mode & 0o777 == 0o711
    assert (home / "backend").stat().st_mode & 0o777 == 0o711
    assert (home / "logs").stat().st_mode & 0o777 == 0o700
    assert (home / "admin.token").stat().st_mode & 0o777 == 0o600
    assert (home / "nubis.db").stat().st_mode & 0o777 == 0o600


def _launch(policy: dict[str, object], *argv: str) -> subprocess.CompletedProcess[str]:
    options = [x for name, values in policy.items()
               for value in (values if isinstance(values, list) else [values])
               for x in (f"--{name}", str(value))]
    return subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), *options, "--", *argv],
                          capture_output=True, text=True, timeout=60)


@linux_only
def test_the_launcher_allows_only_what_the_policy_names(tmp_path: Path) -> None:
    if sandbox_exec.landlock_abi() == 0:
        pytest.skip("this kernel has no Landlock")
    (tmp_path / "rw").mkdir()
    (tmp_path / "secret").write_text("s")
    probe = ("import os, sys\n"
             "open(sys.argv[1] + '/rw/out', 'w').write('ok')\n"
             "for p in (sys.argv[1] + '/secret', '/etc/shadow'):\n"
             "    try: open(p).read(); print('READ', p)\n"
             "    except PermissionError: print('denied', p)\n")
    ro = ["/usr", "/lib", "/lib64", "/etc", sys.prefix, sys.base_prefix,
          str(Path(sys.executable).resolve().parent)]
    done = _launch({"ro": ro, "rw": [str(tmp_path / "rw")], "scope": ["signal"]},
                   sys.executable, "-c", probe, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"denied {tmp_path}/secret" in done.stdout
    assert (tmp_path / "rw" / "out").read_text() == "ok"


@linux_only
def test_the_launcher_refuses_a_bad_policy_or_no_command() -> None:
    assert _launch({"color": "red"}, "/bin/true").returncode == 126
    done = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), "--ro", "/usr"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 126 and "no command" in done.stderr


@linux_only
def test_the_launcher_refuses_to_run_what_it_cannot_sandbox(tmp_path: Path) -> None:
    done = _launch({"abi-min": 99}, "/bin/true")
    assert done.returncode == 126
    assert "cannot start the workload sandboxed" in done.stderr


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_as_root_the_launcher_drops_to_the_workspace_uid(tmp_path: Path) -> None:
    if sandbox_exec.landlock_abi() == 0:
        pytest.skip("this kernel has no Landlock")
    done = _launch({"ro": ["/usr", "/lib", "/lib64", "/bin", "/etc"], "rw": [], "uid": 234_567},
                   "/usr/bin/id", "-u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "234567"
    caps = _launch({"ro": ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc"], "rw": []},
                   "/bin/grep", "CapEff", "/proc/self/status")
    assert caps.stdout.split() == ["CapEff:", "0000000000000000"], caps.stderr


def test_virtualenvs_are_per_workspace_and_pip_reads_only_the_operators_paths(tmp_path: Path) -> None:
    assert requirements_key(["six"], "a") != requirements_key(["six"], "b")
    assert requirements_key(["six"], "a") == requirements_key([" six "], "a")
    (tmp_path / "wheels").mkdir()
    environ = {"PIP_FIND_LINKS": f"{tmp_path / 'wheels'} /does/not/exist",
               "PIP_INDEX_URL": f"file://{tmp_path}", "HOME": "/root", "PIP_TIMEOUT": "60"}
    assert sorted(pip_paths(environ)) == sorted([str(tmp_path / "wheels"), str(tmp_path)])
