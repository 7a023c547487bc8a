"""Bundles: build a zip with its manifest, stable hashes, safe and checked extraction."""

import json
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from nubis.errors import BundleError
from nubis.photon.build import build_bundle
from nubis.photon.bundle import MANIFEST, content_hash, extract_bundle, is_safe_member, read_manifest
from nubis.photon.loader import load_photon

PHOTON = textwrap.dedent(
    '''
    from collections.abc import Iterator

    import nubis

    from helpers import shout


    class Greeter(nubis.Photon):
        """Says hello."""

        name = "greeter"
        requirements = ["numpy>=1.26"]
        resources = nubis.Resources(cpu=2, memory="512Mi")

        @nubis.handler
        def hello(self, who: str, loud: bool = False) -> dict[str, str]:
            text = f"hello {who}"
            return {"text": shout(text) if loud else text}

        @nubis.handler
        def count(self, n: int) -> Iterator[int]:
            yield from range(n)
    '''
)


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader puts photon folders on it


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "greeter"
    root.mkdir()
    (root / "photon.py").write_text(PHOTON)
    (root / "helpers.py").write_text("def shout(text):\n    return text.upper()\n")
    (root / "data").mkdir()
    (root / "data" / "words.txt").write_text("hello\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    (root / "old.photon").write_bytes(b"not me")
    for skipped in (".git", ".venv", "greeter.egg-info", "node_modules"):
        (root / skipped).mkdir()
        (root / skipped / "file.txt").write_text("not me")
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the photon folder")
    (root / "link-out.txt").symlink_to(outside)
    (root / "link-in.txt").symlink_to("helpers.py")
    return root


@pytest.fixture
def bundle(source: Path, tmp_path: Path) -> Path:
    out, _ = build_bundle(str(source), tmp_path / "out" / "greeter.photon")
    return out


def rewrite(bundle: Path, dest: Path, changes: dict[str, bytes]) -> Path:
    """Copy a bundle, replacing (or adding) members, keeping the original manifest."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            data = changes.pop(info.filename, None)
            out.writestr(info.filename, data if data is not None else src.read(info))
        for name, data in changes.items():
            out.writestr(name, data)
    return dest


def test_build_writes_a_zip_with_sources_and_manifest(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
    # no caches, VCS or virtualenv folders, older bundles, or links pointing out of the folder
    assert names == ["data/words.txt", "helpers.py", "link-in.txt", MANIFEST, "photon.py"]
    assert manifest["name"] == "greeter"
    assert manifest["entrypoint"] == "photon.py:Greeter"
    assert manifest["requirements"] == ["numpy>=1.26"]
    assert manifest["resources"] == {"cpu": 2.0, "memory": 512 * 2**20, "gpu": 0, "gpu_type": None}
    assert manifest["format"] == 1
    assert len(manifest["content_hash"]) == 64
    assert manifest["python_version"] == sys.version.split()[0]


def test_manifest_lists_handlers_with_schemas(bundle: Path) -> None:
    handlers = {h.name: h for h in read_manifest(bundle).handlers}
    assert set(handlers) == {"hello", "count"}
    hello = handlers["hello"]
    assert hello.path == "/hello"
    assert hello.request_schema["required"] == ["who"]
    assert set(hello.request_schema["properties"]) == {"who", "loud"}
    assert hello.response_schema == {"additionalProperties": {"type": "string"}, "type": "object"}
    assert handlers["count"].streaming is True


def test_build_from_a_file_and_class(source: Path, tmp_path: Path) -> None:
    _, from_file = build_bundle(f"{source / 'photon.py'}:Greeter", tmp_path / "f.photon")
    _, from_folder = build_bundle(str(source), tmp_path / "d.photon")
    assert from_file.entrypoint == "photon.py:Greeter"
    assert from_file.content_hash == from_folder.content_hash


def test_build_returns_the_manifest_it_wrote(source: Path, tmp_path: Path) -> None:
    out, manifest = build_bundle(str(source), tmp_path / "g.photon")
    assert read_manifest(out) == manifest


def test_default_output_is_named_after_the_photon(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out, _ = build_bundle(str(source))
    assert out == Path("greeter.photon")
    assert zipfile.is_zipfile(tmp_path / "greeter.photon")


def test_same_source_gives_the_same_hash(source: Path, tmp_path: Path) -> None:
    _, first = build_bundle(str(source), tmp_path / "a.photon")
    _, again = build_bundle(str(source), tmp_path / "b.photon")
    copy = shutil.copytree(source, tmp_path / "elsewhere" / "greeter", symlinks=True)
    _, moved = build_bundle(str(copy), tmp_path / "c.photon")
    assert first.content_hash == again.content_hash == moved.content_hash


def test_a_changed_file_changes_the_hash(source: Path, tmp_path: Path) -> None:
    _, before = build_bundle(str(source), tmp_path / "a.photon")
    (source / "data" / "words.txt").write_text("hello!\n")
    _, after = build_bundle(str(source), tmp_path / "b.photon")
    assert before.content_hash != after.content_hash


def test_content_hash_depends_on_paths_and_bytes_not_order() -> None:
    files = [("a.py", b"1"), ("b.py", b"2")]
    assert content_hash(files) == content_hash(list(reversed(files)))
    assert content_hash(files) != content_hash([("a.py", b"1"), ("c.py", b"2")])
    assert content_hash([("ab", b"c")]) != content_hash([("a", b"bc")])


def test_building_a_bundle_from_a_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is already a bundle"):
        build_bundle(str(bundle), tmp_path / "again.photon")


def test_extract_unpacks_into_a_folder_named_by_hash(bundle: Path, tmp_path: Path) -> None:
    root, manifest = extract_bundle(bundle, tmp_path / "cache")
    assert root == tmp_path / "cache" / manifest.content_hash
    assert (root / "helpers.py").read_text() == "def shout(text):\n    return text.upper()\n"
    assert (root / "data" / "words.txt").read_text() == "hello\n"
    assert json.loads((root / MANIFEST).read_text())["name"] == "greeter"
    again, _ = extract_bundle(bundle, tmp_path / "cache")
    assert again == root


def test_extract_defaults_to_the_nubis_home_cache(bundle: Path, nubis_home: Path) -> None:
    root, manifest = extract_bundle(bundle)
    assert root == nubis_home / "cache" / "bundles" / manifest.content_hash


def test_extract_rejects_a_tampered_file(bundle: Path, tmp_path: Path) -> None:
    tampered = rewrite(bundle, tmp_path / "bad.photon", {"helpers.py": b"import os\n"})
    with pytest.raises(BundleError) as info:
        extract_bundle(tampered, tmp_path / "cache")
    assert "does not match the manifest's" in info.value.message
    assert "the bundle was modified or is damaged" in info.value.message
    assert not (tmp_path / "cache").exists()


def test_extract_rejects_an_added_file(bundle: Path, tmp_path: Path) -> None:
    tampered = rewrite(bundle, tmp_path / "bad.photon", {"extra.py": b"x = 1\n"})
    with pytest.raises(BundleError, match="does not match"):
        extract_bundle(tampered, tmp_path / "cache")


@pytest.mark.parametrize("member", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a\nb"])
def test_extract_rejects_unsafe_member_paths(bundle: Path, tmp_path: Path, member: str) -> None:
    bad = rewrite(bundle, tmp_path / "bad.photon", {member: b"x"})
    with pytest.raises(BundleError) as info:
        extract_bundle(bad, tmp_path / "cache")
    assert info.value.message == f"{bad}: unsafe paths in bundle: [{member!r}]"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("name", "safe"),
    [("a.py", True), ("pkg/mod.py", True), ("../a", False), ("/a", False), ("a\\b", False)],
)
def test_is_safe_member(name: str, safe: bool) -> None:
    assert is_safe_member(name) is safe


def test_a_zip_without_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("photon.py", "")
    with pytest.raises(BundleError, match=r"no manifest\.json; build bundles with"):
        read_manifest(path)


def test_a_broken_manifest_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.photon"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST, '{"name": "x"}')
    with pytest.raises(BundleError, match=r"invalid manifest\.json"):
        read_manifest(path)


def test_a_file_that_is_not_a_zip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.photon"
    path.write_bytes(b"hello")
    with pytest.raises(BundleError, match="not a readable zip file"):
        read_manifest(path)


def test_load_photon_on_a_bundle_gives_the_class(bundle: Path, tmp_path: Path) -> None:
    loaded = load_photon(str(bundle), bundle_cache=tmp_path / "cache")
    assert loaded.cls.__name__ == "Greeter"
    assert loaded.cls.photon_name() == "greeter"
    assert loaded.entrypoint == "photon.py:Greeter"
    assert loaded.manifest is not None
    assert loaded.root == tmp_path / "cache" / loaded.manifest.content_hash
    assert loaded.cls().hello("you", loud=True) == {"text": "HELLO YOU"}  # sibling import works


def test_a_bundle_whose_entrypoint_leaves_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    manifest = read_manifest(bundle).model_copy(update={"entrypoint": "../evil.py:Greeter"})
    bad = rewrite(bundle, tmp_path / "bad.photon", {MANIFEST: manifest.model_dump_json().encode()})
    with pytest.raises(BundleError) as info:
        load_photon(str(bad), bundle_cache=tmp_path / "cache")
    assert info.value.message == f"{bad}: bad entrypoint '../evil.py:Greeter'"
