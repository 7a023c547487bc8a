"""Storage throughput: upload and download of one big file through a real ``nubis up``.

    python bench/storage.py                    # 1 GiB, 3 rounds
    python bench/storage.py --size 256Mi --rounds 5

The SDK client (streaming both ways) against ``shutil.copyfile`` of the same file on the same
disk, as ratios, and the server process's peak RSS while the transfers ran (it must stay flat:
bytes stream, they are never held). Everything is on loopback; client and server share the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _common import REPO, format_table, free_port, machine_line, median, stop_process, wait_ready

from nubis.client.client import Client
from nubis.models.resources import parse_bytes

MiB = 1 << 20
TARGET_RATIO = 0.5
TARGET_RSS_MB = 300


@dataclass
class RssSampler:
    """Samples a process's resident memory (``/proc/<pid>/status``) until stopped; keeps the peak."""

    pid: int
    interval: float = 0.02
    peak_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _read(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._read("VmRSS"))
            time.sleep(self.interval)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def high_water_mb(self) -> float:
        """The kernel's own peak (VmHWM) over the process's whole life, in MB."""
        return self._read("VmHWM") / 1000


@contextmanager
def nubis_up(home: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "NUBIS_HOME": str(home)},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url + "/healthz", timeout=60, log=log)
            yield url, proc.pid
        finally:
            stop_process(proc)


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; returns their sha256."""
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            data = os.urandom(min(MiB, left))
            fh.write(data)
            sha.update(data)
            left -= len(data)
    return sha.hexdigest()


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, starting with no dirty pages waiting for the disk (``sync`` first),
    so that no transfer pays for the write-back of the one before it."""
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def python_copy(src: Path, dst: Path) -> None:
    """What any user-space copy pays: 1 MiB reads and writes (``copyfile`` stays in the kernel)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        while data := fin.read(MiB):
            fout.write(data)


def sha256_only(src: Path) -> None:
    """The hash every upload must compute: one core's worth, whatever the network does."""
    sha = hashlib.sha256()
    with src.open("rb") as fin:
        while data := fin.read(MiB):
            sha.update(data)


@dataclass
class Timings:
    copy: list[float] = field(default_factory=list)
    python_copy: list[float] = field(default_factory=list)
    sha256: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    download: list[float] = field(default_factory=list)


def run_rounds(client: Client, src: Path, work: Path, sha256: str, rounds: int) -> Timings:
    t = Timings()
    dst = work / "copy.bin"
    for i in range(rounds):
        t.copy.append(timed(lambda: shutil.copyfile(src, dst)))
        dst.unlink()
        t.python_copy.append(timed(lambda: python_copy(src, dst)))
        dst.unlink()
        t.sha256.append(timed(lambda: sha256_only(src)))
        result = None

        def upload() -> None:
            nonlocal result
            result = client.storage.put("bench/file.bin", src)

        t.upload.append(timed(upload))
        assert result is not None and result.sha256 == sha256, "the server hashed other bytes"
        t.download.append(timed(lambda: client.storage.get("bench/file.bin", dst)))
        client.storage.delete("bench/file.bin")  # each upload writes a new file, as the copy does
        assert dst.stat().st_size == src.stat().st_size
        dst.unlink()
        print(f"round {i + 1}: copy {t.copy[-1]:.2f} s, read/write {t.python_copy[-1]:.2f} s, "
              f"sha256 {t.sha256[-1]:.2f} s, upload {t.upload[-1]:.2f} s, "
              f"download {t.download[-1]:.2f} s", file=sys.stderr)
    return t


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(size: int, t: Timings, server_peak_mb: float, server_hwm_mb: float, rounds: int) -> str:
    copy = median(t.copy)
    rows = []
    for name, values in (("shutil.copyfile", t.copy), ("read/write copy, 1 MiB", t.python_copy),
                         ("sha256 of the file only", t.sha256), ("API upload (SDK put)", t.upload),
                         ("API download (SDK get)", t.download)):
        seconds = median(values)
        rows.append([name, f"{seconds:.2f}", f"{size / MiB / seconds:.0f}", f"{copy / seconds:.2f}"])
    table = format_table(["transfer", "median s", "MiB/s", "ratio to copy"], rows)
    client_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000
    lines = [
        f"{size / MiB:.0f} MiB file, median of {rounds} rounds; {machine_line()}",
        "",
        table,
        "",
        f"server peak RSS during the transfers: {server_peak_mb:.0f} MB "
        f"(VmHWM over its whole life: {server_hwm_mb:.0f} MB; target < {TARGET_RSS_MB} MB)",
        f"client (this process) peak RSS: {client_mb:.0f} MB",
        f"targets: ratio >= {TARGET_RATIO}: upload {verdict(copy / median(t.upload) >= TARGET_RATIO)}, "
        f"download {verdict(copy / median(t.download) >= TARGET_RATIO)}; "
        f"RSS < {TARGET_RSS_MB} MB: {verdict(server_hwm_mb < TARGET_RSS_MB)}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1Gi", help="file size, e.g. 1Gi, 256Mi (default 1Gi)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = parse_bytes(args.size)
    with tempfile.TemporaryDirectory(prefix="nubis-bench-storage-") as tmp:
        work = Path(tmp)
        src = work / "source.bin"
        print(f"writing {size / MiB:.0f} MiB of random bytes to {src}", file=sys.stderr)
        sha256 = make_file(src, size)
        with nubis_up(work / "home") as (url, pid):
            token = (work / "home" / "admin.token").read_text().strip()
            sampler = RssSampler(pid)
            with Client(url, token) as client, sampler.running():
                timings = run_rounds(client, src, work, sha256, args.rounds)
            hwm = sampler.high_water_mb()
    print(report(size, timings, sampler.peak_kb / 1000, hwm, args.rounds))


if __name__ == "__main__":
    main()
