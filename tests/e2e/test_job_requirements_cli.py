"""A job's own dependencies: a ``requirements.txt`` in the submitted folder (or ``--requirements``)
is installed for real — pip from this machine's package index — into a cached virtualenv that every
worker of every attempt runs on, never into the platform's environment. A real ``nubis up`` and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nubis

from platform_process import PlatformProcess, nubis_up

pytestmark = pytest.mark.e2e

PACKAGE = "texttable"  # small, pure Python, not a dependency of nubis or its test tools

JOB = """\
import os, sys, texttable
print(f"rank {os.environ['RANK']} attempt {os.environ['NUBIS_JOB_ATTEMPT']} python {sys.executable} "
      f"texttable {texttable.__file__}", flush=True)
if os.environ["NUBIS_JOB_ATTEMPT"] == "1":
    sys.exit(1)  # the retry must find the virtualenv built already
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("needs") / "home") as running:
        yield running


def platform_has(package: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True, timeout=60)
    return probe.returncode == 0


def events_of(platform: PlatformProcess, ref: str, cwd: Path) -> list[dict[str, str]]:
    shown = platform.cli("job", "events", ref, "-o", "json", cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_requirements_txt_is_installed_for_every_worker_not_into_the_platform(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    assert not platform_has(PACKAGE), f"pick a package the platform's environment lacks, not {PACKAGE}"
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.py").write_text(JOB)
    (work / "requirements.txt").write_text(f"# what job.py needs\n{PACKAGE}\nhttpx  # the platform has it\n")

    submitted = platform.cli("job", "submit", "--name", "needs", "--workers", "2", "--cpu", "0.5",
                          "--memory", "256Mi", "--max-retries", "1", "--", "python", "job.py",
                          cwd=work)
    assert submitted.returncode == 0, submitted.stderr
    assert f"requirements from requirements.txt: {PACKAGE}, httpx" in submitted.stderr

    with nubis.Client(platform.url, platform.admin_token) as client:
        done = client.jobs.wait("needs", timeout=240)
        assert done.status == "succeeded", (done.reason, done)
        assert done.attempt == 2 and done.requirements == [PACKAGE, "httpx"]
        lines = [ln for attempt in (1, 2) for rank in (0, 1)
                 for ln in client.jobs.logs("needs", worker=rank, attempt=attempt) if ln.startswith("rank")]
    assert len(lines) == 4  # every rank of every attempt
    venvs = str(platform.home / "backend" / "venvs")
    for line in lines:
        python, module = line.split(" python ")[1].split(" texttable ")
        assert python.startswith(venvs) and module.startswith(venvs), line
    assert len({ln.split(" python ")[1] for ln in lines}) == 1  # one virtualenv, built once

    messages = [e["message"] for e in events_of(platform, "needs", work) if e["kind"] == "environment"]
    assert messages[0] == f"installing {PACKAGE} into a virtualenv (missing from the platform's environment)"
    assert messages[1].startswith("installed 1 package in ") and f" s: {PACKAGE} " in messages[1], messages
    assert len(messages) == 2, messages  # the retry reused it: nothing installed again
    assert not platform_has(PACKAGE)  # the platform's own environment is untouched


def test_a_requirement_pip_cannot_install_fails_the_job_with_pips_words(
    platform: PlatformProcess, tmp_path: Path
) -> None:
    (tmp_path / "bad.txt").write_text("nonexistent-pkg-zzz==1\n")
    submitted = platform.cli("job", "submit", "--name", "unmet", "--no-code", "--requirements", "bad.txt",
                          "--max-retries", "3", "--", "python", "-c", "print('never runs')",
                          cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr

    with nubis.Client(platform.url, platform.admin_token) as client:
        done = client.jobs.wait("unmet", timeout=180)
    assert done.status == "failed"
    assert done.attempt == 0  # no worker started, no retry loop
    assert done.reason is not None and done.reason.startswith("installing nonexistent-pkg-zzz==1 failed: ")
    assert "nonexistent-pkg-zzz" in done.reason.split("failed: ", 1)[1]  # pip's own words
    assert any("nonexistent-pkg-zzz" in e["message"].split("failed: ", 1)[-1]
               for e in events_of(platform, "unmet", tmp_path) if e["kind"] == "status")

    refused = platform.cli("job", "submit", "--no-code", "--requirements", "opts.txt", "--", "python", "-V",
                        cwd=tmp_path)
    assert refused.returncode != 0 and "opts.txt: cannot read it" in refused.stderr
    (tmp_path / "opts.txt").write_text("--index-url https://elsewhere.invalid/simple\n")
    refused = platform.cli("job", "submit", "--no-code", "--requirements", "opts.txt", "--", "python", "-V",
                        cwd=tmp_path)
    assert refused.returncode != 0 and "opts.txt, line 1: " in refused.stderr
    assert "pip options are not supported" in refused.stderr
