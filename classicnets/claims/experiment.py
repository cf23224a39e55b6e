"""What every training claim shares: the context it runs in, what it returns, and a controlled experiment.

A controlled experiment trains *variants* (twins that differ in one thing) with one :class:`Recipe`: for each
seed every variant is built right after ``torch.manual_seed(seed)`` and reads the same batches in the same
order (the loader's draws depend only on the seed and the epoch), so a difference in the results is the
difference between the variants. The trainer is the degradation study's (``studies.degradation.train_one``),
which also records digests of the initial weights and of every batch.

The budget buys a training-set size and a number of epochs, from the throughput of each variant measured on
this machine a few steps before the run (:func:`plan_budget`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
import torch.nn.functional as F

from ..data import InMemoryLoader
from ..data.arrays import ArrayDataset, Splits, seeded_generator
from ..studies.degradation import Bench, train_one
from ..studies.recipe import Recipe
from ..train.runtime import amp_dtype
from ..train.step import train_step
from .registry import Claim

Builder = Callable[[], nn.Module]


@dataclass
class Context:
    """Where and how a claim runs."""

    claim: Claim
    budget_s: float
    seeds: tuple[int, ...]
    data: str = "fashion-mnist"
    data_dir: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int | None = None
    out: Path = Path(".")
    say: Callable[[str], None] = print
    _splits: dict[str, Splits] = field(default_factory=dict)
    pin: dict[str, int] = field(default_factory=dict)  # --subset / --epochs / --steps: the plan, fixed by hand

    def splits(self, size: int | None = None) -> Splits:
        """The dataset (cached), zero-padded to ``size`` x ``size`` if smaller (LeNet-5's 32x32 for 28x28)."""
        from ..studies.setup import get_data

        key = f"{self.data}@{size}"
        if key not in self._splits:
            base = self._splits.setdefault(f"{self.data}@None", get_data(self.data, self.data_dir))
            self._splits[key] = base if size is None else pad_splits(base, size)
        return self._splits[key]


@dataclass
class Outcome:
    """What a claim's experiment found; the runner writes it as report.md, verdict.json and the raw files."""

    verdict: str
    reading: list[str]  # sentences computed from the numbers; the first is the headline
    numbers: dict[str, Any]  # the key numbers (also in verdict.json)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (title, markdown table)
    rows: list[dict[str, Any]] = field(default_factory=list)  # raw rows -> results.csv
    raw: dict[str, Any] = field(default_factory=dict)  # more raw numbers -> results.json
    figures: list[Path] = field(default_factory=list)
    settle: str | None = None  # for "does not hold at this budget": what would settle it
    plan: dict[str, Any] | None = None  # what the budget bought


def pad_splits(splits: Splits, size: int) -> Splits:
    """Zero-pad every image to ``size`` x ``size`` (centred), as LeCun et al. padded 28x28 MNIST to 32x32."""
    from dataclasses import replace

    def pad(ds: ArrayDataset) -> ArrayDataset:
        h, w = ds.images.shape[-2:]
        if h >= size and w >= size:
            return ds
        top, left = (size - h) // 2, (size - w) // 2
        images = F.pad(ds.images, (left, size - w - left, top, size - h - top))
        return ArrayDataset(images, ds.labels)

    return replace(splits, train=pad(splits.train), test=pad(splits.test))


@dataclass
class Plan:
    """What the budget buys: ``subset`` training images for ``epochs`` epochs, per variant and seed."""

    budget_s: float
    images_per_s: dict[str, float]  # measured training throughput of each variant
    subset: int
    epochs: int
    test_size: int
    batch_size: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": {k: round(v, 1) for k, v in self.images_per_s.items()}}

    def text(self) -> str:
        speeds = ", ".join(f"{k} {v:,.0f}" for k, v in self.images_per_s.items())
        return (f"{self.subset:,} training images x {self.epochs} epochs per variant and seed, batch "
                f"{self.batch_size}, test error on {self.test_size:,} test images (measured img/s: {speeds})")  # fmt: skip


def measure_speed(variants: dict[str, Builder], splits: Splits, ctx: Context, batch: int, amp: torch.dtype | None) -> dict[str, float]:  # fmt: skip
    """Training images/s of each variant on this machine: one warm-up step, then timed steps (>= 0.3 s)."""
    n = min(batch, len(splits.train))
    loader = InMemoryLoader(splits.train.subset(list(range(n))), n, shuffle=False, device=ctx.device,
                            mean=splits.mean, std=splits.std, channels_last=True)  # fmt: skip
    x, y = next(iter(loader))
    speeds = {}
    for name, build in variants.items():
        torch.manual_seed(0)
        model = build().to(ctx.device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        train_step(model, opt, x, y, loss_fn=F.cross_entropy, amp=amp)
        steps, t0 = 0, time.perf_counter()
        while steps < 2 or (time.perf_counter() - t0 < 0.3 and steps < 20):
            train_step(model, opt, x, y, loss_fn=F.cross_entropy, amp=amp)
            steps += 1
        speeds[name] = steps * n / (time.perf_counter() - t0)
    return speeds


def plan_budget(budget_s: float, speeds: dict[str, float], n_seeds: int, train_size: int, *, batch_size: int = 128,
                min_epochs: int = 4, max_epochs: int = 60, share: float = 0.85) -> Plan:  # fmt: skip
    """Size the run: ``share`` of the budget goes to training + evaluation of every (variant, seed); an epoch
    costs its training images plus the evaluations (~1/3 of a training image each). Whole training set if
    the budget gives at least ``min_epochs`` over it, else a smaller seeded subset for ``min_epochs``."""
    seconds_per_image = sum(1.0 / s for s in speeds.values()) * n_seeds  # one image through every run
    images = share * budget_s / seconds_per_image  # per run: training + evaluation images
    test_size = 2000 if images >= 20_000 else 500 if images >= 5_000 else 200
    eval_cost = 2 * test_size / 3  # the end-of-epoch test and training-error evaluations
    if images >= min_epochs * (train_size + eval_cost):
        subset, epochs = train_size, min(max_epochs, int(images // (train_size + eval_cost)))
    else:
        epochs = min_epochs
        subset = int(images / epochs - eval_cost)
        if subset < 2 * batch_size:
            subset = min(train_size, 2 * batch_size)
            epochs = max(1, min(min_epochs, int(images // (subset + eval_cost))))
    return Plan(budget_s, speeds, min(subset, train_size), epochs, test_size, batch_size)


@dataclass
class Trial:
    """The result of one controlled experiment: per-epoch rows and per-(variant, seed) runs."""

    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    plan: Plan
    num_classes: int = 10

    def final(self, variant: str, key: str = "test_err") -> list[float]:
        """``key`` at the end, one value per seed (seed order)."""
        return [r[key] for r in self.runs if r["net"] == variant]


def controlled(variants: dict[str, Builder], splits: Splits, ctx: Context, recipe: Recipe, *, min_epochs: int = 4,
               max_epochs: int = 60) -> Trial:  # fmt: skip
    """Train every variant on every seed of ``ctx`` with one recipe sized to ``ctx.budget_s``."""
    from ..studies.degradation import _datasets

    dtype = amp_dtype(recipe.amp, ctx.device)
    speeds = measure_speed(variants, splits, ctx, recipe.batch_size, dtype)
    plan = plan_budget(ctx.budget_s, speeds, len(ctx.seeds), len(splits.train), batch_size=recipe.batch_size,
                       min_epochs=min_epochs, max_epochs=max_epochs)  # fmt: skip
    if "subset" in ctx.pin or "epochs" in ctx.pin:  # a report's exact plan, replayed
        plan.subset = min(ctx.pin.get("subset", plan.subset), len(splits.train))
        plan.epochs = ctx.pin.get("epochs", plan.epochs)
        plan.test_size = 2000 if plan.subset * plan.epochs >= 20_000 else 500 if plan.subset * plan.epochs >= 5_000 else 200
    recipe.subset, recipe.epochs, recipe.test_size = plan.subset, plan.epochs, plan.test_size
    recipe.train_eval_size, recipe.seeds = plan.test_size, tuple(ctx.seeds)
    recipe.check()
    ctx.say(f"{ctx.claim.name}: {plan.text()}")
    train_set, test_set, train_eval = _datasets(splits, recipe)
    common = dict(device=ctx.device, mean=splits.mean, std=splits.std, channels_last=True)
    evals = {"train": InMemoryLoader(train_eval, 500, shuffle=False, **common),
             "test": InMemoryLoader(test_set, 500, shuffle=False, **common)}  # fmt: skip
    rows, runs = [], []
    for seed in ctx.seeds:
        loader = InMemoryLoader(train_set, recipe.batch_size, shuffle=True, seed=seed, **common)
        bench = Bench(splits.num_classes, splits.shape[0], loader, evals, recipe, dtype, ctx.say)
        for name, build in variants.items():
            net_rows, run = train_one(name, bench, seed, build=build)
            rows += [{**r, "seed": seed} for r in net_rows]
            runs.append({**run, "seed": seed})
    return Trial(rows, runs, plan, splits.num_classes)


def subset_of(splits: Splits, n: int, seed: int) -> ArrayDataset:
    """A seeded draw of ``n`` training images (all of them if ``n`` >= the set)."""
    train = splits.train
    if n >= len(train):
        return train
    pick = torch.randperm(len(train), generator=seeded_generator(seed, "subset"))[:n]
    return train.subset(pick.sort().values)
