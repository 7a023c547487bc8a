"""Store on a local folder: atomic writes, listing by prefix, deletes, usage."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from nubis.errors import ConflictError, NotFoundError
from nubis.storage import TMP_DIR, InvalidPathError, ObjectStore, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return ObjectStore.from_url(str(tmp_path / "storage")).files("team")


def paths(store: Store, prefix: str = "") -> list[str]:
    return [o.path for o in store.list(prefix)]


def tmp_files(store: Store) -> list[Path]:
    return list(Path(store.root, TMP_DIR).glob("*"))


def test_a_write_is_invisible_until_commit(store: Store) -> None:
    writer = store.writer("data/a.bin")
    writer.write(b"hello ")
    writer.write(b"world")
    assert paths(store) == []
    assert not Path(store.root, "data/a.bin").exists()
    assert writer.commit() == hashlib.sha256(b"hello world").hexdigest()
    assert store.read_bytes("data/a.bin") == b"hello world"
    assert store.info("data/a.bin").size == 11
    assert tmp_files(store) == []


def test_abort_leaves_nothing_and_keeps_the_old_file(store: Store) -> None:
    store.put_bytes("a.bin", b"old")
    writer = store.writer("a.bin")
    writer.write(b"new, half written")
    writer.abort()
    assert store.read_bytes("a.bin") == b"old"
    assert paths(store) == ["a.bin"]
    assert tmp_files(store) == []


def test_temporary_files_of_a_dead_server_are_swept(store: Store) -> None:
    live = store.writer("live.bin")
    live.write(b"in progress")
    dead = Path(store.root, TMP_DIR, "dead")
    dead.write_bytes(b"left by a killed server")
    old = time.time() - 2 * 24 * 3600
    os.utime(dead, (old, old))
    store.writer("other.bin").abort()  # opening a writer sweeps
    assert not dead.exists()
    assert len(tmp_files(store)) == 1  # the live upload's
    live.commit()
    assert store.read_bytes("live.bin") == b"in progress"


def test_empty_files(store: Store) -> None:
    assert store.put_bytes("empty", b"") == hashlib.sha256(b"").hexdigest()
    assert (store.info("empty").size, store.read_bytes("empty")) == (0, b"")


def test_files_live_under_the_workspace(tmp_path: Path) -> None:
    objects = ObjectStore.from_url(str(tmp_path / "storage"))
    objects.files("team").put_bytes("x/y.txt", b"1")
    assert (tmp_path / "storage/workspaces/team/files/x/y.txt").read_bytes() == b"1"
    assert objects.files("other").list() == []


def test_list_by_folder_or_by_start_of_names(store: Store) -> None:
    for path in ["data/a.csv", "data/sub/b.csv", "data.csv", "datasets/c.csv", "z.txt"]:
        store.put_bytes(path, b"x")
    assert paths(store) == ["data.csv", "data/a.csv", "data/sub/b.csv", "datasets/c.csv", "z.txt"]
    assert paths(store, "data/") == ["data/a.csv", "data/sub/b.csv"]
    assert paths(store, "data") == ["data/a.csv", "data/sub/b.csv"]  # a folder's name: the folder
    assert paths(store, "dat") == ["data.csv", "data/a.csv", "data/sub/b.csv", "datasets/c.csv"]
    assert paths(store, "data/sub/b") == ["data/sub/b.csv"]
    assert paths(store, "z.txt") == ["z.txt"]
    assert paths(store, "z.txt/") == []
    assert paths(store, "nothing/") == []
    info = store.list("z.txt")[0]
    assert info.size == 1 and info.modified is not None


def test_uploads_in_progress_are_not_listed_or_counted(store: Store) -> None:
    store.put_bytes("a", b"12345")
    writer = store.writer("b")
    writer.write(b"x" * 100)
    assert paths(store) == ["a"]
    assert store.usage() == 5
    writer.abort()


def test_delete_a_file_and_prune_empty_folders(store: Store) -> None:
    store.put_bytes("a/b/c.txt", b"x")
    store.put_bytes("a/keep.txt", b"x")
    assert store.delete("a/b/c.txt") == 1
    assert not Path(store.root, "a/b").exists()
    assert Path(store.root, "a").is_dir()
    with pytest.raises(NotFoundError, match=re.escape("no file at 'a/b/c.txt'")):
        store.delete("a/b/c.txt")


def test_delete_a_folder_needs_recursive(store: Store) -> None:
    for path in ["d/1", "d/e/2", "d/e/f/3", "dx/4"]:
        store.put_bytes(path, b"x")
    with pytest.raises(ConflictError, match="recursive"):
        store.delete("d")
    assert store.delete("d", recursive=True) == 3
    assert paths(store) == ["dx/4"]
    assert not Path(store.root, "d").exists()
    with pytest.raises(NotFoundError):
        store.delete("d", recursive=True)


def test_glob_characters_are_names_not_patterns(store: Store) -> None:
    store.put_bytes("a*", b"star")
    store.put_bytes("ab", b"other")
    store.put_bytes("[x]/y", b"bracket")
    store.put_bytes("x/y", b"plain")
    assert store.delete("a*") == 1
    assert store.delete("[x]", recursive=True) == 1
    assert paths(store) == ["ab", "x/y"]


def test_a_file_and_a_folder_cannot_share_a_name(store: Store) -> None:
    store.put_bytes("a.csv", b"x")
    store.put_bytes("dir/x", b"x")
    with pytest.raises(ConflictError, match=re.escape("'a.csv' is a file, so it cannot hold 'a.csv/b/c'")):
        store.writer("a.csv/b/c")
    with pytest.raises(ConflictError, match="'dir' is a folder"):
        store.writer("dir")


def test_missing_files_and_folders_are_not_found(store: Store) -> None:
    store.put_bytes("dir/x", b"x")
    with pytest.raises(NotFoundError, match="no file at 'nope'"):
        store.info("nope")
    with pytest.raises(NotFoundError, match="'dir' is a folder"):
        store.open("dir")
    assert store.size_or_zero("nope") == 0
    assert store.size_or_zero("dir/x") == 1


def test_open_sized_reads_what_it_measured(store: Store) -> None:
    store.put_bytes("f", b"0123456789")
    fh, size = store.open_sized("f")
    store.put_bytes("f", b"replaced meanwhile, longer")  # an atomic replace: the open file stays
    with fh:
        assert (size, fh.read()) == (10, b"0123456789")


def test_store_methods_check_paths(store: Store) -> None:
    for call in (lambda: store.writer("../x"), lambda: store.info("/etc/passwd"),
                 lambda: store.list("../"), lambda: store.delete("a/../../b")):
        with pytest.raises(InvalidPathError):
            call()
