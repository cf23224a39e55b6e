"""The ResNet claims: degradation and its cure, shortcut options A vs B, the identity, gradient flow."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from ..studies.recipe import Recipe
from ..studies.setup import build_net
from .experiment import Context, Outcome, controlled
from .plots import plot_bars, plot_curves
from .registry import HOLDS, NOT_AT_BUDGET, PARTLY, format_budget
from .training import _learned, _numbers, _resolution, _table
from . import verdict as V
from .verdict import Paired, paired, pct_sd

# He et al. trained the CIFAR nets for 64k iterations of 128 images (164 epochs of 45k images).
PAPER_IMAGES = 64_000 * 128
def _budget_for(images: int, bought: int, budget_s: float) -> float:
    """The budget that buys ``images`` per net, scaled from what ``budget_s`` bought (rounded up to minutes)."""
    return 60.0 * math.ceil(budget_s * images / max(bought, 1) / 60)


def plain_vs_residual(ctx: Context, depths: tuple[int, ...] = (20, 32, 44, 56)) -> Outcome:
    splits = ctx.splits()
    c, k = splits.shape[0], splits.num_classes
    shallow, deep = depths[0], depths[-1]
    names = [f"{f}{d}" for f in ("plain", "resnet") for d in depths]
    variants = {n: (lambda n=n: build_net(n, num_classes=k, in_chans=c)) for n in names}
    trial = controlled(variants, splits, ctx, Recipe(), min_epochs=4)  # He et al.'s lr 0.1, batch 128, wd 1e-4
    res = 1.0 / trial.plan.test_size
    key = "train_err"  # Figure 6 is about training error: the deeper plain net fits its own data worse
    plain = paired(trial.final(f"plain{deep}", key), trial.final(f"plain{shallow}", key), res)  # > 0: degrades
    resid = paired(trial.final(f"resnet{shallow}", key), trial.final(f"resnet{deep}", key), res)  # > 0: improves
    resid_test = paired(trial.final(f"resnet{shallow}"), trial.final(f"resnet{deep}"), res)
    images = trial.plan.subset * trial.plan.epochs
    reading = [
        "Training error at the end: " + ", ".join(f"{n} {pct_sd(trial.final(n, key))}" for n in names) + ".",
        f"Plain half: plain{deep} minus plain{shallow} {plain.text()} ({'degrades: clear' if plain.clear() else 'not clear'}).",
        f"Residual half: resnet{shallow} minus resnet{deep} {resid.text()} "
        f"({'deeper is better: clear' if resid.clear() else 'not clear'}); on test error {resid_test.text()}.",
        f"This budget trained each net on {images:,} images ({trial.plan.epochs} epochs of {trial.plan.subset:,}); "
        f"He et al. used {PAPER_IMAGES:,} ({PAPER_IMAGES / max(images, 1):.0f}x more).",
    ]  # fmt: skip
    means = {n: statistics.fmean(trial.final(n, key)) for n in names}
    reading.append("Mean training error by depth: plain " + " -> ".join(f"{means[f'plain{d}']:.2%}" for d in depths)
                   + "; residual " + " -> ".join(f"{means[f'resnet{d}']:.2%}" for d in depths) + ".")  # fmt: skip
    learned = _learned(trial, [f"plain{shallow}", f"resnet{shallow}"])  # a deep plain net failing IS the effect
    # He et al.'s figure is after 64k iterations: a deep residual net still behind at a far smaller budget has
    # not converged, which says nothing against the claim, so this claim is never "false" below that budget
    verdict = HOLDS if learned and plain.clear() and resid.clear() else PARTLY if learned and plain.clear() else NOT_AT_BUDGET
    if resid.clear_opposite():
        reading.append(f"At this budget resnet{deep} is clearly *behind* resnet{shallow}: {deep} layers need more "
                       f"steps to converge (He et al. trained {PAPER_IMAGES / max(images, 1):,.0f}x longer).")  # fmt: skip
    settle = None
    if verdict != HOLDS:
        hours = _budget_for(PAPER_IMAGES, images, ctx.budget_s) / 3600
        settle = (f"He et al.'s schedule: {PAPER_IMAGES:,} training images per net, {PAPER_IMAGES / max(images, 1):,.0f}x "
                  f"what this budget bought; at the speed measured here that is a budget of about {hours:,.0f} h "
                  "on this machine, so a GPU (`--device cuda`) with `--budget` sized to it "
                  "(docs/longer-runs/README.md has a longer CPU run)")  # fmt: skip
    reds, blues = ("#fcae91", "#fb6a4a", "#de2d26", "#a50f15"), ("#9ecae1", "#6baed6", "#3182bd", "#08519c")
    styles = {f"{f}{d}": {"color": (reds if f == "plain" else blues)[min(i, 3)], "ls": "--" if f == "plain" else "-"}
              for i, d in enumerate(depths) for f in ("plain", "resnet")}  # fmt: skip
    title = f"Plain (dashed, red) vs residual (solid, blue), depth {'/'.join(map(str, depths))}"
    fig = plot_curves(trial, names, key, ctx.out / "training_error.png", title, styles)
    test_fig = plot_curves(trial, names, "test_err", ctx.out / "test_error.png", title + ": test error", styles)
    numbers = {**_numbers(trial, names), "plain_gap_mean": plain.mean, "residual_gain_mean": resid.mean,
               "train_images_per_net": images}  # fmt: skip
    return Outcome(verdict, reading, numbers, [("Per net", _table(trial, names))], trial.rows, {"runs": trial.runs},
                   [fig, test_fig], settle, trial.plan.as_dict())  # fmt: skip


def shortcuts(ctx: Context) -> Outcome:
    """resnet20 with option A (zero-padding identity) vs B (1x1 projection where the shape changes)."""
    splits = ctx.splits()
    c, k = splits.shape[0], splits.num_classes

    def option_b() -> torch.nn.Module:
        a = build_net("resnet20", num_classes=k, in_chans=c)  # draws the shared layers exactly as option A does
        b = build_net("resnet20", num_classes=k, in_chans=c, shortcut="B")
        missing = b.load_state_dict(a.state_dict(), strict=False).missing_keys
        assert all(".downsample." in m for m in missing), missing  # only the projections are B's own
        return b

    variants = {"option A": lambda: build_net("resnet20", num_classes=k, in_chans=c), "option B": option_b}
    trial = controlled(variants, splits, ctx, Recipe())
    p = paired(trial.final("option A"), trial.final("option B"), _resolution(trial))  # > 0: B better
    extra = trial.runs[1]["params"] - trial.runs[0]["params"]
    reading = [f"Test error: option A {pct_sd(trial.final('option A'))}, option B {pct_sd(trial.final('option B'))}; "
               f"B's gain {p.text()}. B adds {extra:,} parameters (the two projections).",
               "He et al. (Table 3, ImageNet ResNet-34): A 25.03%, B 24.52% top-1 error: B better by 0.51 points."]  # fmt: skip
    verdict, why = V.marginal(p, _learned(trial, list(variants)))
    reading.append(f"{why[0].upper()}{why[1:]}.")
    fig = plot_bars({v: trial.final(v) for v in variants}, ctx.out / "test_error.png", "resnet20: shortcut A vs B")
    return Outcome(verdict, reading, {**_numbers(trial, list(variants)), "gain_b_mean": p.mean},
                   [("Per option", _table(trial, list(variants)))], trial.rows, {"runs": trial.runs}, [fig],
                   None if verdict != NOT_AT_BUDGET else f"more seeds, or a budget of {format_budget(4 * ctx.budget_s)}",
                   trial.plan.as_dict())  # fmt: skip


def identity(ctx: Context) -> Outcome:
    """The identity study once per seed, with its step budget sized from a short timed run."""
    import time

    from ..studies.identity import identity_study

    t0 = time.perf_counter()
    identity_study(steps=50, seed=ctx.seeds[0], write=False, log=None)
    per_step = (time.perf_counter() - t0) / 100  # two blocks x 50 steps
    steps = ctx.pin.get("steps") or max(50, min(3000, int(0.8 * ctx.budget_s / len(ctx.seeds) / 2 / per_step)))
    ctx.say(f"identity: {steps} steps per block and seed")
    reports = [identity_study(steps=steps, seed=s, write=False, log=None) for s in ctx.seeds]
    res = [r.steps_to_target("residual") for r in reports]
    plain = [r.steps_to_target("plain") for r in reports]
    reading = [f"Steps to 1% relative error on y = x: residual block {res}, plain block {plain} (per seed; None: not "
               f"within {steps} steps)."]  # fmt: skip
    if all(r is not None for r in res) and all(p is None or p > r for p, r in zip(plain, res)):
        verdict = HOLDS
        ratios = [p / r for p, r in zip(plain, res) if p is not None]
        reading.append("The residual block is faster in every seed"
                       + (f" ({', '.join(f'{x:.1f}x' for x in ratios)} where the plain block got there)." if ratios else
                          "; the plain block never got there."))  # fmt: skip
    elif any(r is not None for r in res):
        verdict = PARTLY
    else:
        verdict = NOT_AT_BUDGET
    rows = [{**c, "seed": s} for s, r in zip(ctx.seeds, reports) for c in r.curves]
    fig = _identity_figure(rows, ctx.out / "identity_loss.png")
    return Outcome(verdict, reading, {"steps_residual": res, "steps_plain": plain, "max_steps": steps}, [], rows,
                   {"zero_init": reports[0].zero_init}, [fig],
                   None if verdict != NOT_AT_BUDGET else "more steps (a larger budget)", {"steps": steps})  # fmt: skip


def _identity_figure(rows: list[dict[str, Any]], path):
    from ..studies.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (variant, color) in (("residual", "C0"), ("plain", "C3")):
        for seed in sorted({r["seed"] for r in rows}):
            curve = [r for r in rows if r["variant"] == variant and r["seed"] == seed]
            ax.plot([r["step"] for r in curve], [r["rel_loss"] for r in curve], color=color, alpha=0.7,
                    label=f"{variant} block" if seed == rows[0]["seed"] else None)  # fmt: skip
    ax.axhline(0.01, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("relative MSE to the identity")
    ax.set_title("Learning y = x: one line per seed; dashed: the 1% target", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def gradient_flow(ctx: Context, models: tuple[str, str] = ("plain56", "resnet56")) -> Outcome:
    """The gradient study per seed: first-conv over last-conv gradient norm at init and after training."""
    from ..studies.gradients import gradient_flow as study

    from .experiment import measure_speed

    splits = ctx.splits()
    builds = {m: (lambda m=m: build_net(m, num_classes=splits.num_classes, in_chans=splits.shape[0])) for m in models}
    speeds = measure_speed(builds, splits, ctx, 128, None)  # fp32: the measurements are fp32
    per_step = sum(128 / s for s in speeds.values())  # one step of each net
    # each net and seed: two fp32 measurements (~1 step each) plus the training steps
    steps = ctx.pin.get("steps") or max(4, min(200, int(0.8 * ctx.budget_s / len(ctx.seeds) / per_step) - 2))
    ctx.say(f"gradient-flow: {steps} training steps per net and seed")
    reports = [study(list(models), ctx.splits(), steps=steps, batch=128, seed=s, device=ctx.device, write=False,
                     log=None) for s in ctx.seeds]  # fmt: skip
    plain, resid = models
    out: dict[str, Any] = {}
    for phase in ("init", "trained"):
        for net in models:
            out[f"{net} {phase}"] = [r.get(net, phase)["max_over_min"] for r in reports]
            out[f"{net} {phase} first/last"] = [r.get(net, phase)["first_over_last"] for r in reports]
    reading, spreads = [], {}
    for phase, when in (("init", "At initialization"), ("trained", f"After {steps} steps")):
        p, r = out[f"{plain} {phase}"], out[f"{resid} {phase}"]
        # > 0: the plain net's per-layer gradient norms spread over more orders of magnitude than the residual's
        spreads[phase] = Paired(tuple(math.log10(a) - math.log10(b) for a, b in zip(p, r)))
        fl = out[f"{plain} {phase} first/last"]
        direction = "explode towards the input" if _geo(fl) > 1 else "vanish towards the input"
        reading.append(f"{when}: max/min weight-gradient norm over the layers {plain} {_geo(p):.3g}, {resid} "
                       f"{_geo(r):.3g} (geometric means over {len(p)} seeds); {plain}'s gradients {direction} "
                       f"(first conv / last conv {_geo(fl):.3g}, {resid} "
                       f"{_geo(out[f'{resid} {phase} first/last']):.3g}).")  # fmt: skip
    verdict = V.order({"wider spread at init": spreads["init"], "wider spread after training": spreads["trained"]},
                      learned=True)  # fmt: skip
    reading.append("The plain net's spread is wider "
                   + "; ".join(f"{'at initialization' if k == 'init' else 'after training'}: {p.state()} "
                               f"({p.text(' orders of magnitude', 1.0)})" for k, p in spreads.items()) + ".")  # fmt: skip
    rows = [{**row, "seed": s} for s, r in zip(ctx.seeds, reports) for row in r.rows]
    fig = _gradient_figure(rows, models, ctx.out / "gradient_norms.png")
    return Outcome(verdict, reading, {"gradients": out, "steps": steps}, [], rows, {}, [fig],
                   None if verdict != NOT_AT_BUDGET else "more training steps", {"steps": steps})  # fmt: skip


def _geo(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if all(v > 0 for v in values) else math.nan


def _gradient_figure(rows: list[dict[str, Any]], models: tuple[str, str], path):
    from ..studies.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, phase in zip(axes, ("init", "trained")):
        for net, color in zip(models, ("C3", "C0")):
            seed = rows[0]["seed"]
            layer = [r for r in rows if r["net"] == net and r["phase"] == phase and r["kind"] == "weight"
                     and r["seed"] == seed]  # fmt: skip
            ax.plot([r["index"] for r in layer], [r["norm"] for r in layer], color=color, label=net)
        ax.set_yscale("log")
        ax.set_xlabel("layer (input -> output)")
        ax.set_title("at initialization" if phase == "init" else "after training", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weight-gradient norm")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)
