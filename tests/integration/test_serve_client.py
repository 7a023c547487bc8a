"""PhotonClient and AsyncPhotonClient against real photon processes (folder and bundle)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nubis
from nubis import errors

from servers import ROOT, PhotonProcess, free_port, photon_process


@pytest.fixture(scope="module")
def echo() -> Iterator[PhotonProcess]:
    with photon_process("examples/echo") as photon:
        yield photon


def test_methods_are_discovered_from_the_running_photon(echo: PhotonProcess) -> None:
    with nubis.PhotonClient(echo.url) as c:
        assert c.handlers == ["echo", "aecho", "add", "count", "reverse"]
        assert {"echo", "add", "count"} <= set(dir(c))
        assert c.echo(text="hello") == {"text": "hello"}
        assert c.aecho(text="hi") == {"text": "hi"}
        assert c.add(1, 2) == 3.0
        assert c.add(a=1.5) == 1.5
        assert list(c.count(n=4)) == [0, 1, 2, 3]


def test_files_round_trip(echo: PhotonProcess) -> None:
    with nubis.PhotonClient(echo.url) as c:
        out = c.reverse(file=nubis.File(b"abc\x00\xff", "blob.bin", "application/x-test"))
    assert isinstance(out, nubis.File)
    assert out.data == b"\xff\x00cba"
    assert out.filename == "blob.bin.reversed"
    assert out.content_type == "application/x-test"


def test_errors_are_typed_with_the_servers_code_and_message(echo: PhotonProcess) -> None:
    with nubis.PhotonClient(echo.url) as c:
        with pytest.raises(errors.ValidationError) as info:
            c.add(a="not a number")
        assert info.value.code == "validation_error"
        assert info.value.http_status == 422
        assert info.value.details == [
            {
                "field": "a",
                "message": "Input should be a valid number, unable to parse string as a number",
                "type": "float_parsing",
            }
        ]
        with pytest.raises(errors.NotFoundError, match="no handler 'nope'"):
            c.nope()
        with pytest.raises(TypeError, match="takes 2 arguments"):
            c.add(1, 2, 3)


def test_unreachable_photon_raises_connection_failed() -> None:
    with nubis.PhotonClient(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(errors.ConnectionFailedError, match="cannot reach"):
            c.echo(text="x")


async def test_async_client_awaits_and_streams(echo: PhotonProcess) -> None:
    async with nubis.AsyncPhotonClient(echo.url) as c:
        assert await c.echo(text="a") == {"text": "a"}
        assert await c.add(2, b=3) == 5.0
        assert [n async for n in c.count(n=3)] == [0, 1, 2]
        with pytest.raises(errors.ValidationError):
            await c.add(a=[1])


def test_token_is_required_when_set() -> None:
    with photon_process("examples/echo", "--token", "s3cret") as photon:
        with nubis.PhotonClient(photon.url) as anonymous:
            with pytest.raises(errors.UnauthorizedError, match="Bearer"):
                anonymous.echo(text="x")
        with nubis.PhotonClient(photon.url, token="wrong") as wrong:
            with pytest.raises(errors.UnauthorizedError):
                wrong.echo(text="x")
        with nubis.PhotonClient(photon.url, token="s3cret") as c:
            assert c.echo(text="x") == {"text": "x"}


def test_build_then_run_the_bundle_with_the_cli(tmp_path: Path) -> None:
    bundle = tmp_path / "echo.photon"
    built = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "photon", "build", "examples/echo",
         "-o", str(bundle), "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    info = json.loads(built.stdout)
    assert info["name"] == "echo"
    assert info["entrypoint"] == "photon.py:Echo"
    with zipfile.ZipFile(bundle) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "photon.py"]
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["content_hash"] == info["content_hash"]
    assert [h["name"] for h in manifest["handlers"]] == ["echo", "aecho", "add", "count", "reverse"]
    add = next(h for h in manifest["handlers"] if h["name"] == "add")
    assert add["request_schema"]["required"] == ["a"]
    assert manifest["resources"]["memory"] == 256 * 2**20

    env = {"NUBIS_HOME": str(tmp_path / "home")}
    with photon_process(bundle, cli=True, env=env) as photon, nubis.PhotonClient(photon.url) as c:
        assert c.manifest.content_hash == info["content_hash"]
        assert c.echo(text="from a bundle") == {"text": "from a bundle"}
    assert (tmp_path / "home" / "cache" / "bundles" / info["content_hash"] / "photon.py").exists()


def test_run_a_file_with_an_explicit_class(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        "import nubis\n"
        "class A(nubis.Photon):\n"
        "    @nubis.handler\n"
        "    def who(self) -> str:\n        return 'a'\n"
        "class B(nubis.Photon):\n"
        "    @nubis.handler\n"
        "    def who(self) -> str:\n        return 'b'\n"
    )
    with photon_process(f"{tmp_path / 'two.py'}:B") as photon, nubis.PhotonClient(photon.url) as c:
        assert c.who() == "b"
