"""Name -> builder, with a model card for every registered network.

Like torchvision's ``_api.py``: one small builder per named variant, registered with a decorator that
refuses duplicates; an unknown name is answered with the closest known names.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


# What ``ModelCard.params_kind`` says about ``paper_params``: where the number comes from.
PARAMS_KINDS: dict[str, str] = {
    "paper": "printed in the paper",
    "torchvision": "torchvision's weights metadata (num_params) for the identical layout",
    "exact-of-rounded": "classicnets' exact count of the paper's layout; the paper prints only a rounded figure",
    "exact-of-reference": "classicnets' exact count of a reference implementation's layout; no paper prints it",
    "none": "no published count",
}


@dataclass(frozen=True)
class StageInfo:
    """One stage of the feature pyramid (timm's ``feature_info``), at the builder's default options.

    ``name`` is accepted by ``model.get_submodule``; a forward hook on it fires exactly once per forward pass
    and sees the stage's output, ``channels`` wide. ``reduction`` is the total stride from the input: the
    output grows by one pixel for every ``reduction`` input pixels (exactly input / reduction where every
    layer is "same"-padded: VGG and the ResNets; LeNet-5's and AlexNet's unpadded layers shave a few more).
    """

    name: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class ModelCard:
    """What a user should know about a registered model before building it.

    Every fact is declared in the registration, none is found by building the model; tests check each
    against the built model. Module names are state-dict prefixes: ``state[first_conv + ".weight"].shape[1]``
    is the input channel count and ``state[classifier_tensor].shape[0]`` the class count.
    """

    name: str
    family: str  # "lenet", "alexnet", "vgg", "resnet", "cifar_resnet", "speedrun"
    paper: str
    year: int
    default_input_size: tuple[int, int, int]  # (C, H, W)
    default_num_classes: int
    paper_params: int | None  # the published trainable-parameter count at the default classes
    params_source: str  # exactly where paper_params comes from
    params_kind: str  # a key of PARAMS_KINDS: "paper", "torchvision", "exact-of-rounded", ...
    min_input_size: tuple[int, int]  # (H, W): the smallest input the model takes, as model.min_input_size
    first_conv: str  # module name of the convolution that takes the in_chans input channels
    classifier: str  # module name of the head, the module get_classifier() returns
    classifier_tensor: str  # state-dict key whose first dimension is num_classes (a weight, or LeNet-5's centres)
    stages: tuple[StageInfo, ...]  # the feature pyramid, from the stem to the map forward_head pools
    twin: str | None  # the plain/residual twin's registered name, None where there is none
    notes: str = ""
    torchvision_name: str | None = None  # a torchvision builder with the identical layout, if any
    residual: bool = False
    builder: Callable[..., nn.Module] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.params_kind not in PARAMS_KINDS:
            raise ValueError(f"{self.name}: params_kind must be one of {list(PARAMS_KINDS)}, got {self.params_kind!r}")
        if (self.paper_params is None) != (self.params_kind == "none"):
            raise ValueError(f"{self.name}: paper_params is None exactly when params_kind is 'none'")
        if not self.stages or not all(isinstance(s, StageInfo) for s in self.stages):
            raise ValueError(f"{self.name}: stages must be a non-empty tuple of StageInfo")


def stage_infos(*rows: tuple[str, int, int]) -> tuple[StageInfo, ...]:
    """``stage_infos(("layer1", 64, 4), ...)``: (module name, channels, reduction) rows as StageInfo."""
    return tuple(StageInfo(name, channels, reduction) for name, channels, reduction in rows)


_REGISTRY: dict[str, ModelCard] = {}


def register_model(**card_fields) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``card_fields['name']``; a second registration of a name is an error."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = card_fields["name"]
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelCard(builder=builder, **card_fields)
        return builder

    return decorator


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ValueError(
        f"unknown model {name!r}; {hint}run `classicnets models` or list_models() to see all "
        f"{len(_REGISTRY)} models"
    )


def model_card(name: str) -> ModelCard:
    """The card of a registered model (raises ``ValueError`` with close matches if unknown)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise _unknown(str(name))
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. ``list_models("resnet*")``, in registry order."""
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def create_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, *, pretrained: bool | str = False, **kwargs
) -> nn.Module:
    """Build a registered model; ``num_classes`` and ``in_chans`` default to the model card's values.

    ``pretrained="fashion-mnist"`` (a dataset) or ``True`` (the model's default dataset) loads the weights
    that ship with classicnets, verified by hash; classes and channels then come from the weights' record,
    which is also ``model.pretrained_cfg`` (its ``.preprocessing`` prepares images as the test images were).
    Builders never choose a device or dtype: move the model yourself.
    """
    card = model_card(name)
    if pretrained:
        return _pretrained(name, num_classes, in_chans, pretrained, kwargs)
    if num_classes is None:
        num_classes = card.default_num_classes
    if in_chans is None:
        in_chans = card.default_input_size[0]
    try:
        if torch.empty(0).device.type != "meta":  # size it first without memory: absurd options are refused
            _check_size(name, card.builder, num_classes, in_chans, kwargs)
        model = card.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:  # an option this builder does not take
        raise TypeError(f"create_model({name!r}): {exc}") from None
    model.model_name = name
    return model


MAX_PARAMS = 2_000_000_000  # 8 GB of fp32 weights: 14x VGG-19; anything larger is a typo in an option


def _check_size(name: str, builder: Any, num_classes: int, in_chans: int, kwargs: dict) -> None:
    """Build the model on the meta device (shapes only, no memory) and refuse one past ``MAX_PARAMS``."""
    try:
        with torch.device("meta"):
            probe = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (RuntimeError, OverflowError, MemoryError) as exc:  # sizes too large even to describe
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"create_model({name!r}) with {kwargs or 'its defaults'}: sizes too large to build "
                         f"({first}); use sane values for the options") from None  # fmt: skip
    params = sum(p.numel() for p in probe.parameters())
    if params > MAX_PARAMS:
        raise ValueError(f"create_model({name!r}) with num_classes={num_classes}, in_chans={in_chans}"
                         f"{''.join(f', {k}={v!r}' for k, v in kwargs.items())} would have {params:,} parameters, "
                         f"beyond the sane limit of {MAX_PARAMS:,}; use smaller options")  # fmt: skip


def _pretrained(name: str, num_classes: int | None, in_chans: int | None, pretrained: bool | str,
                kwargs: dict) -> nn.Module:  # fmt: skip
    from ..weights import default_weight, load

    if not isinstance(pretrained, (bool, str)):
        raise TypeError(f"pretrained must be True or a dataset name such as 'fashion-mnist', got {pretrained!r}")
    weight = default_weight(name) if pretrained is True else f"{pretrained}:{name}"
    model, record = load(weight)
    defaults = {k: p.default for k, p in inspect.signature(model_card(name).builder).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    trained = {**defaults, **record.model_kwargs}  # what the weights were built with, options left at default
    asked = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    clashes = {k: v for k, v in asked.items() if v is not None and trained.get(k, v) != v}
    if clashes:
        adaptable = set(clashes) <= {"num_classes", "in_chans"}
        fix = ("load them as they are, then classicnets.transfer.adapt(model, num_classes=..., in_chans=...)"
               if adaptable else "drop those options, or train your own net with them")  # fmt: skip
        raise ValueError(f"the {weight} weights were trained with "
                         f"{ {k: trained.get(k) for k in clashes} }, not {clashes}; {fix}")  # fmt: skip
    return model.train()
