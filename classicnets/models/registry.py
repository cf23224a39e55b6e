"""Name -> builder, with a model card for every registered network.

Like torchvision's ``_api.py``: one small builder per named variant, registered with a decorator that
refuses duplicates; an unknown name is answered with the closest known names.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelCard:
    """What a user should know about a registered model before building it."""

    name: str
    family: str  # "lenet", "alexnet", "vgg", "resnet", "cifar_resnet"
    paper: str
    year: int
    default_input_size: tuple[int, int, int]  # (C, H, W)
    default_num_classes: int
    paper_params: int | None  # the published trainable-parameter count at the default classes
    params_source: str  # where paper_params comes from
    notes: str = ""
    torchvision_name: str | None = None  # a torchvision builder with the identical layout, if any
    residual: bool = False
    builder: Callable[..., nn.Module] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]


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


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model; ``num_classes`` and ``in_chans`` default to the model card's values.

    Builders never choose a device or dtype: move the model yourself.
    """
    card = model_card(name)
    if num_classes is None:
        num_classes = card.default_num_classes
    if in_chans is None:
        in_chans = card.default_input_size[0]
    try:
        model = card.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:  # an option this builder does not take
        raise TypeError(f"create_model({name!r}): {exc}") from None
    model.model_name = name
    return model
