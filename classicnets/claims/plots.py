"""The claims' figures: curves with their spread over seeds, per-seed bars, and the steps-to-target curves."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..studies.report import pyplot, save_figure


def plot_curves(trial: Any, variants: list[str], key: str, path: Path, title: str,
                styles: dict[str, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """``key`` per epoch for each variant: the mean over seeds as a line, min-max over seeds as a band;
    ``styles`` maps a variant to matplotlib line keywords (colour, dashes)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for v in variants:
        epochs = sorted({r["epoch"] for r in trial.rows if r["net"] == v})
        values = [[r[key] for r in trial.rows if r["net"] == v and r["epoch"] == e] for e in epochs]
        mean = [100 * statistics.fmean(vs) for vs in values]
        style = (styles or {}).get(v, {})
        line = ax.plot(epochs, mean, marker="o", ms=3, label=f"{v} ({100 * statistics.fmean(values[-1]):.2f}%)", **style)
        ax.fill_between(epochs, [100 * min(vs) for vs in values], [100 * max(vs) for vs in values], alpha=0.12,
                        color=line[0].get_color())  # fmt: skip
    seeds = len({r["seed"] for r in trial.rows})
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_err", " error").replace("_", " ") + " (%)")
    ax.set_title(f"{title}\nmean of {seeds} seed{'s' if seeds > 1 else ''}, band: min-max", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_bars(groups: dict[str, list[float]], path: Path, title: str) -> Path:
    """One row per group: a dot per seed and the mean as a bar, on an axis zoomed to the values (the
    differences the claims are about are a few points, invisible on a 0-100 scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(groups) + 1.6))
    labels = list(groups)
    everything = [100 * v for vs in groups.values() for v in vs]
    lo, hi = min(everything), max(everything)
    pad = max(0.5, 0.15 * (hi - lo))
    for i, label in enumerate(labels):
        values = [100 * v for v in groups[label]]
        mean = statistics.fmean(values)
        ax.plot([mean, mean], [i - 0.3, i + 0.3], color="C0" if i % 2 == 0 else "C1", lw=3)
        ax.plot(values, [i] * len(values), "k.", ms=7)
        ax.text(max(values) + 0.1 * pad, i, f"{mean:.2f}%", va="center", fontsize=8)
    ax.set_xlim(lo - pad, hi + 2 * pad)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("test error (%): bar = mean over seeds, dots = seeds")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def plot_steps(rows: list[dict[str, Any]], path: Path, target: float, title: str) -> Path:
    """Running training error against steps, every (activation, seed) at its best learning rate."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    curves: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in rows:
        curves.setdefault((r["act"], r["seed"], r["lr"]), []).append(r)
    best: dict[tuple[str, int], tuple[tuple[int, float], float]] = {}  # (act, seed) -> (score, lr)
    for (act, seed, lr), curve in curves.items():  # the lr that reached the target soonest (or ended lowest)
        score = (len(curve) if curve[-1]["running_err"] <= target else 10**9, curve[-1]["running_err"])
        if (act, seed) not in best or score < best[(act, seed)][0]:
            best[(act, seed)] = (score, lr)
    first_seed = {act: min(s for a, s in best if a == act) for act, _ in best}
    for (act, seed), (_, lr) in sorted(best.items()):
        curve = curves[(act, seed, lr)]
        first = seed == first_seed[act]
        ax.plot([x["step"] for x in curve], [100 * x["running_err"] for x in curve],
                color="C0" if act == "relu" else "C3", ls="-" if first else ":", alpha=0.8,
                label=f"{act} (lr {lr}, seed {seed})" if first else None)  # fmt: skip
    ax.axhline(100 * target, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("step (batch of 128)")
    ax.set_ylabel("running training error (%)")
    ax.set_title(f"{title}\none line per seed; dashed: the {target:.0%} target", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
