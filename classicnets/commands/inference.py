"""``classicnets eval``, ``classicnets predict`` and ``classicnets weights``: use a trained net, from a
checkpoint or from the weights that ship with classicnets (a positional name, or ``--weights NAME``)."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError

ENGINES = ("torch", "onnxruntime")  # classicnets.inference.ENGINES (not imported here: the CLI help loads no torch)
ENGINE_HELP = ("torch (default), or onnxruntime: the model exported to ONNX (seconds, the first time; then cached) "
               "and run by ONNX Runtime on the CPU in fp32, faster per image (benchmarks/README.md, Inference)")
WEIGHTS_HELP = "a shipped weight instead of a checkpoint, e.g. fashion-mnist:lenet5_modern (classicnets weights)"


def source_and_rest(args: argparse.Namespace, rest: list[str], need: str) -> tuple[str, list[str]]:
    """``--weights NAME`` or the first positional names the trained net; the other positionals follow."""
    if args.weights:
        return args.weights, rest
    if not rest:
        raise UserError(f"name a checkpoint (runs/NAME/best.pt) or --weights NAME, then {need}")
    return rest[0], rest[1:]


def register(sub: argparse._SubParsersAction) -> None:
    source = "a checkpoint (runs/NAME/best.pt) or a shipped weight's name (fashion-mnist:lenet5_modern)"
    p = sub.add_parser("eval", help="top-1/top-5/per-class accuracy and a confusion matrix for a checkpoint")
    p.add_argument("checkpoint", nargs="?", default=None, help=source)
    p.add_argument("--weights", default=None, metavar="NAME", help=WEIGHTS_HELP)
    p.add_argument("--data", default=None, help="dataset or folder:PATH (default: the one it was trained on)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for the confusion matrix PNG (default: the checkpoint's)")
    p.add_argument("--engine", default="torch", choices=ENGINES, help=ENGINE_HELP)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes with probabilities for image files")
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT IMAGE", help=f"{source}, then image files "
                   "(with --weights: image files only)")  # fmt: skip
    p.add_argument("--weights", default=None, metavar="NAME", help=WEIGHTS_HELP)
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", default="torch", choices=ENGINES, help=ENGINE_HELP)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("weights", help="the weights that ship with classicnets: dataset, test accuracy, recipe")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*:resnet*'")
    p.set_defaults(handler=cmd_weights)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data.errors import printable
    from ..inference import evaluate_checkpoint

    source, extra = source_and_rest(args, [args.checkpoint] if args.checkpoint else [], "the options")
    if extra:
        raise UserError(f"eval takes one trained net; got {args.checkpoint!r} and --weights {args.weights!r}")
    m = evaluate_checkpoint(source, data=args.data, split=args.split, data_dir=args.data_dir,
                            device=args.device, out_dir=args.out, engine=args.engine)  # fmt: skip
    print(f"{args.split}: {m['n']:,} images  top-1 {m['acc']:.2%}  top-5 {m['top5']:.2%}  loss {m['loss']:.4f}")
    names = [printable(c) for c in m["classes"]]  # class names are folder names: anything but safe
    width = max(len(c) for c in names)
    for name, acc in zip(names, m["per_class_acc"]):
        print(f"  {name:<{width}}  {acc:.2%}")
    if m.get("confusion_png_error"):  # the accuracies above are complete; the PNG asked for is missing
        print(f"classicnets eval: error: {m['confusion_png_error']} (the accuracies above are complete)",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"confusion matrix: {m['confusion_png']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data.errors import printable
    from ..inference import predict

    source, images = source_and_rest(args, args.inputs, "image files")
    if not images:
        raise UserError("predict needs image files after the checkpoint, e.g. classicnets predict runs/NAME/best.pt "
                        "shirt.png")  # fmt: skip
    for item in predict(source, images, topk=args.topk, device=args.device, engine=args.engine):
        tops = ", ".join(f"{printable(name)} {p:.1%}" for name, p in item["top"])
        print(f"{printable(item['image'])}: {tops}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from ..weights import get_weight, list_weights

    names = list_weights(args.pattern)
    if not names:
        raise ValueError(f"no shipped weight matches {args.pattern!r}; try `classicnets weights` for all of them")
    header = f"{'weight':<28} {'test acc (shipped)':>18} {'mean +- std, 3 seeds':>21} {'MB':>5}  recipe"
    print(header)
    print("-" * len(header))
    for name in names:
        w = get_weight(name)
        print(f"{name:<28} {w.test_acc:>18.2%} {f'{w.test_acc_mean:.2%} +- {w.test_acc_std:.2%}':>21} "
              f"{w.path.stat().st_size / 1e6:>5.2f}  {w.recipe}")
    print("\nUse a name wherever a checkpoint goes (predict, eval, export, show, finetune --weights) or "
          "create_model(model, pretrained=dataset). Test accuracy in fp32 on the dataset's test set.")
    return 0
