"""Find a photon class from what a user types: ``path.py``, ``path.py:Class``, a folder, a bundle."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nubis.errors import BundleError, PhotonLoadError
from nubis.models.photons import PhotonManifest
from nubis.photon.bundle import extract_bundle, is_safe_member
from nubis.photon.photon import Photon
from nubis.photon.runtime import format_user_error

DEFAULT_FILE = "photon.py"


@dataclass(frozen=True)
class LoadedPhoton:
    cls: type[Photon]
    root: Path
    """The folder whose files make up the photon (a bundle's contents)."""
    entrypoint: str
    """``<file>.py:<Class>`` relative to ``root``."""
    manifest: PhotonManifest | None = None
    """Set when loaded from a bundle."""


def split_target(target: str) -> tuple[Path, str | None]:
    """``dir/photon.py:Echo`` → (dir/photon.py, "Echo"); other forms → (path, None)."""
    head, sep, tail = target.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return Path(head), tail
    return Path(target), None


def load_photon(target: str, *, bundle_cache: Path | None = None) -> LoadedPhoton:
    path, class_name = split_target(target)
    if not path.exists():
        raise PhotonLoadError(
            f"{target}: no such file or folder; give a photon file (path.py or path.py:Class), "
            "a folder with photon.py, or a bundle built by `nubis photon build`"
        )
    if path.is_dir():
        file = path / DEFAULT_FILE
        if not file.is_file():
            raise PhotonLoadError(f"{path}: the folder has no {DEFAULT_FILE}")
        return load_file(file, class_name)
    if zipfile.is_zipfile(path):
        return load_bundle(path, cache_dir=bundle_cache)
    if path.suffix != ".py":
        raise PhotonLoadError(f"{path}: not a .py file, a folder or a bundle")
    return load_file(path, class_name)


def load_file(file: Path, class_name: str | None = None, *, root: Path | None = None) -> LoadedPhoton:
    file = file.resolve()
    root = (root or file.parent).resolve()
    module = import_file(file, root)
    candidates = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Photon)
        and value is not Photon
        and value.__module__ == module.__name__
    }
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Photon)):
            raise PhotonLoadError(
                f"{file}: no photon class {class_name!r}; found: {', '.join(candidates) or 'none'}"
            )
    elif len(candidates) == 1:
        (class_name, cls), = candidates.items()
    elif not candidates:
        raise PhotonLoadError(f"{file}: defines no subclass of nubis.Photon")
    else:
        raise PhotonLoadError(
            f"{file}: defines several photons ({', '.join(candidates)}); "
            f"pick one with {file.name}:<Class>"
        )
    entry = f"{file.relative_to(root).as_posix()}:{class_name}"
    return LoadedPhoton(cls=cls, root=root, entrypoint=entry)


def import_file(file: Path, root: Path):  # type: ignore[no-untyped-def]
    """Import a user's file as a module; its folder goes on sys.path so sibling imports work."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    name = f"_nubis_photon_{digest}_{file.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PhotonLoadError(f"{file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PhotonLoadError(format_user_error(exc, f"importing {file.name} failed")) from exc
    return module


def load_bundle(bundle: Path, *, cache_dir: Path | None = None) -> LoadedPhoton:
    root, manifest = extract_bundle(bundle, cache_dir)
    rel, _, class_name = manifest.entrypoint.partition(":")
    if not is_safe_member(rel) or not class_name:
        raise BundleError(f"{bundle}: bad entrypoint {manifest.entrypoint!r}")
    loaded = load_file(root / rel, class_name, root=root)
    return LoadedPhoton(cls=loaded.cls, root=root, entrypoint=manifest.entrypoint, manifest=manifest)
