"""The ``classicnets`` command: a thin layer over the Python API.

Each subcommand parses its arguments, calls one library function and prints the result. Any
``ValueError``/``TypeError``/``FileNotFoundError`` from the library is a user error: it is printed as one
line that names the problem and the fix, and the command exits with status 2 (never a bare traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """An error caused by the command line, reported without a traceback."""


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def decorator(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return decorator


def parse_size(text: str) -> tuple[int, int, int]:
    """``3x224x224`` -> (3, 224, 224); ``224`` -> (None-free) square with the model's channels handled later."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must look like CxHxW, e.g. 3x224x224; got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"input size must be three positive integers CxHxW, got {text!r}")
    return dims  # type: ignore[return-value]


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from .analysis import summary
    from .models import create_model, list_models, model_card

    import torch

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; try `classicnets models` for all of them")
    rows = []
    for name in names:
        card = model_card(name)
        with torch.device("meta"):  # no weights are allocated: counting and MACs need shapes only
            model = create_model(name)
        s = summary(model)
        rows.append({
            "name": name, "params": s.total_params, "paper_params": card.paper_params, "macs": s.total_macs,
            "input": "x".join(map(str, card.default_input_size)), "skips": s.skip_connections,
            "year": card.year, "paper": card.paper, "notes": card.notes,
        })  # fmt: skip
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'model':<14} {'params':>13} {'paper':>7} {'MACs':>10} {'input':>10} {'skips':>5}  {'year':<4}  notes"
    print(header)
    print("-" * len(header))
    for r in rows:
        check = "-" if r["paper_params"] is None else ("=" if r["paper_params"] == r["params"] else "DIFF")
        print(
            f"{r['name']:<14} {r['params']:>13,} {check:>7} {human(r['macs']):>10} {r['input']:>10} "
            f"{r['skips']:>5}  {r['year']:<4}  {r['notes']}"
        )
    print(f"\n{len(rows)} models. 'paper' '=' means the count equals the published one to the unit.")
    return 0


@command("summary")
def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from .analysis import summary
    from .models import create_model, model_card

    card = model_card(args.model)
    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    in_chans = args.input_size[0] if args.input_size else card.default_input_size[0]
    with torch.device("meta"):
        model = create_model(args.model, in_chans=in_chans, **kwargs)
    s = summary(model, args.input_size)
    print({"table": s.to_table, "csv": s.to_csv, "json": s.to_json}[args.format]())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classicnets",
        description="The classic convolutional networks: build, inspect, train, compare and ship them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="table of every model: parameters, MACs, paper")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("summary", help="layer-by-layer table: shape, params (with formula), MACs, receptive field")
    p.add_argument("model")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="CxHxW")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    for register in _EXTRA_PARSERS:
        register(sub)
    return parser


# Other modules (training, studies, export) add their subcommands here, keeping this file thin.
_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    try:
        return handler(args)
    except (UserError, ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"classicnets {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"classicnets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
