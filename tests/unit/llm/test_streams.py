"""Text deltas: whole UTF-8 characters only, stop strings cut even across deltas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nubis.llm.engines.streams import StopMatcher, TextStream, ThreadedGeneration, Utf8Stream

UNICODE = "café naïve Zürich 東京 北京 😀🚀 ελληνικά русский"


def test_token_deltas_reassemble_unicode(tiny_model_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    ids = tokenizer(UNICODE, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(UNICODE.split())  # some characters span several byte tokens
    stream = TextStream(lambda t: tokenizer.decode(t, skip_special_tokens=True))
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == UNICODE
    assert all("\ufffd" not in d for d in deltas)


def test_utf8_bytes_reassemble_unicode() -> None:
    stream = Utf8Stream()
    data = UNICODE.encode()
    deltas = [stream.push(data[i : i + 1]) for i in range(len(data))] + [stream.finish()]
    assert "".join(deltas) == UNICODE
    assert all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        (["Hello ", "wor", "ld END tail"], "Hello world "),
        (["Hello E", "N", "D"], "Hello "),  # the stop string split over three deltas
        (["Hello E", "NX more"], "Hello ENX more"),  # a false start is shown in the end
        (["a", "b"], "ab"),
    ],
)
def test_stop_strings_cut_across_deltas(pieces: list[str], shown: str) -> None:
    stop = StopMatcher(["END", "\n\n"])
    text = "".join(stop.feed(p) for p in pieces) + stop.flush()
    assert text == shown
    assert stop.stopped == ("END" in "".join(pieces))


def test_stop_matcher_takes_the_earliest_stop() -> None:
    stop = StopMatcher(["bbb", "b"])
    assert stop.feed("aab bbb") == "aa"
    assert stop.stopped
    assert stop.feed("more") == ""


async def test_threaded_generation_from_another_thread() -> None:
    closed: list[bool] = []
    gen = ThreadedGeneration(
        prompt_tokens=3, on_close=lambda: closed.append(True), loop=asyncio.get_running_loop()
    )

    def produce() -> None:
        for word in ("a", "b", "c"):
            gen.put(word)
        gen.done("length", 3)

    await asyncio.to_thread(produce)
    assert [d async for d in gen] == ["a", "b", "c"]
    assert (gen.finish_reason, gen.completion_tokens, gen.prompt_tokens) == ("length", 3, 3)
    await gen.aclose()
    assert closed == []  # finished already: nothing to stop


async def test_threaded_generation_raises_the_engine_error() -> None:
    gen = ThreadedGeneration(prompt_tokens=1, on_close=lambda: None, loop=asyncio.get_running_loop())
    gen.put("x")
    gen.fail(RuntimeError("boom"))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        async for _ in gen:
            pass
