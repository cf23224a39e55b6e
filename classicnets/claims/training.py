"""The LeNet-5, AlexNet and VGG training claims: each a controlled experiment with a verdict over seeds."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
import torch.nn.functional as F

from ..data import InMemoryLoader
from ..studies.recipe import Recipe
from ..train.runtime import amp_dtype
from ..train.step import train_step
from . import nets
from .experiment import Context, Outcome, Trial, controlled, measure_speed, subset_of
from .plots import plot_bars, plot_curves, plot_steps
from .registry import FALSE, HOLDS, NOT_AT_BUDGET, PARTLY
from . import verdict as V
from .verdict import paired, pct_sd


def _table(trial: Trial, variants: list[str], extra: dict[str, dict[str, Any]] | None = None) -> str:
    """One row per variant: final test and training error, mean ± sd over seeds, and any extra columns."""
    from ..studies.report import markdown_table

    rows = []
    for v in variants:
        row = {"variant": v, "test error (end)": pct_sd(trial.final(v)), "training error (end)":
               pct_sd(trial.final(v, "train_err")), "params": next(r["params"] for r in trial.runs if r["net"] == v)}  # fmt: skip
        rows.append({**row, **(extra or {}).get(v, {})})
    columns = list(rows[0])
    return markdown_table(rows, columns)


def _resolution(trial: Trial) -> float:
    return 1.0 / trial.plan.test_size  # one test image


def _learned(trial: Trial, variants: list[str]) -> bool:
    """Did every run learn anything (test error at least 5 points below chance)? Tiny budgets may not."""
    chance = 1 - 1 / trial.num_classes
    return all(e < chance - 0.05 for v in variants for e in trial.final(v))


def _settle(ctx: Context, factor: int = 4) -> str:
    from .registry import format_budget

    return (f"a budget of {format_budget(factor * ctx.budget_s)} or more "
            f"(`classicnets claims run {ctx.claim.name} --budget {format_budget(factor * ctx.budget_s)}`)")  # fmt: skip


# ------------------------------------------------------------------------------------------ LeNet-5
def activations(ctx: Context) -> Outcome:
    splits = ctx.splits(32)
    variants = {a: (lambda a=a: nets.lenet5_with(a, splits.num_classes, splits.shape[0])) for a in ("sigmoid", "tanh", "relu")}  # fmt: skip
    recipe = Recipe(lr=0.05, weight_decay=5e-4, warmup_epochs=0.0, schedule="cosine")
    trial = controlled(variants, splits, ctx, recipe)
    res = _resolution(trial)
    relu_vs_tanh = paired(trial.final("tanh"), trial.final("relu"), res)
    tanh_vs_sigmoid = paired(trial.final("sigmoid"), trial.final("tanh"), res)
    reading = [
        f"Test error at the end: sigmoid {pct_sd(trial.final('sigmoid'))}, tanh {pct_sd(trial.final('tanh'))}, "
        f"ReLU {pct_sd(trial.final('relu'))} (mean ± sd over {len(ctx.seeds)} seeds).",
        f"ReLU vs tanh: tanh's error minus ReLU's {relu_vs_tanh.text()}; tanh vs sigmoid: sigmoid's minus "
        f"tanh's {tanh_vs_sigmoid.text()}.",
    ]  # fmt: skip
    parts = {"ReLU beats tanh": relu_vs_tanh, "tanh beats sigmoid": tanh_vs_sigmoid}
    reading += [f"{k}: {p.state()} ({p.text()})." for k, p in parts.items()]
    verdict = V.order(parts, _learned(trial, ["relu", "tanh"]))
    settle = _settle(ctx) if verdict == NOT_AT_BUDGET else None
    fig = plot_curves(trial, list(variants), "test_err", ctx.out / "test_error.png",
                      "LeNet-5: the activation is the only difference")  # fmt: skip
    return Outcome(verdict, reading, _numbers(trial, list(variants)), [("Per variant", _table(trial, list(variants)))],
                   trial.rows, {"runs": trial.runs}, [fig], settle, trial.plan.as_dict())  # fmt: skip


def _numbers(trial: Trial, variants: list[str]) -> dict[str, Any]:
    return {v: {"test_err": trial.final(v), "train_err": trial.final(v, "train_err"),
                "params": next(r["params"] for r in trial.runs if r["net"] == v)} for v in variants}  # fmt: skip


# ------------------------------------------------------------------------------------------ AlexNet
def relu_speed(ctx: Context, target: float = 0.25, lrs: tuple[float, ...] = (0.005, 0.02, 0.08)) -> Outcome:
    """Krizhevsky et al.'s Figure 1: steps to ``target`` running training error, ReLU vs tanh, each with its
    best learning rate from ``lrs`` (the paper chose each net's rate to make it train fastest)."""
    splits = ctx.splits()
    in_chans, side = splits.shape[0], splits.shape[1]
    builds = {a: (lambda a=a: nets.convnet4(a, False, splits.num_classes, in_chans, side)) for a in ("tanh", "relu")}
    dtype = amp_dtype("auto", ctx.device)
    speeds = measure_speed(builds, splits, ctx, 128, dtype)
    runs = len(builds) * len(lrs) * len(ctx.seeds)
    max_steps = ctx.pin.get("steps") or max(10, int(0.8 * ctx.budget_s / runs * statistics.fmean(speeds.values()) / 128))
    ctx.say(f"relu-6x: up to {max_steps} steps of 128 per run, {runs} runs (lr grid {list(lrs)})")
    rows, found = [], {}  # (act, lr) -> steps per seed (None: not reached)
    for seed in ctx.seeds:
        loader = InMemoryLoader(subset_of(splits, len(splits.train), seed), 128, shuffle=True, seed=seed,
                                device=ctx.device, mean=splits.mean, std=splits.std, channels_last=True)  # fmt: skip
        for act, build in builds.items():
            for lr in lrs:
                reached, curve = _steps_to(build, loader, lr, seed, target, max_steps, dtype)
                rows += [{"act": act, "seed": seed, "lr": lr, "step": i + 1, "running_err": e} for i, e in enumerate(curve)]
                ctx.say(f"  {act} seed {seed} lr {lr}: {reached if reached else f'> {max_steps}'} steps")
                found.setdefault((act, lr), []).append(reached)
    best_lr = {a: min(lrs, key=lambda lr: _median_steps(found[(a, lr)])) for a in builds}  # one lr per net
    steps = {a: found[(a, best_lr[a])] for a in builds}
    return _relu_outcome(ctx, steps, rows, target, max_steps, speeds, lrs, best_lr)


def _median_steps(steps: list[int | None]) -> float:
    return statistics.median(math.inf if s is None else s for s in steps)


def _steps_to(build, loader: InMemoryLoader, lr: float, seed: int, target: float, max_steps: int,
              dtype: torch.dtype | None, window: int = 20) -> tuple[int | None, list[float]]:  # fmt: skip
    """Train until the running training error (mean over the last ``window`` batches) reaches ``target``; the
    step returned is the window's middle (the mean lags the net by half a window)."""
    torch.manual_seed(seed)
    model = build().to(loader.device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)  # "no regularization of any kind" (Fig. 1)
    errs, curve, step, epoch = [], [], 0, 0
    while step < max_steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            loss, logits = train_step(model, opt, x, y, loss_fn=F.cross_entropy, amp=dtype)
            if not math.isfinite(loss.item()):
                return None, curve  # diverged at this lr
            errs.append(float((logits.argmax(1) != y).float().mean()))
            step += 1
            curve.append(statistics.fmean(errs[-window:]))
            if len(errs) >= window and curve[-1] <= target:
                return step - window // 2, curve  # the window's mean describes its middle step
            if step >= max_steps:
                break
        epoch += 1
    return None, curve


def _relu_outcome(ctx: Context, steps: dict[str, list], rows: list, target: float, max_steps: int, speeds: dict,
                  lrs: tuple, best_lr: dict[str, float]) -> Outcome:  # fmt: skip
    tanh, relu = steps["tanh"], steps["relu"]
    reading = [f"Steps of 128 images to {target:.0%} running training error, each net at its best learning rate "
               f"over the seeds (ReLU {best_lr['relu']}, tanh {best_lr['tanh']}, from {list(lrs)}): ReLU {relu}, "
               f"tanh {tanh} (per seed; None: not within {max_steps} steps)."]  # fmt: skip
    edge = [a for a, lr in best_lr.items() if lr in (min(lrs), max(lrs))]
    if edge:
        reading.append(f"The best rate of {', '.join(edge)} is at the edge of the grid: a wider grid might be faster.")
    numbers: dict[str, Any] = {"steps_relu": relu, "steps_tanh": tanh, "target": target, "max_steps": max_steps,
                               "data": ctx.data, "best_lr": best_lr}  # fmt: skip
    settle = None
    if any(s is None for s in relu + tanh):
        missing = [a for a, s in steps.items() if any(v is None for v in s)]
        reading.append(f"Not every run of {', '.join(missing)} reached {target:.0%} within {max_steps} steps.")
        verdict, settle = NOT_AT_BUDGET, _settle(ctx)
        if all(s is not None for s in relu) and all(s is None for s in tanh):
            reading.append(f"ReLU reached it in every seed, tanh in none: the ratio is > {max_steps / max(relu):.1f}x.")
            numbers["ratio_lower_bound"] = max_steps / max(relu)
    else:
        ratios = [t / r for t, r in zip(tanh, relu)]
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
        numbers.update(ratios=ratios, ratio_geomean=geo)
        reading.append(f"tanh needs {geo:.2f}x the steps of ReLU (geometric mean; per seed "
                       f"{', '.join(f'{r:.2f}x' for r in ratios)}); the paper's Figure 1 shows about 6x.")  # fmt: skip
        if all(r > 1 for r in ratios) and 3 <= geo <= 12:
            verdict = HOLDS
        elif all(r > 1 for r in ratios):
            verdict = PARTLY
            reading.append(f"ReLU is faster in every seed, but by {geo:.1f}x, not about 6x.")
        elif all(r < 1 for r in ratios):
            verdict = FALSE
            reading.append("tanh is faster in every seed.")
        else:  # every run got there, the seeds disagree: more budget would not change that, harder data would
            verdict = NOT_AT_BUDGET
            settle = (f"a target both nets take longer to reach: on {ctx.data} they reach {target:.0%} within "
                      f"{max(relu + tanh)} steps, too early to tell them apart; the paper's CIFAR-10 "
                      f"(`classicnets claims run relu-6x --data cifar10`, downloaded on first use)"
                      if ctx.data != "cifar10" else _settle(ctx))  # fmt: skip
    if ctx.data != "cifar10":
        reading.append(f"Measured on {ctx.data}; the paper's figure is on CIFAR-10 (`--data cifar10`).")
    fig = plot_steps(rows, ctx.out / "running_error.png", target, "Four-layer conv net: ReLU vs tanh (best lr each)")
    return Outcome(verdict, reading, numbers, [], rows, {"speeds": speeds}, [fig], settle,
                   {"steps": max_steps, "batch_size": 128, "lr_grid": list(lrs), "images_per_s": speeds})  # fmt: skip


def lrn(ctx: Context) -> Outcome:
    """Two controlled pairs: the four-layer AlexNet-style net, sized to half the budget, and VGG config A on
    the same plan (same images, epochs and seeds)."""
    splits, padded = ctx.splits(), ctx.splits(32)
    c, k = splits.shape[0], splits.num_classes
    half = Context(**{**ctx.__dict__, "budget_s": ctx.budget_s / 2})
    alex = controlled({"convnet4": lambda: nets.convnet4("relu", False, k, c, splits.shape[1]),
                       "convnet4+LRN": lambda: nets.convnet4("relu", True, k, c, splits.shape[1])}, splits, half,
                      Recipe(lr=0.02, weight_decay=5e-4, warmup_epochs=0.0))  # fmt: skip
    if not half.pin:  # the VGG pair trains on the same plan, so one pinned command replays both pairs
        half = Context(**{**half.__dict__, "pin": {"subset": alex.plan.subset, "epochs": alex.plan.epochs}})
    vgg = controlled({"VGG-A": lambda: nets.vgg_small("A", False, num_classes=k, in_chans=c),
                      "VGG-A-LRN": lambda: nets.vgg_small("A", False, lrn=True, num_classes=k, in_chans=c)}, padded,
                     half, Recipe(lr=0.01, weight_decay=5e-4, warmup_epochs=1.0))  # fmt: skip  (lr 0.01: the paper's)
    pairs = {"AlexNet-style": (alex, "convnet4", "convnet4+LRN"), "VGG A vs A-LRN": (vgg, "VGG-A", "VGG-A-LRN")}
    reading, gains, numbers = [], {}, {}
    for label, (trial, base, with_lrn) in pairs.items():
        p = paired(trial.final(base), trial.final(with_lrn), _resolution(trial))  # > 0: LRN better
        gains[label] = p
        state = ("LRN clearly better" if p.clear() else "LRN clearly worse" if p.clear_opposite() else
                 f"a gain of 1 point or more ruled out" if p.at_most() else "inconclusive")  # fmt: skip
        reading.append(f"{label}: test error without LRN {pct_sd(trial.final(base))}, with LRN "
                       f"{pct_sd(trial.final(with_lrn))}; LRN's gain {p.text()}, 95% upper bound "
                       f"{100 * p.upper():+.2f} points: {state}.")  # fmt: skip
        numbers[label] = {"without": trial.final(base), "with": trial.final(with_lrn), "gain_mean": p.mean,
                          "gain_sd": p.sd, "gain_upper": p.upper()}  # fmt: skip
    verdict = V.no_gain(gains, all(_learned(t, [b, w]) for t, b, w in pairs.values()))
    reading.append("Krizhevsky et al. (Section 3.3) report LRN cutting the test error of this four-layer net on "
                   "CIFAR-10 from 13% to 11%; VGG's Table 3 has A-LRN at 29.7% top-1 against A's 29.6%.")  # fmt: skip
    tables = [(label, _table(t, [b, w])) for label, (t, b, w) in pairs.items()]
    figs = [plot_bars({f"{label}: {v}": t.final(v) for label, (t, b, w) in pairs.items() for v in (b, w)},
                      ctx.out / "test_error.png", "With and without LRN: final test error per seed")]  # fmt: skip
    rows = [{**r, "pair": label} for label, (t, _, _) in pairs.items() for r in t.rows]
    return Outcome(verdict, reading, numbers, tables, rows, {}, figs,
                   _settle(ctx) if verdict == NOT_AT_BUDGET else None,
                   {label: t.plan.as_dict() for label, (t, _, _) in pairs.items()})  # fmt: skip


# ------------------------------------------------------------------------------------------ VGG
def stacks(ctx: Context) -> Outcome:
    from ..summary import summary

    splits = ctx.splits(32)
    c, k = splits.shape[0], splits.num_classes
    variants = {"3x3 pairs": lambda: nets.vgg_stages(3, num_classes=k, in_chans=c),
                "5x5 singles": lambda: nets.vgg_stages(5, num_classes=k, in_chans=c)}  # fmt: skip
    trial = controlled(variants, splits, ctx, Recipe(lr=0.1, weight_decay=5e-4, warmup_epochs=1.0))
    cost = {}
    for v, build in variants.items():
        s = summary(build(), input_size=tuple(splits.shape))
        cost[v] = {"params": s.total_params, "MACs": s.total_macs}
    p = paired(trial.final("5x5 singles"), trial.final("3x3 pairs"), _resolution(trial))  # > 0: 3x3 better
    fewer = cost["3x3 pairs"]["params"] < cost["5x5 singles"]["params"]
    reading = [
        f"Parameters: 3x3 pairs {cost['3x3 pairs']['params']:,} vs 5x5 singles {cost['5x5 singles']['params']:,} "
        f"({cost['3x3 pairs']['params'] / cost['5x5 singles']['params']:.2f}x); MACs per image "
        f"{cost['3x3 pairs']['MACs']:,} vs {cost['5x5 singles']['MACs']:,}.",
        f"Test error: 3x3 pairs {pct_sd(trial.final('3x3 pairs'))}, 5x5 singles {pct_sd(trial.final('5x5 singles'))}; "
        f"the 3x3 stack's gain {p.text()}.",
    ]  # fmt: skip
    verdict = V.beats(p, _learned(trial, list(variants))) if fewer else FALSE
    settle = _settle(ctx) if verdict == NOT_AT_BUDGET else None
    reading.append({HOLDS: "The 3x3 stack is clearly more accurate, with fewer parameters.",
                    PARTLY: "The 3x3 stack is as good (a loss of 1 point or more ruled out) with fewer parameters, "
                            "but not clearly better.",
                    FALSE: "The 5x5 net is clearly more accurate." if fewer else "The 3x3 stack is not smaller.",
                    NOT_AT_BUDGET: "The seeds cannot tell the two apart at this budget."}[verdict])  # fmt: skip
    fig = plot_curves(trial, list(variants), "test_err", ctx.out / "test_error.png", "3x3 pairs vs 5x5 (same receptive field)")
    return Outcome(verdict, [r for r in reading if r], {**_numbers(trial, list(variants)), "cost": cost},
                   [("Per variant", _table(trial, list(variants), cost))], trial.rows, {"runs": trial.runs}, [fig],
                   settle, trial.plan.as_dict())  # fmt: skip


def vgg_depth(ctx: Context) -> Outcome:
    splits = ctx.splits(32)
    c, k = splits.shape[0], splits.num_classes
    configs = {"VGG-11": "A", "VGG-13": "B", "VGG-16": "D", "VGG-19": "E"}
    variants = {n: (lambda cfg=cfg: nets.vgg_small(cfg, True, num_classes=k, in_chans=c)) for n, cfg in configs.items()}
    trial = controlled(variants, splits, ctx, Recipe(lr=0.05, weight_decay=5e-4, warmup_epochs=1.0))
    res = _resolution(trial)
    deeper = paired(trial.final("VGG-11"), trial.final("VGG-16"), res)  # > 0: 16 better than 11
    last = paired(trial.final("VGG-16"), trial.final("VGG-19"), res)  # > 0: 19 better than 16
    step13 = paired(trial.final("VGG-11"), trial.final("VGG-13"), res)
    reading = ["Test error at the end: " + ", ".join(f"{v} {pct_sd(trial.final(v))}" for v in variants) + ".",
               f"Gain of each step in depth: 11 -> 13 {step13.text()}; 11 -> 16 {deeper.text()}; 16 -> 19 "
               f"{last.text()}."]  # fmt: skip
    verdict = V.saturates(deeper, last, _learned(trial, list(variants)))
    settle = _settle(ctx) if verdict == NOT_AT_BUDGET else None
    margin = max(V.MARGIN, deeper.mean / 3) if deeper.clear() else V.MARGIN
    reading.append(f"VGG-16's gain over VGG-11: {deeper.state()}. VGG-19's gain over VGG-16 "
                   + (f"is ruled out above {100 * margin:.2f} points (95% upper bound {100 * last.upper():+.2f}): "
                      "depth stops paying." if last.at_most(margin) else
                      f"is not bounded below {100 * margin:.2f} points (95% upper bound {100 * last.upper():+.2f})."))  # fmt: skip
    fig = plot_curves(trial, list(variants), "test_err", ctx.out / "test_error.png", "VGG-11/13/16/19 (BN, 1/4 width)")
    return Outcome(verdict, reading, _numbers(trial, list(variants)), [("Per depth", _table(trial, list(variants)))],
                   trial.rows, {"runs": trial.runs}, [fig], settle, trial.plan.as_dict())  # fmt: skip

