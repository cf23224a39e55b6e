"""Transfer learning: adapt a trained net to new inputs and classes, freeze parts of it, load foreign weights.

* ``adapt(model, num_classes=, in_chans=)`` keeps every pretrained tensor that still fits: the first conv
  is converted to the new channel count (summed for 1 channel, repeated and rescaled for more, the idea of
  timm's ``adapt_input_conv``) and only the head is re-initialised.
* ``freeze`` / ``unfreeze`` / ``set_frozen_bn_eval`` / ``param_groups`` set up fine-tuning.
* ``load_weights`` reads torchvision/timm-style ``.pth`` state dicts, classicnets checkpoints and
  ``.safetensors`` files, never unpickling code, and reports what did not fit.
* ``stage_outputs`` returns the intermediate feature maps of each stage (forward hooks).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models import model_card
from .models.base import ClassicNet, check_positive

__all__ = [
    "AdaptReport",
    "LoadReport",
    "adapt",
    "adapt_conv_weight",
    "first_conv",
    "freeze",
    "unfreeze",
    "set_frozen_bn_eval",
    "param_groups",
    "load_weights",
    "load_state",
    "read_state_dict",
    "stage_names",
    "stage_outputs",
]

_FROZEN_BN = "_classicnets_frozen_bn"  # marker attribute freeze() puts on the BN layers it froze


def _check_model(model: nn.Module) -> ClassicNet:
    if not isinstance(model, ClassicNet):
        raise TypeError(
            f"expected a classicnets model (a ClassicNet from create_model), got {type(model).__name__}; "
            "build it with classicnets.create_model(name)"
        )
    return model


def _short_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _group_by_top(names: list[str]) -> str:
    """``['layer1.0.conv1.weight', 'layer1.0.bn1.bias', 'fc.bias']`` -> ``'layer1 (2), fc (1)'``."""
    counts: dict[str, int] = {}
    for n in names:
        top = n.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


# --------------------------------------------------------------------------------------------- adapt


@dataclass
class AdaptReport:
    """What ``adapt`` did to each state-dict tensor."""

    model_name: str
    kept: list[str] = field(default_factory=list)  # values unchanged
    adapted: list[str] = field(default_factory=list)  # "conv1.weight: summed 3->1 channels"
    reinitialized: list[str] = field(default_factory=list)  # the new head's tensors

    def __str__(self) -> str:
        lines = [
            f"adapt {self.model_name}: {len(self.kept)} tensors kept, {len(self.adapted)} adapted, "
            f"{len(self.reinitialized)} re-initialised"
        ]
        lines += [f"  adapted:        {a}" for a in self.adapted]
        if self.reinitialized:
            lines.append(f"  re-initialised: {', '.join(self.reinitialized)}")
        if self.kept:
            lines.append(f"  kept:           {_group_by_top(self.kept)}")
        return "\n".join(lines)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution that takes the input channels, as the model card names it: ``(name, module)``."""
    model = _check_model(model)
    name = _card(model).first_conv
    return name, model.get_submodule(name)


def _card(model: ClassicNet):
    """The model card of ``model``; a CIFAR ResNet of a depth without a card of its own (``resnet8``, as the
    studies build) has resnet20's module names, which are the same at every depth."""
    from .models.cifar_resnet import CifarResNet

    try:
        return model_card(model.model_name)
    except ValueError:
        if isinstance(model, CifarResNet):
            return model_card("plain20" if model.shortcut == "none" else "resnet20")
        raise


def adapt_conv_weight(weight: torch.Tensor, in_chans: int) -> tuple[torch.Tensor, str]:
    """Convert a conv kernel ``(O, I, kh, kw)`` to ``in_chans`` input channels; returns it and a description.

    * ``in_chans == 1``: the sum over the input-channel axis. A grey image fed to the old net as I
      identical channels gives exactly the response of the new net on the single channel.
    * otherwise: the I filters repeated cyclically over the new channels and scaled by ``I / in_chans``,
      so the expected pre-activation stays the same (exactly so when ``in_chans`` is a multiple of I and
      the channels carry the same image).
    """
    out_c, old_in = weight.shape[:2]
    if in_chans == old_in:
        return weight.clone(), f"unchanged ({old_in} channels)"
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True), f"summed {old_in}->1 channels"
    reps = math.ceil(in_chans / old_in)
    new = weight.repeat(1, reps, 1, 1)[:, :in_chans] * (old_in / in_chans)
    return new, f"repeated {old_in}->{in_chans} channels, scaled by {old_in}/{in_chans}"


@torch.no_grad()
def adapt(model: nn.Module, num_classes: int | None = None, in_chans: int | None = None) -> AdaptReport:
    """Adapt ``model`` in place to ``in_chans`` input channels and/or ``num_classes`` outputs.

    Every tensor that still fits is kept. The first conv's kernel is converted (see ``adapt_conv_weight``)
    and ``model.in_chans`` / ``default_input_size`` follow. A given ``num_classes`` always gets a fresh head
    from ``reset_classifier`` (on the old head's device and dtype), even if the count is unchanged,
    because a new task's classes are not the old ones; pass ``None`` to keep the head.
    """
    model = _check_model(model)
    adapted: dict[str, str] = {}
    reinit: list[str] = []
    if in_chans is not None:
        check_positive("in_chans", in_chans)
        if in_chans != model.in_chans:
            name, conv = first_conv(model)
            if conv.groups != 1:
                raise ValueError(
                    f"{model.model_name}: the first conv {name!r} is grouped (groups={conv.groups}); only "
                    "an ungrouped first conv can change its input channels"
                )
            new_weight, how = adapt_conv_weight(conv.weight.detach(), in_chans)
            conv.weight = nn.Parameter(new_weight.contiguous(), requires_grad=conv.weight.requires_grad)
            conv.in_channels = in_chans
            model.in_chans = in_chans
            model.default_input_size = (in_chans, *model.default_input_size[1:])
            adapted[f"{name}.weight" if name else "weight"] = how
    if num_classes is not None:
        check_positive("num_classes", num_classes)
        old = model.get_classifier()
        ref = next(iter([*old.parameters(), *old.buffers()]), None)
        model.reset_classifier(num_classes)
        head = model.get_classifier()
        if ref is not None:
            head.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        prefix = _card(model).classifier
        reinit = [k for k in model.state_dict() if k.startswith(prefix + ".")]
    kept = [k for k in model.state_dict() if k not in adapted and k not in reinit]
    return AdaptReport(
        model_name=model.model_name,
        kept=kept,
        adapted=[f"{k}: {v}" for k, v in adapted.items()],
        reinitialized=reinit,
    )


# -------------------------------------------------------------------------------------- freeze


def _is_frozen_bn(m: nn.Module) -> bool:
    return (
        isinstance(m, _BatchNorm)
        and getattr(m, _FROZEN_BN, False)
        and not any(p.requires_grad for p in m.parameters(recurse=False))
    )


def set_frozen_bn_eval(model: nn.Module) -> int:
    """Put the BatchNorm layers that ``freeze`` froze into eval mode; returns how many.

    ``model.train()`` switches every layer back to training mode, and a frozen BN in training mode would
    still update its running statistics with the new data's (and normalise with batch statistics),
    silently changing the "frozen" features. There is no generic way to make ``train()`` skip them
    without replacing layers (``FrozenBatchNorm2d`` changes the state-dict layout) or monkey-patching,
    so the training loop calls this right after every ``model.train()``. ``freeze`` calls it once itself.
    """
    count = 0
    for m in model.modules():
        if _is_frozen_bn(m):
            m.eval()
            count += 1
    return count


def _frozen_modules(model: ClassicNet, up_to: str | None) -> list[nn.Module]:
    """The modules whose parameters ``freeze(model, up_to)`` would freeze."""
    children = list(model.named_children())
    if up_to is None:
        head = model.get_classifier()
        inside_head = {id(m) for m in head.modules()}
        return [m for m in model.modules() if id(m) not in inside_head and m is not model]
    names = [n for n, _ in children]
    if up_to not in names:
        raise ValueError(
            f"{model.model_name} has no top-level module {up_to!r} to freeze up to; valid names, in order: "
            f"{', '.join(names)}"
        )
    mods: list[nn.Module] = []
    for name, child in children[: names.index(up_to) + 1]:
        mods.extend(child.modules())
    return mods


def freeze(model: nn.Module, up_to: str | None = None) -> list[str]:
    """Freeze parameters (``requires_grad=False``) and BatchNorm statistics of the early layers.

    ``up_to`` names a top-level child (``model.named_children()``): it and every child registered before
    it are frozen, e.g. ``"layer3"`` for a ResNet freezes conv1, bn1, layer1-3, ``"features"`` for VGG,
    AlexNet and LeNet-5. ``None`` freezes everything but ``model.get_classifier()`` (a linear probe).
    BN layers in the frozen part go to eval mode now; call ``set_frozen_bn_eval(model)`` after each
    ``model.train()`` to keep them there. Returns the names of the parameters frozen.
    Raises ``ValueError`` for an unknown name, or if nothing would be left to train.
    """
    model = _check_model(model)
    modules = _frozen_modules(model, up_to)
    frozen_ids = {id(p) for m in modules for p in m.parameters(recurse=False)}
    names = [n for n, p in model.named_parameters() if id(p) in frozen_ids]
    if not any(p.requires_grad and id(p) not in frozen_ids for p in model.parameters()):
        what = "everything but the classifier" if up_to is None else f"up to {up_to!r}"
        hint = (
            " (its classifier has no trainable parameters: try up_to='features')"
            if up_to is None
            else "; choose an earlier module"
        )
        raise ValueError(f"freezing {what} would leave no trainable parameter in {model.model_name}{hint}")
    for m in modules:
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)
        if isinstance(m, _BatchNorm):
            setattr(m, _FROZEN_BN, True)
    set_frozen_bn_eval(model)
    return names


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable again and return frozen BN layers to the model's mode."""
    for m in model.modules():
        if getattr(m, _FROZEN_BN, False):
            delattr(m, _FROZEN_BN)
            m.train(model.training)
    for p in model.parameters():
        p.requires_grad_(True)


def param_groups(
    model: nn.Module,
    lr: float,
    backbone_lr_scale: float = 0.1,
    weight_decay: float = 0.0,
    no_decay_1d: bool = True,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for fine-tuning: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

    The head is ``model.get_classifier()``. Frozen parameters are left out. With ``no_decay_1d`` (the timm
    convention) every parameter with at most one dimension (biases, BatchNorm scales, LeNet's
    subsampling coefficients) gets ``weight_decay=0``: decaying them only shrinks what normalisation
    undoes anyway. Empty groups are dropped; each group carries a ``name`` for logging.
    """
    model = _check_model(model)
    if lr <= 0 or backbone_lr_scale < 0 or weight_decay < 0:
        raise ValueError(
            f"need lr > 0, backbone_lr_scale >= 0 and weight_decay >= 0, got lr={lr}, "
            f"backbone_lr_scale={backbone_lr_scale}, weight_decay={weight_decay}"
        )
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head_ids else "backbone"
        decay = not (no_decay_1d and p.ndim <= 1)
        buckets.setdefault((part, decay), []).append(p)
    if not buckets:
        raise ValueError(f"{model.model_name} has no trainable parameter; call unfreeze(model) or freeze less")
    groups = []
    for part in ("backbone", "head"):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if params:
                groups.append({
                    "name": f"{part}" + ("" if decay else "_no_decay"),
                    "params": params,
                    "lr": lr if part == "head" else lr * backbone_lr_scale,
                    "weight_decay": weight_decay if decay else 0.0,
                })  # fmt: skip
    return groups


# ------------------------------------------------------------------------------------ load weights


@dataclass
class LoadReport:
    """How a weights file matched a model. ``ok`` is True when every tensor fitted."""

    path: str
    source: str  # "state dict", "classicnets checkpoint of <name>", "safetensors"
    model_name: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    # (key, shape in the file, shape in the model)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def __str__(self) -> str:
        lines = [
            f"{self.path} ({self.source}) -> {self.model_name}: {len(self.loaded)} tensors fit, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.shape_mismatch)} with another shape"
        ]
        if self.missing:
            lines.append(f"  missing from the file: {_short_list(self.missing)}")
        if self.unexpected:
            lines.append(f"  not in the model: {_short_list(self.unexpected)}")
        for key, theirs, ours in self.shape_mismatch[:8]:
            lines.append(f"  shape of {key}: file {tuple(theirs)} vs model {tuple(ours)}")
        if len(self.shape_mismatch) > 8:
            lines.append(f"  ... and {len(self.shape_mismatch) - 8} more shape mismatches")
        if self.shape_mismatch:
            lines.append(
                "  fix: build the model with the file's num_classes / in_chans, load, then call "
                "adapt(model, num_classes=..., in_chans=...); strict=False loads the rest and skips them"
            )
        elif self.missing or self.unexpected:
            lines.append("  fix: check that the file is for this architecture; strict=False loads what fits")
        return "\n".join(lines)


def _reason(exc: BaseException) -> str:
    """The informative line of a (possibly long) loader error message."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        return rest.splitlines()[0] if rest else type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _refuse(path: Path, exc: BaseException) -> ValueError:
    return ValueError(
        f"refusing to load {path} (unsafe or corrupt): {_reason(exc)}. Only tensors and plain containers "
        "are read (weights_only); if you trust the file's source, re-save just its state dict with "
        "torch.save(state_dict, 'clean.pth')"
    )


_WRAPPERS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weights file into a CPU state dict without running any code; returns ``(state_dict, source)``.

    ``.safetensors`` via ``safetensors.torch.load_file``; anything else via ``torch.load(weights_only=True)``:
    a classicnets checkpoint (verified by ``load_checkpoint``), or a state dict, bare or wrapped in
    ``{'state_dict': ...}`` / ``{'model': ...}``, with ``module.`` / ``_orig_mod.`` prefixes stripped. A shipped
    weight's name (``fashion-mnist:resnet20``) gives its hash-checked tensors.
    """
    from . import weights
    from .checkpoint import FORMAT, load_checkpoint, read_record

    if weights.is_weight_name(path):  # a shipped weight, e.g. fashion-mnist:resnet20 (hash-checked)
        return dict(weights.load_state_dict(str(path))), f"shipped weights {path}"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu")), "safetensors"
        except Exception as exc:  # header or data not valid safetensors
            raise _refuse(path, exc) from None
    try:
        with warnings.catch_warnings():  # torch's note about a newer pickle protocol is noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused global, truncated zip, not a pickle at all
        raise _refuse(path, exc) from None
    source = "state dict"
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = load_checkpoint(path)  # verifies the checksum
        source = f"classicnets checkpoint of {read_record(state, path).model!r}"
        obj = state["model"]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj, source = obj[key], f"state dict under {key!r}"
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path} does not hold a state dict (a mapping of names to tensors), found {keys}; expected "
            f"a bare state dict or one under {', '.join(map(repr, _WRAPPERS))}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        new = _strip_prefixes(key)
        if new in out:
            raise ValueError(f"{path}: keys {key!r} and another both become {new!r} once wrapper prefixes are removed")
        out[new] = value
    return out, source


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """Load a weights file into ``model`` (see ``read_state_dict`` for the formats) and report the match.

    ``strict=True``: any missing, unexpected or differently shaped tensor raises ``ValueError`` with the
    report and nothing is loaded. ``strict=False``: every tensor that fits is loaded, the rest reported.
    A missing BatchNorm ``num_batches_tracked`` counter (older torchvision files) is not an error.
    """
    state, source = read_state_dict(path)
    return load_state(model, state, source=source, path=path, strict=strict)


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict", path: str | os.PathLike = "",
    strict: bool = True,
) -> LoadReport:  # fmt: skip
    """``load_weights`` for a state dict already in memory (e.g. from ``read_state_dict``); same report and rules."""
    model = _check_model(model)
    own = model.state_dict()
    report = LoadReport(path=str(path), source=source, model_name=model.model_name)
    report.missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in state if k not in own]
    fits: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            fits[key] = value
    report.loaded = list(fits)
    if strict and not report.ok:
        raise ValueError(f"weights do not fit (nothing loaded):\n{report}")
    model.load_state_dict(fits, strict=False)
    return report


# ---------------------------------------------------------------------------------- stage outputs


class _StopForward(Exception):
    """Raised by the last stage's hook: the rest of the network (the head) is not needed."""


def stage_names(model: nn.Module) -> list[str]:
    """The modules whose outputs are the model's stages, in forward order, as its model card declares them
    (timm's ``feature_info``): e.g. ``relu`` (the stem), ``layer1``..``layer4`` for a ResNet."""
    return [stage.name for stage in _card(_check_model(model)).stages]


def stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and return each stage's output, keyed by module name, in forward order.

    The stages are the model card's (:func:`stage_names`): ResNets ``relu`` (the stem) and ``layer1``..;
    VGG/AlexNet each max-pool of ``features``; LeNet-5 C1, S2, C3, S4 and C5 after their activations.
    Implemented with forward hooks, not torchvision's ``create_feature_extractor``, because FX symbolic
    tracing cannot follow the input checks in ``ClassicNet.forward``. The forward stops after the last stage,
    so the head is not run. Gradients flow as usual.
    """
    stages = stage_names(model)
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(stage: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            outputs[stage] = output
            if stage == stages[-1]:
                raise _StopForward

        return hook

    try:
        for stage in stages:
            handles.append(model.get_submodule(stage).register_forward_hook(make_hook(stage)))
        try:
            model(x)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    return {stage: outputs[stage] for stage in stages}
