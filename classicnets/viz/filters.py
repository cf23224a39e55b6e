"""``show filters``: the kernels of a convolution as an image grid.

The first convolution (the model card's ``first_conv``) is the one layer whose kernels live in pixel space,
so they can be read directly: oriented edges, colour blobs, centre-surround detectors (Krizhevsky et al.
2012, Fig. 3). On an RGB input each kernel is drawn as one colour patch; otherwise, and for deeper layers,
each (output, input channel) kernel is drawn in grey, zero at mid-grey.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import model_card
from . import canvas
from .layers import check_conv_layer
from .trained import TrainedNet

MAX_COLOUR = 64  # colour kernels shown (AlexNet's 96 would be unreadable small)
MAX_OUT, MAX_IN = 8, 8  # grey kernels: the first output channels, each over its first input channels


@dataclass(frozen=True)
class FilterGrid:
    """Kernels of one convolution: ``weights`` (out_shown, in_shown, kh, kw) as stored (no rescaling)."""

    model: str
    layer: str
    shape: tuple[int, ...]  # the layer's full kernel shape (out, in, kh, kw)
    weights: np.ndarray
    colour: bool  # True: draw each kernel's 3 input channels as one RGB patch

    def patches(self) -> np.ndarray:
        """RGB patches (out_shown, kh, kw, 3) in [0, 1], each kernel scaled on its own so 0 is grey 0.5."""
        w = self.weights.transpose(0, 2, 3, 1)
        scale = np.abs(w).reshape(len(w), -1).max(1).clip(min=1e-12)[:, None, None, None]
        return 0.5 + 0.5 * w / scale


def kernel(module: nn.Module) -> torch.Tensor:
    """A convolution's dense kernel (out, in, kh, kw); LeNet-5's C3 scatters its 60 connected kernels into
    zeros exactly as its forward pass does."""
    if isinstance(module, nn.Conv2d):
        return module.weight.detach()
    k, out_c, in_c = module.kernel_size, module.out_channels, module.in_channels
    dense = module.weight.detach().new_zeros(out_c * in_c, k, k).index_copy(0, module.index, module.weight.detach())
    return dense.view(out_c, in_c, k, k)


def filters(net: TrainedNet, layer: str | None = None) -> FilterGrid:
    """The kernels of ``layer`` (default: the first conv). A 3-channel first conv gives up to 64 colour
    kernels; any other layer the first 8 output channels over their first 8 input channels."""
    first = model_card(net.name).first_conv
    name = layer if layer is not None else first
    w = kernel(check_conv_layer(net.model, name)).float().cpu()
    colour = name == first and w.shape[1] == 3
    shown = w[:MAX_COLOUR] if colour else w[:MAX_OUT, :MAX_IN]
    return FilterGrid(net.name, name, tuple(w.shape), shown.numpy(), colour)


def plot_filters(grid: FilterGrid, path: str | os.PathLike) -> Path:
    """One PNG: the colour kernels in a square-ish grid, or a grid of grey kernels (rows: output channels,
    columns: input channels) on one symmetric scale, so sizes compare across the layer."""
    out_c, in_c = grid.weights.shape[:2]
    o, i, kh, kw = grid.shape
    title = f"{grid.model}  {grid.layer}: {o} kernels of {i}x{kh}x{kw}"
    if grid.colour or in_c == 1:  # one patch per output channel, in a square-ish grid
        rows, cols = canvas.grid_shape(out_c)
        inch = 1.0 if out_c <= 16 else 0.75  # per kernel
        fig = canvas.figure(max(inch * cols + 0.4, 3.6), inch * rows + 0.9)
        axes = canvas.tiles(fig, out_c, rows, cols)
        if grid.colour:
            for ax, patch in zip(axes, grid.patches()):
                canvas.tile(ax, patch)
            title += f" (first {out_c})" if out_c < o else ""
            title += "\neach kernel scaled on its own, zero = grey"
        else:
            scale = canvas.symmetric(grid.weights)
            for n, ax in enumerate(axes):
                canvas.tile(ax, grid.weights[n, 0], str(n), 7, **scale)
            title += "\none scale, zero = grey"
    else:
        fig = canvas.figure(0.7 * in_c + 1.0, 0.7 * out_c + 1.0)
        axes = fig.subplots(out_c, in_c, squeeze=False)
        scale = canvas.symmetric(grid.weights)
        for r in range(out_c):
            for c in range(in_c):
                canvas.tile(axes[r, c], grid.weights[r, c], **scale)
                if r == 0:
                    axes[r, c].set_title(f"in {c}", fontsize=7)
            axes[r, 0].set_ylabel(f"out {r}", fontsize=7)
        rows = f"first {out_c} of {o} outputs" if out_c < o else f"all {o} outputs"
        cols = f"first {in_c} of {i} inputs" if in_c < i else f"all {i} inputs"
        title += f"\n{rows} x {cols}, one scale, zero = grey"
    fig.suptitle(title, fontsize=9)
    return canvas.save(fig, path)
