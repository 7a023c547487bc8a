"""A workload's folder pushed to storage and pulled back (real files, a local-folder storage)."""

import os
from pathlib import Path

import pytest

from nubis.backends.workload_files import holds_files, pull_folder, push_folder
from nubis.storage import ObjectStore, Store

PREFIX = ".jobs/j1/checkpoints"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return ObjectStore.from_url(str(tmp_path / "storage")).files("default")


def stored(store: Store) -> dict[str, bytes]:
    return {o.path.removeprefix(PREFIX + "/"): store.read_bytes(o.path) for o in store.list(PREFIX + "/")}


def test_only_what_changed_is_pushed_and_what_is_gone_is_deleted(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder / "epochs").mkdir(parents=True)
    (folder / "last.txt").write_text("1")
    (folder / "epochs" / "1.pt").write_text("weights 1")
    known = push_folder(store, folder, PREFIX, {}, delete=True)
    assert stored(store) == {"last.txt": b"1", "epochs/1.pt": b"weights 1"}

    store.put_bytes(f"{PREFIX}/epochs/1.pt", b"changed in storage only")
    (folder / "last.txt").write_text("22")
    (folder / "epochs" / "2.pt").write_text("weights 2")
    known = push_folder(store, folder, PREFIX, known, delete=True)
    assert stored(store) == {"last.txt": b"22", "epochs/1.pt": b"changed in storage only",  # unchanged here
                             "epochs/2.pt": b"weights 2"}

    (folder / "epochs" / "1.pt").unlink()
    known = push_folder(store, folder, PREFIX, known, delete=True)
    assert sorted(stored(store)) == ["epochs/2.pt", "last.txt"]
    (folder / "last.txt").unlink()
    push_folder(store, folder, PREFIX, known, delete=False)  # outputs: never deletes
    assert sorted(stored(store)) == ["epochs/2.pt", "last.txt"]


def test_links_and_hard_links_are_never_followed(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "platform-secret"
    secret.write_text("the platform's")
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "link").symlink_to(secret)
    (folder / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    os.link(secret, folder / "hard")
    (folder / "model.txt").write_text("ok")
    assert push_folder(store, folder, PREFIX, {}, delete=False).keys() == {"model.txt"}
    assert stored(store) == {"model.txt": b"ok"}


def test_a_pulled_folder_is_what_storage_holds(store: Store, tmp_path: Path) -> None:
    store.put_bytes(f"{PREFIX}/a/b.txt", b"b")
    store.put_bytes(f"{PREFIX}/c.txt", b"c")
    store.put_bytes(".jobs/j2/checkpoints/other.txt", b"another job's")
    folder = tmp_path / "restored"
    folder.mkdir()
    known = pull_folder(store, PREFIX, folder)
    assert sorted(known) == ["a/b.txt", "c.txt"] and (folder / "a" / "b.txt").read_text() == "b"
    assert push_folder(store, folder, PREFIX, known, delete=True) == known  # nothing to push back
    assert pull_folder(store, ".jobs/none/checkpoints", tmp_path / "empty") == {}


def test_a_folder_holds_files_once_anything_but_folders_lies_below_it(tmp_path: Path) -> None:
    assert not holds_files(tmp_path / "missing")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert not holds_files(tmp_path)  # a worker with nothing to save never opens storage
    (tmp_path / "a" / "b" / "link").symlink_to("/etc/passwd")
    assert holds_files(tmp_path)  # push_folder decides what of it is copied
