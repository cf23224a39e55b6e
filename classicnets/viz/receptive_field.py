"""``show rf``: the input pixels one unit can see (its theoretical receptive field, from the layer geometry)
and the pixels it actually responds to (its effective receptive field: Luo, Li, Urtasun, Zemel,
"Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016).

The effective field is ``|d (sum over channels of the unit's activations) / d input|``, summed over the
input channels: for one image, or averaged over 16 seeded Gaussian-noise inputs when no image is given
(Luo et al. average over random inputs too). It is exactly zero outside the theoretical field, and usually
much smaller: most of the gradient comes from the centre, where the most paths meet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import canvas
from .geometry import box, trace
from .layers import check_map_layer, default_layer
from .trained import TrainedNet

NOISE_SAMPLES = 16  # inputs the effective field averages over when no image is given
MASS = 0.9  # the effective field's size is the side of the centred square holding this share of it


@dataclass(frozen=True)
class ReceptiveField:
    model: str
    layer: str
    layer_shape: tuple[int, int, int]  # (C, h, w)
    unit: tuple[int, int]  # (y, x) in the layer's map
    box: tuple[int, int, int, int]  # (top, left, bottom, right) input pixels, inclusive, not clipped to the image
    effective: np.ndarray  # (H, W) |gradient| of the unit w.r.t. the input, summed over input channels
    picture: np.ndarray | None  # the input as a picture; None when the field averages noise inputs
    inputs: int  # how many inputs ``effective`` averages: 1 image, or NOISE_SAMPLES noise draws

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the theoretical field in input pixels (padding included)."""
        top, left, bottom, right = self.box
        return (bottom - top + 1, right - left + 1)

    def effective_size(self, mass: float = MASS) -> float:
        """The side of the smallest square around the field's centre that holds ``mass`` of the effective field."""
        top, left, bottom, right = self.box
        rows, cols = np.indices(self.effective.shape)
        dist = np.maximum(np.abs(rows - (top + bottom) / 2), np.abs(cols - (left + right) / 2)).ravel()
        order = np.argsort(dist, kind="stable")
        share = np.cumsum(self.effective.ravel()[order]) / max(float(self.effective.sum()), 1e-30)
        return float(2 * dist[order][min(np.searchsorted(share, mass), len(share) - 1)] + 1)


def receptive_field(
    net: TrainedNet,
    image: str | os.PathLike | torch.Tensor | None = None,
    layer: str | None = None,
    unit: tuple[int, int] | None = None,
) -> ReceptiveField:
    """The theoretical and effective receptive field of ``unit`` (y, x) of ``layer`` for ``image``.

    ``layer`` defaults to the last stage whose map is larger than 1x1 for this input (as Grad-CAM's), and
    ``unit`` to its centre unit ``(h // 2, w // 2)``. Without ``image`` the effective field is averaged over
    16 seeded noise inputs of the model's input size (normalised scale: mean 0, std 1).
    """
    model = net.model
    if image is None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn((NOISE_SAMPLES, *net.record.input_size), generator=g)
    else:
        x = net.input(image)
    layer = layer if layer is not None else default_layer(model, x[:1])
    shape = check_map_layer(model, x[:1], layer)
    _, h, w = shape
    y0, x0 = (h // 2, w // 2) if unit is None else _check_unit(unit, layer, h, w)
    field = box(trace(model, x[:1], layer), y0, x0, *x.shape[2:])
    effective = _gradient(model, x, layer, y0, x0)
    return ReceptiveField(net.name, layer, shape, (y0, x0), field, effective,
                          net.picture(x) if image is not None else None, len(x))  # fmt: skip


def _check_unit(unit: tuple[int, int], layer: str, h: int, w: int) -> tuple[int, int]:
    if len(unit) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in unit):
        raise ValueError(f"unit must be two integers (y, x), got {unit!r}")
    y, x = unit
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"unit ({y}, {x}) is outside {layer}'s {h}x{w} map; pick y in 0..{h - 1} and x in "
                         f"0..{w - 1}")  # fmt: skip
    return y, x


def _gradient(model: torch.nn.Module, x: torch.Tensor, layer: str, y: int, x0: int) -> np.ndarray:
    """Mean over the batch of |d sum_c A[c, y, x0] / d input|, summed over input channels: (H, W)."""
    x = x.clone().requires_grad_(True)
    units: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        units.append(out[:, :, y, x0].sum())  # taken now: a later in-place op must not change it

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(units[-1], x)  # samples are independent in eval mode: per-sample gradients
    return grad.abs().sum(1).mean(0).numpy()


def plot_receptive_field(rf: ReceptiveField, path: str | os.PathLike, twin: ReceptiveField | None = None) -> Path:
    """One PNG: a row per net; the input with the theoretical field drawn as a rectangle, and the effective
    field as a heat map with the same rectangle."""
    from matplotlib.patches import Rectangle

    nets = [rf] if twin is None else [rf, twin]
    fig = canvas.figure(7.6, 3.5 * len(nets) + 0.3)
    axes = fig.subplots(len(nets), 2, squeeze=False)
    for (left, right), r in zip(axes, nets):
        height, width = r.effective.shape
        picture = r.picture if r.picture is not None else np.full((height, width), 0.5)
        what = "the input" if r.picture is not None else "grey (no image given)"
        beyond = f", beyond the {height}x{width} input" if r.size[0] > height or r.size[1] > width else ""
        canvas.tile(left, picture, f"theoretical field {r.size[0]}x{r.size[1]}{beyond}\nover {what}", 8)
        side = r.effective_size()
        noise = f", mean of {r.inputs} noise inputs" if r.inputs > 1 else ""
        im = canvas.tile(right, r.effective, f"effective field |d unit / d input|{noise}\n{MASS:.0%} of it within "
                         f"the central {side:.0f}x{side:.0f}", 8, cmap="magma")  # fmt: skip
        fig.colorbar(im, ax=right, fraction=0.046)
        top, lft, bottom, rgt = r.box
        for ax in (left, right):
            ax.add_patch(Rectangle((lft - 0.5, top - 0.5), rgt - lft + 1, bottom - top + 1, fill=False, lw=1.5,
                                   ec="cyan" if ax is right else "red"))  # fmt: skip
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
        c, h, w = r.layer_shape
        left.set_ylabel(f"{r.model}\n{r.layer} ({c}x{h}x{w}), unit {r.unit}", fontsize=9)
    return canvas.save(fig, path)
