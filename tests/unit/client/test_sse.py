"""``SSEDecoder``: Server-Sent Event lines → items, the end event, the error event."""

import pytest

from nubis.client.photon import SSEDecoder
from nubis.errors import HandlerError, NubisError


def decode(text: str) -> tuple[list[object], SSEDecoder]:
    decoder = SSEDecoder()
    items: list[object] = []
    for line in text.split("\n"):
        items.extend(decoder.feed(line))
        if decoder.finished:
            break
    return items, decoder


def test_data_events_become_json_items() -> None:
    items, decoder = decode('data: 0\n\ndata: {"a": [1, 2]}\n\ndata: "x"\n\nevent: end\ndata: null\n\n')
    assert items == [0, {"a": [1, 2]}, "x"]
    assert decoder.finished is True


def test_end_stops_without_an_item() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("event: end") == []
    assert decoder.feed("data: null") == []
    assert decoder.finished is False
    assert decoder.feed("") == []
    assert decoder.finished is True


def test_an_item_is_only_complete_at_the_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: 5") == []
    assert decoder.feed("") == [5]


def test_multi_line_data_is_joined_with_newlines() -> None:
    items, _ = decode('data: {"a":\ndata: 1}\n\n')
    assert items == [{"a": 1}]


def test_space_after_the_colon_is_optional() -> None:
    items, _ = decode("data:7\n\n")
    assert items == [7]


def test_comments_and_empty_events_are_ignored() -> None:
    items, decoder = decode(": keep-alive\n\n\n\ndata: 1\n\n")
    assert items == [1]
    assert decoder.finished is False


def test_unknown_fields_are_ignored() -> None:
    items, _ = decode("id: 3\nretry: 100\ndata: 2\n\n")
    assert items == [2]


def test_the_error_event_raises_the_typed_error() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: 1") == []
    assert decoder.feed("") == [1]
    decoder.feed("event: error")
    decoder.feed('data: {"error": {"code": "handler_error", "message": "ValueError: no", "details": null}}')
    with pytest.raises(HandlerError) as info:
        decoder.feed("")
    assert info.value.message == "ValueError: no"
    assert info.value.details is None


def test_an_error_with_an_unknown_code_keeps_it() -> None:
    decoder = SSEDecoder()
    decoder.feed("event: error")
    decoder.feed('data: {"error": {"code": "gpu_melted", "message": "hot"}}')
    with pytest.raises(NubisError) as info:
        decoder.feed("")
    assert info.value.code == "gpu_melted"
    assert info.value.message == "hot"


def test_the_event_name_resets_after_each_event() -> None:
    decoder = SSEDecoder()
    decoder.feed("event: progress")
    decoder.feed("data: 1")
    assert decoder.feed("") == [1]
    assert decoder.event == "message"
    decoder.feed("data: 2")
    assert decoder.feed("") == [2]
