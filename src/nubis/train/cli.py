"""``python -m nubis.train {fit,quantize,export-onnx}``: argument parsing and the one error line.

Exit codes: 0 done; 2 bad arguments (one ``error:`` line); 1 a data or model problem (one
``error: ...`` line, never a traceback); 3 the fault-injection hook (see checkpoint.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from nubis.errors import NubisError

PROG = "python -m nubis.train"


class Parser(argparse.ArgumentParser):
    """argparse that answers a bad argument with one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _bounded(kind: type, *, low: float, high: float | None = None, inclusive: bool = True) -> Callable:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        too_low = value < low if inclusive else value <= low
        if too_low or (high is not None and value >= high):
            span = f"{'>=' if inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text} must be {span}")
        return value

    return parse


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="nubis's built-in trainer: train, quantize, export.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fit,quantize,export-onnx}")

    fit = commands.add_parser("fit", help="train a classifier (one process, or one worker of torchrun)")
    fit.add_argument("--model", required=True, choices=["logreg", "mlp", "cnn"])
    fit.add_argument("--data", required=True,
                     help="builtin:digits|iris|wine|breast_cancer, or a CSV/NPZ path")
    fit.add_argument("--epochs", required=True, type=_bounded(int, low=1))
    fit.add_argument("--out", required=True, type=Path, help="the model directory to write")
    fit.add_argument("--batch-size", type=_bounded(int, low=1), default=64, help="per worker (default 64)")
    fit.add_argument("--lr", type=_bounded(float, low=0, inclusive=False), default=None,
                     help="Adam learning rate (default: logreg 0.01, mlp 0.002, cnn 0.002)")
    fit.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on GPU")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--label-column", default="label", help="the CSV's label column (default: label)")
    fit.add_argument("--test-fraction", type=_bounded(float, low=0, high=1, inclusive=False), default=0.2,
                     help="held-out share of each class (default 0.2)")
    fit.add_argument("--name", default=None, help="the model's name (default: DATA-MODEL)")

    for name, text in (("quantize", "dynamic int8 quantization of a torch-fp32 model"),
                       ("export-onnx", "export a torch-fp32 model to ONNX")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--src", required=True, type=Path, help="the parent model directory")
        sub.add_argument("--out", required=True, type=Path, help="the new model directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except NubisError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


def dispatch(args: argparse.Namespace) -> int:
    # the commands import torch: loaded once the arguments are known good, so --help stays fast
    if args.command == "fit":
        from nubis.train.fit import FitConfig, run_fit

        config = FitConfig(
            model=args.model, data=args.data, epochs=args.epochs, out=args.out,
            batch_size=args.batch_size, lr=args.lr, amp=args.amp, seed=args.seed,
            label_column=args.label_column, test_fraction=args.test_fraction, name=args.name,
        )
        return run_fit(config, env=os.environ)
    if args.command == "quantize":
        from nubis.train.derive import quantize_model_dir

        result = quantize_model_dir(args.src, args.out)
    else:
        from nubis.train.derive import export_onnx_model_dir

        result = export_onnx_model_dir(args.src, args.out)
    print(result.model_dump_json(indent=2))
    return 0


def exit_worker(code: int) -> NoReturn:
    """End a ``python -m`` entry point: flush and exit; skip finalization after distributed work.

    A process that joined a process group leaves through ``os._exit``: interpreter finalization
    with torch's C++ threads (gloo, the rendezvous store) still around can abort a process whose
    work is done (and the platform would retry the job). Nothing is lost: the output is flushed
    and every file is written and closed by then.
    """
    if "WORLD_SIZE" not in os.environ:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
