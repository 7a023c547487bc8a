"""Backup and restore as an operator runs them: `nubis backup create` while a writer adds jobs,
secrets and files through the API of a real `nubis up`; `nubis backup restore` into a new home;
`nubis up --home NEW` brings the deployment, the job (from its checkpoint), the secrets and the
tokens back. Damaged archives, wrong passphrases and non-empty targets leave the target empty."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nubis
from nubis.server.backup.archive import read_manifest
from nubis.server.backup.sqlite import describe

from platform_fixtures import postgres_database
from platform_process import nubis_up

pytestmark = pytest.mark.e2e

PASSPHRASE = "backups are only as good as restores"
PHOTON = '''import json
import os
from pathlib import Path

import nubis


class Scorer(nubis.Photon):
    """A linear model: weights shipped in the bundle, the bias from a secret."""

    resources = nubis.Resources(cpu=0.25, memory="256Mi")

    def init(self):
        self.weights = json.loads((Path(__file__).parent / "weights.json").read_text())
        self.bias = float(os.environ["BIAS"])

    @nubis.handler
    def predict(self, x: list[float]) -> float:
        return sum(w * v for w, v in zip(self.weights, x)) + self.bias
'''
TRAINER = '''import os, pathlib, time
ckpt = pathlib.Path(os.environ["NUBIS_CHECKPOINT_DIR"]) / "step.txt"
if ckpt.exists():
    print("resumed from step", ckpt.read_text(), flush=True)
else:
    ckpt.write_text("7")
    print("checkpoint written", flush=True)
time.sleep(600)
'''
SHOW_SECRETS = "import json, os; print('SECRETS=' + json.dumps({k: os.environ[k] for k in sorted(%r)}))"
# Tables the restore's settling writes: workloads set to "not running", their events, revoked job
# tokens, usage intervals ended at the backup's time.
SETTLED = {"replicas", "deployment_events", "jobs", "job_workers", "job_events", "tokens", "usage_intervals"}


class Writer(threading.Thread):
    """Adds a secret, a file and a job through the API, over and over, until stopped."""

    def __init__(self, client: nubis.Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.done: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                self.client.secrets.set(f"W_{i}", f"value {i}")
                self.client.storage.put_bytes(f"writer/{i}.bin", bytes([i % 256]) * (4096 + i))
                job = self.client.jobs.submit(["python", "-c", "pass"], name=f"w{i}", priority=-5)
                self.client.jobs.cancel(job.id)
                self.done.append(i)
                i += 1
        except BaseException as exc:  # the test reports it
            self.error = exc


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: Any, code: str) -> str:
    assert result.returncode == 1, result.stdout
    assert f"error ({code})" in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def rows_by_id(db: Path, table: str) -> set[Any]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute(f'SELECT id FROM "{table}"')}


def job_log(client: nubis.Client, ref: str) -> str:
    return "\n".join(client.jobs.logs(ref))


def wait_log(client: nubis.Client, ref: str, text: str, timeout: float = 120) -> None:
    wait_until(lambda: text in job_log(client, ref), timeout=timeout, what=f"{text!r} in the job's log")


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A platform with a deployment, a running job with a checkpoint, a member token, and a backup
    taken while a writer adds to it; the platform is stopped after."""
    root = tmp_path_factory.mktemp("backup")
    model = root / "scorer"
    model.mkdir()
    (model / "photon.py").write_text(PHOTON)
    (model / "weights.json").write_text(json.dumps([0.5, -1.25, 2.0]))
    with nubis_up(root / "home") as platform, nubis.Client(platform.url, platform.admin_token) as client:
        member = client.tokens.create("analyst", role="member").token
        client.secrets.set("BIAS", "0.125")
        client.photons.push(model)
        client.deployments.create("scorer", "scorer", secrets=["BIAS"])
        client.deployments.wait_ready("scorer", timeout=180)
        answer = client.deployments.endpoint("scorer").predict(x=[1.0, 2.0, 3.0])
        trainer = client.jobs.submit(["python", "-c", TRAINER], name="trainer")
        wait_log(client, trainer.id, "checkpoint written")
        writer = Writer(client)
        writer.start()
        wait_until(lambda: len(writer.done) >= 3, timeout=60, what="the writer's first rounds")
        before = len(writer.done)
        archive = root / "platform.nubis"
        made = platform.cli("backup", "create", str(archive), "--include-key", "--output", "json",
                            env={"NUBIS_BACKUP_PASSPHRASE": PASSPHRASE})
        after = len(writer.done)
        wait_until(lambda: len(writer.done) >= after + 2, timeout=60, what="writes after the backup")
        writer.stop.set()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        summary = json.loads(ok(made))
    return {"root": root, "archive": archive, "answer": answer, "member": member, "summary": summary,
            "before": before, "platform": platform, "trainer": trainer.id}


def test_the_archive_verifies_and_holds_what_was_written_before_it(backed_up: dict[str, Any]) -> None:
    archive: Path = backed_up["archive"]
    assert backed_up["summary"]["key_included"] is True
    out = ok(backed_up["platform"].cli("backup", "verify", str(archive)))
    assert "is intact (every table checked)" in out
    manifest = read_manifest(archive)
    names = {f.name for f in manifest.files}
    for i in range(backed_up["before"]):
        assert f"storage/workspaces/default/files/writer/{i}.bin" in names
    assert manifest.tables["secrets"].rows >= backed_up["before"] + 1
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json" and tar.getnames()[-1] == "checksum.sha256"
        assert any(n.startswith("home/backend/jobs/") and n.endswith("step.txt") for n in tar.getnames())


def test_damaged_archives_wrong_passphrases_and_full_targets_are_refused(backed_up: dict[str, Any]) -> None:
    root: Path = backed_up["root"]
    cli: Callable[..., Any] = backed_up["platform"].cli
    good = backed_up["archive"].read_bytes()
    flipped = root / "flipped.nubis"
    data = bytearray(good)
    data[len(good) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    target = root / "never"
    env = {"NUBIS_BACKUP_PASSPHRASE": PASSPHRASE}
    refused(cli("backup", "verify", str(flipped)), "backup_damaged")
    refused(cli("backup", "restore", str(flipped), "--home", str(target), env=env), "backup_damaged")
    assert not target.exists()
    wrong = refused(cli("backup", "restore", str(backed_up["archive"]), "--home", str(target),
                        env={"NUBIS_BACKUP_PASSPHRASE": "not the passphrase"}), "backup_key_mismatch")
    assert "wrong passphrase" in wrong
    assert not target.exists()
    refused(cli("backup", "restore", str(backed_up["archive"]), "--home", str(root / "home"), env=env),
            "restore_target_not_empty")
    assert sorted(p.name for p in root.iterdir() if ".restore-" in p.name) == []


def test_a_restored_platform_comes_back_whole(backed_up: dict[str, Any]) -> None:
    root: Path = backed_up["root"]
    archive: Path = backed_up["archive"]
    new_home = root / "restored"
    out = ok(backed_up["platform"].cli("backup", "restore", str(archive), "--home", str(new_home),
                                       env={"NUBIS_BACKUP_PASSPHRASE": PASSPHRASE}))
    assert "1 replica(s) start again and 1 job(s) resume from their checkpoints" in out
    manifest = read_manifest(archive)
    snapshot = root / "snapshot.db"
    with tarfile.open(archive) as tar, open(snapshot, "wb") as fh:
        member = tar.extractfile("database/nubis.db")
        assert member is not None
        fh.write(member.read())
    assert describe(snapshot)[0] == manifest.tables  # the archived database is the manifest's
    restored = describe(new_home / "nubis.db")[0]
    for table, digest in manifest.tables.items():
        if table in SETTLED:
            assert rows_by_id(snapshot, table) <= rows_by_id(new_home / "nubis.db", table), table
        elif table != "alembic_version":
            assert restored[table] == digest, table
    with sqlite3.connect(new_home / "nubis.db") as conn:  # what ran is counted until the backup
        still_open = "SELECT count(*) FROM usage_intervals WHERE stopped_at IS NULL"
        assert conn.execute(still_open).fetchone() == (0,)
    for entry in manifest.files:
        if entry.name.startswith("storage/"):
            path = new_home / entry.name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, entry.name

    with nubis_up(new_home) as again, nubis.Client(again.url, again.admin_token) as client:
        assert again.admin_token == backed_up["platform"].admin_token
        with nubis.Client(again.url, backed_up["member"]) as member:
            assert member.whoami().token_name == "analyst"
        client.deployments.wait_ready("scorer", timeout=180)
        assert client.deployments.endpoint("scorer").predict(x=[1.0, 2.0, 3.0]) == backed_up["answer"]
        wait_log(client, backed_up["trainer"], "resumed from step 7")
        assert client.jobs.get(backed_up["trainer"]).status == "running"
        client.jobs.cancel(backed_up["trainer"])
        values = secret_values(client)
    assert values["BIAS"] == "0.125" and len(values) > 3
    assert all(values[n] == f"value {n.removeprefix('W_')}" for n in values if n.startswith("W_"))


def secret_values(client: nubis.Client) -> dict[str, str]:
    """Every restored secret decrypts: a job gets them all in its environment and prints them."""
    names = [s.name for s in client.secrets.list()]
    assert names
    job = client.jobs.submit(["python", "-c", SHOW_SECRETS % names], secrets=names, name="show")
    done = client.jobs.wait(job.id, timeout=120)
    assert done.status == "succeeded", done.reason
    line = next(x for x in client.jobs.logs(job.id) if x.startswith("SECRETS="))
    return json.loads(line.removeprefix("SECRETS="))


def test_scheduled_backups_keep_the_newest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with nubis_up(home, "--backup-every", "1s", "--backup-keep", "2") as platform:
        assert platform.proc is not None
        log = platform.proc.output
        wait_until(lambda: "removed (keeping the newest 2)" in log(), timeout=60, what="a third backup")
        removed = next(line for line in log().splitlines() if "removed (keeping" in line)
        first = Path(removed.split("backup ", 1)[1].split(" removed")[0])
        assert first.parent == home / "backups" and not first.exists()
    kept = sorted((home / "backups").glob("nubis-*.nubis"))  # the platform stopped: no more come
    assert len(kept) == 2 and first < kept[0]
    for path in kept:
        ok(platform.cli("backup", "verify", str(path)))


def test_postgresql_backup_restore_and_verify(tmp_path: Path) -> None:
    with postgres_database() as url, postgres_database() as target:
        home, new_home = tmp_path / "home", tmp_path / "restored"
        archive = tmp_path / "pg.nubis"
        key = ("--master-key-file", str(home / "master.key"))
        with nubis_up(home, "--db", url) as platform:
            with nubis.Client(platform.url, platform.admin_token) as client:
                member = client.tokens.create("pg-analyst", role="member").token
                client.secrets.set("PG_SECRET", "kept in postgres")
                client.storage.put_bytes("data/pg.txt", b"next to postgres")
            made = json.loads(ok(platform.cli("backup", "create", str(archive), "--output", "json")))
            assert made["database"] == "postgresql" and made["key_included"] is False
            assert "a readable dump" in ok(platform.cli("backup", "verify", str(archive)))
            restore = ("backup", "restore", str(archive), "--home", str(new_home), "--database")
            refused(platform.cli(*restore, url, *key), "restore_target_not_empty")
            refused(platform.cli(*restore, target), "backup_key_mismatch")
            assert not new_home.exists()
            out = ok(platform.cli(*restore, target, *key))
        assert f"nubis up --home {new_home} --db {target}" in out
        with nubis_up(new_home, "--db", target) as again:
            with nubis.Client(again.url, member) as old:
                assert old.whoami().token_name == "pg-analyst"
                assert old.storage.read_bytes("data/pg.txt") == b"next to postgres"
            with nubis.Client(again.url, again.admin_token) as client:
                assert secret_values(client) == {"PG_SECRET": "kept in postgres"}
