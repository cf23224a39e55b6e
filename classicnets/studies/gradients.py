"""Gradient flow: the gradient norm of every layer of a net, at initialization and after a few training steps.

One real batch goes through each net; ``layer_gradients`` records the norm of each conv/linear weight's
gradient (in the order the forward pass runs them) and of the gradient with respect to each residual/plain
block's output (captured by a forward hook that registers a tensor hook on the output). Twins (plain56 and
resnet56) start from identical weights and see the same batches, so the skips are the only difference.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import InMemoryLoader
from ..data.arrays import Splits, seeded_generator
from ..data.inputs import plan_input
from ..train.config import TrainConfig
from ..train.runtime import amp_dtype
from ..train.schedule import lr_at
from ..train.step import set_lr, train_step
from .recipe import DEFAULT_MODELS
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
from .setup import build_net, check_positive_int, get_data, resolve_device, torch_threads, twin_of


@dataclass
class LayerGradients:
    """One backward pass: the loss, then (layer name, gradient norm) in forward order."""

    loss: float
    weights: list[tuple[str, float]]  # every Conv2d/Linear weight
    blocks: list[tuple[str, float]]  # d loss / d (block output), for every module with ``has_skip``
    weight_types: list[str] = field(default_factory=list)  # "Conv2d" / "Linear", parallel to ``weights``
    weight_norms: list[float] = field(default_factory=list)  # ||W|| itself, parallel to ``weights``


def _is_block(module: nn.Module) -> bool:
    return isinstance(getattr(module, "has_skip", None), bool)


def layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerGradients:
    """Cross-entropy on ``(x, y)`` in full precision, backward, and the per-layer gradient norms (2-norm over
    the whole tensor). The model keeps its mode; its ``.grad`` fields are cleared afterwards."""
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    block_grads: dict[str, torch.Tensor] = {}
    block_order: list[str] = []
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if id(module) not in seen:
                seen.add(id(module))
                order.append((name, module))
        return hook

    def capture(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                block_order.append(name)
                output.register_hook(lambda g: block_grads.__setitem__(name, g.detach().float().norm()))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(record(name)))
        elif _is_block(module):
            handles.append(module.register_forward_hook(capture(name)))
    try:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        used = [(name, m) for name, m in order if m.weight.grad is not None]
        weights = [(name, float(m.weight.grad.float().norm())) for name, m in used]
        blocks = [(name, float(block_grads[name])) for name in block_order if name in block_grads]
        types = [type(m).__name__ for _, m in used]
        sizes = [float(m.weight.detach().float().norm()) for _, m in used]
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return LayerGradients(float(loss.detach()), weights, blocks, types, sizes)


@dataclass
class GradientReport:
    """Per-layer rows (net, phase, kind, index, layer, norm), a per-net summary and where the files went."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    config: dict[str, Any]
    run_dir: Path | None = None
    figures: list[Path] = field(default_factory=list)

    def get(self, net: str, phase: str) -> dict[str, Any]:
        for s in self.summary:
            if s["net"] == net and s["phase"] == phase:
                return s
        raise KeyError(f"no summary for {net!r} at {phase!r}")

    def reading(self) -> list[str]:
        """Sentences computed from the numbers (for report.md and the console): one per twin pair and phase."""
        lines = []
        nets = list(dict.fromkeys(s["net"] for s in self.summary))
        phases = [p for p in ("init", "trained") if any(s["phase"] == p for s in self.summary)]
        for group in _pairs(nets):
            for phase in phases:
                when = "at initialization" if phase == "init" else f"after {self.config['steps']} steps"
                stats = [self.get(net, phase) for net in group]
                parts = [f"{s['net']} {_direction(s)} (first conv {fmt(s['first'])} vs last conv "
                         f"{fmt(s['last_conv'])}: {fmt(s['first_over_last'])}x; max/min over all layers "
                         f"{fmt(s['max_over_min'])}"
                         + (f"; loss {s['loss']:.3f}" if phase == "trained" else "") + ")" for s in stats]  # fmt: skip
                lines.append(f"{' vs '.join(group)} {when}: " + "; ".join(parts) + ".")
                if phase == "trained":
                    frozen = [_frozen(self.get(s["net"], "init"), s, [t for t in stats if t is not s]) for s in stats]
                    lines += [line for line in frozen if line]
            if len(group) == 2:
                p, r = self.get(group[0], "init"), self.get(group[1], "init")
                factor = p["max_over_min"] / r["max_over_min"]
                if factor > 1:
                    lines.append(f"At initialization the weight-gradient norms of {group[0]} span a {fmt(factor)}x "
                                 f"wider range than those of {group[1]}.")  # fmt: skip
                else:
                    lines.append(f"At initialization the weight-gradient norms of {group[0]} span no wider a range "
                                 f"than those of {group[1]} ({fmt(p['max_over_min'])} vs "
                                 f"{fmt(r['max_over_min'])}).")  # fmt: skip
        return lines

    @classmethod
    def load(cls, directory: str | Path) -> "GradientReport":
        """Read back a run directory (to re-plot or re-read it without measuring again)."""
        directory = Path(directory)
        saved = json.loads((directory / "gradients.json").read_text())
        rows = [{**r, "index": int(r["index"]), "norm": float(r["norm"]),
                 "weight_norm": float(r["weight_norm"]) if r.get("weight_norm") else None}
                for r in read_csv(directory / "layers.csv")]  # fmt: skip
        return cls(rows, saved["summary"], saved["config"], directory)


def _direction(s: dict[str, Any]) -> str:
    """Name what the gradient does from the last conv to the first; within 100x both ways is 'stays'."""
    ratio = s["first_over_last"]
    return "explodes toward the input" if ratio > 100 else "vanishes toward the input" if ratio < 0.01 else \
        "stays within 100x"  # fmt: skip


def _frozen(init: dict[str, Any], trained: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """A sentence when the first conv's weights grew 20x or more in training. A conv followed by BatchNorm is
    scale-invariant, so its gradient falls as 1/||W||: huge early gradients make huge weights, which then
    barely move. The relative gradient ||dL/dW|| / ||W|| says how fast the layer can still change."""
    a, b = init.get("first_weight_norm"), trained.get("first_weight_norm")
    if not a or not b or b < 20 * a:
        return ""
    rel = trained["first"] / b
    twins = "; ".join(f"{o['net']}'s: {fmt(o['first'] / o['first_weight_norm'])}" for o in others
                      if o.get("first_weight_norm"))  # fmt: skip
    return (f"{trained['net']}'s first conv grew from weight norm {fmt(a)} to {fmt(b)} ({fmt(b / a)}x) in training; "
            f"with BatchNorm after it the layer is scale-invariant, so its gradient shrinks as 1/||W||: its relative "
            f"gradient ||dL/dW||/||W|| is now {fmt(rel)}" + (f" ({twins})" if twins else "") + ".")  # fmt: skip


def _summarise(net: str, phase: str, g: LayerGradients) -> dict[str, Any]:
    norms = [n for _, n in g.weights]
    convs = [n for (_, n), t in zip(g.weights, g.weight_types) if t == "Conv2d"]
    positive = [n for n in norms if n > 0]
    blocks = [n for _, n in g.blocks]
    return {
        "net": net, "phase": phase, "loss": g.loss, "layers": len(norms),
        "first": norms[0], "last": norms[-1], "last_conv": convs[-1] if convs else norms[-1],
        "first_weight_norm": g.weight_norms[0] if g.weight_norms else None,
        # the flow through the convs: the last layer (fc) also scales with the size of the features
        "first_over_last": norms[0] / (convs[-1] if convs else norms[-1]) if (convs or norms)[-1] else math.inf,
        "first_over_last_layer": norms[0] / norms[-1] if norms[-1] else math.inf,
        "max": max(norms), "min": min(norms),
        "max_over_min": max(positive) / min(positive) if positive else math.nan,
        "max_layer": g.weights[norms.index(max(norms))][0], "min_layer": g.weights[norms.index(min(norms))][0],
        "first_block": blocks[0] if blocks else None, "last_block": blocks[-1] if blocks else None,
        "block_first_over_last": blocks[0] / blocks[-1] if blocks and blocks[-1] else None,
    }  # fmt: skip


def gradient_flow(
    models: Sequence[str] = DEFAULT_MODELS,
    data: str | Splits = "fashion-mnist",
    *,
    steps: int = 50,
    batch: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    amp: str = "auto",
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    write: bool = True,
    log: Callable[[str], None] | None = print_flush,
    threads: int | None = None,
) -> GradientReport:
    """Per-layer gradient norms of each net at initialization and after ``steps`` SGD steps.

    The measurement batch is the same ``batch`` training images for every net (a seeded draw), evaluated in
    fp32 with BatchNorm in training mode (batch statistics, as during training). Training uses SGD (momentum
    0.9, weight decay 1e-4, as He et al.), ``lr`` with a linear warm-up from lr/10 over the first quarter of
    the steps, batches of ``batch`` from a seeded shuffle of the training set, and ``amp`` autocast. The
    numbers, figures and report.md go to ``out`` (default ``runs/study-gradients-<time>``) unless ``write``
    is False. ``threads`` sets torch's intra-op threads for the run.
    """
    check_out(out, force)  # before any work: a report is never replaced without --force
    models = list(models)
    if not models:
        raise ValueError("gradient_flow needs at least one model, e.g. plain20,resnet20")
    check_positive_int("batch", batch)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    say = log or (lambda _: None)
    splits = get_data(data, data_dir)
    dev = resolve_device(device)
    dtype = amp_dtype(amp, dev)
    pick = torch.randperm(len(splits.train), generator=seeded_generator(seed, "gradient-batch"))[:batch]
    config = {"models": models, "data": splits.name, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
              "amp": str(dtype).replace("torch.", "") if dtype else "off", "device": str(dev),
              "optimizer": "SGD momentum 0.9, weight decay 1e-4, linear warm-up from lr/10 over steps/4",
              "measurement": "fp32 cross-entropy on one fixed batch of training images, BN in train mode"}  # fmt: skip
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    with torch_threads(threads):
        config["threads"] = torch.get_num_threads()
        setting = Setting(splits, pick, steps, batch, lr, seed, dtype, dev)
        for name in models:
            t0 = time.perf_counter()
            net_rows, net_summary = _one_net(name, setting)
            rows += net_rows
            summary += net_summary
            init, last = net_summary[0], net_summary[-1]
            say(f"{name:>10}: init first/last conv {fmt(init['first_over_last'])}, max/min {fmt(init['max_over_min'])}"
                + (f" | after {steps} steps loss {last['loss']:.3f}, first/last conv {fmt(last['first_over_last'])}, "
                   f"max/min {fmt(last['max_over_min'])}" if steps else "")
                + f"  ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    report = GradientReport(rows, summary, config)
    if write:
        write_gradient_report(report, run_dir("gradients", out, force))
    return report


@dataclass
class Setting:
    """One study's data, measurement batch and training budget, the same for every net."""

    splits: Splits
    pick: torch.Tensor  # indices of the measurement batch in the training set
    steps: int
    batch: int
    lr: float
    seed: int
    amp: torch.dtype | None
    device: torch.device


def _one_net(name: str, s: Setting) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure ``name`` at init and (if ``s.steps``) after training: per-layer rows and one summary per phase."""
    c, h, w = s.splits.shape
    torch.manual_seed(s.seed)
    model = build_net(name, num_classes=s.splits.num_classes, in_chans=c).to(s.device)
    plan = plan_input(min(h, w), model.min_input_size[0], None, name)  # as ``fit`` would
    common = dict(device=s.device, mean=s.splits.mean, std=s.splits.std, pad_to=plan.pad_to, resize_to=plan.resize_to)
    x, y = next(iter(InMemoryLoader(s.splits.train.subset(s.pick), s.batch, shuffle=False, **common)))
    grads = {"init": _measure(model, x, y)}  # x: (batch, C, H, W), the same images for every net
    if s.steps:
        loader = InMemoryLoader(s.splits.train, s.batch, shuffle=True, drop_last=True, seed=s.seed, **common)
        _train(model, loader, s)
        grads["trained"] = _measure(model, x, y)
    params = sum(p.numel() for p in model.parameters())
    rows, summary = [], []
    for phase, g in grads.items():
        rows.extend({"net": name, "phase": phase, "kind": "weight", "index": i, "layer": layer, "norm": norm,
                     "weight_norm": size} for i, ((layer, norm), size) in enumerate(zip(g.weights, g.weight_norms)))
        rows.extend({"net": name, "phase": phase, "kind": "block", "index": i, "layer": layer, "norm": norm}
                    for i, (layer, norm) in enumerate(g.blocks))  # fmt: skip
        summary.append({**_summarise(name, phase, g), "params": params})
    return rows, summary


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerGradients:
    """Gradients at the current weights; BN running statistics are left as they were."""
    buffers = copy.deepcopy({k: v for k, v in model.named_buffers()})
    model.train()
    g = layer_gradients(model, x, y)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    return g


def _train(model: nn.Module, loader: InMemoryLoader, s: Setting) -> None:
    """``s.steps`` SGD steps (momentum 0.9, weight decay 1e-4) with a linear warm-up from lr/10 over the first
    quarter, through the engine's step and schedule."""
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, s.steps // 4)
    schedule = TrainConfig(lr=s.lr, schedule="constant", warmup_epochs=1.0, warmup_factor=0.1)  # one "epoch" = warm-up
    model.train()
    step, epoch = 0, 0
    while step < s.steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            if step >= s.steps:
                break
            set_lr(opt, lr_at(step, schedule, warmup, s.steps))
            train_step(model, opt, x, y, loss_fn=F.cross_entropy, amp=s.amp)
            step += 1
        epoch += 1


# ---------------------------------------------------------------------------------------------- output
def write_gradient_report(report: GradientReport, directory: Path) -> Path:
    report.run_dir = directory
    write_csv(directory / "layers.csv", report.rows, ["net", "phase", "kind", "index", "layer", "norm", "weight_norm"])
    columns = ["net", "phase", "params", "loss", "layers", "first", "last", "last_conv", "first_over_last",
               "first_over_last_layer", "max", "min", "max_over_min", "max_layer", "min_layer", "first_block",
               "last_block", "block_first_over_last", "first_weight_norm"]  # fmt: skip
    write_csv(directory / "summary.csv", report.summary, columns)
    write_json(directory / "gradients.json", {"config": report.config, "summary": report.summary})
    report.figures = [plot_gradients(report, directory / "gradient_norms.png")]
    _write_markdown(report, directory / "report.md")
    return directory


def _pairs(nets: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    done: set[str] = set()
    for net in nets:
        if net in done:
            continue
        twin = twin_of(net)
        group = [n for n in (net, twin) if n in nets]
        group.sort(key=lambda n: not n.startswith("plain"))
        groups.append(group)
        done.update(group)
    return groups


def plot_gradients(report: GradientReport, path: Path) -> Path:
    """One column per twin pair; top: weight-gradient norm per layer, bottom: block-output gradient norm."""
    plt = pyplot()
    nets = list(dict.fromkeys(r["net"] for r in report.rows))
    groups = _pairs(nets)
    fig, axes = plt.subplots(2, len(groups), figsize=(4.6 * len(groups), 7), squeeze=False)
    colors = {"plain": "tab:red", "resnet": "tab:blue"}
    for col, group in enumerate(groups):
        for row, kind in enumerate(("weight", "block")):
            ax = axes[row][col]
            for net in group:
                for phase, style in (("init", "--"), ("trained", "-")):
                    pts = [r for r in report.rows if r["net"] == net and r["phase"] == phase and r["kind"] == kind]
                    if not pts:
                        continue
                    label = f"{net} {'init' if phase == 'init' else 'after ' + str(report.config['steps']) + ' steps'}"
                    color = colors.get("plain" if net.startswith("plain") else "resnet")
                    ax.plot([p["index"] for p in pts], [max(p["norm"], 1e-30) for p in pts], style, color=color,
                            label=label, linewidth=1.4, marker="." if len(pts) < 30 else None)  # fmt: skip
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel("weight layer (input -> output)" if kind == "weight" else "block (input -> output)")
            ax.set_ylabel("||dL/dW||" if kind == "weight" else "||dL/d block output||")
            ax.set_title(" vs ".join(group) + (": weight gradients" if kind == "weight" else ": block outputs"),
                         fontsize=10)  # fmt: skip
            ax.legend(fontsize=7)
    fig.suptitle(f"Gradient norm against depth on {report.config['data']} (one batch of {report.config['batch']})")
    return save_figure(fig, path)


def _write_markdown(report: GradientReport, path: Path) -> None:
    cfg = report.config
    table = markdown_table(
        report.summary,
        ["net", "phase", "loss", "first", "last", "last_conv", "first_over_last", "max_over_min",
         "block_first_over_last"],
        ["net", "phase", "loss", "first conv", "last layer (fc)", "last conv", "first/last conv", "max/min (all)",
         "block-output grad first/last"],
    )  # fmt: skip
    text = [
        "# Gradient flow: plain nets vs their residual twins", "",
        f"Data: {cfg['data']}; one fixed batch of {cfg['batch']} training images; nets: {', '.join(cfg['models'])}; "
        f"seed {cfg['seed']}. Measurement: {cfg['measurement']}. Training between the two measurements: "
        f"{cfg['steps']} steps, {cfg['optimizer']}, lr {cfg['lr']}, autocast {cfg['amp']}, device {cfg['device']}.",
        "", "![gradient norm against depth](gradient_norms.png)", "",
        "Top row: the 2-norm of each conv/linear weight gradient, input side on the left. Bottom row: the norm "
        "of the gradient with respect to each block's output. Dashed: at initialization; solid: after training.",
        "", "## Reading (computed from the numbers)", "", *[f"- {line}" for line in report.reading()], "",
        "## Summary", "", table, "",
        "Raw numbers: `layers.csv` (every layer), `summary.csv`, `gradients.json`.", "",
    ]  # fmt: skip
    write_text(path, "\n".join(text))
