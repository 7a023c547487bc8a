"""The env a gang's ranks get from their placement, and a node's artifact cache (real files)."""

from pathlib import Path

import pytest

from nubis.backends.artifacts import Artifact, ArtifactCache, file_sha256
from nubis.backends.nodes import rank_envs
from nubis.errors import BundleError
from nubis.photon.build import build_bundle
from nubis.storage import ObjectStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ADDRESSES = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"}


def test_ranks_on_three_nodes_get_torchrun_s_env() -> None:
    envs = rank_envs(["n2", "n2", "n1", "n3"], ADDRESSES, master_port=29500)
    assert [e["RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "0", "0"]
    assert [e["NODE_RANK"] for e in envs] == ["0", "0", "1", "2"]
    assert [e["LOCAL_WORLD_SIZE"] for e in envs] == ["2", "2", "1", "1"]
    assert {e["MASTER_ADDR"] for e in envs} == {"10.0.0.2"}
    assert {e["NUBIS_NODE_IPS"] for e in envs} == {"10.0.0.2,10.0.0.1,10.0.0.3"}
    assert {e["GROUP_WORLD_SIZE"] for e in envs} == {"3"} and {e["WORLD_SIZE"] for e in envs} == {"4"}
    assert [e.get("OMP_NUM_THREADS") for e in envs] == ["1", "1", None, None]
    mine = rank_envs(["n1", "n1"], ADDRESSES, master_port=1, user_env={"OMP_NUM_THREADS": "4"})
    assert all("OMP_NUM_THREADS" not in e for e in mine)


def test_the_cache_fetches_checks_and_refetches(tmp_path: Path) -> None:
    store = ObjectStore.from_url(str(tmp_path / "storage"))
    bundle, manifest = build_bundle(str(EXAMPLES / "echo"), tmp_path / "echo.photon")
    store.photons("w").put_bytes("echo/1.photon", bundle.read_bytes())
    store.files("w").put_bytes(".code/a.zip", b"zip bytes")
    cache = ArtifactCache(store, tmp_path / "cache")
    photon = Artifact("w", "photons", "echo/1.photon", manifest.content_hash)
    path = cache.fetch(photon)
    assert path.read_bytes() == bundle.read_bytes()
    code = Artifact("w", "files", ".code/a.zip", file_sha256(store_file(store, ".code/a.zip", tmp_path)))
    assert cache.fetch(code).read_bytes() == b"zip bytes"
    cache.fetch(code).write_bytes(b"tampered")  # a changed cached copy is fetched again
    assert cache.fetch(code).read_bytes() == b"zip bytes"
    store.files("w").put_bytes(".code/a.zip", b"changed in storage")
    cache.fetch(code).write_bytes(b"x")
    with pytest.raises(BundleError, match="changed after it was registered"):
        cache.fetch(code)
    kept = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock")  # per-digest locks
    assert kept == [f"{manifest.content_hash}.photons"]
    assert Artifact.from_dict(photon.to_dict()) == photon


def store_file(store: ObjectStore, path: str, tmp: Path) -> Path:
    dest = tmp / "copy"
    store.files("w").download(path, dest)
    return dest
