"""Naming the layers a view looks at: the model card's stages with their shapes for one input, the default
layer (the last stage that is still a map), every module with a feature map, every convolution, and
one-line errors that list the valid names."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from ..models import model_card
from ..transfer import stage_names, stage_outputs

# LeNet-5's stages under the paper's names (LeCun et al. 1998, Fig. 2); other families use module names.
PAPER_NAMES = {"lenet": ("C1", "S2", "C3", "S4", "C5")}


def stage_label(model: nn.Module, stage: str) -> str:
    """``C3`` for LeNet-5's ``features.act3``; the module name for every other net."""
    names = stage_names(model)
    paper = PAPER_NAMES.get(model_card(model.model_name).family)
    return paper[names.index(stage)] if paper and len(paper) == len(names) else stage


@torch.no_grad()
def stage_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Each stage's output shape (C, H, W) for the input ``x`` (1, C, H, W), in forward order."""
    return {name: tuple(out.shape[1:]) for name, out in stage_outputs(model, x).items()}


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The last stage of the model card whose output is still a map (more than one unit) for ``x``.

    A 1x1 map says nothing about *where* (LeNet-5's C5 at 32x32), so Grad-CAM and the receptive field
    take the deepest stage that still has a spatial extent: S4 (5x5) for LeNet-5, the last stage for a
    ResNet (8x8 at 32x32, 7x7 at 224x224).
    """
    shapes = stage_shapes(model, x)
    maps = [name for name, (_, h, w) in shapes.items() if h * w > 1]
    if not maps:
        raise ValueError(f"every stage of {model.model_name} is 1x1 for a {tuple(x.shape[2:])} input; "
                         "pass a larger image")  # fmt: skip
    return maps[-1]


@torch.no_grad()
def map_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Every module whose output for ``x`` is a feature map (1, C, H, W): its name and (C, H, W).

    A module called more than once in a forward pass (a residual block's shared ReLU) is listed with the
    shape of its last call, which is the one the views use.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                shapes[name] = tuple(output.shape[1:])

        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def check_map_layer(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[int, ...]:
    """The (C, H, W) output of ``layer``; a ValueError listing the valid names if it has no feature map."""
    shapes = map_shapes(model, x)
    if layer in shapes:
        return shapes[layer]
    stages = ", ".join(stage_names(model))
    kind = "has no feature map output in" if _has_module(model, layer) else "is not a layer of"
    raise ValueError(f"{layer!r} {kind} {model.model_name}; pass a stage ({stages}) or another module with a "
                     f"feature map: {_names(list(shapes), layer)}")  # fmt: skip


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The convolutions, by module name, in definition order: every ``nn.Conv2d`` and LeNet-5's C3."""
    from ..models.lenet import PartialConv2d

    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, PartialConv2d))}


def check_conv_layer(model: nn.Module, layer: str) -> nn.Module:
    convs = conv_layers(model)
    if layer not in convs:
        raise ValueError(f"{layer!r} is not a convolution of {model.model_name}; pass one of: "
                         f"{_names(list(convs), layer)}")  # fmt: skip
    return convs[layer]


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _names(valid: list[str], wrong: str, limit: int = 12) -> str:
    """The valid names, the closest to ``wrong`` first when there are many."""
    if len(valid) <= limit:
        return ", ".join(valid)
    close = difflib.get_close_matches(wrong, valid, n=4, cutoff=0.3)
    rest = [v for v in valid if v not in close][: limit - len(close)]
    return ", ".join(close + rest) + f", ... ({len(valid)} in all)"
