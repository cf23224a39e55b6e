"""Seconds per training epoch of several nets, measured side by side in one process (alternating rounds).

    python benchmarks/epoch_cost.py --threads 1 --models resnet20,speedrun_resnet
    python benchmarks/epoch_cost.py --threads 2 --models resnet20,speedrun_resnet --batch 128

Each net trains on random 28x28 one-channel batches (32x32 for LeNet-5, as its loader pads them) with the
library's ``train_step`` (bf16 autocast where the CPU has it, channels_last, Nesterov SGD, label smoothing);
the first round warms up, the median of the other rounds is reported as seconds per 60,000-image epoch
(training only: no data loading, no evaluation). On a shared machine the absolute figures move with the load,
but the ratios between nets measured in the same rounds hold: that is what converts a time to accuracy
measured for one net into an estimate for another.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20,speedrun_resnet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="rounds after the warm-up round")
    p.add_argument("--steps", type=int, default=6, help="training steps per net per round")
    args = p.parse_args()
    import torch
    from torch import nn

    from classicnets import create_model
    from classicnets.train.runtime import amp_dtype
    from classicnets.train.step import train_step

    torch.set_num_threads(args.threads)
    dtype = amp_dtype("auto", torch.device("cpu"))
    nets = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
        size = 32 if name.startswith("lenet") else 28
        x = torch.randn(args.batch, 1, size, size).to(memory_format=torch.channels_last)
        nets[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True), x,
                      torch.randint(0, 10, (args.batch,)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    per_step: dict[str, list[float]] = {name: [] for name in nets}
    for rnd in range(args.rounds + 1):
        for name, (model, opt, x, y) in nets.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, opt, x, y, loss_fn=loss_fn, amp=dtype)
            if rnd:  # round 0 warms up
                per_step[name].append((time.perf_counter() - t0) / args.steps)
    print(f"# threads {args.threads}, batch {args.batch}, autocast {dtype}; median of {args.rounds} rounds")
    first = None
    for name, times in per_step.items():
        epoch_s = statistics.median(times) * 60_000 / args.batch
        first = first or epoch_s
        print(f"{name:<20} {epoch_s:7.1f} s per 60k-image epoch (training only)  {epoch_s / first:.2f}x the first")


if __name__ == "__main__":
    main()
