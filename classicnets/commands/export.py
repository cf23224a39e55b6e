"""``classicnets export``: a checkpoint (or shipped weights) to ONNX, TorchScript, safetensors or the hf folder
layout, then checked against PyTorch."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "torchscript", "safetensors", "hf")  # classicnets.export.FORMATS (kept torch-free for --help)


def _size(text: str) -> tuple[int, ...]:
    from ..export import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_export(args: argparse.Namespace) -> int:
    """``classicnets export``: export a checkpoint, then check the file against PyTorch unless --no-verify."""
    import torch

    from ..export import (
        ExportVerificationError,
        example_inputs,
        export_checkpoint_model,
        model_from_safetensors,
        read_inputs,
        read_metadata,
        verify_onnx,
        verify_torchscript,
    )  # fmt: skip

    if args.verify_batch < 1:
        raise ValueError(f"--verify-batch must be at least 1, got {args.verify_batch}")
    if bool(args.checkpoint) == bool(args.weights):
        raise ValueError("name one trained net: a checkpoint (runs/NAME/best.pt) or --weights NAME")
    args.checkpoint = args.checkpoint or args.weights
    out, model = export_checkpoint_model(args.checkpoint, args.format, args.out, args.input_size, args.opset,
                                        force=args.force)
    size_mb = sum(f.stat().st_size for f in (out.iterdir() if out.is_dir() else [out])) / 2**20
    print(f"exported {args.checkpoint} -> {out} ({args.format}, {size_mb:.1f} MB)")
    if args.no_verify:
        return 0
    size = tuple(read_metadata(out)["input_size"])
    if args.inputs:
        x, what = read_inputs(args.inputs, size), f"inputs from {args.inputs}"
    else:
        x, what = example_inputs(model, size, batch=args.verify_batch).cpu(), f"{args.verify_batch} random inputs"
    if args.format == "onnx":
        r, runtime = verify_onnx(model, out, x), "onnxruntime"
    elif args.format == "torchscript":
        r, runtime = verify_torchscript(model, out, x), "TorchScript"
    else:  # safetensors, hf: the weights reload bit for bit
        reloaded, _ = model_from_safetensors(out)
        mismatched = [k for k, v in model.state_dict().items() if not torch.equal(v, reloaded.state_dict()[k])]
        if mismatched:
            raise ExportVerificationError(f"{out}: tensors differ after reloading: {', '.join(mismatched[:5])}")
        print(f"verified: {out} reloads into {model.model_name} with every tensor bit-identical")
        return 0
    print(
        f"verified with {runtime} on {what}: max abs diff {r['max_abs_diff']:.3g} "
        f"(tolerance {r['tolerance']:.3g}), top-1 agreement {r['top1_agreement']:.1%}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``classicnets export CHECKPOINT --format onnx|torchscript|safetensors [--out PATH] [--no-verify]``."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint or shipped weights to ONNX, TorchScript, safetensors or the hf folder layout",
        description="Export a classicnets checkpoint. ONNX and TorchScript files are run on random (or "
        "given) inputs and compared with PyTorch; safetensors files are reloaded and compared bit for bit.",
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="a checkpoint written by classicnets train, or a "
                   "shipped weight's name (fashion-mnist:resnet20; see classicnets weights)")
    p.add_argument("--weights", default=None, metavar="NAME", help="a shipped weight instead of a checkpoint")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="default: onnx")
    p.add_argument("--out", default=None, metavar="PATH", help="default: next to the checkpoint, e.g. best.onnx")
    p.add_argument("--force", action="store_true", help="replace --out if it already exists (atomically)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument(
        "--inputs", default=None, metavar="FILE", help="images to verify on: .npy array or .pt tensor (B, C, H, W)"
    )
    p.add_argument("--verify-batch", type=int, default=8, metavar="N", help="random images to verify on (default 8)")
    p.add_argument("--input-size", type=_size, default=None, metavar="CxHxW",
                   help="export size (default: the size the model was trained at)")  # fmt: skip
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(handler=cmd_export)
