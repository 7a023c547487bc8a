"""``load_photon``: files, ``file:Class``, folders, and the errors a user sees."""

import sys
import textwrap
from pathlib import Path

import pytest

from nubis.errors import PhotonLoadError
from nubis.photon.loader import load_photon, split_target

ONE = textwrap.dedent(
    """
    import nubis


    class Solo(nubis.Photon):
        @nubis.handler
        def hi(self) -> str:
            return "hi"
    """
)

TWO = textwrap.dedent(
    """
    import nubis


    class First(nubis.Photon):
        pass


    class Second(nubis.Photon):
        pass
    """
)


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader puts photon folders on it


def write(folder: Path, text: str, name: str = "photon.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("a/photon.py:Echo", (Path("a/photon.py"), "Echo")),
        ("a/photon.py", (Path("a/photon.py"), None)),
        ("a/folder", (Path("a/folder"), None)),
        ("C:/x/photon.py", (Path("C:/x/photon.py"), None)),
        ("b.photon", (Path("b.photon"), None)),
    ],
)
def test_split_target(target: str, expected: tuple[Path, str | None]) -> None:
    assert split_target(target) == expected


def test_loads_a_folder_with_photon_py(tmp_path: Path) -> None:
    write(tmp_path / "solo", ONE)
    loaded = load_photon(str(tmp_path / "solo"))
    assert loaded.cls.__name__ == "Solo"
    assert loaded.root == (tmp_path / "solo").resolve()
    assert loaded.entrypoint == "photon.py:Solo"
    assert loaded.manifest is None


def test_loads_a_file_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, ONE, "service.py")
    loaded = load_photon(str(path))
    assert loaded.cls.__name__ == "Solo"
    assert loaded.entrypoint == "service.py:Solo"


def test_picks_one_class_with_a_colon(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    loaded = load_photon(f"{path}:Second")
    assert loaded.cls.__name__ == "Second"
    assert loaded.entrypoint == "photon.py:Second"


def test_loads_the_echo_example() -> None:
    loaded = load_photon("examples/echo")
    assert loaded.cls.__name__ == "Echo"
    assert set(loaded.cls.handlers) == {"echo", "aecho", "add", "count", "reverse"}


def test_a_missing_path_is_explained(tmp_path: Path) -> None:
    target = str(tmp_path / "nope")
    with pytest.raises(PhotonLoadError) as info:
        load_photon(target)
    assert info.value.message == (
        f"{target}: no such file or folder; give a photon file (path.py or path.py:Class), "
        "a folder with photon.py, or a bundle built by `nubis photon build`"
    )


def test_a_folder_without_photon_py_is_explained(tmp_path: Path) -> None:
    write(tmp_path, ONE, "other.py")
    with pytest.raises(PhotonLoadError) as info:
        load_photon(str(tmp_path))
    assert info.value.message == f"{tmp_path}: the folder has no photon.py"


def test_a_file_that_is_not_python_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "hello", "notes.txt")
    with pytest.raises(PhotonLoadError, match=r"not a \.py file, a folder or a bundle"):
        load_photon(str(path))


def test_several_photons_need_a_class_name(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    with pytest.raises(PhotonLoadError) as info:
        load_photon(str(path))
    assert info.value.message == (
        f"{path.resolve()}: defines several photons (First, Second); pick one with photon.py:<Class>"
    )


def test_an_unknown_class_name_lists_the_candidates(tmp_path: Path) -> None:
    path = write(tmp_path, TWO)
    with pytest.raises(PhotonLoadError) as info:
        load_photon(f"{path}:Third")
    assert info.value.message == f"{path.resolve()}: no photon class 'Third'; found: First, Second"


def test_a_file_without_photons_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "import nubis\nx = nubis.Photon\n")
    with pytest.raises(PhotonLoadError, match=r"defines no subclass of nubis\.Photon"):
        load_photon(str(path))


def test_a_syntax_error_shows_the_users_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import nubis\n\ndef broken(:\n    pass\n")
    with pytest.raises(PhotonLoadError) as info:
        load_photon(str(path))
    message = info.value.message
    assert "importing photon.py failed" in message
    assert "SyntaxError" in message
    assert "def broken(:" in message
    assert "line 3" in message


def test_an_error_at_import_shows_the_users_frame_not_nubis(tmp_path: Path) -> None:
    path = write(tmp_path, "import nubis\n\nvalue = 1 / 0\n")
    with pytest.raises(PhotonLoadError) as info:
        load_photon(str(path))
    message = info.value.message
    assert f'File "{path.resolve()}", line 3' in message
    assert "value = 1 / 0" in message
    assert message.splitlines()[-2] == "ZeroDivisionError: division by zero"
    assert "importlib" not in message


def test_a_definition_error_in_the_file_is_shown(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "import nubis\n\nclass Bad(nubis.Photon):\n    def __init__(self):\n        pass\n",
    )
    with pytest.raises(PhotonLoadError) as info:
        load_photon(str(path))
    assert "PhotonDefinitionError: Bad overrides __init__" in info.value.message


def test_a_failed_import_can_be_retried_after_a_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "raise RuntimeError('not yet')\n")
    with pytest.raises(PhotonLoadError, match="not yet"):
        load_photon(str(path))
    path.write_text(ONE)
    assert load_photon(str(path)).cls.__name__ == "Solo"


def test_imported_classes_are_not_candidates(tmp_path: Path) -> None:
    write(tmp_path, ONE, "base.py")
    path = write(tmp_path, "from base import Solo\nimport nubis\n\nclass Mine(Solo):\n    pass\n")
    assert load_photon(str(path)).cls.__name__ == "Mine"
