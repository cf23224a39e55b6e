"""The ``classicnets`` command: a thin layer over the Python API.

Each subcommand parses its arguments, calls one library function and prints the result. Any
``ValueError``/``TypeError``/``FileNotFoundError`` from the library is a user error: it is printed as one
line that names the problem and the fix, and the command exits with status 2 (never a bare traceback).
"""

from __future__ import annotations

import argparse
import json
import os
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


def _train_config(args: argparse.Namespace):
    from .train.config import TrainConfig, config_from_dict, load_config_file, load_recipe, parse_set

    if args.resume:
        from pathlib import Path

        saved = Path(args.resume) / "config.yaml"
        if not Path(args.resume).is_dir():
            raise UserError(f"resume directory {args.resume} does not exist; pass a run directory such as runs/NAME")
        if not saved.is_file():
            raise UserError(f"{saved} is missing, so {args.resume} is not a classicnets run directory")
        config = load_config_file(saved)
    elif args.recipe:
        config = load_recipe(args.recipe)
    elif args.command == "finetune":
        config = load_recipe("finetune")
    else:
        config = TrainConfig()
    overrides = {}
    for key in ("model", "data", "data_dir", "epochs", "batch_size", "lr", "device", "seed", "name",
                "out_dir", "subset", "threads"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    for key in ("weights", "freeze"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.deterministic:
        overrides["deterministic"] = True
    if args.compile:
        overrides["compile"] = True
    if args.no_amp:
        overrides["amp"] = "off"
    if args.progress is not None:
        overrides["progress"] = args.progress
    config = config_from_dict(overrides, where="the command line", base=config)
    return parse_set(args.set or [], config)


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from .train.engine import fit

    config = _train_config(args)
    result = fit(config, resume=args.resume)
    if result.test_acc is not None:
        print(f"test accuracy {result.test_acc:.2%} (top-5 {result.test_top5:.2%}) of the best-validation "
              f"checkpoint (epoch {result.best_epoch}), {result.wall_time_s:.0f} s")
    print(f"run directory: {result.run_dir}")
    print(f"curves: {result.run_dir / 'curves.png'}")
    return 0


@command("finetune")
def cmd_finetune(args: argparse.Namespace) -> int:
    if not args.resume and not args.weights:
        raise UserError("finetune needs --weights FILE (a .pth/.pt state dict, a classicnets checkpoint or "
                        ".safetensors); to train from scratch use `classicnets train`")
    return cmd_train(args)


@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    from .train.inference import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, data_dir=args.data_dir,
                            device=args.device, out_dir=args.out)
    print(f"{args.split}: {m['n']:,} images  top-1 {m['acc']:.2%}  top-5 {m['top5']:.2%}  loss {m['loss']:.4f}")
    width = max(len(c) for c in m["classes"])
    for name, acc in zip(m["classes"], m["per_class_acc"]):
        print(f"  {name:<{width}}  {acc:.2%}")
    print(f"confusion matrix: {m['confusion_png']}")
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from .train.inference import predict

    for item in predict(args.checkpoint, args.images, topk=args.topk, device=args.device):
        tops = ", ".join(f"{name} {p:.1%}" for name, p in item["top"])
        print(f"{item['image']}: {tops}")
    return 0


def _add_train_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a classic net; writes runs/NAME/ (config, metrics, curves, checkpoints)")
    finetune = sub.add_parser("finetune", help="fine-tune pretrained weights on your data (e.g. --data folder:PATH)")
    _add_common_train_args(train)
    _add_common_train_args(finetune)
    for p in (train, finetune):
        p.add_argument("--weights", default=None, help="start from these weights (.pth, checkpoint, .safetensors)")
        p.add_argument("--freeze", default=None, metavar="MODULE",
                       help="freeze the model up to this top-level module (e.g. layer3), or 'backbone'")
    _add_inference_parsers(sub)


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help="a registered model (default: the recipe's)")
    p.add_argument("--data", default=None, help="fashion-mnist, mnist, mnist-5k, cifar10, cifar100 or folder:PATH")
    p.add_argument("--data-dir", default=None, help="look for dataset files here first")
    p.add_argument("--recipe", default=None, help="a shipped recipe name or a YAML file")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--subset", type=int, default=None, help="train on N training images only")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", default=None, help="run directory name under --out-dir")
    p.add_argument("--out-dir", default=None, help="parent of the run directory (default: runs)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible (slower) kernels")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 (no bf16/fp16 autocast)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="force the progress bar")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. --set lr=0.05")


def _add_inference_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5/per-class accuracy and a confusion matrix for a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, help="dataset (default: the one it was trained on)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for the confusion matrix PNG (default: the checkpoint's)")

    p = sub.add_parser("predict", help="top-k classes with probabilities for image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")


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
def _add_export_parser(sub: argparse._SubParsersAction) -> None:
    from .export import register_cli

    register_cli(sub)


def _add_study_parsers(sub: argparse._SubParsersAction) -> None:
    from .analysis.studies.cli import register_cli

    register_cli(sub)


_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train_parsers, _add_export_parser, _add_study_parsers,
]  # fmt: skip


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
    except RuntimeError as exc:
        from .train.engine import TrainingError

        if not isinstance(exc, TrainingError):
            raise
        print(f"classicnets {args.command}: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"classicnets {args.command}: interrupted", file=sys.stderr)
        return 130


# jemalloc that keeps freed pages: on VMs whose freed memory goes back to the host, glibc's allocator
# page-faults on every training step (REFERENCE.md saw erratic, up to 10x slower steps; benchmarks/
# allocator.py measures 1.01-1.07x here, never slower). Commands that train re-exec themselves under it.
JEMALLOC_PATHS = tuple(f"/usr/lib/{arch}-linux-gnu/libjemalloc.so.2" for arch in ("x86_64", "aarch64")) + (
    "/usr/lib/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")  # fmt: skip
TRAINING_COMMANDS = {"train", "finetune", "study", "compare"}


def reexec_with_jemalloc(argv: Sequence[str]) -> None:
    """Replace this process by the same command with jemalloc preloaded (same pid, so torchrun is unaffected).

    Only for training commands, only where jemalloc is installed and not already loaded; set
    ``CLASSICNETS_ALLOCATOR=system`` to keep the system allocator.
    """
    if os.environ.get("CLASSICNETS_ALLOCATOR", "jemalloc") != "jemalloc" or not argv or argv[0] not in TRAINING_COMMANDS:
        return
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = next((path for path in JEMALLOC_PATHS if os.path.exists(path)), None)
    if lib is None:
        return
    env = {**os.environ, "LD_PRELOAD": f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip()}
    env.setdefault("MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
    os.execve(sys.executable, [sys.executable, "-m", "classicnets", *argv], env)


def entry() -> None:
    """The ``classicnets`` console script and ``python -m classicnets``."""
    reexec_with_jemalloc(sys.argv[1:])
    sys.exit(main())


if __name__ == "__main__":
    entry()
