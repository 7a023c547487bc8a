"""Training scripts nobody here wrote, run as 2-worker jobs on a real `nubis up` through the CLI as a
user runs them: pytorch/examples' DDP tutorial (torchrun style), a PyTorch Lightning DDP script and a
Hugging Face Trainer script (a tiny BERT built from a config, nothing downloaded). Each must succeed
with the env torchrun would give it, and what it wrote must be listed by `nubis job outputs`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import nubis
from nubis.models.jobs import Job

from platform_process import PlatformProcess, nubis_up
from servers import EXAMPLES

pytestmark = pytest.mark.e2e

SCRIPTS = EXAMPLES / "third_party"


@dataclass(frozen=True)
class Script:
    name: str
    folder: str
    command: tuple[str, ...]
    env: tuple[str, ...]
    expected: tuple[str, ...]  # what the script writes, relative to the job's outputs


RUNS = [
    Script("ddp-tutorial", "ddp_tutorial", ("python", "multigpu_torchrun.py", "2", "1"), (),
           ("snapshot.pt",)),
    Script("lightning-ddp", "lightning_ddp", ("python", "train.py", "--epochs", "1"), (),
           ("lightning_logs/version_0/metrics.csv", "lightning_logs/version_0/hparams.yaml",
            "lightning_logs/version_0/checkpoints/epoch=0-step=32.ckpt")),  # 2048 samples / 2 ranks / 32
    Script("hf-trainer", "hf_trainer", ("python", "train.py", "--epochs", "1"), ("HF_HUB_OFFLINE=1",),
           ("config.json", "model.safetensors", "checkpoint-16/trainer_state.json",
            "checkpoint-16/optimizer.pt")),  # 512 samples / 2 ranks / 16 a step
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("third-party") / "home") as running:
        yield running


def explain(client: nubis.Client, job: Job) -> str:
    """Why a job did not succeed: its reason, events and both workers' last lines."""
    lines = [f"{job.name} is {job.status}: {job.reason}"]
    lines += [f"  {e.kind}: {e.message}" for e in client.jobs.events(job.id, limit=20)]
    for rank in range(2):
        lines += [f"  [worker {rank}] {line}" for line in client.jobs.logs(job.id, worker=rank, tail=30)]
    return "\n".join(lines)


@pytest.mark.parametrize("script", RUNS, ids=[s.name for s in RUNS])
def test_a_third_party_script_runs_as_a_two_worker_job(platform: PlatformProcess, script: Script) -> None:
    envs = [arg for pair in script.env for arg in ("--env", pair)]
    # One retry, for one failure only: torch's gloo teardown can abort a rank as the script exits, its
    # work done ("terminate called without an active exception", signal 6) — one CI run in about ten
    # for the DDP tutorial; torchrun users set --max-restarts for it. Any other failure fails the test.
    submitted = platform.cli("job", "submit", "--name", script.name, "--workers", "2", "--cpu", "1",
                             "--memory", "2Gi", "--max-retries", "1", *envs, "--output", "json", "--",
                             *script.command, cwd=SCRIPTS / script.folder)
    assert submitted.returncode == 0, submitted.stderr

    with nubis.Client(platform.url, platform.admin_token) as client:
        done = client.jobs.wait(script.name, timeout=360)
        assert done.status == "succeeded", explain(client, done)
        if done.attempt > 1:
            events = " ".join(e.message for e in client.jobs.events(done.id, limit=50))
            assert "killed by signal 6" in events and "without an active exception" in events, \
                explain(client, done)
    assert done.workers == 2 and [w.exit_code for w in done.worker_status] == [0, 0]

    listed = platform.cli("job", "outputs", script.name, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    prefix = f"{done.outputs}/"
    paths = {o["path"].removeprefix(prefix): o["size"] for o in json.loads(listed.stdout)}
    assert all(p in paths and paths[p] > 0 for p in script.expected), sorted(paths)
    table = platform.cli("job", "outputs", script.name, env={"COLUMNS": "200"})
    assert table.returncode == 0 and script.expected[0] in table.stdout, table.stdout
