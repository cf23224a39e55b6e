"""How easily a block learns the identity: a BasicBlock with its skip vs the same block without it.

He et al.'s argument (Section 3.1): if extra layers should do nothing, a residual block only has to drive its
residual F(x) to zero, while a plain block must build the identity out of convolutions, BatchNorm and ReLUs.
Here both blocks (16 channels, 8x8 maps, He init, identical weights) are trained to reproduce their input.
The inputs are ``relu(z)``, z ~ N(0, 1): nonnegative, because inside a net a block's input is always the
output of a ReLU, and because both blocks end in a ReLU, which cannot output a negative value: on signed
inputs neither block could represent the identity at all, and the comparison would measure that instead.

A block whose last BatchNorm starts at zero (``zero_init_residual``) *is* the identity at initialization on
such inputs: its residual branch outputs exactly 0 and ``relu(0 + x) = x`` for x >= 0.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.resnet import BasicBlock, init_resnet
from ..train.step import train_step
from .report import (
    check_out,
    fmt,
    markdown_table,
    print_flush,
    pyplot,
    read_csv,
    run_dir,
    save_figure,
    write_csv,
    write_json,
    write_text,
)
from .setup import check_positive_int, torch_threads

VARIANTS = ("residual", "plain")


def make_block(skip: bool, channels: int = 16, zero_init: bool = False) -> BasicBlock:
    """A standalone BasicBlock (stride 1, no downsample) with the library's ResNet init."""
    block = BasicBlock(channels, channels, skip=skip)
    init_resnet(block, zero_init_residual=zero_init)
    return block


def identity_inputs(n: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, C, size, size) nonnegative inputs: relu of a standard normal, like the output of a ReLU layer."""
    return torch.randn(n, channels, size, size, generator=generator).clamp_(min=0)


@dataclass
class IdentityReport:
    curves: list[dict[str, Any]]  # variant, step, loss, rel_loss
    results: list[dict[str, Any]]  # variant, steps_to_target, final rel loss, ...
    zero_init: dict[str, Any]  # max |block(x) - x| checks
    config: dict[str, Any]
    run_dir: Path | None = None
    figures: list[Path] = field(default_factory=list)

    def steps_to_target(self, variant: str) -> int | None:
        return next(r["steps_to_target"] for r in self.results if r["variant"] == variant)

    @classmethod
    def load(cls, directory: str | Path) -> "IdentityReport":
        """Read back a run directory (to re-plot or re-read it without fitting again)."""
        directory = Path(directory)
        saved = json.loads((directory / "identity.json").read_text())
        curves = [{"variant": r["variant"], "step": int(r["step"]), "loss": float(r["loss"]),
                   "rel_loss": float(r["rel_loss"])} for r in read_csv(directory / "curves.csv")]  # fmt: skip
        return cls(curves, saved["results"], saved["zero_init"], saved["config"], directory)

    def reading(self) -> list[str]:
        cfg = self.config
        res, plain = self.steps_to_target("residual"), self.steps_to_target("plain")
        target = f"relative MSE {fmt(cfg['target'])}"
        final = {r["variant"]: r["final_rel_loss"] for r in self.results}
        start = {r["variant"]: r["initial_rel_loss"] for r in self.results}

        def took(v: int | None) -> str:
            return f"{v} steps" if v is not None else f"not within {cfg['steps']} steps"

        lines = [f"Target {target} (MSE / mean square of the input). Residual block: {took(res)}; plain block: "
                 f"{took(plain)}."]  # fmt: skip
        if res is not None and plain is not None:
            lines.append(f"The residual block reaches the identity {plain / max(res, 1):.1f}x faster.")
        elif res is not None:
            lines.append(f"Only the residual block reaches the target; the plain block ends at {fmt(final['plain'])} "
                         f"({fmt(final['plain'] / cfg['target'])}x the target).")  # fmt: skip
        elif plain is not None:
            lines.append("Only the plain block reaches the target on this budget.")
        lines.append(f"Relative loss at step 0: residual {fmt(start['residual'])}, plain {fmt(start['plain'])}; after "
                     f"{cfg['steps']} steps: residual {fmt(final['residual'])}, plain "
                     f"{fmt(final['plain'])}.")  # fmt: skip
        z = self.zero_init
        lines.append(f"A residual block with its last BN zero-initialized is the identity at initialization: "
                     f"max |block(x) - x| = {z['block_max_abs_diff']:g} on nonnegative input (train mode) and "
                     f"{z['block_max_abs_diff_eval']:g} (eval mode); in a zero-init resnet20 every stride-1 block "
                     f"passes its input through unchanged (max difference {z['resnet20_max_abs_diff']:g} over "
                     f"{z['resnet20_blocks_checked']} blocks). With the standard init the same block changes its input "
                     f"by up to {fmt(z['standard_init_max_abs_diff'])}.")  # fmt: skip
        return lines


@dataclass(frozen=True)
class IdentityTask:
    """What every block is fitted with: ``steps`` SGD steps at ``lr`` on fresh ``batch``-sized batches of
    ``channels`` x ``size`` x ``size`` inputs, until the relative MSE reaches ``target``."""

    steps: int
    channels: int
    size: int
    batch: int
    lr: float
    target: float
    seed: int


def fit_identity(block: nn.Module, task: IdentityTask) -> tuple[list[dict[str, float]], int | None]:
    """SGD (momentum 0.9) on MSE(block(x), x), a fresh batch every step, through the engine's ``train_step``.
    The loss of each step is measured on a batch the block has not been trained on yet (the step's forward
    pass, before its update), so it is an honest estimate; returns the curve and the first step whose
    relative loss is at most ``task.target`` (None if never)."""
    g = torch.Generator().manual_seed(task.seed)
    opt = torch.optim.SGD(block.parameters(), lr=task.lr, momentum=0.9)
    block.train()
    curve, reached = [], None
    for step in range(task.steps + 1):
        x = identity_inputs(task.batch, task.channels, task.size, g)
        if step == task.steps:  # the last point is measured, not trained on
            with torch.no_grad():
                loss_value = F.mse_loss(block(x), x).item()
        else:
            try:
                loss_value = train_step(block, opt, x, x, loss_fn=F.mse_loss)[0].item()
            except FloatingPointError:  # recorded below as it is, and the fit stops
                loss_value = math.nan
        rel = loss_value / float(x.pow(2).mean())
        curve.append({"step": step, "loss": loss_value, "rel_loss": rel})
        if reached is None and rel <= task.target:
            reached = step
        if not math.isfinite(rel):
            break
    return curve, reached


@torch.no_grad()
def zero_init_checks(channels: int = 16, size: int = 8, seed: int = 0) -> dict[str, Any]:
    """Max |block(x) - x| for zero-initialized residual blocks on nonnegative input (all exactly 0), and the
    same for a standard-init block for contrast."""
    from ..models import create_model

    g = torch.Generator().manual_seed(seed)
    x = identity_inputs(64, channels, size, g)
    torch.manual_seed(seed)
    block = make_block(True, channels, zero_init=True)
    train_diff = float((block.train()(x) - x).abs().max())
    eval_diff = float((block.eval()(x) - x).abs().max())
    torch.manual_seed(seed)
    standard = float((make_block(True, channels).train()(x) - x).abs().max())
    signed = torch.randn(64, channels, size, size, generator=g)
    signed_diff = float((block.train()(signed) - signed).abs().max())

    torch.manual_seed(seed)
    net = create_model("resnet20", num_classes=10, in_chans=1, zero_init_residual=True).train()
    diffs: list[float] = []

    def check(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.downsample is None:  # stride 1: the block should return its input unchanged
            diffs.append(float((output - args[0]).abs().max()))

    handles = [m.register_forward_hook(check) for m in net.modules() if isinstance(m, BasicBlock)]
    net(torch.randn(8, 1, 28, 28, generator=g))
    for h in handles:
        h.remove()
    return {
        "block_max_abs_diff": train_diff, "block_max_abs_diff_eval": eval_diff, "standard_init_max_abs_diff": standard,
        "signed_input_max_abs_diff": signed_diff, "resnet20_max_abs_diff": max(diffs),
        "resnet20_blocks_checked": len(diffs),
    }  # fmt: skip


def identity_study(
    *,
    steps: int = 3000,
    channels: int = 16,
    size: int = 8,
    batch: int = 64,
    lr: float = 0.1,
    target: float = 0.01,
    seed: int = 0,
    out: str | Path | None = None,
    force: bool = False,
    write: bool = True,
    log: Callable[[str], None] | None = print_flush,
) -> IdentityReport:
    """Fit a residual and a plain BasicBlock (same initial weights) to the identity; report the steps each
    needs to reach ``target`` relative MSE, the loss curves and the zero-init checks. Files go to ``out``
    (default ``runs/study-identity-<time>``) unless ``write`` is False."""
    check_out(out, force)  # before any work: a report is never replaced without --force
    for key, value in (("steps", steps), ("channels", channels), ("size", size), ("batch", batch)):
        check_positive_int(key, value)
    if not lr > 0 or not target > 0:
        raise ValueError(f"lr and target must be > 0, got lr={lr}, target={target}")
    say = log or (lambda _: None)
    with torch_threads(1):  # a 16-channel 8x8 block is too small for threads to pay; on a busy CPU they cost 5x
        curves, results = _fit_both(IdentityTask(steps, channels, size, batch, lr, target, seed), say)
        zero = zero_init_checks(channels, size, seed)
    say(f"zero-init residual block: max |block(x) - x| = {zero['block_max_abs_diff']:g} (nonnegative x)")
    config = {"steps": steps, "channels": channels, "size": size, "batch": batch, "lr": lr, "target": target,
              "seed": seed, "optimizer": "SGD momentum 0.9, no weight decay", "inputs": "relu(N(0,1)), fresh each step",
              "loss": "MSE(block(x), x); relative = MSE / mean(x^2)"}  # fmt: skip
    report = IdentityReport(curves, results, zero, config)
    if write:
        write_identity_report(report, run_dir("identity", out, force))
    return report


def _fit_both(task: IdentityTask, say: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    curves, results = [], []
    target = task.target
    for variant in VARIANTS:
        t0 = time.perf_counter()
        torch.manual_seed(task.seed)  # the same weights for both blocks: they have the same parameters
        block = make_block(variant == "residual", task.channels)
        curve, reached = fit_identity(block, task)
        curves += [{"variant": variant, **c} for c in curve]
        results.append({"variant": variant, "steps_to_target": reached, "initial_rel_loss": curve[0]["rel_loss"],
                        "final_rel_loss": curve[-1]["rel_loss"], "best_rel_loss": min(c["rel_loss"] for c in curve),
                        "seconds": time.perf_counter() - t0})  # fmt: skip
        say(f"{variant:>8} block: relative MSE {curve[0]['rel_loss']:.3g} -> {curve[-1]['rel_loss']:.3g}; "
            f"target {target:g} "
            f"{'reached at step ' + str(reached) if reached is not None else 'not reached'}")  # fmt: skip
    return curves, results


def write_identity_report(report: IdentityReport, directory: Path) -> Path:
    report.run_dir = directory
    write_csv(directory / "curves.csv", report.curves, ["variant", "step", "loss", "rel_loss"])
    write_csv(directory / "results.csv", report.results,
              ["variant", "steps_to_target", "initial_rel_loss", "final_rel_loss", "best_rel_loss",
               "seconds"])  # fmt: skip
    write_json(directory / "identity.json", {"config": report.config, "results": report.results,
                                             "zero_init": report.zero_init})  # fmt: skip
    report.figures = [plot_identity(report, directory / "identity_loss.png")]
    cfg = report.config
    text = [
        "# Learning the identity: residual vs plain block", "",
        f"A BasicBlock ({cfg['channels']} channels, {cfg['size']}x{cfg['size']} maps, stride 1, He init) with its "
        f"skip, and the same block without it, start from identical weights and are trained to output their input: "
        f"{cfg['loss']}; inputs {cfg['inputs']}; {cfg['optimizer']}, lr {cfg['lr']}, batch {cfg['batch']}, "
        f"{cfg['steps']} steps, seed {cfg['seed']}.", "",
        "Why nonnegative inputs: inside a net every block's input is the output of a ReLU, and both blocks end in a "
        "ReLU, which cannot reproduce negative values; on signed inputs neither could represent the identity "
        f"(a zero-init block changes signed inputs by up to {fmt(report.zero_init['signed_input_max_abs_diff'])}).",
        "", "![loss curves](identity_loss.png)", "",
        "## Reading (computed from the numbers)", "", *[f"- {line}" for line in report.reading()], "",
        "## Numbers", "",
        markdown_table(report.results, ["variant", "steps_to_target", "initial_rel_loss", "final_rel_loss",
                                        "best_rel_loss"],
                       ["block", f"steps to relative MSE {cfg['target']:g}", "at step 0", "at the end", "best"]),
        "", "Raw numbers: `curves.csv` (every step), `results.csv`, `identity.json`.", "",
    ]  # fmt: skip
    write_text(directory / "report.md", "\n".join(text))
    return directory


def plot_identity(report: IdentityReport, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant, color in (("residual", "tab:blue"), ("plain", "tab:red")):
        pts = [c for c in report.curves if c["variant"] == variant]
        ax.plot([c["step"] for c in pts], [c["rel_loss"] for c in pts], color=color, lw=1.2, label=f"{variant} block")
        reached = report.steps_to_target(variant)
        if reached is not None:
            ax.axvline(reached, color=color, ls=":", lw=1)
    target = report.config["target"]
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    ax.set_yscale("log")
    lowest = min(c["rel_loss"] for c in report.curves)
    floor = target * 1e-4
    if lowest < floor:  # a residual block can reach the identity to rounding error; keep the plain curve readable
        ax.set_ylim(bottom=floor)
        ax.text(0.98, 0.03, f"lowest value {lowest:.1g} (below the axis)", transform=ax.transAxes, ha="right",
                fontsize=8)  # fmt: skip
    ax.set_xlabel("SGD step")
    ax.set_ylabel("MSE(block(x), x) / mean(x^2)")
    cfg = report.config
    ax.set_title(f"Fitting the identity mapping ({cfg['channels']} channels, {cfg['size']}x{cfg['size']})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper right")
    return save_figure(fig, path)
