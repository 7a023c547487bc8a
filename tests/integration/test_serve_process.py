"""The photon server as a real process: SIGTERM drains, init() failures exit non-zero."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from servers import FIXTURES, free_port, photon_process, start, stop

CHATTY = '''
import sys
import nubis

LINE = "x" * 1023 + "\\n"


class Chatty(nubis.Photon):
    """Prints far more than a pipe holds (64 KiB): 160 KiB at init and on every call."""

    def init(self) -> None:
        sys.stdout.write("init " + LINE * 160)
        sys.stdout.flush()

    @nubis.handler
    def talk(self, n: int) -> int:
        sys.stderr.write(f"call {n} " + LINE * 160)
        sys.stderr.flush()
        return n
'''


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly() -> None:
    with photon_process(FIXTURES / "photons" / "slow") as photon:
        results: list[httpx.Response] = []
        call = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{photon.url}/wait", json={"seconds": 1.5}, timeout=30)
            )
        )
        call.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the handler is running
            metrics = httpx.get(f"{photon.url}/metrics").text
            if 'nubis_photon_in_flight_requests{handler="wait"} 1.0' in metrics:
                break
            time.sleep(0.02)
        photon.proc.send_signal(signal.SIGTERM)
        call.join(30)
        assert photon.proc.wait(30) == 0
        out = photon.output()
    assert [r.status_code for r in results] == [200]
    assert results[0].json() == {"slept": 1.5}
    assert "shutdown() called" in out


def test_init_failure_exits_non_zero_with_the_users_error_in_one_block(tmp_path: Path) -> None:
    port = free_port()
    proc = start([sys.executable, "-m", "nubis.photon.serve",
                  str(FIXTURES / "photons" / "broken"), "--port", str(port)], log=tmp_path / "log")
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)
    out = proc.output()
    assert proc.returncode == 1
    assert "Broken.init() failed" in out
    assert "FileNotFoundError: weights file 'missing.bin' not found" in out
    assert 'self.model = load_weights("missing.bin")' in out
    assert "Traceback (most recent call last)" not in out
    assert "nubis/photon" not in out.split("Broken.init() failed", 1)[1].split("────\n")[0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no/such/photon.py", "no such file or folder"),
        ("tests", "the folder has no photon.py"),
        ("pyproject.toml", "not a .py file, a folder or a bundle"),
    ],
)
def test_bad_target_exits_1_with_a_clear_message(target: str, message: str, tmp_path: Path) -> None:
    proc = start([sys.executable, "-m", "nubis.photon.serve", target, "--port", str(free_port())],
                 log=tmp_path / "log")
    proc.wait(timeout=60)
    out = proc.output()
    assert proc.returncode == 1
    assert message in out
    assert "Traceback" not in out


def test_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    with photon_process("examples/echo") as photon:
        port = photon.url.rsplit(":", 1)[1]
        proc = start([sys.executable, "-m", "nubis.photon.serve", "examples/echo", "--port", port],
                     log=tmp_path / "log")
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop(proc)
        assert proc.returncode != 0


def test_a_server_that_logs_more_than_a_pipe_holds_still_answers(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(CHATTY)
    with photon_process(tmp_path / "chatty.py", ready_timeout=30) as photon:  # a pipe: never ready
        answers = [httpx.post(f"{photon.url}/talk", json={"n": n}, timeout=20).json() for n in (1, 2)]
        out = photon.output()
    assert answers == [1, 2]
    assert "init xxx" in out
    assert "call 1 xxx" in out
    assert "call 2 xxx" in out
    assert len(out) > 3 * 160 * 1024
