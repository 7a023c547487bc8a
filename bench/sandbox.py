"""What the workload sandbox costs: replica cold start and a 2-worker job start, sandboxed vs not.

    python bench/sandbox.py                 # 5 rounds
    python bench/sandbox.py --rounds 9

Both run on the local backend with real processes, the way the reconcilers drive it, in one run
and alternating (sandboxed first in even rounds, unsandboxed first in odd ones):

- replica cold start: ``start_replica`` of the echo photon's bundle until ``/readyz`` answers 200
  (the backend's own probe, every 10 ms);
- ``/bin/true`` alone, started as a workload is (the launcher's own cost; median of 5 per round);
- 2-worker job start: ``start_gang`` of ranks 0 and 1 of a job whose workers each import torch
  and ``torch.distributed``, join a gloo process group (the rendezvous env the reconciler sets),
  all_reduce one tensor and exit 0; timed until both exit codes are known.

"sandboxed" is the default (Landlock, plus a uid per workspace or no capabilities when root);
"not" is ``--trust-members`` (``Sandbox.off``). Target: the sandbox adds at most 50 ms (median).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_line

from nubis.backends.base import GangSpec, ReplicaSpec
from nubis.backends.local import LocalBackend
from nubis.backends.nodes import LOCAL_NODE
from nubis.backends.sandbox import Sandbox
from nubis.models.resources import Resources
from nubis.photon.build import build_bundle

REPO = Path(__file__).resolve().parent.parent
WORKER = ("import torch, torch.distributed as dist; dist.init_process_group('gloo'); "
          "t = torch.ones(1); dist.all_reduce(t); assert t.item() == 2; dist.destroy_process_group()")


async def replica_cold_start(backend: LocalBackend, bundle: Path, content_hash: str, n: int) -> float:
    spec = ReplicaSpec(replica_id=f"bench-r{n}", deployment="echo", workspace="bench", bundle=bundle,
                       content_hash=content_hash, resources=Resources(cpu=0.1, memory=64 << 20))
    started = time.perf_counter()
    handle = await backend.start_replica(spec)
    try:
        while not (await backend.probe(handle)).ready:
            if not (await backend.probe(handle)).alive:
                raise SystemExit("the echo replica exited:\n" + "\n".join(backend.read_logs(handle, tail=20)))
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await backend.stop_replica(handle, grace_s=5)


async def job_start(backend: LocalBackend, n: int) -> float:
    job_id = f"bench-j{n}"
    started = time.perf_counter()
    handles = await backend.start_gang(GangSpec(
        job_id=job_id, attempt=1, workspace="bench", command=("python", "-c", WORKER),
        nodes=(LOCAL_NODE, LOCAL_NODE), resources=Resources(cpu=0.1, memory=64 << 20)))
    while True:
        probes = [await backend.probe(h) for h in handles]
        if not any(p.alive for p in probes):
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    if any(p.exit_code != 0 for p in probes):
        raise SystemExit("a worker failed:\n" + "\n".join(backend.read_logs(handles[0], tail=20)))
    backend.forget_job(job_id)
    return elapsed


async def launcher_alone(backend: LocalBackend) -> float:
    """``/bin/true`` started as the backend starts a workload (through the sandbox, or not)."""
    policy = backend.sandbox.policy(workspace="bench", read=[], write=[])
    argv = backend.sandbox.command(["/bin/true"], policy)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*argv)
    if await process.wait() != 0:
        raise SystemExit(f"{argv[:4]} failed")
    return time.perf_counter() - started


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="nubis-bench-sandbox-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        bundle, manifest = build_bundle(str(REPO / "examples" / "echo"), root / "echo.photon")
        bundle.chmod(0o644)
        backends = {
            "sandboxed": LocalBackend(root / "on" / "backend"),
            "not (--trust-members)": LocalBackend(root / "off" / "backend",
                                                  sandbox=Sandbox.off(root / "off" / "backend")),
        }
        print(machine_line())
        print(backends["sandboxed"].sandbox.describe())
        times: dict[tuple[str, str], list[float]] = {}
        await replica_cold_start(backends["sandboxed"], bundle, manifest.content_hash, -1)  # warm caches
        await job_start(backends["sandboxed"], -1)
        for n in range(rounds):
            order = list(backends) if n % 2 == 0 else list(reversed(backends))
            for mode in order:
                backend = backends[mode]
                times.setdefault(("start /bin/true", mode), []).append(
                    statistics.median([await launcher_alone(backend) for _ in range(5)]))
                cold = await replica_cold_start(backend, bundle, manifest.content_hash, n)
                times.setdefault(("replica cold start", mode), []).append(cold)
                times.setdefault(("2-worker job start", mode), []).append(await job_start(backend, n))
        rows = []
        for what in ("start /bin/true", "replica cold start", "2-worker job start"):
            on = statistics.median(times[(what, "sandboxed")])
            off = statistics.median(times[(what, "not (--trust-members)")])
            rows.append([what, f"{off * 1000:.1f} ms", f"{on * 1000:.1f} ms", f"{(on - off) * 1000:+.1f} ms",
                         f"{on / off:.3f}"])
        print(f"\nmedian of {rounds} rounds, alternating order")
        print(format_table(["", "not sandboxed", "sandboxed", "sandbox adds", "ratio"], rows))
        for backend in backends.values():
            shutil.rmtree(backend.state_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
