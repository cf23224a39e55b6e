"""``show features``: what every stage of the net computes from one input (the feature maps of the model
card's stages: LeNet-5's C1, S2, C3, S4, C5; a ResNet's stem and each stage), with their shapes, and
optionally the same input through the plain/residual twin beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..transfer import stage_outputs
from . import canvas
from .layers import stage_label
from .trained import TrainedNet

MAX_CHANNELS = 8  # channels shown per stage by default


@dataclass(frozen=True)
class StageMaps:
    """One stage's output for one input: its first channels ``maps`` (n, H, W) and full ``shape`` (C, H, W)."""

    name: str  # module name (model card)
    label: str  # what the figure calls it: C1 .. C5 for LeNet-5, the module name otherwise
    shape: tuple[int, int, int]
    maps: np.ndarray


@dataclass(frozen=True)
class FeatureMaps:
    model: str
    picture: np.ndarray  # the input as a picture, (H, W) or (H, W, 3) in [0, 1]
    stages: list[StageMaps]


@torch.no_grad()
def features(net: TrainedNet, image: str | os.PathLike | torch.Tensor, max_channels: int = MAX_CHANNELS) -> FeatureMaps:
    """Each stage's output for ``image`` (a file, prepared as the run's test images were, or a model-ready
    tensor): the first ``max_channels`` channels of every stage, in forward order."""
    if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
        raise ValueError(f"max_channels must be a positive integer, got {max_channels!r}")
    x = net.input(image)
    outputs = stage_outputs(net.model, x)
    stages = [StageMaps(name, stage_label(net.model, name), tuple(out.shape[1:]), out[0, :max_channels].float().numpy())
              for name, out in outputs.items()]  # fmt: skip
    return FeatureMaps(net.name, net.picture(x), stages)


def plot_features(maps: FeatureMaps, path: str | os.PathLike, twin: FeatureMaps | None = None) -> Path:
    """One PNG: a row per stage (label and shape at the left), the first channels across, each stage on one
    colour scale; with ``twin``, the twin's rows beside them. The input is drawn above."""
    nets = [maps] if twin is None else [maps, twin]
    n = max(len(s.maps) for m in nets for s in m.stages)
    rows = max(len(m.stages) for m in nets) + 1
    fig = canvas.figure(0.95 * n * len(nets) + 1.2, 0.95 * rows + 0.4)
    blocks = fig.subfigures(1, len(nets), wspace=0.04, squeeze=False)[0]
    for block, m in zip(blocks, nets):
        axes = block.subplots(rows, n, squeeze=False)
        canvas.tile(axes[0, 0], m.picture, f"input {'x'.join(map(str, m.picture.shape[:2]))}")
        for ax in axes[0, 1:]:
            ax.axis("off")
        for r, stage in enumerate(m.stages, start=1):
            lo, hi = float(stage.maps.min()), float(stage.maps.max())
            for c, ax in enumerate(axes[r]):
                if c < len(stage.maps):
                    canvas.tile(ax, stage.maps[c], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
                    if stage.maps[c].size == 1:  # a 1x1 map is one number: print it
                        ax.text(0, 0, f"{stage.maps[c].item():.3g}", ha="center", va="center", fontsize=8,
                                color="white" if stage.maps[c].item() < (lo + hi) / 2 else "black")  # fmt: skip
                else:
                    ax.axis("off")
            axes[r, 0].set_ylabel(f"{stage.label}\n{'x'.join(map(str, stage.shape))}", fontsize=8)
        for ax in axes[len(m.stages) + 1 :].flat:
            ax.axis("off")
        block.suptitle(f"{m.model}: the first {n} channels of each stage (one colour scale per stage)", fontsize=10)
    return canvas.save(fig, path)
