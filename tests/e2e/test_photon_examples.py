"""The README's photon workflow, end to end: `nubis photon run` on the examples, real models."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import nubis

from servers import photon_process

pytestmark = pytest.mark.e2e


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_photon_serves_minilm_batched() -> None:
    with photon_process("examples/embeddings", cli=True) as photon:
        r = httpx.post(f"{photon.url}/embed", json={"text": "hello"},
                       headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert len(r.json()) == 384
        with nubis.PhotonClient(photon.url) as c:
            cat, kitten, car = (c.embed(text=t) for t in ("a cat", "a small kitten", "a red car"))
            assert _cosine(cat, kitten) > _cosine(cat, car)
            texts = [f"sentence number {i}" for i in range(64)]
            with ThreadPoolExecutor(32) as pool:
                vectors = list(pool.map(lambda t: c.embed(text=t), texts))
        assert all(len(v) == 384 for v in vectors)
        assert vectors[5] == pytest.approx(c_embed_once(photon.url, texts[5]), abs=1e-4)
        metrics = httpx.get(f"{photon.url}/metrics").text
        count = _metric(metrics, 'nubis_photon_batch_size_count{handler="embed"}')
        total = _metric(metrics, 'nubis_photon_batch_size_sum{handler="embed"}')
        assert total == 1 + 3 + 64 + 1
        assert count < total, "concurrent requests were not coalesced into batches"


def c_embed_once(url: str, text: str) -> list[float]:
    with nubis.PhotonClient(url) as c:
        return c.embed(text=text)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_digits_photon_predicts_its_own_sample() -> None:
    with photon_process("examples/digits", cli=True) as photon, nubis.PhotonClient(photon.url) as c:
        info = c.info()
        assert info["accuracy"] >= 0.9
        result = c.predict(image=info["sample"])
        assert set(result) == {"label", "probability"}
        assert 0 <= result["label"] <= 9
        with pytest.raises(nubis.errors.HandlerError, match="64 numbers"):
            c.predict(image=[1, 2, 3])
