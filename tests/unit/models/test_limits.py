"""The pure limit checks: versions, env, command, archives, free-form JSON; and unpacking a bomb."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pytest

from nubis.backends.local_jobs import unpack_code
from nubis.errors import ValidationError
from nubis.models.limits import (
    MAX_CODE_BYTES,
    MAX_VERSION,
    check_code_archive,
    check_command,
    check_env,
    check_finite_json,
    parse_version,
)
from nubis.models.storage import InvalidPathError, normalize_path


def test_versions_are_ascii_numbers_up_to_a_32_bit_column() -> None:
    assert parse_version("latest") is None
    assert parse_version("7") == 7
    assert parse_version(str(MAX_VERSION)) == MAX_VERSION
    for bad in (str(MAX_VERSION + 1), "9" * 20, "²", "١٢", "-1", "1.0", "", " 1"):
        with pytest.raises(ValueError, match="a version is a number up to 2147483647 or 'latest'"):
            parse_version(bad)


def test_env_and_command_caps() -> None:
    check_env({"A": "x" * 32 * 1024})
    with pytest.raises(ValueError, match="longer than 32 KiB"):
        check_env({"A": "é" * 16 * 1024 + "x"})  # counted in UTF-8 bytes
    with pytest.raises(ValueError, match="at most 512"):
        check_env({f"V{i}": "" for i in range(513)})
    check_command(["python", "x" * 60_000])
    with pytest.raises(ValueError, match="at most 64 KiB"):
        check_command(["python"] + ["x" * 1000] * 70)
    with pytest.raises(ValueError, match="NUL"):
        check_command(["python", "a\0"])


def test_free_form_json_is_finite_and_shallow() -> None:
    check_finite_json({"loss": 0.5, "per_class": [1.0, 2.0], "name": "x"})
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            check_finite_json({"a": [{"b": bad}]})
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 32 deep"):
        check_finite_json(deep)


def _info(name: str, size: int, compressed: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.file_size, info.compress_size = size, compressed
    return info


def test_code_archive_limits_from_the_central_directory() -> None:
    check_code_archive([_info("a.py", 10, 10)], archive_size=200)
    check_code_archive([_info("w.bin", 100 * 2**20, 90 * 2**20)], archive_size=90 * 2**20)
    with pytest.raises(ValueError, match="unpacks to 1073741825 bytes; at most 1024 MiB"):
        check_code_archive([_info("a", MAX_CODE_BYTES, 2**29), _info("b", 1, 1)], archive_size=2**30)
    with pytest.raises(ValueError, match="a ratio above 200:1 looks like a zip bomb"):
        check_code_archive([_info("zeros", 500 * 2**20, 2**20)], archive_size=2**20)


def test_unpack_refuses_a_zip_bomb(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(64 * 2**20))
    archive = tmp_path / "code.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(ValidationError, match="looks like a zip bomb"):
        unpack_code(archive, tmp_path / "code")
    assert not (tmp_path / "code").exists()
    assert list(tmp_path.iterdir()) == [archive]


def test_storage_paths_are_nfc_without_format_characters() -> None:
    assert normalize_path("cafe\u0301/x") == "caf\u00e9/x"
    assert normalize_path(normalize_path("cafe\u0301")) == "caf\u00e9"
    for bad in ("a\u202eb", "a\u200bb", "\ufeffa", "a\ufffdb"):
        with pytest.raises(InvalidPathError):
            normalize_path(bad)
