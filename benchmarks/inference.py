"""Inference speed of classicnets' own eval/predict path vs the same model in ONNX Runtime, side by side.

    python benchmarks/inference.py                  # lenet5_modern, resnet20, resnet18 (CIFAR stem), ~3 min
    python benchmarks/inference.py --quick          # fewer repeats, under a minute
    python benchmarks/inference.py --threads 1 --json benchmarks/results/inference_1thread.json
    python benchmarks/inference.py --compile        # also torch.compile (slow to compile on 2 cores)

For each model, in one process:

* ``classicnets``: what ``classicnets eval`` and ``predict`` run (``classicnets.train.step.predict_logits``):
  the model in eval mode and channels_last (``classicnets.inference.for_inference``), under
  ``torch.no_grad`` and the autocast ``amp="auto"`` picks (bf16 where
  the CPU multiplies bf16 natively: AVX512-BF16 or AMX; fp32 on an AVX2-only CPU), no test-time flip;
* ``onnxruntime``: the same weights exported by ``classicnets.export.export`` (the dynamo exporter, fp32)
  and run by ONNX Runtime's CPU execution provider with ``intra_op_num_threads`` = ``--threads``;
* inference-mode tricks, as variants: fp32 (no autocast), NCHW (the layout eval used before it adopted
  channels_last), the input also converted to channels_last, ``torch.inference_mode``,
  batch-norm folded into the convolutions (``torch.jit.freeze`` of a trace, fp32: frozen graphs do not
  autocast), and with
  ``--compile`` ``torch.compile``.

Throughput: images/s at batch 256 (one call per variant per repeat, median over repeats). Latency: one image
per call, ``--calls`` timed calls per variant per round, variants alternating every round (the order rotates)
so load from other processes hits all of them alike; median and p90 over all calls after a warm-up.
The logits of every variant are checked against fp32 PyTorch on the same input: within the export check's
tolerance (1e-4 + 1e-4 * max|logit|) in fp32, and within depth * 2^-8 * max|logit| under bf16 autocast
(each layer rounds its inputs and weights to bf16's 8-bit significand, relative error <= 2^-9 each).

The models are freshly initialised (speed does not depend on the weights): lenet5_modern 1x32x32 and resnet20
3x32x32 (their zoo defaults), and resnet18 with ``stem="cifar"`` at 3x32x32, 10 classes (the zoo's default,
ImageNet's 224x224 stem, is ~50x the work per image and too slow for batch 256 on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as C  # noqa: E402

MODELS: dict[str, tuple[dict[str, Any], tuple[int, int, int], int]] = {
    # name: (create_model kwargs, input (C, H, W), depth in weight layers, for the bf16 tolerance)
    "lenet5_modern": ({}, (1, 32, 32), 5),
    "resnet20": ({}, (3, 32, 32), 20),
    "resnet18": ({"stem": "cifar", "num_classes": 10}, (3, 32, 32), 18),
}
LIB, ORT = "classicnets", "onnxruntime"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, from " + ", ".join(MODELS))
    p.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: all cores)")
    p.add_argument("--batch", type=int, default=256, help="batch size of the throughput measurement")
    p.add_argument("--repeats", type=int, default=None, help="throughput repeats (default 5, --quick 3)")
    p.add_argument("--rounds", type=int, default=None, help="latency rounds (default 10, --quick 4)")
    p.add_argument("--calls", type=int, default=20, help="timed batch-1 calls per variant per round")
    p.add_argument("--quick", action="store_true", help="classicnets and onnxruntime only, fewer repeats; < 1 min")
    p.add_argument("--no-tricks", action="store_true", help="only classicnets and onnxruntime")
    p.add_argument("--compile", action="store_true", help="add torch.compile variants (minutes to compile)")
    p.add_argument("--json", default=None, help="write the results here (default benchmarks/results/inference.json)")
    args = p.parse_args(argv)
    args.no_tricks = args.no_tricks or args.quick
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.rounds = args.rounds or (4 if args.quick else 10)
    return args


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------ variants
def torch_variant(model: Any, amp: Any, channels_last: bool = False, inference_mode: bool = False) -> Callable:
    """The library's predict_logits on ``model``, optionally with the input in channels_last."""
    import torch

    from classicnets.train.step import predict_logits

    grad_off = torch.inference_mode if inference_mode else torch.no_grad

    def run(x: Any) -> Any:
        with grad_off():
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return predict_logits(model, x, amp)

    return run


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_variant(session: Any) -> Callable:
    import torch

    def run(x: Any) -> Any:
        return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])

    return run


def jit_frozen(model: Any, example: Any) -> Any:
    """A traced, frozen copy: ``torch.jit.freeze`` folds every Conv-BN pair into one convolution."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit is deprecated; and the input checks become constants in the trace
        return torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())


def build_variants(args: argparse.Namespace, model: Any, onnx_path: Path, threads: int, example: Any) -> dict:
    """name -> (callable, amp dtype or None). ``model`` is the freshly built NCHW model."""
    import copy

    import torch

    from classicnets.inference import for_inference
    from classicnets.train.runtime import amp_dtype

    amp = amp_dtype("auto", torch.device("cpu"))
    lib = for_inference(copy.deepcopy(model))  # the layout eval/predict run in (channels_last)
    out: dict[str, tuple[Callable, Any]] = {
        LIB: (torch_variant(lib, amp), amp),
        ORT: (ort_variant(ort_session(onnx_path, threads)), None),
    }
    if args.no_tricks:
        return out
    if amp is not None:
        out["torch fp32"] = (torch_variant(lib, None), None)
    out["NCHW (before)"] = (torch_variant(model, amp), amp)
    out["+ channels_last in"] = (torch_variant(lib, amp, channels_last=True), amp)
    out["+ inference_mode"] = (torch_variant(lib, amp, inference_mode=True), amp)
    try:
        out["BN folded fp32"] = (torch_variant(jit_frozen(model, example), None), None)
    except Exception as exc:  # noqa: BLE001 - a trick that does not apply is reported, not fatal
        say(f"  BN folded (jit.freeze): not available ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    if args.compile:
        compiled = torch.compile(model, dynamic=False)
        out["torch.compile"] = (torch_variant(compiled, amp), amp)
    return out


# ----------------------------------------------------------------------------------------------- measuring
def check_outputs(variants: dict, model: Any, x: Any, depth: int) -> dict[str, dict[str, float]]:
    """Max abs diff of each variant's logits against fp32 PyTorch, and the tolerance from the arithmetic."""
    import torch

    with torch.no_grad():
        ref = model(x).double()
    scale = float(ref.abs().max())
    out = {}
    for name, (fn, amp) in variants.items():
        got = fn(x).double()
        diff = float((got - ref).abs().max())
        tol = (1e-4 + 1e-4 * scale) if amp is None else depth * 2.0**-8 * scale
        agree = float((got.argmax(1) == ref.argmax(1)).double().mean())
        out[name] = {"max_abs_diff": diff, "max_abs_logit": scale, "tolerance": tol, "top1_agreement": agree,
                     "ok": bool(diff <= tol)}  # fmt: skip
        say(f"  outputs  {name:<18} max|diff| {diff:.2e}  (tolerance {tol:.1e}, max|logit| {scale:.2f}, "
            f"{'bf16' if amp is not None else 'fp32'})  top-1 agree {agree:.1%}  {'ok' if diff <= tol else 'FAIL'}")
    return out


def throughput(variants: dict, x: Any, repeats: int) -> dict[str, dict[str, float]]:
    names = list(variants)
    for name in names:  # warm-up: one-time allocations, oneDNN primitive creation, ORT arena
        variants[name][0](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            variants[name][0](x)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        med = statistics.median(times[name])
        out[name] = {"images_per_s": x.shape[0] / med, "median_s": med, "repeats": repeats}
        say(f"  batch {x.shape[0]:<4} {name:<18} {x.shape[0] / med:>9,.0f} images/s  (median of {repeats})")
    return out


def latency(variants: dict, x: Any, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    names = list(variants)
    for name in names:
        for _ in range(max(5, calls // 2)):
            variants[name][0](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = variants[name][0]
            for _ in range(calls):
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        t = sorted(times[name])
        med, p90 = statistics.median(t), t[int(0.9 * (len(t) - 1))]
        out[name] = {"median_ms": med * 1e3, "p90_ms": p90 * 1e3, "calls": len(t)}
        say(f"  batch 1   {name:<18} median {med * 1e3:7.3f} ms  p90 {p90 * 1e3:7.3f} ms  ({len(t)} calls)")
    return out


def run_model(args: argparse.Namespace, name: str, threads: int, tmp: Path) -> dict[str, Any]:
    import torch

    from classicnets import create_model
    from classicnets.export import export

    kwargs, size, depth = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    onnx_path = export(model, tmp / f"{name}.onnx", "onnx", input_size=size)
    g = torch.Generator().manual_seed(1)
    big = torch.randn(args.batch, *size, generator=g)
    one = big[:1].clone()
    say(f"\n{name} {kwargs or ''} input {'x'.join(map(str, size))}, {sum(p.numel() for p in model.parameters()):,} "
        "parameters")  # fmt: skip
    variants = build_variants(args, model, onnx_path, threads, big[:2].clone())
    result = {"kwargs": kwargs, "input": list(size), "outputs": check_outputs(variants, model, big[:64], depth)}
    result["throughput"] = throughput(variants, big, args.repeats)
    result["latency"] = latency(variants, one, args.rounds, args.calls)
    lib, ort_ = result["throughput"], result["latency"]
    result["ratio"] = {  # classicnets / ORT: > 1 means classicnets is faster
        "throughput": lib[LIB]["images_per_s"] / lib[ORT]["images_per_s"],
        "latency": ort_[ORT]["median_ms"] / ort_[LIB]["median_ms"],
    }
    say(f"  classicnets vs onnxruntime: throughput x{result['ratio']['throughput']:.2f}, "
        f"batch-1 speed x{result['ratio']['latency']:.2f} (> 1: classicnets faster)")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    threads = C.set_threads(args.threads)
    import onnxruntime
    import torch

    from classicnets.train.runtime import amp_dtype

    amp = amp_dtype("auto", torch.device("cpu"))
    head = {
        "cpu": C.cpu_model(), "cpu_class": C.cpu_class(), "cores": os.cpu_count(), "threads": threads,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "autocast": str(amp),
        "load_before": C.load(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "batch": args.batch, "repeats": args.repeats, "rounds": args.rounds, "calls": args.calls,
    }  # fmt: skip
    say(f"{head['cpu']} ({head['cpu_class']}), {head['cores']} cores, {threads} threads; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; classicnets autocast: {amp or 'off (fp32)'}; "
        f"load {head['load_before']}")
    results: dict[str, Any] = {"machine": head, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results["models"][name] = run_model(args, name, threads, Path(tmp))
    results["machine"]["load_after"] = C.load()
    out = Path(args.json) if args.json else Path(__file__).parent / "results" / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    say(f"\nload after: {results['machine']['load_after']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
