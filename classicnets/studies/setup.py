"""What the studies need besides the report: nets by name (any CIFAR depth), data, device and threads."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..data import load_dataset
from ..data.arrays import Splits


def _cifar_depth(name: str) -> tuple[bool, int] | None:
    """``"plain8"`` -> (True, 8), ``"resnet14"`` -> (False, 14); None for any other name."""
    for prefix, plain in (("plain", True), ("resnet", False)):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return plain, int(name[len(prefix) :])
    return None


def build_net(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A registered model by name, or a CIFAR net of any depth 6n+2 as ``plainN`` / ``resnetN`` (``resnet8``:
    the small nets the tests and tiny budgets use).

    ``plainN`` and ``resnetN`` built after the same ``torch.manual_seed`` have identical weights: option A
    shortcuts have no parameters and draw no random numbers.
    """
    from ..models import create_model, list_models
    from ..models.cifar_resnet import CifarResNet

    if name in list_models():
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    parsed = _cifar_depth(name)
    if parsed is None:
        return create_model(name)  # raises the registry's ValueError with close matches
    plain, depth = parsed
    shortcut = "none" if plain else kwargs.pop("shortcut", "A")
    model = CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, **kwargs)
    model.model_name = name
    return model


def twin_of(name: str) -> str | None:
    """The plain/residual twin: the model card's for registered nets (``plain56`` <-> ``resnet56``), the
    same rule for unregistered CIFAR depths; None for a net without one."""
    from ..models import list_models, model_card

    if name in list_models():
        return model_card(name).twin
    parsed = _cifar_depth(name)
    return None if parsed is None else f"{'resnet' if parsed[0] else 'plain'}{parsed[1]}"


def get_data(data: str | Splits, data_dir: str | None = None) -> Splits:
    """A dataset name (``fashion-mnist``, ...) is loaded; a :class:`Splits` is used as it is (tests)."""
    if isinstance(data, Splits):
        return data
    if not isinstance(data, str):
        raise TypeError(f"data must be a dataset name such as 'fashion-mnist' or a Splits, got {type(data).__name__}")
    if data.startswith("folder:"):
        raise ValueError("the studies need an in-memory dataset (fashion-mnist, mnist, mnist-5k, cifar10, "
                         f"cifar100), got {data!r}")  # fmt: skip
    return load_dataset(data, data_dir=data_dir)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave torch's setting), restoring the previous count after."""
    if n is None:
        yield
        return
    check_positive_int("threads", n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str | torch.device) -> torch.device:
    from ..train.runtime import resolve_device as _resolve

    return device if isinstance(device, torch.device) else _resolve(device)
