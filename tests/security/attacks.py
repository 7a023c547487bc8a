"""What a malicious workload of workspace B tries (standard library only: it runs inside a job's
code folder and inside a photon bundle). ``attack(targets)`` returns one verdict per attack:
``"denied: <why>"`` when the sandbox stopped it, ``"OPEN: <what leaked>"`` when it did not."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return f"OPEN: read {len(fh.read())} bytes of {path}"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _write(path: str) -> str:
    try:
        with open(path, "ab") as fh:
            fh.write(b"evil")
        return f"OPEN: wrote to {path}"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _list(path: str) -> str:
    try:
        return f"OPEN: listed {len(os.listdir(path))} entries of {path}"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _environ_leaks(markers: list[str]) -> str:
    mine = {os.getpid(), os.getppid()}
    leaks, readable = [], 0
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        readable += 1
        leaks += [f"{m[:6]}… in pid {pid}" for m in markers if m.encode() in data]
    return f"OPEN: {leaks}" if leaks else f"denied: no secret in any other environ ({readable} readable)"


def _signals(own_group: int) -> str:
    hit = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid == os.getpid():
            continue
        try:
            if os.getpgid(pid) == own_group:
                continue
            os.kill(pid, 0)  # the permission check of every signal, without sending one
            hit.append(pid)
        except OSError:
            continue
    return f"OPEN: may signal {len(hit)} processes: {hit[:10]}" if hit else "denied: PermissionError"


def _call(url: str) -> str:
    request = urllib.request.Request(url, data=b'{"text": "hi"}', method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return f"OPEN: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"denied: HTTP {exc.code}"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def attack(targets: dict[str, Any]) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for path in targets.get("read", []):
        verdicts[f"read {path}"] = _read(path)
    for path in targets.get("write", []):
        verdicts[f"write {path}"] = _write(path)
    for path in targets.get("list", []):
        verdicts[f"list {path}"] = _list(path)
    verdicts["environ of other processes"] = _environ_leaks(targets.get("markers", []))
    verdicts["signals outside the gang"] = _signals(os.getpgid(0))
    for url in targets.get("urls", []):
        verdicts[f"call {url}"] = _call(url)
    return verdicts


def own_storage_round_trip() -> str:
    """What an ordinary job does: write and read back a file of its own workspace's storage."""
    root = os.environ["NUBIS_STORAGE_URL"]
    os.makedirs(os.path.join(root, "results"), exist_ok=True)
    with open(os.path.join(root, "results", "own.txt"), "w") as fh:
        fh.write("written by B's job")
    with open(os.path.join(root, "results", "own.txt")) as fh:
        return fh.read()


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "targets.json") as fh:
        result = attack(json.load(fh))
    result["own storage"] = own_storage_round_trip()
    print("VERDICTS " + json.dumps(result), flush=True)
