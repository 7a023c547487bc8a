"""Storage through a real `nubis up`: the SDK (streaming both ways), the CLI, a client that hangs up."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nubis
from nubis.errors import ConnectionFailedError, ForbiddenError, NotFoundError, PayloadTooLargeError
from nubis.storage import TMP_DIR, InvalidPathError

from platform_process import PlatformProcess, nubis_up
from servers import ROOT, free_port

MiB = 1 << 20


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("storage") / "home") as platform:
        yield platform


@pytest.fixture
def client(running: PlatformProcess) -> Iterator[nubis.Client]:
    with nubis.Client(running.url, running.admin_token) as c:
        yield c
        for obj in c.storage.list():
            c.storage.delete(obj.path)


def cli(running: PlatformProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nubis.cli.main", "storage", *args],
                          capture_output=True, text=True, env=running.env, cwd=ROOT, timeout=60)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"a.csv": b"a,b\n1,2\n", "sub/b.bin": os.urandom(3 * MiB + 5), "sub/deeper/c.txt": b"c"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_sdk_streams_a_file_both_ways(client: nubis.Client, tmp_path: Path) -> None:
    source = tmp_path / "train.bin"
    source.write_bytes(os.urandom(5 * MiB + 17))
    seen: list[int] = []
    result = client.storage.put("datasets/train.bin", source, progress=seen.append)
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert result.size == sum(seen) == source.stat().st_size
    written = client.storage.get("datasets/train.bin", tmp_path / "out")  # not a folder: the file
    assert written.read_bytes() == source.read_bytes()
    (tmp_path / "into").mkdir()
    assert client.storage.get("datasets/train.bin", tmp_path / "into") == tmp_path / "into/train.bin"
    assert [o.path for o in client.storage.list("datasets/")] == ["datasets/train.bin"]
    assert client.storage.read_bytes("datasets/train.bin") == source.read_bytes()


def test_sdk_folders_and_deletes(client: nubis.Client, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    results = client.storage.put_dir("data/set", tmp_path / "src")
    assert [r.path for r in results] == [f"data/set/{rel}" for rel in sorted(files)]
    client.storage.get_dir("data/set/", tmp_path / "copy")
    assert {p.relative_to(tmp_path / "copy").as_posix(): p.read_bytes()
            for p in (tmp_path / "copy").rglob("*") if p.is_file()} == files
    assert client.storage.delete("data/set", recursive=True).deleted == 3
    assert client.storage.list() == []


def test_sdk_errors_are_typed(client: nubis.Client, running: PlatformProcess, tmp_path: Path) -> None:
    with pytest.raises(InvalidPathError, match=re.escape("'..' is not allowed")):
        client.storage.put_bytes("../escape", b"x")
    with pytest.raises(NotFoundError, match=re.escape("no file at 'missing.bin'")):
        client.storage.get("missing.bin", tmp_path / "missing.bin")
    assert list(tmp_path.iterdir()) == []  # no partial file either
    viewer = client.tokens.create("viewer", role="viewer").token
    with nubis.Client(running.url, viewer) as as_viewer, pytest.raises(ForbiddenError):
        as_viewer.storage.put_bytes("x", b"x")


def test_no_server_is_a_connection_error(tmp_path: Path) -> None:
    with nubis.Client(f"http://127.0.0.1:{free_port()}", "token") as nowhere:
        for call in (lambda: nowhere.storage.get("a", tmp_path / "a"),
                     lambda: nowhere.storage.put_bytes("a", b"x")):
            with pytest.raises(ConnectionFailedError, match="is `nubis up` running"):
                call()
    assert list(tmp_path.iterdir()) == []


def test_quota_stops_a_big_upload_with_a_413(client: nubis.Client, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 * MiB))
    client.workspaces.set_quota("default", 2 * MiB)
    try:
        with pytest.raises(PayloadTooLargeError, match="would go over its storage quota"):
            client.storage.put("big.bin", source)
    finally:
        client.workspaces.set_quota("default", None)
    assert client.storage.list() == []


def test_a_client_that_hangs_up_mid_upload_leaves_nothing(
    client: nubis.Client, running: PlatformProcess
) -> None:
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"PUT /api/v1/storage/partial.bin HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {running.admin_token}\r\n"
                     f"Content-Length: {50 * MiB}\r\n\r\n".encode())
        for _ in range(5):
            sock.sendall(os.urandom(MiB))
    tmp_dir = running.home / "storage/workspaces/default/files" / TMP_DIR
    deadline = time.monotonic() + 10
    while any(tmp_dir.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_dir.glob("*")) == []
    assert client.storage.list() == []


def test_cli_put_ls_get_rm(running: PlatformProcess, client: nubis.Client, tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    source.write_bytes(b"x,y\n1,2\n")
    put = cli(running, "put", str(source), "datasets/train.csv")
    assert put.returncode == 0, put.stderr
    assert hashlib.sha256(source.read_bytes()).hexdigest() in put.stdout
    ls = cli(running, "ls", "datasets/", "--output", "json")
    assert [o["path"] for o in json.loads(ls.stdout)] == ["datasets/train.csv"]
    get = cli(running, "get", "datasets/train.csv", str(tmp_path / "copy.csv"))
    assert get.returncode == 0, get.stderr
    assert (tmp_path / "copy.csv").read_bytes() == source.read_bytes()
    assert cli(running, "rm", "datasets/train.csv").returncode == 0
    assert client.storage.list() == []


def test_cli_folders(running: PlatformProcess, client: nubis.Client, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "dir")
    put = cli(running, "put", str(tmp_path / "dir"), "datasets/dir", "-o", "json")
    assert put.returncode == 0, put.stderr
    assert sorted(r["path"] for r in json.loads(put.stdout)) == [f"datasets/dir/{f}" for f in sorted(files)]
    get = cli(running, "get", "datasets/dir", str(tmp_path / "out"))
    assert get.returncode == 0, get.stderr
    assert {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
            for p in (tmp_path / "out").rglob("*") if p.is_file()} == files
    table = cli(running, "ls")
    assert "datasets/dir/sub/deeper/c.txt" in table.stdout
    rm = cli(running, "rm", "datasets/dir")
    assert (rm.returncode, rm.stderr.strip()) == (
        1, "error (conflict): 'datasets/dir' is a folder: add --recursive to delete it and everything in it")
    assert cli(running, "rm", "--recursive", "datasets/dir").returncode == 0
    assert client.storage.list() == []


def test_cli_prints_names_with_brackets_as_they_are(running: PlatformProcess, client: nubis.Client,
                                                    tmp_path: Path) -> None:
    """Names are never read as Rich markup: `x[/b].csv` neither crashes nor loses its brackets."""
    source = tmp_path / "in[bold].csv"
    source.write_bytes(b"a\n")
    for args in (["put", str(source), "d/[rank 1]/x[/b].csv"], ["ls"],
                 ["get", "d/[rank 1]/x[/b].csv", str(tmp_path / "copy[red].csv")]):
        result = cli(running, *args)
        assert result.returncode == 0, result.stderr
        assert "d/[rank 1]/x[/b].csv" in result.stdout, result.stdout
    assert (tmp_path / "copy[red].csv").read_bytes() == b"a\n"
    rm = cli(running, "rm", "d/[rank 1]")
    assert rm.stderr.strip() == ("error (conflict): 'd/[rank 1]' is a folder: add --recursive to delete it "
                                 "and everything in it")
    assert "deleted 1 file at d/[rank 1]" in cli(running, "rm", "-r", "d/[rank 1]").stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["put", "{file}", "../x"], "error (invalid_path): '../x': '..' is not allowed in paths"),
        (["get", "/etc/passwd"],
         "error (invalid_path): '/etc/passwd': give a path relative to the workspace, without a leading /"),
        (["get", "nothing/here"], "error (not_found): no file or folder 'nothing/here' in storage; "
                                  "see `nubis storage ls`"),
        (["put", "{missing}", "x"], "error (not_found): no local file or folder {missing}"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(
    running: PlatformProcess, tmp_path: Path, args: list[str], line: str
) -> None:
    (tmp_path / "f.txt").write_text("x")
    names = {"file": str(tmp_path / "f.txt"), "missing": str(tmp_path / "missing")}
    result = cli(running, *[a.format(**names) for a in args])
    assert result.returncode == 1
    assert result.stderr.strip() == line.format(**names)
    assert result.stdout == ""
