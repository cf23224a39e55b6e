"""Training throughput (images/s) of classicnets vs the standard PyTorch recipe, side by side.

    python benchmarks/throughput.py                 # all models, a few minutes on 2 cores
    python benchmarks/throughput.py --quick         # lenet5_modern + resnet20, short repeats: < 5 min on any CPU
    python benchmarks/throughput.py --models resnet20,resnet56 --repeats 7
    python benchmarks/throughput.py --ablation      # add the intermediate variants (one technique at a time)
    python benchmarks/throughput.py --device cuda --compile

Both paths train the same architecture (torchvision's where one exists) on the same uint8 images with the
same augmentation (pad + random crop + horizontal flip):

* ``standard``: torchvision-style per-sample transforms through a DataLoader, fp32, NCHW, plain loop;
* ``classicnets``: the library's InMemoryLoader (whole dataset on the device, batched augmentation),
  bf16 autocast (where the hardware multiplies bf16 natively), channels_last, and the engine's step.

The first line names the CPU class (AVX2 / AVX512 / AVX512-BF16 / AMX, or the GPU; see
``classicnets.train.runtime.cpu_class``): it decides ``amp: auto``. Each repeat times every variant in turn
(baseline first, then the others) for a time box of ``--seconds`` (whole steps; ``--steps N`` for a fixed
count instead), so load from other processes hits all of them alike and a slow CPU runs fewer steps rather
than longer; each repeat is printed as it is measured, and the figures are medians over the repeats.
``ratio`` is the ratio of the medians; ``paired`` the median of the per-repeat ratios (each variant against
the baseline measured seconds before it), the steadier of the two on a machine shared with other jobs. Achieved
GFLOP/s counts the forward MACs from ``classicnets.summary`` x2 (multiply-add) x3 (forward +
backward); the peaks are measured in the same run with an n^3 matmul, n = 4096 unless one product would
take over 0.3 s (bf16 without native bf16: ~1 minute at 4096). Peak memory is each variant's
VmHWM (peak resident set, /proc/self/status) in a fresh subprocess that runs a few of its steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as C  # noqa: E402


@dataclass
class Spec:
    input: tuple[int, int, int]  # what the model sees (C, H, W)
    batch: int
    data: str = "random"  # "fashion-mnist" (real, 28x28 padded to 32) or random uint8 images of `input`
    crop_padding: int = 4


SPECS: dict[str, Spec] = {
    "lenet5_modern": Spec((1, 32, 32), 256, data="fashion-mnist", crop_padding=2),
    "resnet20": Spec((3, 32, 32), 128),
    "resnet56": Spec((3, 32, 32), 128),
    "resnet18": Spec((3, 32, 32), 128),
    "alexnet": Spec((3, 224, 224), 16),
    "vgg16": Spec((3, 224, 224), 16),
}
QUICK = ("lenet5_modern", "resnet20")
SECONDS, QUICK_SECONDS = 4.0, 2.0  # per repeat per variant


@dataclass
class Variant:
    name: str
    loader: str  # "standard" or "memory"
    amp: bool
    channels_last: bool
    compile: bool = False
    batch: int | None = None  # None: the spec's batch
    fused: bool = False  # fused SGD (one kernel for all parameters)
    notes: list[str] = field(default_factory=list)


def variants(args: argparse.Namespace, model: str) -> list[Variant]:
    """The variants to time for ``model``. ``amp=True`` is classicnets' ``amp: auto``: bf16 autocast only on a
    CPU class that multiplies bf16 natively (classicnets.train.runtime.cpu_class), fp32 elsewhere; where it
    is fp32, the ablation has no separate bf16 row (it would time the same thing twice)."""
    import torch

    from classicnets.train.runtime import amp_dtype

    native_bf16 = amp_dtype("auto", torch.device(args.device)) is not None
    out = [Variant("standard", "standard", False, False)]
    if args.ablation:
        out += [
            Variant("memory loader, fp32 NCHW", "memory", False, False),
            Variant("+ channels_last", "memory", False, True),
        ]
        if native_bf16:
            out.append(Variant("+ bf16 (classicnets)", "memory", True, True))
        out.append(Variant("+ fused SGD", "memory", True, True, fused=True))
        if args.compile:
            out.append(Variant("+ torch.compile", "memory", True, True, compile=True))
            out.append(Variant("torch.compile, NCHW", "memory", True, False, compile=True))
        if args.batch2:
            out.append(Variant("classicnets, batch x2", "memory", True, True, batch=SPECS[model].batch * 2))
    else:
        out.append(Variant("classicnets", "memory", True, True, compile=args.compile and model != "lenet5_modern"))
    return out


# ---------------------------------------------------------------------------------------------- models
def build_model(name: str, path: str, num_classes: int, in_chans: int):
    """torchvision's architecture where one exists (standard path), the classicnets one otherwise."""
    from classicnets import create_model

    kwargs = {"stem": "cifar"} if name == "resnet18" else {}  # the usual CIFAR stem: 3x3/1 conv, no max-pool
    if path == "standard":
        return C.standard_model(name, num_classes, in_chans, **kwargs)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def forward_macs(name: str, spec: Spec) -> int:
    from classicnets import create_model
    from classicnets.summary import summary

    import torch

    kwargs = {"stem": "cifar"} if name == "resnet18" else {}
    with torch.device("meta"):
        m = create_model(name, num_classes=10, in_chans=spec.input[0], **kwargs)
    return summary(m, spec.input).total_macs


# ---------------------------------------------------------------------------------------------- data
def dataset(spec: Spec, n: int, seed: int = 0):
    """uint8 images (N, C, H, W), int64 labels, mean, std, pad_to."""
    import torch

    if spec.data == "fashion-mnist":
        from classicnets.data import load_dataset

        s = load_dataset("fashion-mnist", quiet=True)
        return s.train.images, s.train.labels, s.mean, s.std, spec.input[-1]
    g = torch.Generator().manual_seed(seed)
    c, h, w = spec.input
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels, (0.5,) * c, (0.25,) * c, None


class Endless:
    """Iterate a loader forever (a new epoch when one ends), as a training run does."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.epoch, self.it = loader, 0, None

    def next(self):
        while True:
            if self.it is None:
                if hasattr(self.loader, "set_epoch"):
                    self.loader.set_epoch(self.epoch)
                self.it, self.epoch = iter(self.loader), self.epoch + 1
            try:
                return next(self.it)
            except StopIteration:
                self.it = None


# ---------------------------------------------------------------------------------------------- runners
class Runner:
    """One variant: its model, optimizer, loader and step, ready to time."""

    def __init__(self, model_name: str, spec: Spec, v: Variant, data: tuple, device: str, workers: int) -> None:
        import torch
        from torch import nn

        from classicnets.data import ArrayDataset, InMemoryLoader
        from classicnets.train.runtime import amp_dtype

        images, labels, mean, std, pad_to = data
        self.device, self.v = torch.device(device), v
        self.batch = v.batch or spec.batch
        torch.manual_seed(0)
        model = build_model(model_name, v.loader, 10, spec.input[0]).to(self.device)
        if v.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.train_model = torch.compile(model) if v.compile else model
        kw = {"fused": True} if v.fused else {}
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)
        self.dtype = amp_dtype("auto", self.device) if v.amp else None
        self.params = sum(p.numel() for p in model.parameters())
        if v.loader == "standard":
            loader = C.standard_loader(images, labels, self.batch, pad_to=pad_to, crop_padding=spec.crop_padding,
                                       hflip=True, mean=mean, std=std, num_workers=workers)
            self.step = self._standard_step
        else:
            loader = InMemoryLoader(ArrayDataset(images, labels), self.batch, shuffle=True, device=self.device,
                                    mean=mean, std=std, pad_to=pad_to, crop_padding=spec.crop_padding,
                                    hflip=True, channels_last=v.channels_last)
            self.step = self._classicnets_step
            self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.0)
        self.data = Endless(loader)

    def _standard_step(self) -> int:
        """The plain loop from the PyTorch tutorials."""
        import torch.nn.functional as F

        x, y = self.data.next()
        x, y = x.to(self.device), y.to(self.device)
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.running = loss.item()
        return len(y)

    def _classicnets_step(self) -> int:
        """The body of classicnets.train.engine.fit's loop (lr set, autocast, loss check, step, metrics)."""
        from classicnets.train.step import set_lr, train_step

        x, y = self.data.next()
        set_lr(self.opt, 0.01)
        _, logits = train_step(self.model, self.opt, x, y, loss_fn=self.loss_fn, amp=self.dtype, forward=self.train_model)
        self.correct = (logits.argmax(1) == y).sum()
        return len(y)

    def time(self, steps: int | None, seconds: float) -> float:
        """Images per second, data loading included, over ``steps`` steps, or (``steps=None``) over whole
        steps until ``seconds`` have passed: a time box keeps a slow CPU's run as short as a fast one's."""
        C.sync(self.device)
        t0, n, done = time.perf_counter(), 0, 0
        while (done < steps) if steps else (done == 0 or time.perf_counter() - t0 < seconds):
            n += self.step()
            done += 1
            if not steps:
                C.sync(self.device)
        C.sync(self.device)
        return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- memory
def memory_child(argv: list[str]) -> None:
    """``--memory-child MODEL VARIANT_JSON``: build one variant, run a few steps, print the peak RSS."""
    import torch

    model_name, vjson, device, threads, workers = argv
    C.set_threads(int(threads))
    spec = SPECS[model_name]
    v = Variant(**json.loads(vjson))
    data = dataset(spec, spec.batch * 4)
    before = C.peak_rss_mb()
    r = Runner(model_name, spec, v, data, device, int(workers))
    for _ in range(3):
        r.step()
    extra = ""
    if torch.device(device).type == "cuda":
        extra = f" {torch.cuda.max_memory_allocated() / 2**20:.1f}"
    print(f"PEAK {before:.1f} {C.peak_rss_mb():.1f}{extra}")


def measure_memory(model_name: str, v: Variant, device: str, threads: int, workers: int) -> str:
    from dataclasses import asdict

    cmd = [sys.executable, __file__, "--memory-child", model_name, json.dumps(asdict(v)), device, str(threads),
           str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PEAK")), None)
    if line is None:
        return "?"
    vals = [float(t) for t in line.split()[1:]]
    text = f"{vals[1]:.0f} MiB (+{vals[1] - vals[0]:.0f} over data)"
    if len(vals) > 2:
        text += f", CUDA {vals[2]:.0f} MiB"
    return text


def measure_model(name: str, args: argparse.Namespace, threads: int, seconds: float, repeats: int,
                  peaks: tuple[float, float]) -> dict[str, Any]:
    """Time every variant of ``name``, alternating, ``repeats`` times; print each repeat as it is measured,
    then the model's table."""
    spec, steps = SPECS[name], args.steps
    macs = forward_macs(name, spec)
    data = dataset(spec, max(spec.batch * 8, 512) if spec.input[-1] <= 64 else spec.batch * 4)
    vs = variants(args, name)
    print(f"\n{name}: input {'x'.join(map(str, spec.input))}, {macs / 1e6:,.1f} MMACs/image forward, "
          f"{f'{steps} steps' if steps else f'{seconds:g} s'} x {repeats} repeats; load {C.load()}")
    print(f"  each repeat, img/s of: {' | '.join(v.name for v in vs)}")
    runners = [Runner(name, spec, v, data, args.device, args.workers) for v in vs]
    warm = 3 if not any(v.compile for v in vs) else 6
    for r in runners:
        for _ in range(warm):
            r.step()
    rates: list[list[float]] = [[] for _ in runners]
    for k in range(repeats):
        for i, r in enumerate(runners):
            rates[i].append(r.time(steps, seconds))
        print(f"  repeat {k + 1}/{repeats}: " + " | ".join(f"{rs[-1]:,.0f}" for rs in rates)
              + f" img/s; load {C.load()}")
    base = statistics.median(rates[0])
    print(f"  params standard {runners[0].params:,} / classicnets {runners[-1].params:,}")
    print(f"  {'variant':<28} {'batch':>5} {'img/s':>9} {'min-max':>15} {'ratio':>6} {'paired':>6} {'GFLOP/s':>8} "
          f"{'%bf16pk':>7} {'%fp32pk':>7}  peak memory")
    rows = []
    for v, r, rs in zip(vs, runners, rates):
        med = statistics.median(rs)
        paired = statistics.median(x / b for x, b in zip(rs, rates[0]))  # robust to load that varies
        gflops = med * macs * 6 / 1e9
        mem = "-" if args.no_memory or args.quick else measure_memory(name, v, args.device, threads, args.workers)
        row = {"variant": v.name, "batch": r.batch, "img_s": med, "min": min(rs), "max": max(rs),
               "ratio": med / base, "paired_ratio": paired, "gflops": gflops, "pct_bf16_peak": 100 * gflops / peaks[0],
               "pct_fp32_peak": 100 * gflops / peaks[1], "peak_rss": mem, "amp": str(r.dtype)}
        rows.append(row)
        print(f"  {v.name:<28} {r.batch:>5} {med:>9,.1f} {min(rs):>7,.0f}-{max(rs):<7,.0f} {med / base:>6.2f} "
              f"{paired:>6.2f} {gflops:>8.1f} {row['pct_bf16_peak']:>6.1f}% {row['pct_fp32_peak']:>6.1f}%  {mem}")
    return {"macs": macs, "steps": steps, "seconds": None if steps else seconds, "repeats": repeats, "rows": rows}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=None, help=f"comma-separated, from {','.join(SPECS)}")
    p.add_argument("--quick", action="store_true",
                   help=f"{' + '.join(QUICK)}, 5 repeats of {QUICK_SECONDS:g} s, no memory runs: about a minute")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5)")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"time box of one repeat of one variant, in whole steps (default {SECONDS:g}, quick "
                        f"{QUICK_SECONDS:g})")
    p.add_argument("--steps", type=int, default=None, help="a fixed number of steps per repeat instead of --seconds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers of the standard recipe (0 was fastest on 2 cores; see README)")
    p.add_argument("--allocator", choices=("jemalloc", "glibc"), default="jemalloc")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the classicnets variant (not LeNet); with --ablation, an extra variant")
    p.add_argument("--ablation", action="store_true", help="time each technique on its own")
    p.add_argument("--batch2", action="store_true", help="with --ablation: also classicnets at twice the batch")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    C.ensure_allocator(args.allocator)
    if args.memory_child:
        return memory_child(args.memory_child)

    sys.stdout.reconfigure(line_buffering=True)  # each line as soon as it is measured, even into a pipe
    import torch

    from classicnets.train.runtime import device_class

    print(f"# {device_class(args.device)}", flush=True)
    threads = C.set_threads(args.threads)
    names = args.models.split(",") if args.models else (list(QUICK) if args.quick else list(SPECS))
    for n in names:
        if n not in SPECS:
            sys.exit(f"unknown model {n!r}; choose from {', '.join(SPECS)}")
    repeats = args.repeats or 5
    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    print(f"# {C.machine_line(args.device)}; {threads} threads; load {C.load()}")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    peak_s = 1.0 if args.quick else 3.0
    peak_bf16, n_bf16 = C.matmul_peak(args.device, torch.bfloat16, seconds=peak_s)
    peak_fp32, n_fp32 = C.matmul_peak(args.device, torch.float32, seconds=peak_s)
    print(f"# matmul peak: bf16 {peak_bf16:,.0f} GFLOP/s ({n_bf16}^3), fp32 {peak_fp32:,.0f} GFLOP/s ({n_fp32}^3); "
          f"load {C.load()}")
    results = {"machine": C.machine_line(args.device), "threads": threads, "peak_bf16": peak_bf16,
               "peak_fp32": peak_fp32, "models": {}}
    for name in names:
        results["models"][name] = measure_model(name, args, threads, seconds, repeats, (peak_bf16, peak_fp32))
    # Under load a single peak measurement reads low: measure again at the end and keep the higher.
    end_bf16 = C.matmul_peak(args.device, torch.bfloat16, seconds=peak_s)[0]
    end_fp32 = C.matmul_peak(args.device, torch.float32, seconds=peak_s)[0]
    peak_bf16, peak_fp32 = max(peak_bf16, end_bf16), max(peak_fp32, end_fp32)
    results.update(peak_bf16=peak_bf16, peak_fp32=peak_fp32)
    print(f"\n# matmul peak again at the end: bf16 {end_bf16:,.0f}, fp32 {end_fp32:,.0f} GFLOP/s; using the higher "
          f"(bf16 {peak_bf16:,.0f}, fp32 {peak_fp32:,.0f}); load {C.load()}")
    print(f"\n{'model':<14} {'variant':<28} {'img/s':>9} {'ratio':>6} {'paired':>6} {'GFLOP/s':>8} {'%bf16pk':>7} {'%fp32pk':>7}  "
          "peak RSS")
    for name, m in results["models"].items():
        for row in m["rows"]:
            row["pct_bf16_peak"], row["pct_fp32_peak"] = 100 * row["gflops"] / peak_bf16, 100 * row["gflops"] / peak_fp32
            print(f"{name:<14} {row['variant']:<28} {row['img_s']:>9,.1f} {row['ratio']:>6.2f} {row['paired_ratio']:>6.2f} "
                  f"{row['gflops']:>8.1f} "
                  f"{row['pct_bf16_peak']:>6.1f}% {row['pct_fp32_peak']:>6.1f}%  {row['peak_rss']}")
    print(f"\n# done; load {C.load()}; peak RSS of this process {C.peak_rss_mb():,.0f} MiB (VmHWM)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
