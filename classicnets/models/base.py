"""The interface every classicnets model shares.

Borrowed from timm's model interface, because that is what transfer learning needs:

* ``forward_features(x)`` -> the last feature map, before global pooling, ``(B, C, h, w)``;
* ``forward_head(x)`` -> logits from those features, ``(B, num_classes)``;
* ``reset_classifier(num_classes)`` -> a fresh head for a new task;
* ``in_chans``, ``num_classes``, ``default_input_size`` and ``min_input_size`` as attributes.

``forward`` checks its input first, so a wrong channel count or an image too small for the net
gives a ``ValueError`` that names the problem and the fix instead of a shape error deep inside.
"""

import torch
from torch import nn


def count_skip_connections(module: nn.Module) -> int:
    """Residual additions in a forward pass: blocks whose ``has_skip`` is True (any nn.Module works)."""
    return sum(1 for m in module.modules() if getattr(m, "has_skip", False) is True)


# Sane upper bounds: far above any real task (ImageNet-21k has 21,841 classes; hyperspectral images a few
# hundred bands), far below sizes that would exhaust memory before any error could be given.
MAX_SIZES = {"num_classes": 1_000_000, "in_chans": 4096}


def check_positive(name: str, value: int) -> int:
    """Validate a user-facing integer argument such as ``num_classes`` or ``in_chans`` (positive, and at most
    ``MAX_SIZES[name]`` where a bound is known)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    limit = MAX_SIZES.get(name)
    if limit is not None and value > limit:
        raise ValueError(f"{name}={value:,} is beyond the sane limit of {limit:,}; pass the real {name} of your data")
    return value

class ClassicNet(nn.Module):
    """Base class: input checking and the shared forward split."""

    __jit_unused_properties__ = ["num_skip_connections"]  # Python-only helpers TorchScript must skip

    # Subclasses set these in __init__.
    in_chans: int
    num_classes: int
    default_input_size: tuple[int, int, int]
    min_input_size: tuple[int, int]

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.num_classes = check_positive("num_classes", num_classes)
        self.in_chans = check_positive("in_chans", in_chans)
        self.model_name = type(self).__name__.lower()

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for a batch this net cannot take (written so TorchScript compiles it)."""
        if x.dim() != 4:
            raise ValueError(
                "expected a batch of images shaped (B, C, H, W), got a tensor with "
                + str(x.dim())
                + " dimensions; add a batch dimension with x.unsqueeze(0)"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                "this model takes "
                + str(self.in_chans)
                + "-channel images but got "
                + str(x.shape[1])
                + " channels; create it with in_chans="
                + str(x.shape[1])
                + " or convert the images"
            )
        min_h, min_w = self.min_input_size
        if x.shape[2] < min_h or x.shape[3] < min_w:
            raise ValueError(
                "input "
                + str(x.shape[2])
                + "x"
                + str(x.shape[3])
                + " is too small for this model: it needs at least "
                + str(min_h)
                + "x"
                + str(min_w)
                + "; resize or pad the images"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    @property
    def num_skip_connections(self) -> int:
        """How many residual additions the forward pass performs (0 for plain nets)."""
        return count_skip_connections(self)


class FeaturesClassifierNet(ClassicNet):
    """The AlexNet/VGG layout: ``features`` (convs), ``avgpool`` (adaptive), ``classifier`` (FC layers, the
    last of which is the head)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(self.classifier[-1].in_features, num_classes)


class GlobalPoolNet(ClassicNet):
    """The ResNet layout: global average pooling (``avgpool``) and one linear head ``fc`` on
    ``num_features`` channels."""

    num_features: int

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
