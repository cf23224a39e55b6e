"""The degradation experiment (He et al. 2016, Fig. 6): plain and residual CIFAR nets of growing depth,
trained with one recipe on the same data.

Every net is built right after ``torch.manual_seed(seed)``, so a plain net and its residual twin start from
identical weights (option A shortcuts own no parameters), and all nets read the same batches in the same
order (the loader's draws depend only on the seed and the epoch). Each run records digests of its initial
weights and of every batch it trained on, so the report can show that the twins differ only in the skips.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..data import InMemoryLoader
from ..data.arrays import ArrayDataset, Splits, seeded_generator
from ..train.runtime import amp_dtype
from ..train.schedule import lr_at
from ..train.step import evaluate, set_lr, train_step
from .recipe import Recipe
from .report import (
    fmt,
    markdown_table,
    print_flush,
    pyplot,
    read_csv,
    check_out,
    run_dir,
    save_figure,
    state_digest,
    write_csv,
    write_json,
    write_text,
)
from .setup import build_net, check_positive_int, get_data, resolve_device, torch_threads

FAMILIES = ("plain", "resnet")


@dataclass
class DegradationReport:
    rows: list[dict[str, Any]]  # one per net per epoch
    runs: list[dict[str, Any]]  # one per net: params, digests, final errors, time
    config: dict[str, Any]
    run_dir: Path | None = None
    figures: list[Path] = field(default_factory=list)

    def per_seed(self, net: str, key: str = "train_err") -> list[float]:
        """``key`` after the last epoch, one value per seed."""
        return [r[key] for r in self.runs if r["net"] == net]

    def final(self, net: str, key: str = "train_err") -> float:
        """``key`` after the last epoch, the mean over seeds."""
        values = self.per_seed(net, key)
        return sum(values) / len(values)

    def reading(self) -> list[str]:
        """What the numbers show, worded from the numbers; with several seeds, how many of them agree."""
        depths = sorted({r["depth"] for r in self.runs})
        seeds = sorted({r["seed"] for r in self.runs})
        n = len(seeds)
        shallow, deep = depths[0], depths[-1]
        if shallow == deep:
            return [f"only one depth ({deep}) was trained: nothing to compare across depth"]
        has = {r["net"] for r in self.runs}
        lines, wins, cost = [], {}, {}
        for family in FAMILIES:
            a, b = f"{family}{shallow}", f"{family}{deep}"
            if a not in has or b not in has:
                continue
            ea, eb = self.final(a), self.final(b)
            wins[family], cost[family] = _wins(self, b, a), eb - ea
            rel = "higher" if eb > ea else "lower" if eb < ea else "the same"
            agree = f"; {b} lower in {wins[family]} of {n} seeds" if n > 1 else ""
            lines.append(f"{b} ends with {rel} training error than {a} ({fmt(eb)} vs {fmt(ea)}{agree}); test error "
                         f"{fmt(self.final(b, 'test_err'))} vs {fmt(self.final(a, 'test_err'))}.")  # fmt: skip
            order = [self.final(f"{family}{d}") for d in depths if f"{family}{d}" in has]
            trend = ("rises with every step in depth" if all(x < y for x, y in zip(order, order[1:]))
                     else "falls with every step in depth" if all(x > y for x, y in zip(order, order[1:]))
                     else "does not change monotonically with depth")  # fmt: skip
            lines.append(f"Final training error of the {'plain' if family == 'plain' else 'residual'} nets "
                         f"{trend}{' (means over the seeds)' if n > 1 else ''}: "
                         + ", ".join(f"{family}{d} {fmt(e)}" for d, e in zip(depths, order)) + ".")  # fmt: skip
        lines += self._verdict(shallow, deep, n, wins, cost)
        gaps = [(d, self.final(f"plain{d}") - self.final(f"resnet{d}"))
                for d in depths if f"plain{d}" in has and f"resnet{d}" in has]  # fmt: skip
        if gaps:
            widens = all(x < y for (_, x), (_, y) in zip(gaps, gaps[1:]))
            lines.append("Plain minus residual final training error at each depth: "
                         + ", ".join(f"{d}: {g:+.3f}" for d, g in gaps)
                         + (" (the gap widens with depth)." if widens else "."))  # fmt: skip
            pairs = [(d, seed) for d, _ in gaps for seed in seeds]
            better = sum(1 for d, seed in pairs if _at(self, f"resnet{d}", seed) < _at(self, f"plain{d}", seed))
            lines.append(f"The residual net ends with lower training error than its plain twin in {better} of "
                         f"{len(pairs)} (depth, seed) pairs.")  # fmt: skip
        same = self.twins_identical()
        if same:
            ok = [d for d, good in same.items() if good]
            bad = [d for d, good in same.items() if not good]
            lines.append((f"Twins checked (digests in final.csv): identical initial weights and batches at depth "
                          f"{', '.join(map(str, ok))}" if ok else "Twins checked")
                         + (f"; DIFFERENT at depth {', '.join(map(str, bad))}" if bad else "") + ".")  # fmt: skip
        return lines

    def _verdict(self, shallow: int, deep: int, n: int, wins: dict[str, int], cost: dict[str, float]) -> list[str]:
        """The Fig. 6 question: does depth hurt the plain nets and help the residual ones, and in how many seeds."""
        if "plain" not in wins or "resnet" not in wins:
            return []
        plain_degrades = wins["plain"] == 0 and cost["plain"] > 0
        resnet_gains = wins["resnet"] == n
        costs = (f"going from {shallow} to {deep} layers changes the training error of the plain nets by "
                 f"{cost['plain']:+.3f} and of the residual nets by {cost['resnet']:+.3f}")  # fmt: skip
        if plain_degrades and resnet_gains:
            if n == 1:
                return [f"In this seed this is the degradation problem and its fix, as in He et al. Fig. 6: {costs}. "
                        "One seed of a short run is noisy: check with --seeds 0,1,2 before trusting the residual "
                        "ranking."]  # fmt: skip
            return [f"Degradation and its fix, as in He et al. Fig. 6, in all {n} seeds: {costs}."]
        if plain_degrades:
            mixed = (f"; the {deep}-layer residual net beats the {shallow}-layer one in only {wins['resnet']} of {n} "
                     "seeds" if n > 1 else "")  # fmt: skip
            return [f"Degradation shows for the plain nets{f' in all {n} seeds' if n > 1 else ''}, but on this budget "
                    f"the residual nets do not profit from depth{mixed} (deep nets need more steps: He et al. train "
                    f"for 64k iterations). What the shortcuts do show: {costs}."]  # fmt: skip
        return [f"No clear degradation on this budget: the plain {deep}-layer net is not worse than the plain "
                f"{shallow}-layer net{' in every seed' if n > 1 else ''} ({costs})."]  # fmt: skip

    @classmethod
    def load(cls, directory: str | Path) -> "DegradationReport":
        """Read back a run directory (to re-plot or re-read it without training again)."""
        directory = Path(directory)
        saved = json.loads((directory / "degradation.json").read_text())
        rows = [{k: (v if k == "net" else float(v) if v != "" else None) for k, v in r.items()}
                for r in read_csv(directory / "epochs.csv")]  # fmt: skip
        for r in rows:
            r["epoch"], r["step"], r["seed"] = int(r["epoch"]), int(r["step"]), int(r["seed"])
        return cls(rows, saved["runs"], saved["config"], directory)

    def twins_identical(self) -> dict[int, bool]:
        """depth -> whether, for every seed, the plain and residual twins had equal initial-weight and batch
        digests."""
        out: dict[int, bool] = {}
        for d in sorted({r["depth"] for r in self.runs}):
            for seed in sorted({r["seed"] for r in self.runs}):
                pair = [r for r in self.runs if r["depth"] == d and r["seed"] == seed]
                if len(pair) == 2:
                    same = pair[0]["init_digest"] == pair[1]["init_digest"] and \
                           pair[0]["batch_digest"] == pair[1]["batch_digest"]  # fmt: skip
                    out[d] = out.get(d, True) and same
        return out


def degradation(
    depths: Sequence[int] = (20, 32, 44, 56),
    data: str | Splits = "fashion-mnist",
    *,
    recipe: Recipe | None = None,
    families: Sequence[str] = FAMILIES,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    write: bool = True,
    log: Callable[[str], None] | None = print_flush,
    on_batch: Callable[[str, int, torch.Tensor, torch.Tensor], None] | None = None,
    threads: int | None = None,
) -> DegradationReport:
    """Train ``plainD`` and ``resnetD`` for each depth D with one ``recipe``; report training and test error
    after every epoch. Files (CSV, JSON, PNG, report.md) go to ``out`` (default
    ``runs/study-degradation-<time>``) unless ``write`` is False. ``on_batch(net, step, x, y)`` sees every
    training batch (for checks); ``threads`` sets torch's intra-op threads for the run."""
    check_out(out, force)  # before any work: a report is never replaced without --force
    recipe = (recipe or Recipe()).check()
    depths = [check_positive_int("depth", d) for d in depths]
    for d in depths:
        if d < 8 or (d - 2) % 6:
            raise ValueError(f"CIFAR depths are 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {d}")
    if not depths or any(f not in FAMILIES for f in families):
        raise ValueError(f"families must be some of {FAMILIES}, got {list(families)}")
    say = log or (lambda _: None)
    splits = get_data(data, data_dir)
    dev = resolve_device(device)
    train_set, test_set, train_eval = _datasets(splits, recipe)
    common = dict(device=dev, mean=splits.mean, std=splits.std, channels_last=True)
    evals = {"train": InMemoryLoader(train_eval, 500, shuffle=False, **common),
             "test": InMemoryLoader(test_set, 500, shuffle=False, **common)}  # fmt: skip
    dtype = amp_dtype(recipe.amp, dev)
    config = {**recipe.__dict__, "depths": depths, "families": list(families), "data": splits.name,
              "train_images": len(train_set), "test_images": len(test_set), "train_eval_images": len(train_eval),
              "steps_per_epoch": math.ceil(len(train_set) / recipe.batch_size),
              "autocast": str(dtype).replace("torch.", "") if dtype else "off",
              "device": str(dev), "input": "x".join(map(str, splits.shape)),
              "optimizer": f"SGD momentum {recipe.momentum}, weight decay {recipe.weight_decay}"}  # fmt: skip
    say(f"degradation: {len(train_set):,} training images, {recipe.epochs} epochs of {config['steps_per_epoch']} "
        f"steps, "
        f"batch {recipe.batch_size}, lr {recipe.lr} ({recipe.schedule}, {recipe.warmup_epochs} warm-up epochs), "
        f"autocast {config['autocast']}, on {dev}, seeds {', '.join(map(str, recipe.seeds))}")  # fmt: skip
    rows, runs = [], []
    with torch_threads(threads):
        config["threads"] = torch.get_num_threads()
        for seed in recipe.seeds:
            # the batches depend only on (seed, epoch): every net of this seed reads the same ones
            loader = InMemoryLoader(train_set, recipe.batch_size, shuffle=True, seed=seed, **common)
            bench = Bench(splits.num_classes, splits.shape[0], loader, evals, recipe, dtype, say, on_batch)
            for family in families:
                for depth in depths:
                    net_rows, run = train_one(f"{family}{depth}", bench, seed)
                    rows += [{**r, "seed": seed} for r in net_rows]
                    runs.append({**run, "family": family, "depth": depth, "seed": seed})
    report = DegradationReport(rows, runs, config)
    if write:
        write_degradation_report(report, run_dir("degradation", out, force))
    return report


def _at(report: "DegradationReport", net: str, seed: int, key: str = "train_err") -> float:
    return next(r[key] for r in report.runs if r["net"] == net and r["seed"] == seed)


def _wins(report: "DegradationReport", a: str, b: str, key: str = "train_err") -> int:
    """In how many seeds ``a`` ended below ``b``."""
    by_seed = {r["seed"]: r[key] for r in report.runs if r["net"] == b}
    return sum(1 for r in report.runs if r["net"] == a and r[key] < by_seed.get(r["seed"], -math.inf))


def _datasets(splits: Splits, recipe: Recipe) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    train = splits.train
    if recipe.subset is not None and recipe.subset < len(train):
        pick = torch.randperm(len(train), generator=seeded_generator(recipe.seeds[0], "subset"))[: recipe.subset]
        train = train.subset(pick.sort().values)
    test = splits.test
    if recipe.test_size is not None and recipe.test_size < len(test):
        pick = torch.randperm(len(test), generator=seeded_generator(recipe.seeds[0], "test-sample"))[: recipe.test_size]
        test = test.subset(pick.sort().values)
    train_eval = train
    if recipe.train_eval_size is not None and recipe.train_eval_size < len(train):
        pick = torch.randperm(len(train), generator=seeded_generator(recipe.seeds[0], "train-eval"))
        train_eval = train.subset(pick[: recipe.train_eval_size].sort().values)
    return train, test, train_eval


@dataclass
class Bench:
    """What every net of one seed trains and is measured with."""

    num_classes: int
    in_chans: int
    loader: InMemoryLoader  # the training batches, the same for every net of the seed
    evals: dict[str, InMemoryLoader]  # "train" and "test": the error measurements after each epoch
    recipe: Recipe
    amp: torch.dtype | None
    say: Callable[[str], None]
    on_batch: Callable[[str, int, torch.Tensor, torch.Tensor], None] | None = None


def train_one(
    name: str, bench: Bench, seed: int, build: Callable[[], torch.nn.Module] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One net, one recipe: per-epoch rows and a run record with digests of the initial weights and batches.
    ``build()`` makes the net (default: ``build_net(name)``); it runs right after ``torch.manual_seed(seed)``."""
    recipe, loader = bench.recipe, bench.loader
    torch.manual_seed(seed)
    model = build() if build is not None else build_net(name, num_classes=bench.num_classes, in_chans=bench.in_chans)
    model = model.to(loader.device, memory_format=torch.channels_last)
    init_digest = state_digest(model)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)  # fmt: skip
    lr_config = recipe.train_config()
    steps_per_epoch = len(loader)
    total = recipe.epochs * steps_per_epoch
    batches = hashlib.sha256()
    rows, step, t_start = [], 0, time.perf_counter()

    def diverged(loss_value: float) -> None:
        raise RuntimeError(f"{name}: loss became {loss_value} at step {step}; lower the lr")

    for epoch in range(recipe.epochs):
        loader.set_epoch(epoch)
        model.train()
        loss_sum, wrong, seen, t0 = 0.0, 0, 0, time.perf_counter()
        for x, y in loader:
            lr = lr_at(step, lr_config, steps_per_epoch, total)
            set_lr(opt, lr)
            if bench.on_batch is not None:
                bench.on_batch(name, step, x, y)
            batches.update(y.cpu().numpy().tobytes())
            batches.update(x[:, :, ::7, ::7].float().cpu().numpy().tobytes())  # a cheap fingerprint of the pixels
            loss, logits = train_step(model, opt, x, y, loss_fn=F.cross_entropy, amp=bench.amp, diverged=diverged)
            step += 1
            loss_sum += loss.item() * len(y)
            wrong += int((logits.argmax(1) != y).sum())
            seen += len(y)
        train_time = time.perf_counter() - t0
        train_eval, test = (evaluate(model, bench.evals[k], bench.num_classes, amp=bench.amp) for k in ("train", "test"))
        rows.append({
            "net": name, "epoch": epoch + 1, "step": step, "lr": lr, "train_loss": loss_sum / seen,
            "train_err_running": wrong / seen, "train_err": 1 - train_eval["acc"], "train_eval_loss": train_eval["loss"],
            "test_err": 1 - test["acc"], "test_loss": test["loss"], "images_per_s": seen / train_time,
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    last = rows[-1]
    elapsed = time.perf_counter() - t_start
    bench.say(f"{name:>10}{f' seed {seed}' if len(recipe.seeds) > 1 else ''}: train err "
              + " ".join(f"{r['train_err']:.3f}" for r in rows)
              + f" | test err {last['test_err']:.3f}  ({elapsed:.0f} s, {last['images_per_s']:.0f} img/s)")  # fmt: skip
    run = {"net": name, "params": sum(p.numel() for p in model.parameters()), "init_digest": init_digest,
           "batch_digest": batches.hexdigest()[:16], "steps": step, "train_err": last["train_err"],
           "train_err_running": last["train_err_running"], "test_err": last["test_err"],
           "seconds": elapsed}  # fmt: skip
    return rows, run


# ---------------------------------------------------------------------------------------------- output
def write_degradation_report(report: DegradationReport, directory: Path) -> Path:
    report.run_dir = directory
    write_csv(directory / "epochs.csv", report.rows,
              ["net", "seed", "epoch", "step", "lr", "train_loss", "train_err_running", "train_err", "train_eval_loss",
               "test_err", "test_loss", "images_per_s", "seconds"])  # fmt: skip
    write_csv(directory / "final.csv", report.runs,
              ["net", "family", "depth", "seed", "params", "steps", "train_err", "train_err_running", "test_err",
               "seconds", "init_digest", "batch_digest"])  # fmt: skip
    write_json(directory / "degradation.json", {"config": report.config, "runs": report.runs})
    report.figures = [plot_degradation(report, directory / "degradation.png"),
                      plot_final(report, directory / "final_error.png")]  # fmt: skip
    _write_markdown(report, directory / "report.md")
    return directory


def _mean_curve(report: DegradationReport, net: str, key: str) -> tuple[list[int], list[float]]:
    """(epochs, mean over seeds of ``key`` after each epoch)."""
    by_epoch: dict[int, list[float]] = {}
    for r in report.rows:
        if r["net"] == net:
            by_epoch.setdefault(r["epoch"], []).append(r[key])
    epochs = sorted(by_epoch)
    return epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def _seeds_note(report: DegradationReport) -> str:
    n = len({r["seed"] for r in report.runs})
    return f", mean of {n} seeds" if n > 1 else ""


def plot_degradation(report: DegradationReport, path: Path) -> Path:
    """He et al. Fig. 6: thin lines training error, bold lines test error; plain left, residual right."""
    plt = pyplot()
    families = [f for f in FAMILIES if any(r["family"] == f for r in report.runs)]
    depths = sorted({r["depth"] for r in report.runs})
    cmap = plt.get_cmap("viridis")
    colors = {d: cmap(i / max(1, len(depths) - 1) * 0.85) for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), sharey=True, squeeze=False)
    top = max(max(r["train_err"], r["test_err"]) for r in report.rows)
    for ax, family in zip(axes[0], families):
        for d in depths:
            net = f"{family}{d}"
            if not any(r["net"] == net for r in report.rows):
                continue
            epochs, train = _mean_curve(report, net, "train_err")
            _, test = _mean_curve(report, net, "test_err")
            ax.plot(epochs, [100 * v for v in train], "-", lw=1, color=colors[d], marker=".")
            ax.plot(epochs, [100 * v for v in test], "-", lw=2.6, color=colors[d], label=f"{family}-{d}")
        ax.set_title(f"{'plain' if family == 'plain' else 'ResNet'} (thin: training error, bold: test error)",
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylim(0, min(100, 100 * top * 1.05))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("error (%)")
    cfg = report.config
    fig.suptitle(f"{cfg['data']}: {cfg['train_images']:,} training images, {cfg['epochs']} epochs, batch "
                 f"{cfg['batch_size']}, lr {cfg['lr']} {cfg['schedule']}{_seeds_note(report)}",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, path)


def plot_final(report: DegradationReport, path: Path) -> Path:
    """Final training and test error against depth, plain vs residual (bars: range over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    depths = sorted({r["depth"] for r in report.runs})
    for family, color in (("plain", "tab:red"), ("resnet", "tab:blue")):
        ds = [d for d in depths if any(r["net"] == f"{family}{d}" for r in report.runs)]
        if not ds:
            continue
        for key, marker, lw, what in (("train_err", "o", 1, "training"), ("test_err", "s", 2.6, "test")):
            mean = [100 * report.final(f"{family}{d}", key) for d in ds]
            lo = [m - 100 * min(report.per_seed(f"{family}{d}", key)) for m, d in zip(mean, ds)]
            hi = [100 * max(report.per_seed(f"{family}{d}", key)) - m for m, d in zip(mean, ds)]
            ax.errorbar(ds, mean, yerr=[lo, hi], fmt=f"-{marker}", color=color, lw=lw, capsize=3,
                        label=f"{family} {what}")  # fmt: skip
    ax.set_xlabel("depth (weighted layers)")
    ax.set_ylabel("error after the last epoch (%)")
    ax.set_title(f"Error after {report.config['epochs']} epochs{_seeds_note(report)}", fontsize=10)
    ax.set_xticks(depths)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _write_markdown(report: DegradationReport, path: Path) -> None:
    cfg = report.config
    seeds = sorted({r["seed"] for r in report.runs})
    nets = sorted({(r["depth"], r["family"], r["net"]) for r in report.runs})
    summary = [{"net": net, "params": next(r["params"] for r in report.runs if r["net"] == net),
                "steps": next(r["steps"] for r in report.runs if r["net"] == net),
                "train_err": report.final(net), "test_err": report.final(net, "test_err"),
                "per_seed": " / ".join(f"{v:.3f}" for v in report.per_seed(net)),
                "seconds": sum(report.per_seed(net, "seconds"))} for _, _, net in nets]  # fmt: skip
    columns = ["net", "params", "steps", "train_err", "test_err", "seconds"]
    headers = ["net", "params", "steps", "final training error", "final test error", "seconds"]
    if len(seeds) > 1:
        columns.insert(4, "per_seed")
        headers.insert(4, f"training error per seed ({', '.join(map(str, seeds))})")
    seconds = sum(r["seconds"] for r in report.runs)
    text = [
        "# Degradation: plain vs residual nets of growing depth", "",
        f"Data: {cfg['data']} ({cfg['input']}), {cfg['train_images']:,} training images, {cfg['epochs']} epochs of "
        f"{cfg['steps_per_epoch']} steps (batch {cfg['batch_size']}); {cfg['optimizer']}, lr {cfg['lr']} "
        f"({cfg['schedule']}, linear warm-up from lr/10 over {cfg['warmup_epochs']} epochs); autocast "
        f"{cfg['autocast']} on {cfg['device']} ({cfg.get('threads', '?')} threads); "
        f"seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}. "
        f"Training error: the end-of-epoch weights on {cfg['train_eval_images']:,} of the training images (eval "
        f"mode); test error: on {cfg['test_images']:,} test images. Training time of all nets: {seconds / 60:.1f} min.",
        "", "![training and test error per epoch](degradation.png)", "",
        "Thin lines: training error; bold lines: test error (as He et al. Fig. 6)"
        + (" ; means over the seeds." if len(seeds) > 1 else "."), "",
        "![final error against depth](final_error.png)", "",
        "## Reading (computed from the numbers)", "", *[f"- {line}" for line in report.reading()], "",
        "## Final numbers", "", markdown_table(summary, columns, headers), "",
        "Raw numbers: `epochs.csv` (every net, seed and epoch), `final.csv` (with the digests of the initial weights "
        "and of the batches), `degradation.json`.", "",
    ]  # fmt: skip
    write_text(path, "\n".join(text))
