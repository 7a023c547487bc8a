"""Backup and restore of the real app, on SQLite and on PostgreSQL: every table and file comes back,
secrets decrypt with the restored key, old tokens work; refusals leave the target empty."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import text

from nubis.errors import BackupKeyError, BadRequestError, RestoreTargetNotEmptyError
from nubis.server.backup import RestoreTarget, create_backup, postgres, restore_backup, sqlite, verify_backup
from nubis.server.services.secrets import decrypt_for_workload
from nubis.server.settings import ServerSettings

from platform_fixtures import Platform, postgres_database, running_platform
from servers import S3_CREDENTIALS, moto_server

PASSPHRASE = "correct horse battery staple"


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".nubis-tmp" not in p.parts}


async def fill(platform: Platform) -> str:
    """Secrets, files, a second workspace and a member token; returns the token."""
    member = await platform.token("member", workspace="research")
    for i in range(3):
        r = await platform.http.put(f"/api/v1/secrets/KEY_{i}", json={"value": f"value-{i}"},
                                    headers=platform.admin)
        assert r.status_code == 200, r.text
        r = await platform.http.put(f"/api/v1/storage/data/file-{i}.bin", content=bytes([i]) * (1000 + i),
                                    headers=platform.auth(member))
        assert r.status_code == 201, r.text
    return member


@pytest.fixture
def restore_db(db_url: str) -> Iterator[str | None]:
    """Where a restore of this test's platform goes: the home (SQLite) or a new empty database."""
    if db_url.startswith("sqlite"):
        yield None
        return
    with postgres_database() as url:
        yield url


async def test_restore_brings_back_every_row_file_secret_and_token(
        platform: Platform, tmp_path: Path, restore_db: str | None) -> None:
    member = await fill(platform)
    settings = platform.ctx.settings
    archive = tmp_path / "nightly.nubis"
    stop, done = asyncio.Event(), []

    async def writer() -> None:  # secrets and files keep coming while the backup runs
        while not stop.is_set():
            i = len(done)
            r = await platform.http.put(f"/api/v1/secrets/W_{i}", json={"value": f"w{i}"},
                                        headers=platform.admin)
            assert r.status_code == 200, r.text
            r = await platform.http.put(f"/api/v1/storage/w/{i}", content=b"w" * i, headers=platform.admin)
            assert r.status_code == 201, r.text
            done.append(i)

    writing = asyncio.create_task(writer())
    while len(done) < 2:
        await asyncio.sleep(0.01)
    before = len(done)
    manifest = await asyncio.to_thread(create_backup, settings, archive, passphrase=PASSPHRASE)
    stop.set()
    await writing
    assert 3 + before <= manifest.tables["secrets"].rows <= 3 + len(done)
    assert manifest.key_included and manifest.storage_files >= 3
    assert {"workspaces", "tokens", "secrets", "alembic_version"} <= set(manifest.tables)
    verified = await asyncio.to_thread(verify_backup, archive)
    assert verified.manifest == manifest

    new_home = tmp_path / "restored"
    target = RestoreTarget(new_home, database=restore_db)
    restored = await asyncio.to_thread(restore_backup, archive, target, passphrase=lambda: PASSPHRASE)
    assert restored.key_source == "archive" and restored.admin_token_restored
    assert (new_home / "master.key").read_bytes() == settings.master_key_file.read_bytes()
    assert (new_home / "admin.token").read_text() == settings.admin_token_file.read_text()
    if restore_db is None:
        tables = sqlite.describe(new_home / "nubis.db")[0]
    else:
        tables = (await postgres.describe(restore_db))[0]
    assert tables == manifest.tables
    listed = {f.name.removeprefix("storage/"): f.sha256 for f in manifest.files
              if f.name.startswith("storage/")}
    assert tree(new_home / "storage") == listed
    assert listed.items() <= tree(Path(settings.storage)).items()

    async with running_platform(ServerSettings(home=new_home, db_url=restore_db)) as again:
        r = await again.http.get("/api/v1/whoami", headers=again.auth(member))
        assert r.status_code == 200 and r.json()["workspace"] == "research"
        r = await again.http.get("/api/v1/storage/data/file-2.bin", headers=again.auth(member))
        assert r.content == bytes([2]) * 1002
        async with again.ctx.db.sessions() as session:
            query = text("SELECT id FROM workspaces WHERE name = 'default'")
            ws = (await session.execute(query)).scalar_one()
            values = await decrypt_for_workload(session, again.ctx.box, ws)
        assert len(values) == manifest.tables["secrets"].rows
        assert values == {f"KEY_{i}": f"value-{i}" for i in range(3)} | {
            k: f"w{k.removeprefix('W_')}" for k in values if k.startswith("W_")}


async def test_refusals_leave_the_target_empty(platform: Platform, tmp_path: Path,
                                              restore_db: str | None) -> None:
    await fill(platform)
    archive = tmp_path / "b.nubis"
    await asyncio.to_thread(create_backup, platform.ctx.settings, archive)
    new_home = tmp_path / "restored"
    target = RestoreTarget(new_home, database=restore_db)

    key_file = platform.ctx.settings.master_key_file

    def restore(into: RestoreTarget, key: Path | None = None) -> object:
        return restore_backup(archive, into, master_key_file=key, passphrase=lambda: PASSPHRASE)

    with pytest.raises(BackupKeyError, match="made without --include-key"):
        await asyncio.to_thread(restore, target)
    wrong = tmp_path / "other.key"
    wrong.write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n")
    with pytest.raises(BackupKeyError, match="not the master key"):
        await asyncio.to_thread(restore, target, wrong)
    if restore_db is not None:
        with pytest.raises(BadRequestError, match="give an empty PostgreSQL database"):
            await asyncio.to_thread(restore, RestoreTarget(new_home), key_file)
        assert (await postgres.describe(restore_db))[0] == {}
    assert not new_home.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".restored")] == []

    new_home.mkdir()
    (new_home / "left-over").write_text("x")
    with pytest.raises(RestoreTargetNotEmptyError, match="is not empty"):
        await asyncio.to_thread(restore, target, key_file)
    (new_home / "left-over").unlink()
    restored = await asyncio.to_thread(restore, target, key_file)
    assert restored.key_source == "file" and not (new_home / "admin.token").exists()
    if restore_db is not None:
        second = tmp_path / "second"
        with pytest.raises(RestoreTargetNotEmptyError, match="already has"):
            await asyncio.to_thread(restore, RestoreTarget(second, database=restore_db), key_file)
        assert not second.exists()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


async def test_s3_storage_is_backed_up_and_restored_to_s3(moto_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**S3_CREDENTIALS, "NUBIS_S3_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(key, value)
    bucket = f"nubis-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket=bucket)
    settings = ServerSettings(home=tmp_path / "home", storage_url=f"s3://{bucket}/team-a")
    archive = tmp_path / "s3.nubis"
    async with running_platform(settings) as platform:
        await fill(platform)
        manifest = await asyncio.to_thread(create_backup, settings, archive)
    assert manifest.storage_files == 3 and manifest.storage_url == f"s3://{bucket}/team-a"

    def objects(prefix: str) -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for o in listed}

    target = RestoreTarget(tmp_path / "restored", storage=f"s3://{bucket}/team-b")
    await asyncio.to_thread(restore_backup, archive, target, master_key_file=settings.master_key_file,
                            passphrase=lambda: PASSPHRASE)
    assert objects("team-b/") == objects("team-a/") and len(objects("team-b/")) == 3
    assert not (tmp_path / "restored" / "storage").exists()
    with pytest.raises(RestoreTargetNotEmptyError, match="is not empty"):
        again = RestoreTarget(tmp_path / "again", storage=target.storage)
        await asyncio.to_thread(restore_backup, archive, again, master_key_file=settings.master_key_file,
                                passphrase=lambda: PASSPHRASE)
