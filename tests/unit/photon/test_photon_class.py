"""``nubis.Photon``: class-level config, naming, handler collection and inheritance."""

import pytest

import nubis
from nubis.errors import PhotonDefinitionError


class Base(nubis.Photon):
    @nubis.handler
    def ping(self) -> str:
        return "pong"

    @nubis.handler
    def hidden(self) -> str:
        return "base"


class Child(Base):
    hidden = None  # a subclass can take a handler away

    @nubis.handler
    def extra(self, x: int) -> int:
        return x


def test_name_defaults_to_the_class_name_in_lower_case() -> None:
    class MyModel_V2(nubis.Photon):
        pass

    assert MyModel_V2.photon_name() == "mymodel-v2"


def test_explicit_name_is_used() -> None:
    class Anything(nubis.Photon):
        name = "sentiment-v1"

    assert Anything.photon_name() == "sentiment-v1"


@pytest.mark.parametrize("name", ["Upper", "-leading", "under_score", "x" * 64])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(PhotonDefinitionError) as info:
        type("Bad", (nubis.Photon,), {"name": name})
    assert info.value.message == f"Bad.name {name!r}: use lower-case letters, digits and '-'"


def test_resources_must_be_a_resources_object() -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            resources = {"cpu": 2}  # type: ignore[assignment]

    assert info.value.message == "Bad.resources must be nubis.Resources(...), not {'cpu': 2}"


@pytest.mark.parametrize("requirements", ["numpy", ["numpy", 3]])
def test_requirements_must_be_a_list_of_strings(requirements: object) -> None:
    with pytest.raises(PhotonDefinitionError) as info:
        type("Bad", (nubis.Photon,), {"requirements": requirements})
    assert info.value.message == "Bad.requirements must be a list of strings"


def test_class_config_is_kept() -> None:
    class Configured(nubis.Photon):
        requirements = ["numpy>=1.26"]
        resources = nubis.Resources(cpu=2, memory="4Gi", gpu=1)

    assert Configured.requirements == ["numpy>=1.26"]
    assert Configured.resources.memory == 4 * 2**30
    assert Configured.resources.gpu == 1


def test_handlers_are_inherited_and_can_be_removed() -> None:
    assert list(Base.handlers) == ["ping", "hidden"]
    assert list(Child.handlers) == ["ping", "extra"]
    assert Child.handlers["ping"].path == "/ping"
    assert [i.name for i in Child.handler_infos()] == ["ping", "extra"]


def test_each_class_has_its_own_handler_table() -> None:
    assert nubis.Photon.handlers == {}
    assert "extra" not in Base.handlers


def test_init_and_shutdown_default_to_doing_nothing() -> None:
    photon = Base()
    assert photon.init() is None
    assert photon.shutdown() is None
    assert photon.ping() == "pong"
