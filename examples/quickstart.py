"""The main job: serve the embeddings photon, call it over HTTP, print what came back.

    python examples/quickstart.py            # serve, call, stop
    python examples/quickstart.py --serve    # keep serving on 127.0.0.1:8080 afterwards
"""

from __future__ import annotations

import argparse
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

import nubis

HERE = Path(__file__).resolve().parent
SENTENCES = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell today."]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the photon exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"the photon was not ready after {timeout:.0f} s")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--serve", action="store_true", help="keep serving after the demo")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    print(f"$ nubis photon run examples/embeddings --port {args.port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nubis.cli.main", "photon", "run", str(HERE / "embeddings"),
         "--port", str(args.port)],
    )
    try:
        wait_ready(url, proc)
        with nubis.PhotonClient(url) as client:
            print(f"\nhandlers discovered: {client.handlers}")
            vectors = [client.embed(text=s) for s in SENTENCES]
        print(f"embedding size: {len(vectors[0])}")
        for i, j in ((0, 1), (0, 2)):
            print(f"cosine({SENTENCES[i]!r}, {SENTENCES[j]!r}) = {cosine(vectors[i], vectors[j]):.3f}")
        print(f"\ntry it:  curl -s {url}/embed -H 'content-type: application/json' "
              "-d '{\"text\": \"hello\"}'")
        print(f"docs:    {url}/docs   metrics: {url}/metrics")
        if args.serve:
            print("serving; Ctrl-C to stop")
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
