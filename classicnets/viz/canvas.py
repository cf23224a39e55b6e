"""Drawing for the views: a matplotlib ``Figure`` on the Agg canvas (no pyplot, no global backend switch),
saved as a PNG into a folder it creates, and the image tiles every view draws."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def figure(width: float, height: float) -> Any:
    """A new ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches (constrained layout: titles and
    labels never overlap), drawn by Agg when saved."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG to ``path`` (its folder is created); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: the views write PNG files; give the output a .png name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def tile(ax: Any, img: np.ndarray, title: str = "", fontsize: float = 8, **imshow: Any) -> Any:
    """Show an image on ``ax`` without ticks: (H, W) with ``cmap`` or (H, W, 3) RGB. Without ``cmap`` it is a
    picture in [0, 1], drawn in grey on that fixed scale (not stretched to its own range)."""
    if img.ndim == 2 and "cmap" not in imshow:
        imshow.update(cmap="gray", vmin=imshow.get("vmin", 0.0), vmax=imshow.get("vmax", 1.0))
    im = ax.imshow(img, interpolation="nearest", **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)
    return im


def symmetric(values: np.ndarray) -> dict[str, float]:
    """``vmin``/``vmax`` that put zero in the middle of a colour scale (for weights and gradients)."""
    v = float(np.abs(values).max()) or 1.0
    return {"vmin": -v, "vmax": v}


def grid_shape(n: int, max_cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a square-ish grid for ``n`` tiles, at most ``max_cols`` wide, with the fewest empty
    cells (24 tiles at most 6 wide: 4 x 6, not 5 x 5 with one empty)."""
    side = int(np.ceil(np.sqrt(n)))
    widest = max(min(max_cols, n) if max_cols else side, 1)
    cols = min(range(min(side, widest), widest + 1), key=lambda c: (-(-n // c) * c - n, c))
    return -(-n // cols), cols


def tiles(where: Any, n: int, rows: int, cols: int) -> list[Any]:
    """``n`` axes in a ``rows`` x ``cols`` grid on a figure or subfigure; the unused cells are hidden."""
    axes = list(where.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.axis("off")
    return axes[:n]
