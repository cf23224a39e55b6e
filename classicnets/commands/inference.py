"""``classicnets eval`` and ``classicnets predict``: use a trained checkpoint."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5/per-class accuracy and a confusion matrix for a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, help="dataset or folder:PATH (default: the one it was trained on)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for the confusion matrix PNG (default: the checkpoint's)")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes with probabilities for image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=cmd_predict)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..inference import evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, data=args.data, split=args.split, data_dir=args.data_dir,
                            device=args.device, out_dir=args.out)  # fmt: skip
    print(f"{args.split}: {m['n']:,} images  top-1 {m['acc']:.2%}  top-5 {m['top5']:.2%}  loss {m['loss']:.4f}")
    width = max(len(c) for c in m["classes"])
    for name, acc in zip(m["classes"], m["per_class_acc"]):
        print(f"  {name:<{width}}  {acc:.2%}")
    print(f"confusion matrix: {m['confusion_png']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import predict

    for item in predict(args.checkpoint, args.images, topk=args.topk, device=args.device):
        tops = ", ".join(f"{name} {p:.1%}" for name, p in item["top"])
        print(f"{item['image']}: {tops}")
    return 0
