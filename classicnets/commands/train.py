"""``classicnets train`` and ``classicnets finetune``: a config from a recipe, the command line and --set,
then the engine's ``fit``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from .errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a classic net; writes runs/NAME/ (config, metrics, curves, checkpoints)")
    finetune = sub.add_parser("finetune", help="fine-tune pretrained weights on your data (e.g. --data folder:PATH)")
    for p, handler in ((train, cmd_train), (finetune, cmd_finetune)):
        _add_train_args(p)
        p.set_defaults(handler=handler)


def _add_train_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--weights", default=None, help="start from these weights: .pth, checkpoint, .safetensors, or a "
                   "shipped weight's name (fashion-mnist:resnet20)")
    p.add_argument("--freeze", default=None, metavar="MODULE",
                   help="freeze the model up to this top-level module (e.g. layer3), or 'backbone'")  # fmt: skip


_PASSED_THROUGH = ("model", "data", "data_dir", "epochs", "batch_size", "lr", "device", "seed", "name", "out_dir",
                   "subset", "threads", "weights", "freeze", "progress")  # fmt: skip


def train_config(args: argparse.Namespace):
    """The run's TrainConfig: the resumed run's, a recipe or the defaults, then the flags, then ``--set``."""
    from ..train.config import TrainConfig, config_from_dict, load_config_file, load_recipe, parse_set

    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not Path(args.resume).is_dir():
            raise UserError(f"resume directory {args.resume} does not exist; pass a run directory such as runs/NAME")
        if not saved.is_file():
            raise UserError(f"{saved} is missing, so {args.resume} is not a classicnets run directory")
        if args.recipe:
            raise UserError(f"--recipe cannot change a run being resumed: {args.resume} keeps the config it was "
                            "started with (its config.yaml); change single keys with --set, or start a new run")  # fmt: skip
        config = load_config_file(saved)
    elif args.recipe:
        config = load_recipe(args.recipe)
    elif args.command == "finetune":
        config = load_recipe("finetune")
    else:
        config = TrainConfig()
    overrides = {key: getattr(args, key) for key in _PASSED_THROUGH if getattr(args, key, None) is not None}
    if args.weights and not args.model:
        from ..weights import get_weight, is_weight_name

        if is_weight_name(args.weights):  # `finetune --weights fashion-mnist:resnet20`: the model is resnet20
            overrides["model"] = get_weight(args.weights).model
    if args.deterministic:
        overrides["deterministic"] = True
    if args.compile:
        overrides["compile"] = True
    if args.no_amp:
        overrides["amp"] = "off"
    config = config_from_dict(overrides, where="the command line", base=config)
    return parse_set(args.set or [], config)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run stops where it is and what it committed is kept."""

    signal_name = "SIGTERM"


def _terminate(signum: int, frame: object) -> None:
    raise Interrupted()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While training, SIGTERM raises :class:`Interrupted` (the default would end the process silently)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_line(exc: KeyboardInterrupt) -> str:
    """One line: which signal, after which epoch, what is kept and how to continue."""
    name = getattr(exc, "signal_name", "SIGINT")
    run_dir, epoch = getattr(exc, "run_dir", None), getattr(exc, "epoch", 0)
    if run_dir is None:
        return f"interrupted ({name}) before the run directory was set up; nothing was written"
    last = Path(run_dir) / "last.pt"
    if last.is_file() and _elastic_restarts_left():
        return (f"interrupted ({name}) after epoch {epoch}; {last} is kept: a torchrun restart continues from it "
                f"(else continue with --resume {run_dir})")  # fmt: skip
    if last.is_file():
        return f"interrupted ({name}) after epoch {epoch}; {last} is kept: continue with --resume {run_dir}"
    return (f"interrupted ({name}) before the first epoch ended; {run_dir} holds no checkpoint: run the same "
            f"command again to start over (or delete {run_dir})")


def _elastic_restarts_left() -> bool:
    from ..train.runtime import elastic_restarts

    restart, max_restarts = elastic_restarts()
    return restart < max_restarts


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.engine import fit

    try:
        with _sigterm_as_interrupt():
            result = fit(train_config(args), resume=args.resume)
    except KeyboardInterrupt as exc:
        print(f"classicnets {args.command}: {interrupted_line(exc)}", file=sys.stderr)
        return 143 if isinstance(exc, Interrupted) else 130
    if result.test_acc is not None:
        print(f"test accuracy {result.test_acc:.2%} (top-5 {result.test_top5:.2%}) of the best-validation "
              f"checkpoint (epoch {result.best_epoch}), {result.wall_time_s:.0f} s")  # fmt: skip
    print(f"run directory: {result.run_dir}")
    print(f"curves: {result.run_dir / 'curves.png'}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    if not args.resume and not args.weights:
        raise UserError("finetune needs --weights FILE (a .pth/.pt state dict, a classicnets checkpoint or "
                        ".safetensors); to train from scratch use `classicnets train`")  # fmt: skip
    return cmd_train(args)
