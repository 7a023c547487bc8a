"""``@nubis.handler``: options, inferred request/response models and definition errors."""

from collections.abc import AsyncIterator, Iterator

import pydantic
import pytest

import nubis
from nubis.errors import PhotonDefinitionError
from nubis.photon.handler import Handler, HandlerOptions, HandlerSpec


class Item(pydantic.BaseModel):
    name: str
    price: float


class Shop(nubis.Photon):
    @nubis.handler
    def bare(self, text: str) -> dict[str, str]:
        """Bare decorator."""
        return {"text": text}

    @nubis.handler()
    def empty_parens(self, n: int = 3) -> int:
        return n

    @nubis.handler(path="/v1/items", max_batch_size=8, max_wait_ms=2.5, concurrency=2, timeout=1.5)
    def items(self, item: list[Item]) -> list[float]:
        return [i.price for i in item]

    @nubis.handler(method="GET")
    def info(self, verbose: bool = False) -> dict:
        return {"verbose": verbose}

    @nubis.handler(method="get", path="lower")
    async def lower(self) -> str:
        return "ok"

    @nubis.handler
    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    @nubis.handler
    async def acount(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @nubis.handler
    def untyped_gen(self, n: int):
        yield from range(n)

    @nubis.handler
    def upload(self, file: nubis.File, note: str | None = None) -> bytes:
        return file.data

    @nubis.handler
    def anything(self, x):
        return x


def spec(name: str) -> HandlerSpec:
    return Shop.handlers[name]


def test_bare_and_parenthesised_decorators_both_register_handlers() -> None:
    assert set(Shop.handlers) == {
        "bare",
        "empty_parens",
        "items",
        "info",
        "lower",
        "count",
        "acount",
        "untyped_gen",
        "upload",
        "anything",
    }
    assert isinstance(Shop.__dict__["bare"], Handler)
    assert spec("bare").options == HandlerOptions()
    assert spec("empty_parens").options == HandlerOptions()
    assert spec("bare").path == "/bare"
    assert spec("bare").options.method == "POST"


def test_options_are_kept_on_the_spec() -> None:
    items = spec("items")
    assert items.path == "/v1/items"
    assert items.options == HandlerOptions(
        path="/v1/items",
        method="POST",
        max_batch_size=8,
        max_wait_ms=2.5,
        concurrency=2,
        timeout=1.5,
    )
    assert items.batched is True
    assert spec("bare").batched is False


def test_method_is_upper_cased_and_path_gets_a_leading_slash() -> None:
    assert spec("info").options.method == "GET"
    assert spec("lower").options.method == "GET"
    assert spec("lower").path == "/lower"
    assert spec("lower").is_async is True
    assert spec("bare").is_async is False


def test_handler_is_still_a_plain_method_on_instances() -> None:
    shop = Shop()
    assert shop.bare("hi") == {"text": "hi"}
    assert shop.empty_parens() == 3
    assert list(shop.count(2)) == [0, 1]
    assert Shop.bare.__doc__ == "Bare decorator."


def test_request_model_marks_required_and_defaulted_fields() -> None:
    schema = spec("bare").request_model.model_json_schema()
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["type"] == "string"
    assert schema["additionalProperties"] is False

    schema = spec("empty_parens").request_model.model_json_schema()
    assert "required" not in schema
    assert schema["properties"]["n"] == {"default": 3, "title": "N", "type": "integer"}
    assert spec("empty_parens").params == ("n",)


def test_request_model_validates_and_forbids_extra_fields() -> None:
    model = spec("bare").request_model
    assert model.model_validate({"text": "a"}).text == "a"
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate({"text": "a", "other": 1})
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate({})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("text",), "missing")]


def test_nested_pydantic_models_are_validated() -> None:
    model = spec("items").request_model
    parsed = model.model_validate({"item": [{"name": "a", "price": "1.5"}]})
    assert parsed.item == [Item(name="a", price=1.5)]
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"item": [{"name": "a"}]})


def test_unannotated_parameters_accept_anything() -> None:
    model = spec("anything").request_model
    assert model.model_validate({"x": [1, "two"]}).x == [1, "two"]
    assert spec("anything").response_annotated is False
    assert spec("bare").response_annotated is True


def test_response_schema_comes_from_the_return_annotation() -> None:
    assert spec("bare").info().response_schema == {
        "additionalProperties": {"type": "string"},
        "type": "object",
    }
    assert spec("empty_parens").info().response_schema == {"type": "integer"}
    assert spec("items").info().response_schema == {"items": {"type": "number"}, "type": "array"}


@pytest.mark.parametrize("name", ["count", "acount", "untyped_gen"])
def test_generators_are_streaming_handlers(name: str) -> None:
    assert spec(name).streaming is True
    assert spec(name).binary_response is False


def test_stream_item_type_is_the_response_schema() -> None:
    assert spec("count").info().response_schema == {"type": "integer"}
    assert spec("acount").info().response_schema == {"type": "integer"}
    assert spec("untyped_gen").info().response_schema == {}


def test_file_parameters_and_binary_responses_are_detected() -> None:
    upload = spec("upload")
    assert upload.file_params == ("file",)
    assert upload.params == ("file", "note")
    assert upload.binary_response is True
    assert spec("bare").file_params == ()


def test_info_describes_the_handler_for_the_outside_world() -> None:
    info = spec("items").info()
    assert info.model_dump(exclude={"request_schema", "response_schema"}) == {
        "name": "items",
        "path": "/v1/items",
        "method": "POST",
        "streaming": False,
        "max_batch_size": 8,
        "max_wait_ms": 2.5,
        "concurrency": 2,
        "timeout": 1.5,
        "file_params": [],
        "binary_response": False,
    }
    assert spec("bare").info().max_wait_ms == 0.0  # not batched: no waiting to report


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"method": "PUT"}, "handler method must be GET or POST, not 'PUT'"),
        ({"max_wait_ms": -1}, "max_wait_ms cannot be negative"),
        ({"concurrency": 0}, "concurrency must be at least 1 (or None for no limit)"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
    ],
)
def test_bad_options_are_rejected_at_decoration(options: dict, message: str) -> None:
    with pytest.raises(PhotonDefinitionError) as info:
        nubis.handler(**options)
    assert info.value.message == message


def test_overriding_dunder_init_points_to_init() -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            def __init__(self) -> None:
                self.model = None

    assert "Bad overrides __init__" in info.value.message
    assert "def init(self):" in info.value.message


def test_var_positional_parameters_are_rejected() -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            @nubis.handler
            def run(self, *args: int) -> int:
                return 0

    assert info.value.message == "Bad.run: *args/**kwargs cannot be described over HTTP"


def test_var_keyword_parameters_are_rejected() -> None:
    with pytest.raises(PhotonDefinitionError, match=r"\*args/\*\*kwargs"):

        class Bad(nubis.Photon):
            @nubis.handler
            def run(self, **kwargs: int) -> int:
                return 0


def test_positional_only_parameters_are_rejected() -> None:
    with pytest.raises(PhotonDefinitionError, match="positional-only"):

        class Bad(nubis.Photon):
            @nubis.handler
            def run(self, x: int, /) -> int:
                return x


def test_a_handler_must_be_a_method() -> None:
    with pytest.raises(PhotonDefinitionError, match="its first parameter is self"):

        class Bad(nubis.Photon):
            @nubis.handler
            def run() -> int:  # type: ignore[misc]
                return 0


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/_nubis/manifest"]
)
def test_system_paths_are_rejected(path: str) -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            @nubis.handler(path=path)
            def run(self) -> int:
                return 0

    assert info.value.message == f"Bad.run: path {path!r} is reserved; pass path='/other'"


def test_a_handler_named_like_a_system_path_is_rejected() -> None:
    with pytest.raises(PhotonDefinitionError, match="'/metrics' is reserved"):

        class Bad(nubis.Photon):
            @nubis.handler
            def metrics(self) -> int:
                return 0


def test_paths_with_odd_characters_are_rejected() -> None:
    with pytest.raises(PhotonDefinitionError, match="may only use letters, digits"):

        class Bad(nubis.Photon):
            @nubis.handler(path="/a b")
            def run(self) -> int:
                return 0


def test_duplicate_paths_are_rejected() -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            @nubis.handler(path="/predict")
            def one(self) -> int:
                return 1

            @nubis.handler(path="predict")
            def two(self) -> int:
                return 2

    assert info.value.message == "Bad: handlers 'one' and 'two' both serve POST /predict"


def test_same_path_with_different_methods_is_allowed() -> None:
    class Fine(nubis.Photon):
        @nubis.handler(path="/item", method="GET")
        def read(self) -> int:
            return 1

        @nubis.handler(path="/item")
        def write(self, x: int) -> int:
            return x

    assert {(s.options.method, s.path) for s in Fine.handlers.values()} == {
        ("GET", "/item"),
        ("POST", "/item"),
    }


def test_streaming_handlers_cannot_be_batched() -> None:
    with pytest.raises(PhotonDefinitionError) as info:

        class Bad(nubis.Photon):
            @nubis.handler(max_batch_size=4)
            def stream(self, n: list[int]) -> Iterator[int]:
                yield from n

    assert info.value.message == "Bad.stream: a streaming handler cannot be batched"


def test_binary_handlers_cannot_be_batched() -> None:
    with pytest.raises(PhotonDefinitionError, match="returning bytes cannot be batched"):

        class Bad(nubis.Photon):
            @nubis.handler(max_batch_size=4)
            def raw(self, n: list[int]) -> bytes:
                return b""


def test_file_parameters_need_post() -> None:
    with pytest.raises(PhotonDefinitionError, match="file parameters need method='POST'"):

        class Bad(nubis.Photon):
            @nubis.handler(method="GET")
            def up(self, file: nubis.File) -> int:
                return 0


def test_unresolvable_type_hints_are_a_definition_error() -> None:
    with pytest.raises(PhotonDefinitionError, match="cannot read type hints"):

        class Bad(nubis.Photon):
            @nubis.handler
            def run(self, x: "NoSuchType") -> int:  # type: ignore[name-defined]  # noqa: F821
                return 0


def test_decorating_a_non_callable_is_an_error() -> None:
    with pytest.raises(PhotonDefinitionError, match="decorates a method"):
        nubis.handler(42)  # type: ignore[call-overload]
