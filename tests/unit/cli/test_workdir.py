"""``nubis job submit`` zips the working folder without what ``.nubisignore`` lists."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from nubis.cli.workdir import is_ignored, parse_ignore, zip_workdir


def make(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def names(data: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return set(zf.namelist())


def test_stale_outputs_listed_in_nubisignore_are_not_uploaded(tmp_path: Path) -> None:
    make(tmp_path, "train.py", "lib/model.py", "snapshot.pt", "lib/weights.pt", "keep.pt",
         "lightning_logs/version_0/events", "outputs/run1/a.txt", "lib/outputs/b.txt", "data/raw/x.csv",
         "src/data/raw/y.csv", "notes.md", ".git/HEAD", "__pycache__/x.pyc")
    (tmp_path / ".nubisignore").write_text(
        "# stale results of earlier runs\n"
        "*.pt\n"
        "!keep.pt\n"
        "lightning_logs/\n"
        "/outputs\n"
        "data/raw  \n"
        "\n"
    )
    archive = zip_workdir(tmp_path)
    assert names(archive.data) == {".nubisignore", "train.py", "lib/model.py", "keep.pt",
                                   "lib/outputs/b.txt", "src/data/raw/y.csv", "notes.md"}
    assert archive.ignored == 5  # snapshot.pt, lib/weights.pt, lightning_logs/, outputs/, data/raw/
    assert sorted(rel for rel, _ in archive.files) == sorted(names(archive.data))
    assert archive.size == sum(len(rel) for rel in names(archive.data) if rel != ".nubisignore") + len(
        (tmp_path / ".nubisignore").read_text())


def test_without_a_nubisignore_everything_but_caches_goes(tmp_path: Path) -> None:
    make(tmp_path, "a.py", "out/b.bin", ".venv/lib/x.py")
    assert names(zip_workdir(tmp_path).data) == {"a.py", "out/b.bin"}


@pytest.mark.parametrize(("pattern", "path", "is_dir", "ignored"), [
    ("*.ckpt", "a/b/c.ckpt", False, True),
    ("*.ckpt", "a/b/c.ckpt.txt", False, False),
    ("runs/", "runs", False, False),  # a file named like a folder-only pattern stays
    ("runs/", "x/runs", True, True),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),
    ("doc/*.txt", "doc/a.txt", False, True),
    ("doc/*.txt", "doc/sub/a.txt", False, False),  # '*' does not cross '/'
    ("doc/**/*.txt", "doc/sub/deeper/a.txt", False, True),
    ("doc/**/*.txt", "doc/a.txt", False, True),
    ("**/cache", "a/b/cache", True, True),
    ("logs/**", "logs/x/y", False, True),
    ("file?.log", "file1.log", False, True),
    ("file[0-3].log", "file4.log", False, False),
    ("file[!0-3].log", "file4.log", False, True),
    ("\\#notes", "#notes", False, True),
])
def test_gitignore_subset(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert is_ignored(parse_ignore(pattern), path, is_dir=is_dir) is ignored


def test_the_last_matching_line_wins() -> None:
    rules = parse_ignore("*.log\n!important.log\n")
    assert not is_ignored(rules, "important.log", is_dir=False)
    assert is_ignored(rules, "debug.log", is_dir=False)
    rules = parse_ignore("!important.log\n*.log\n")
    assert is_ignored(rules, "important.log", is_dir=False)
