"""Photon bundles: a zip of the photon's folder plus ``manifest.json``. Source only, never pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import pydantic

from nubis.errors import BundleError
from nubis.home import nubis_home
from nubis.models.photons import PhotonManifest

MANIFEST = "manifest.json"
SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", "node_modules", ".ipynb_checkpoints"}
)
SKIP_SUFFIXES = (".pyc", ".pyo", ".photon")


def source_files(root: Path) -> list[tuple[str, Path]]:
    """The files a bundle of ``root`` holds, as sorted (posix relative path, absolute path)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in filenames:
            if name.endswith(SKIP_SUFFIXES) or name == MANIFEST:
                continue
            full = Path(dirpath) / name
            if full.is_symlink() and not full.resolve().is_relative_to(root.resolve()):
                continue
            found.append((full.relative_to(root).as_posix(), full))
    return sorted(found)


def content_hash(files: list[tuple[str, bytes]]) -> str:
    """sha256 over each (path, size, bytes) in path order: same source → same hash."""
    h = hashlib.sha256()
    for rel, data in sorted(files):
        h.update(rel.encode())
        h.update(b"\0%d\0" % len(data))
        h.update(data)
    return h.hexdigest()


def read_manifest(bundle: Path) -> PhotonManifest:
    try:
        with zipfile.ZipFile(bundle) as zf:
            raw = zf.read(MANIFEST)
        return PhotonManifest.model_validate_json(raw)
    except KeyError:
        raise BundleError(f"{bundle}: no {MANIFEST}; build bundles with `nubis photon build`") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable zip file ({exc})") from None
    except pydantic.ValidationError as exc:
        raise BundleError(f"{bundle}: invalid {MANIFEST}: {exc.errors()[0]['msg']}") from None


def verified_hash(bundle: Path) -> str:
    """The hash of what the bundle holds now (not what its manifest says); BundleError if the
    two differ or the file is damaged."""
    manifest = read_manifest(bundle)
    try:
        with zipfile.ZipFile(bundle) as zf:
            files = [(m.filename, zf.read(m)) for m in zf.infolist()
                     if not m.is_dir() and m.filename != MANIFEST]
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable zip file ({exc})") from None
    digest = content_hash(files)
    if manifest.content_hash and digest != manifest.content_hash:
        raise BundleError(f"{bundle}: content hash {digest[:12]} does not match the manifest's "
                          f"{manifest.content_hash[:12]}; the bundle was modified or is damaged")
    return digest


def is_safe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return (
        not p.is_absolute()
        and ".." not in p.parts
        and "\\" not in name
        and not any(ord(c) < 32 for c in name)
    )


def extract_bundle(bundle: Path, cache_dir: Path | None = None) -> tuple[Path, PhotonManifest]:
    """Unpack into a cache folder named by content hash, checking paths and the hash."""
    manifest = read_manifest(bundle)
    cache_dir = cache_dir or nubis_home() / "cache" / "bundles"
    with zipfile.ZipFile(bundle) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and m.filename != MANIFEST]
        bad = [m.filename for m in members if not is_safe_member(m.filename)]
        if bad:
            raise BundleError(f"{bundle}: unsafe paths in bundle: {bad[:5]}")
        files = [(m.filename, zf.read(m)) for m in members]
    digest = content_hash(files)
    if manifest.content_hash and digest != manifest.content_hash:
        raise BundleError(
            f"{bundle}: content hash {digest[:12]} does not match the manifest's "
            f"{manifest.content_hash[:12]}; the bundle was modified or is damaged"
        )
    dest = cache_dir / digest
    if not dest.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".extract-"))
        try:
            for rel, data in files:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
            os.rename(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not dest.is_dir():  # a concurrent extraction of the same bundle won the rename
                raise
    return dest, manifest
