"""``classicnets study gradients|degradation|identity`` and ``classicnets compare``: thin wrappers over the
study functions in :mod:`classicnets.studies`.

The parsers are built without importing the studies (they import torch): the defaults shown in ``--help``
are written here, and ``tests/test_studies.py`` checks them against ``Recipe`` and ``DEFAULT_MODELS``.
"""

from __future__ import annotations

import argparse


def parse_list(text: str, kind=str, what: str = "value") -> list:
    """``"plain20, resnet20"`` -> ``["plain20", "resnet20"]``; an empty item is a ValueError."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}") from None


def _out(p: argparse.ArgumentParser, kind: str, force: bool = True) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=f"run directory (default: runs/study-{kind}-<time>)")
    if force:
        p.add_argument("--force", action="store_true", help="replace the report already in --out")


GRADIENT_MODELS = ("plain20", "resnet20", "plain56", "resnet56", "plain110", "resnet110")  # = studies.DEFAULT_MODELS
DEGRADATION_DEFAULTS = {"epochs": 8, "subset": 5000, "batch_size": 128, "lr": 0.1, "schedule": "cosine",
                        "warmup_epochs": 1.0, "test_size": 2000}  # = studies.Recipe()'s  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``study`` (with ``gradients``, ``degradation``, ``identity``) and ``compare`` to the CLI."""
    study = sub.add_parser("study", help="why ResNet works, measured: gradient flow, degradation, identity")
    kinds = study.add_subparsers(dest="study", metavar="STUDY")
    kinds.required = True

    p = kinds.add_parser("gradients", help="per-layer gradient norms at init and after N steps, plain vs residual")
    p.add_argument("--models", default=",".join(GRADIENT_MODELS), help="comma-separated (default: %(default)s)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=50, help="training steps between the two measurements (default 50)")
    p.add_argument("--batch", type=int, default=256, help="measurement and training batch size (default 256)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="train in fp32 (the measurements are always fp32)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    _out(p, "gradients")
    p.set_defaults(handler=cmd_gradients)

    r = DEGRADATION_DEFAULTS
    p = kinds.add_parser("degradation", help="plain vs residual nets of growing depth, one recipe (He et al. Fig. 6)")
    p.add_argument("--depths", default="20,32,44,56", help="comma-separated 6n+2 depths (default: %(default)s)")
    p.add_argument("--families", default="plain,resnet", help="plain, resnet or both (default: %(default)s)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=r["epochs"], help="default %(default)s")
    p.add_argument("--subset", type=int, default=r["subset"], help="training images (default %(default)s; 0: all)")
    p.add_argument("--batch-size", type=int, default=r["batch_size"])
    p.add_argument("--lr", type=float, default=r["lr"])
    p.add_argument("--schedule", default=r["schedule"], choices=("cosine", "constant", "multistep"))
    p.add_argument("--warmup-epochs", type=float, default=r["warmup_epochs"])
    p.add_argument("--test-size", type=int, default=r["test_size"], help="test images per evaluation (0: all)")
    p.add_argument("--seeds", default="0", help="comma-separated; each seed trains every net once (default 0)")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 (no bf16/fp16 autocast)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    _out(p, "degradation")
    p.set_defaults(handler=cmd_degradation)

    p = kinds.add_parser("identity", help="steps a residual vs a plain block needs to learn the identity")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--target", type=float, default=0.01, help="relative MSE to reach (default 0.01)")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    _out(p, "identity")
    p.set_defaults(handler=cmd_identity)

    p = sub.add_parser("compare", help="train several nets on the same data and budget; one table and two plots")
    p.add_argument("models", help="comma-separated registered models, e.g. lenet5_modern,vgg11_bn,resnet20")
    p.add_argument("--data", required=True, help="fashion-mnist, mnist, mnist-5k, cifar10, cifar100 or folder:PATH")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--subset", type=int, default=None, help="train on N training images only")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--no-amp", action="store_true")
    _out(p, "compare", force=False)  # its runs are never replaced: --out must not hold one
    p.set_defaults(handler=cmd_compare)


def cmd_gradients(args: argparse.Namespace) -> int:
    from ..studies.gradients import gradient_flow

    report = gradient_flow(parse_list(args.models, what="model"), data=args.data, steps=args.steps, batch=args.batch,
                           lr=args.lr, seed=args.seed, amp="off" if args.no_amp else "auto", device=args.device,
                           data_dir=args.data_dir, out=args.out, force=args.force, threads=args.threads)  # fmt: skip
    return _done(report)


def cmd_degradation(args: argparse.Namespace) -> int:
    from ..studies.degradation import Recipe, degradation

    recipe = Recipe(epochs=args.epochs, subset=args.subset or None, batch_size=args.batch_size, lr=args.lr,
                    schedule=args.schedule, warmup_epochs=args.warmup_epochs, test_size=args.test_size or None,
                    amp="off" if args.no_amp else "auto", seeds=tuple(parse_list(args.seeds, int, "seed")))  # fmt: skip
    report = degradation(parse_list(args.depths, int, "depth"), data=args.data, recipe=recipe, device=args.device,
                         families=parse_list(args.families, what="family"),
                         data_dir=args.data_dir, out=args.out, force=args.force, threads=args.threads)  # fmt: skip
    return _done(report)


def cmd_identity(args: argparse.Namespace) -> int:
    from ..studies.identity import identity_study

    report = identity_study(steps=args.steps, channels=args.channels, size=args.size, batch=args.batch, lr=args.lr,
                            target=args.target, seed=args.seed, out=args.out, force=args.force)  # fmt: skip
    return _done(report)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..studies.compare import compare
    from ..train.config import TrainConfig, config_from_dict

    overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "seed", "device") if getattr(args, k) is not None}
    if args.no_amp:
        overrides["amp"] = "off"
    base = config_from_dict(overrides, where="the command line", base=TrainConfig())
    report = compare(parse_list(args.models, what="model"), data=args.data, epochs=args.epochs, subset=args.subset,
                     base=base, out=args.out)  # fmt: skip
    print((report.run_dir / "compare.md").read_text(), end="")
    return _done(report)


def _done(report) -> int:
    for line in report.reading():
        print(f"- {line}")
    print(f"report: {report.run_dir / 'report.md'}")
    return 0
