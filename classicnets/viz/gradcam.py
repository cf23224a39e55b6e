"""``show gradcam``: where in the image the evidence for a class lies, by Grad-CAM (Selvaraju et al.,
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

For a layer with activations ``A`` (C, h, w) and the class score ``y_c`` (the logit, before the softmax):

    alpha_k = mean over (i, j) of d y_c / d A_k(i, j)          one weight per channel (eq. 1)
    L_c     = ReLU(sum_k alpha_k A_k)                           the class-activation map, h x w (eq. 2)

then drawn over the input (bilinear between the units, each unit at the centre of its receptive field:
:func:`~classicnets.viz.geometry.upsample`) and divided by its maximum. For a net that ends in global
average pooling and one linear layer (the ResNets) at its last stage, ``alpha_k = W[c, k] / (h w)``: Grad-CAM
is then exactly CAM (Zhou et al. 2016), which the tests use as an independent check.

Implemented here with one forward hook and one tensor hook (about 30 lines) rather than with the
``grad-cam`` package or captum: see docs/show.md for why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import canvas
from .geometry import trace, upsample
from .layers import check_map_layer, default_layer
from .trained import TrainedNet


@dataclass(frozen=True)
class GradCam:
    model: str
    layer: str
    layer_shape: tuple[int, int, int]  # (C, h, w) of the layer's output
    target: int  # the class explained
    predicted: int  # the class the net predicts for this input (no test-time flip)
    classes: tuple[str, ...]
    probs: np.ndarray  # (K,) softmax of the logits
    weights: np.ndarray  # (C,) alpha_k
    raw: np.ndarray  # (h, w) ReLU(sum_k alpha_k A_k), unnormalised
    heatmap: np.ndarray  # (H, W) raw over the input (units at their field centres) / its maximum: in [0, 1]
    picture: np.ndarray  # the input as a picture


def gradcam(
    net: TrainedNet, image: str | os.PathLike | torch.Tensor, target: int | str | None = None, layer: str | None = None
) -> GradCam:
    """Grad-CAM of ``image`` for class ``target`` (a name or an index; default: the predicted class) at
    ``layer``, by default the last stage of the model card whose output is still a map for this input
    (:func:`~classicnets.viz.layers.default_layer`: S4 for LeNet-5, whose C5 is 1x1; the last stage of a
    ResNet). Any module with a feature map output may be named; one called more than once in a forward
    pass (a block's shared ReLU) is taken at its last call. The model runs in float32, without the run's
    test-time flip, so the explained score is the plain forward pass's."""
    model = net.model
    x = net.input(image).clone().requires_grad_(True)  # the graph exists even for a frozen model
    layer = layer if layer is not None else default_layer(model, x)
    shape = check_map_layer(model, x, layer)
    acts: list[torch.Tensor] = []
    grads: dict[int, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        # A clone: a later in-place op (ReLU(inplace=True)) must not change the activations we weight; the
        # tensor hook receives the gradient of this version of ``out`` even if it is modified in place.
        call = len(acts)
        acts.append(out.detach().clone())
        out.register_hook(lambda g: grads.__setitem__(call, g.detach()))

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x).float()
    finally:
        handle.remove()
    predicted = int(logits[0].argmax())
    c = predicted if target is None else net.class_index(target)
    torch.autograd.grad(logits[0, c], x)  # fires the tensor hook; no .grad is left on the parameters
    a, g = acts[-1][0].float(), grads[len(acts) - 1][0].float()  # (C, h, w) each
    alpha = g.mean((1, 2))  # (C,)
    raw = F.relu((alpha[:, None, None] * a).sum(0))  # (h, w)
    up = upsample(raw, trace(model, x.detach(), layer), tuple(x.shape[2:]))  # (H, W), units at their centres
    heat = up / up.max() if up.max() > 0 else torch.zeros_like(up)
    return GradCam(net.name, layer, shape, c, predicted, net.record.classes, logits[0].softmax(0).detach().numpy(),
                   alpha.numpy(), raw.numpy(), heat.numpy(), net.picture(x))  # fmt: skip


def plot_gradcam(cam: GradCam, path: str | os.PathLike) -> Path:
    """One PNG: the input, the map at the layer's own resolution, and the map over the input."""
    fig = canvas.figure(8.4, 3.4)
    axes = fig.subplots(1, 3)
    grey = cam.picture if cam.picture.ndim == 2 else cam.picture.mean(2)
    c, h, w = cam.layer_shape
    name, pred = cam.classes[cam.target], cam.classes[cam.predicted]
    canvas.tile(axes[0], cam.picture, f"input: predicted {pred!r} ({cam.probs[cam.predicted]:.0%})", 9)
    peak = cam.raw.max() if cam.raw.max() > 0 else 1.0
    canvas.tile(axes[1], cam.raw / peak, f"map at {cam.layer} ({h}x{w})", 9, cmap="jet", vmin=0, vmax=1)
    canvas.tile(axes[2], cam.picture if cam.picture.ndim == 3 else grey, "over the input", 9)
    im = axes[2].imshow(cam.heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.suptitle(f"{cam.model}: Grad-CAM for {name!r} (p = {cam.probs[cam.target]:.0%}) at {cam.layer}, "
                 f"{c}x{h}x{w}", fontsize=10)  # fmt: skip
    return canvas.save(fig, path)
