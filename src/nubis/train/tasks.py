"""The trainer as a platform job: model folders travel through the workspace's storage.

``python -m nubis.train.tasks fit [--upload PREFIX] FIT_ARGS...`` trains (every worker of the gang
runs it) and rank 0 uploads the model folder to ``PREFIX``; ``python -m nubis.train.tasks
{quantize,export-onnx} --src PREFIX --upload PREFIX`` derives a version from a stored one. The
control plane registers what lies at ``PREFIX`` once the job succeeded. Storage comes from
``NUBIS_STORAGE_URL`` (the workspace's files, nothing above them), which the platform gives every job.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nubis.storage import Store
from nubis.train import cli


def workspace_store() -> Store:
    url = os.environ.get("NUBIS_STORAGE_URL")
    if not url:
        raise SystemExit("error: NUBIS_STORAGE_URL is not set: run this as a nubis job")
    return Store.from_url(url)


def _take(args: list[str], flag: str) -> str:
    if flag not in args or args.index(flag) + 1 >= len(args):
        raise SystemExit(f"error: {flag} PREFIX is required")
    i = args.index(flag)
    value = args[i + 1]
    del args[i : i + 2]
    return value


def _upload_prefix(args: list[str]) -> str:
    """``--upload PREFIX``, by default where the control plane looks: ``.jobs/<job id>/model``."""
    if "--upload" in args:
        return _take(args, "--upload")
    job = os.environ.get("NUBIS_JOB_ID")
    if not job:
        raise SystemExit("error: give --upload PREFIX (or run this as a nubis job)")
    return f".jobs/{job}/model"


def fit(args: list[str]) -> int:
    prefix = _upload_prefix(args)
    rank = int(os.environ.get("RANK", "0"))
    base = Path(os.environ.get("NUBIS_CHECKPOINT_DIR") or tempfile.mkdtemp(prefix="nubis-fit-"))
    out = base / "model-out"
    if rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    code = cli.main(["fit", *args, "--out", str(out)])
    if code == 0 and rank == 0:
        workspace_store().put_folder(out, prefix)
        print(f"uploaded the model to {prefix}", flush=True)
    return code


def derive(command: str, args: list[str]) -> int:
    src, prefix = _take(args, "--src"), _upload_prefix(args)
    store = workspace_store()
    with tempfile.TemporaryDirectory(prefix="nubis-derive-") as tmp:
        store.get_folder(src, Path(tmp) / "src")
        code = cli.main([command, "--src", str(Path(tmp) / "src"), "--out", str(Path(tmp) / "out"), *args])
        if code == 0:
            store.put_folder(Path(tmp) / "out", prefix)
            print(f"uploaded the model to {prefix}", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("fit", "quantize", "export-onnx"):
        print("usage: python -m nubis.train.tasks {fit,quantize,export-onnx} ...", file=sys.stderr)
        return 2
    return fit(args[1:]) if args[0] == "fit" else derive(args[0], args[1:])


if __name__ == "__main__":
    cli.exit_worker(main())
