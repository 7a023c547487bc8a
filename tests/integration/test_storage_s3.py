"""Storage on S3 (a local ``moto_server``): the same API, atomic multipart uploads, nothing left over."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from nubis.server.settings import ServerSettings
from nubis.storage import S3_BLOCK

from platform_fixtures import Platform, running_platform
from servers import S3_CREDENTIALS, moto_server

API = "/api/v1/storage"
MiB = 1 << 20
CREDENTIALS = S3_CREDENTIALS


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@dataclass
class S3Platform:
    platform: Platform
    s3: Any
    bucket: str

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def multipart_uploads(self) -> list[dict]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


@pytest.fixture
async def s3(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Platform]:
    for key, value in {**CREDENTIALS, "NUBIS_S3_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"nubis-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    settings = ServerSettings(home=tmp_path / "home", storage_url=f"s3://{bucket}/team-a")
    async with running_platform(settings) as p:
        yield S3Platform(p, client, bucket)


async def broken(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // MiB):
        yield os.urandom(MiB)
    raise ConnectionResetError("client went away")


async def listed(p: Platform, prefix: str = "") -> list[str]:
    r = await p.http.get(API, params={"prefix": prefix}, headers=p.admin)
    assert r.status_code == 200, r.text
    return [o["path"] for o in r.json()]


async def test_put_get_list_delete_on_s3(s3: S3Platform) -> None:
    p = s3.platform
    big = os.urandom(S3_BLOCK + 3 * MiB)  # a multipart upload of two parts
    r = await p.http.put(f"{API}/datasets/big.bin", content=big, headers=p.admin)
    assert r.status_code == 201
    assert r.json()["sha256"] == hashlib.sha256(big).hexdigest()
    for path in ["datasets/sub/a.txt", "models/m.txt"]:
        assert (await p.http.put(f"{API}/{path}", content=b"x", headers=p.admin)).status_code == 201
    assert (await p.http.put(f"{API}/empty", content=b"", headers=p.admin)).status_code == 201
    assert (await p.http.get(f"{API}/empty", headers=p.admin)).content == b""
    await p.http.delete(f"{API}/empty", headers=p.admin)
    assert s3.keys() == [f"team-a/workspaces/default/files/{k}"
                         for k in ["datasets/big.bin", "datasets/sub/a.txt", "models/m.txt"]]
    r = await p.http.get(f"{API}/datasets/big.bin", headers=p.admin)
    assert (r.status_code, r.headers["content-length"]) == (200, str(len(big)))
    assert r.content == big
    assert await listed(p, "datasets/") == ["datasets/big.bin", "datasets/sub/a.txt"]
    assert await listed(p, "mod") == ["models/m.txt"]
    r = await p.http.delete(f"{API}/datasets", params={"recursive": "true"}, headers=p.admin)
    assert r.json() == {"path": "datasets", "deleted": 2}
    assert await listed(p) == ["models/m.txt"]
    assert (await p.http.get(f"{API}/datasets/big.bin", headers=p.admin)).status_code == 404


@pytest.mark.parametrize("size", [2 * MiB, S3_BLOCK + 2 * MiB], ids=["one-part", "multipart"])
async def test_an_aborted_upload_leaves_nothing_on_s3(s3: S3Platform, size: int) -> None:
    p = s3.platform
    assert (await p.http.put(f"{API}/model.bin", content=b"v1", headers=p.admin)).status_code == 201
    for path in ("model.bin", "new.bin"):
        with pytest.raises(ConnectionResetError):
            await p.http.put(f"{API}/{path}", content=broken(size), headers=p.admin)
    assert s3.keys() == ["team-a/workspaces/default/files/model.bin"]
    assert s3.multipart_uploads() == []
    assert (await p.http.get(f"{API}/model.bin", headers=p.admin)).content == b"v1"


async def test_quota_on_s3(s3: S3Platform) -> None:
    p = s3.platform
    await p.http.put(f"{API}/a.bin", content=b"x" * 700, headers=p.admin)
    r = await p.http.patch("/api/v1/workspaces/default", json={"storage_quota_bytes": 1000},
                           headers=p.admin)
    assert r.status_code == 200
    r = await p.http.put(f"{API}/b.bin", content=b"y" * 400, headers=p.admin)
    assert r.status_code == 413
    assert r.json()["error"]["details"] == {"quota_bytes": 1000, "used_bytes": 700, "upload_bytes": 400}
    assert await listed(p) == ["a.bin"]
    assert s3.multipart_uploads() == []
