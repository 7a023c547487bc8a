"""A user's loop with job outputs: submit a folder (its .nubisignore honoured, what goes printed),
then list and download what the job left in NUBIS_OUTPUT_DIR — a real `nubis up` and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import nubis

from platform_process import PlatformProcess, nubis_up

pytestmark = pytest.mark.e2e

TRAIN = """\
import os, pathlib, sys
if pathlib.Path("snapshot.pt").exists():
    sys.exit("a stale snapshot was uploaded")
out = pathlib.Path(os.environ["NUBIS_OUTPUT_DIR"])
(out / "lightning_logs" / "version_0").mkdir(parents=True)
(out / "lightning_logs" / "version_0" / "metrics.csv").write_text("epoch,loss\\n0,0.5\\n")
(out / "snapshot.pt").write_bytes(b"w" * 2048)
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("platform") / "home") as running:
        yield running


def test_submit_honours_nubisignore_and_outputs_come_back(platform: PlatformProcess, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(TRAIN)
    (work / "snapshot.pt").write_bytes(b"stale" * 1000)  # what an earlier local run left
    (work / ".nubisignore").write_text("*.pt\n")

    submitted = platform.cli("job", "submit", "--name", "keeper", "--cpu", "0.5", "--memory", "128Mi",
                             "--output", "json", "--", "python", "train.py", cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)  # stdout stays JSON: the upload summary goes to stderr
    assert "uploading 2 file(s)" in submitted.stderr and "1 left out by .nubisignore" in submitted.stderr
    assert "train.py" in submitted.stderr and "snapshot.pt" not in submitted.stderr

    with nubis.Client(platform.url, platform.admin_token) as client:
        done = client.jobs.wait("keeper", timeout=60)
    assert done.status == "succeeded", (done.reason, done)
    assert done.outputs == f".jobs/{job['id']}/outputs"

    table = platform.cli("job", "outputs", "keeper", env={"COLUMNS": "200"}, cwd=work)
    assert table.returncode == 0, table.stderr
    assert f"in storage under {done.outputs}/" in table.stdout
    assert "lightning_logs/version_0/metrics.csv" in table.stdout and "2.0 KiB" in table.stdout
    listed = json.loads(platform.cli("job", "outputs", "keeper", "-o", "json", cwd=work).stdout)
    assert {o["path"]: o["size"] for o in listed} == {
        f"{done.outputs}/lightning_logs/version_0/metrics.csv": 17, f"{done.outputs}/snapshot.pt": 2048}

    fetched = platform.cli("job", "outputs", "keeper", "--get", str(tmp_path / "got"), cwd=work)
    assert fetched.returncode == 0, fetched.stderr
    assert "downloaded 2 file(s)" in fetched.stderr
    assert (tmp_path / "got" / "snapshot.pt").read_bytes() == b"w" * 2048
    assert (tmp_path / "got" / "lightning_logs" / "version_0" / "metrics.csv").read_text().startswith("epoch")
