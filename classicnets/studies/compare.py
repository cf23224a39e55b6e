"""Train several classic nets on the same data with the same budget (through the engine's ``fit``) and put
them in one table: parameters, MACs at the input size the run used, speed, wall time and accuracy."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..models import create_model, model_card
from ..summary import summary
from ..train.config import TrainConfig
from .report import REPORT, markdown_table, print_flush, pyplot, run_dir, save_figure, write_csv, write_json, write_text

COLUMNS = ["model", "params", "macs", "input", "images_per_s", "wall_time_s", "best_val_acc", "test_acc", "epochs",
           "run_dir"]  # fmt: skip


@dataclass
class CompareReport:
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    run_dir: Path | None = None
    figures: list[Path] = field(default_factory=list)

    def reading(self) -> list[str]:
        rows = [r for r in self.rows if r["test_acc"] is not None]
        if not rows:
            return ["no run reported a test accuracy"]
        best = max(rows, key=lambda r: r["test_acc"])
        smallest = min(rows, key=lambda r: r["params"])
        fastest = min(rows, key=lambda r: r["wall_time_s"])
        lines = [f"Best test accuracy: {best['model']} {best['test_acc']:.2%} ({best['params']:,} parameters, "
                 f"{best['wall_time_s']:.0f} s)."]  # fmt: skip
        if smallest is not best:
            behind = 100 * (best["test_acc"] - smallest["test_acc"])
            lines.append(f"Smallest: {smallest['model']} ({smallest['params']:,} parameters) at "
                         f"{smallest['test_acc']:.2%}, {behind:.2f} points behind the best with "
                         f"{best['params'] / smallest['params']:.1f}x fewer parameters.")  # fmt: skip
        if fastest is not best:
            lines.append(f"Fastest to train: {fastest['model']} ({fastest['wall_time_s']:.0f} s, "
                         f"{fastest['test_acc']:.2%}).")  # fmt: skip
        front = [r for r in rows if not any(o["params"] <= r["params"] and o["test_acc"] > r["test_acc"] for o in rows)]
        front.sort(key=lambda r: r["params"])
        lines.append("No other net is both smaller and more accurate than: "
                     + ", ".join(f"{r['model']} ({r['params']:,}, {r['test_acc']:.2%})" for r in front) + ".")
        return lines


def compare(
    models: Sequence[str],
    data: str = "fashion-mnist",
    *,
    epochs: int = 5,
    subset: int | None = None,
    base: TrainConfig | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print_flush,
) -> CompareReport:
    """Train each model with ``base`` (default: TrainConfig defaults) overridden by data/epochs/subset, each
    run under ``<out>/models/<model>``; write ``compare.csv``, ``compare.md``, two plots and report.md to
    ``out`` (default ``runs/study-compare-<time>``)."""
    from ..train.engine import fit

    models = list(models)
    if not models:
        raise ValueError("compare needs at least one model, e.g. lenet5_modern,resnet20")
    if len(set(models)) != len(models):
        raise ValueError(f"compare: a model is listed twice in {','.join(models)}")
    for m in models:
        model_card(m)  # unknown names fail here, before any training
    base = base or TrainConfig()
    configs = [dataclasses.replace(base, model=name, data=data, epochs=epochs, subset=subset, name=name).validate()
               for name in models]  # fmt: skip
    if out is not None and (Path(out) / REPORT).exists():  # its runs are never replaced, so there is no --force
        raise ValueError(f"--out {out} already holds a report; compare never replaces one (nor the runs it "
                         "trained): choose another --out")  # fmt: skip
    directory = run_dir("compare", out)
    taken = [m for m in models if (directory / "models" / m / "last.pt").exists()]
    if taken:  # a run directory belongs to one run: compare never replaces its runs (so it has no --force)
        raise ValueError(f"{directory} already holds runs of {', '.join(taken)}; choose another --out")
    say = log or (lambda _: None)
    rows = []
    for name, config in zip(models, configs):
        config.out_dir = str(directory / "models")
        say(f"== {name}")
        result = fit(config, log=log)
        size = result.input_size  # (C, H, W) the net was trained at
        with torch.device("meta"):  # shapes only: counting parameters and MACs needs no weights
            model = create_model(name, num_classes=len(result.classes), in_chans=size[0], **config.model_kwargs)
        s = summary(model, size)
        rows.append({
            "model": name, "params": s.total_params, "macs": s.total_macs, "input": "x".join(map(str, size)),
            "images_per_s": result.train_images_per_s, "wall_time_s": result.wall_time_s,
            "best_val_acc": result.best_val_acc, "test_acc": result.test_acc, "epochs": result.epochs,
            "run_dir": str(result.run_dir),
        })  # fmt: skip
    cfg = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("model", "name", "out_dir")}
    cfg.update(data=data, epochs=epochs, subset=subset, models=models)
    report = CompareReport(rows, cfg)
    write_compare_report(report, directory)
    return report


def write_compare_report(report: CompareReport, directory: Path) -> Path:
    report.run_dir = directory
    write_csv(directory / "compare.csv", report.rows, COLUMNS)
    write_json(directory / "compare.json", {"config": report.config, "rows": report.rows})
    headers = ["model", "params", "MACs", "input", "images/s", "wall time (s)", "best val acc", "test acc"]
    pretty = [{**r, "params": f"{r['params']:,}", "macs": f"{r['macs']:,}", "images_per_s": f"{r['images_per_s']:,.0f}",
               "wall_time_s": f"{r['wall_time_s']:.0f}", "best_val_acc": _pct(r["best_val_acc"]),
               "test_acc": _pct(r["test_acc"])} for r in report.rows]  # fmt: skip
    table = markdown_table(pretty, COLUMNS[:8], headers)
    write_text(directory / "compare.md", table + "\n")
    report.figures = [plot_compare(report, "params", directory / "accuracy_vs_params.png"),
                      plot_compare(report, "wall_time_s", directory / "accuracy_vs_time.png")]  # fmt: skip
    cfg = report.config
    text = [
        "# Classic nets side by side", "",
        f"Data: {cfg['data']}; {_epochs(cfg['epochs'])}"
        + (f" on {cfg['subset']:,} training images" if cfg["subset"] else "")
        + f"; the engine's defaults otherwise ({cfg['optimizer']}, lr {cfg['lr']}, {cfg['schedule']}, batch "
        f"{cfg['batch_size']}, seed {cfg['seed']}). Accuracy: best-validation checkpoint on the test set.", "",
        table, "", "![accuracy against parameters](accuracy_vs_params.png)",
        "![accuracy against training time](accuracy_vs_time.png)", "",
        "## Reading (computed from the numbers)", "", *[f"- {line}" for line in report.reading()], "",
        "Raw numbers: `compare.csv`, `compare.json`; every run's directory is under `models/`.", "",
    ]  # fmt: skip
    write_text(directory / "report.md", "\n".join(text))
    return directory


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def plot_compare(report: CompareReport, x_key: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    rows = [r for r in report.rows if r["test_acc"] is not None]
    xs = [r[x_key] for r in rows]
    ax.scatter(xs, [100 * r["test_acc"] for r in rows], color="tab:blue", zorder=3, label="test")
    val = [r for r in rows if r["best_val_acc"] is not None]
    ax.scatter([r[x_key] for r in val], [100 * r["best_val_acc"] for r in val], marker="x", color="tab:gray",
               zorder=2, label="best validation")  # fmt: skip
    for r in rows:
        ax.annotate(r["model"], (r[x_key], 100 * r["test_acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters" if x_key == "params" else "training wall time (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report.config['data']}, {_epochs(report.config['epochs'])}: accuracy vs "
                 f"{'parameters' if x_key == 'params' else 'training time'}", fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


