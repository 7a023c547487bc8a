"""The main job: the whole life of a model on nubis, on this machine.

Brings the platform up (`nubis up` in its own home), trains an MLP on the digits data set with 2
DDP workers, quantizes it to int8, deploys the quantized version behind the gateway and sends it
predictions; prints the accuracy, the endpoint and how to call it.

    python examples/demo.py                  # run it all, then stop the platform
    python examples/demo.py --keep           # keep the platform (and the deployment) running
    python examples/demo.py --home ~/.nubis  # use (and keep) that platform home
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import nubis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_platform(home: Path, port: int, gateway_port: int) -> subprocess.Popen[bytes]:
    print(f"$ nubis up --home {home} --port {port} --gateway-port {gateway_port}")
    proc = subprocess.Popen([sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home),
                             "--port", str(port), "--gateway-port", str(gateway_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nubis up exited with code {proc.returncode}: run it by hand to see why")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit("nubis up was not healthy after 60 s")


def train(client: nubis.Client) -> str:
    print("\n$ nubis train --model mlp --data builtin:digits --epochs 10 --workers 2")
    job = client.jobs.train("mlp", "builtin:digits", epochs=10, workers=2)
    seen = 0

    def show(current: nubis.models.jobs.Job) -> None:
        nonlocal seen
        for record in current.history[seen:]:
            print(f"  epoch {record.get('epoch')}/{record.get('epochs')}: loss {record.get('loss', 0):.4f}, "
                  f"held-out accuracy {record.get('val_accuracy', 0):.4f}, "
                  f"{record.get('samples_per_s', 0):,.0f} samples/s")
        seen = len(current.history)

    done = client.jobs.wait(job.id, on_update=show)
    if done.status != "succeeded":
        sys.exit(f"training {done.status}: {done.reason}")
    print(f"  held-out accuracy {done.metrics['accuracy']:.4f} → registered {done.model}")
    return done.model or ""


def quantize(client: nubis.Client, ref: str) -> str:
    print(f"\n$ nubis model quantize {ref}")
    done = client.jobs.wait(client.models.quantize(ref).id)
    if done.status != "succeeded":
        sys.exit(f"quantization {done.status}: {done.reason}")
    version = client.models.get(done.model or "")
    c = version.comparison or {}
    print(f"  {version.ref}: {c.get('size_ratio', 0):.2f}x smaller, "
          f"accuracy {version.metrics['accuracy']:.4f} ({c.get('accuracy_delta', 0):+.4f} vs {ref}), "
          f"latency {version.metrics['latency_ms_b1']:.3f} ms per row "
          f"(parent {c.get('parent', {}).get('latency_ms_b1', 0):.3f} ms)")
    return version.ref


def deploy_and_predict(client: nubis.Client, ref: str, gateway: str, token: str) -> None:
    print(f"\n$ nubis model deploy {ref} --name digits")
    client.models.deploy(ref, "digits")
    deployment = client.deployments.wait_ready("digits", timeout=180)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    endpoint = f"{gateway}/default/digits/predict"
    r = httpx.post(endpoint, json={"inputs": x[-8:].tolist()}, headers={"Authorization": f"Bearer {token}"},
                   timeout=30)
    r.raise_for_status()
    print(f"  {deployment.name} is {deployment.status} at {endpoint}")
    print(f"  predictions {r.json()['predictions']} (true labels {y[-8:].tolist()})")
    row = ", ".join(str(int(v)) for v in x[-1])
    print("\ncall it yourself:")
    print(f"  curl -H \"Authorization: Bearer $(cat {os.environ['NUBIS_HOME']}/admin.token)\" {endpoint} \\\n"
          f"       -d '{{\"inputs\": [[{row}]]}}'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="platform home (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the platform running at the end")
    args = parser.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="nubis-demo-"))).expanduser()
    os.environ["NUBIS_HOME"] = str(home)
    port, gateway_port = free_port(), free_port()
    proc = start_platform(home, port, gateway_port)
    try:
        token = (home / "admin.token").read_text().strip()
        with nubis.Client(f"http://127.0.0.1:{port}", token) as client:
            trained = train(client)
            quantized = quantize(client, trained)
            deploy_and_predict(client, quantized, f"http://127.0.0.1:{gateway_port}", token)
        if args.keep:
            print(f"\nthe platform keeps running (NUBIS_HOME={home}); Ctrl-C stops it")
            print(f"console: http://127.0.0.1:{port}/ — log in with the token in {home}/admin.token, or "
                  f"open it logged in with: NUBIS_HOME={home} nubis console")
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
