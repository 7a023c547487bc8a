"""Continuous batching for a PyTorch causal LM on one thread that owns the model.

Each step admits waiting requests (each prompt prefilled alone into its own KV cache, so no
padding ever reaches a prompt), merges them into the running batch, then decodes one token for
every running request with one forward pass over a left-padded batch. The batch's KV cache is a
``DynamicCache`` whose rows are requests; padding is zeros that the attention mask hides. A row
leaves when it finishes or is cancelled, and the columns that only padding still uses are cut.

transformers' own continuous batching (``generate_batch``, ``ContinuousBatchingManager``) was
measured first on CPU in transformers 5.24: 114 s for two 12-token requests on a 2-layer model,
one ``do_sample`` for the whole batch and no seed per request; so nubis batches itself.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

# torch and transformers: this module is imported only by the transformers engine, which needs them
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from nubis.llm.engine import FinishReason, SamplingParams
from nubis.llm.engines.streams import TextStream, ThreadedGeneration

log = logging.getLogger(__name__)


@dataclass(eq=False)
class BatchRequest:
    prompt_ids: list[int]
    params: SamplingParams
    stream: TextStream
    generation: ThreadedGeneration
    generator: torch.Generator | None = None
    generated: int = 0
    last_token: int = -1


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from one row of logits: greedy at temperature 0, else temperature and top-p."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        probs, order = probs.sort(descending=True)
        probs[(probs.cumsum(-1) - probs) > params.top_p] = 0.0
        return int(order[torch.multinomial(probs, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class BatchScheduler:
    """Runs the model for every request on one background thread (see the module doc)."""

    def __init__(self, model: Any, *, eos_ids: set[int], max_batch_size: int) -> None:
        self._model = model
        self._eos_ids = eos_ids
        # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        layers = DynamicCache(config=model.config).layers
        # sliding-window or other special caches cannot be merged row by row: one request at a time
        mergeable = all(type(layer) is DynamicLayer for layer in layers)
        self.max_batch_size = max_batch_size if mergeable else 1
        self._inbox: queue.SimpleQueue[tuple[str, BatchRequest | None]] = queue.SimpleQueue()
        self._waiting: deque[BatchRequest] = deque()
        self._rows: list[BatchRequest] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)
        self._lock = threading.Lock()
        self._queued = 0  # submitted, not yet running (for stats from any thread)
        self._running = 0
        self._thread: threading.Thread | None = None

    # --- any thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nubis-llm-batch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, request: BatchRequest) -> None:
        with self._lock:
            self._queued += 1
        self._inbox.put(("submit", request))

    def cancel(self, request: BatchRequest) -> None:
        self._inbox.put(("cancel", request))

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._lock:
            return self._running, self._queued

    # --- the batch thread
    def _run(self) -> None:
        with torch.inference_mode():
            while self._drain(block=not self._rows and not self._waiting):
                try:
                    self._admit()
                    if self._rows:
                        self._decode()
                except Exception as e:  # a failed step fails its requests, never the engine
                    log.exception("LLM batch step failed")
                    failed = self._rows
                    self._keep([])
                    self._publish()
                    for request in failed:
                        request.generation.fail(e)
        stopped = RuntimeError("the engine stopped")
        for request in [*self._rows, *self._waiting]:
            request.generation.fail(stopped)
        self._keep([])
        self._waiting.clear()
        self._publish()
        with self._lock:
            self._queued = 0

    def _drain(self, *, block: bool) -> bool:
        """Take what arrived; False once asked to stop."""
        while True:
            try:
                kind, request = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            assert request is not None
            if kind == "submit":
                self._waiting.append(request)
            elif request in self._waiting:
                self._waiting.remove(request)
                with self._lock:
                    self._queued -= 1
            elif request in self._rows:
                self._keep([r for r in self._rows if r is not request])
                self._publish()

    def _publish(self) -> None:
        with self._lock:
            self._running = len(self._rows)

    def _admit(self) -> None:
        joined: list[tuple[BatchRequest, DynamicCache]] = []
        finished: list[tuple[BatchRequest, FinishReason]] = []
        while self._waiting and len(self._rows) + len(joined) < self.max_batch_size:
            request = self._waiting.popleft()
            with self._lock:
                self._queued -= 1
            cache = DynamicCache(config=self._model.config)
            ids = torch.tensor([request.prompt_ids], dtype=torch.long)
            try:
                out = self._model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
                token = sample(out.logits[0, -1], request.params, request.generator)
            except Exception as e:
                log.exception("LLM prefill failed")
                request.generation.fail(e)
                continue
            if reason := self._advance(request, token):
                finished.append((request, reason))
            else:
                joined.append((request, cache))
        if joined:
            self._join(joined)
        self._publish()
        for request, reason in finished:
            self._finish(request, reason)

    def _join(self, joined: list[tuple[BatchRequest, DynamicCache]]) -> None:
        """Merge freshly prefilled requests into the running batch."""
        if not self._rows and len(joined) == 1:
            request, self._cache = joined[0]
            n = len(request.prompt_ids)
            self._rows = [request]
            self._mask = torch.ones(1, n, dtype=torch.long)
            self._positions = torch.tensor([n], dtype=torch.long)
            return
        caches = ([self._cache] if self._rows else []) + [cache for _, cache in joined]
        masks = ([self._mask] if self._rows else []) + [
            torch.ones(1, len(r.prompt_ids), dtype=torch.long) for r, _ in joined
        ]
        length = max(m.shape[1] for m in masks)
        data = []
        for layers in zip(*(c.layers for c in caches), strict=True):
            keys = torch.cat([_left_pad(layer.keys, length, 2) for layer in layers])
            values = torch.cat([_left_pad(layer.values, length, 2) for layer in layers])
            data.append((keys, values))
        self._cache = DynamicCache(ddp_cache_data=data)
        self._mask = torch.cat([_left_pad(m, length, 1) for m in masks])
        fresh = torch.tensor([len(r.prompt_ids) for r, _ in joined], dtype=torch.long)
        self._positions = torch.cat([self._positions if self._rows else fresh[:0], fresh])
        self._rows = self._rows + [r for r, _ in joined]

    def _decode(self) -> None:
        ids = torch.tensor([[r.last_token] for r in self._rows], dtype=torch.long)
        mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
        padded = bool((self._mask[:, 0] == 0).any())  # left padding: only the first column tells
        out = self._model(
            input_ids=ids,
            attention_mask=mask if padded else None,  # no mask at all is the fast path
            position_ids=self._positions.unsqueeze(1),
            use_cache=True,
            **{self._cache_kw: self._cache},
        )
        self._mask = mask
        self._positions = self._positions + 1
        logits = out.logits[:, -1, :]
        greedy = logits.argmax(dim=-1).tolist()
        keep, finished = [], []
        for i, request in enumerate(self._rows):
            if request.params.temperature <= 0:
                token = greedy[i]
            else:
                token = sample(logits[i], request.params, request.generator)
            if reason := self._advance(request, token):
                finished.append((request, reason))
            else:
                keep.append(request)
        if finished:
            self._keep(keep)
            self._publish()
        for request, reason in finished:  # after the count: a finished request is never "running"
            self._finish(request, reason)

    def _advance(self, request: BatchRequest, token: int) -> FinishReason | None:
        """Hand ``token``'s text to the request; why it is finished, if it is."""
        request.generated += 1
        reason: FinishReason | None = None
        if token in self._eos_ids:
            reason = "stop"
        else:
            request.generation.put(request.stream.push(token))
            if request.stream.stop.stopped:
                reason = "stop"
            elif request.generated >= request.params.max_tokens:
                reason = "length"
        if reason is None:
            request.last_token = token
        return reason

    def _finish(self, request: BatchRequest, reason: FinishReason) -> None:
        request.generation.put(request.stream.finish())
        request.generation.done(reason, request.generated)

    def _keep(self, keep: list[BatchRequest]) -> None:
        """Keep only these rows; cut the left columns that are padding for all of them."""
        if not keep:
            self._rows, self._cache = [], None
            self._mask = torch.zeros(0, 0, dtype=torch.long)
            self._positions = torch.zeros(0, dtype=torch.long)
            return
        index = torch.tensor([self._rows.index(r) for r in keep], dtype=torch.long)
        mask = self._mask[index]
        start = int((mask.sum(dim=0) > 0).nonzero()[0])
        assert self._cache is not None
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self._mask = mask[:, start:]
        self._positions = self._positions[index]
        self._rows = keep
