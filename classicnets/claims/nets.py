"""The twins the training claims compare: each builder takes the one thing that differs as an argument.

They are the zoo's designs at a size a CPU trains in minutes, and each says how it differs from the paper:

* ``lenet5_with(act)``: lenet5_modern's layers (61,706 parameters), its four ReLUs swapped for ``act``.
* ``convnet4(act, lrn)``: Krizhevsky et al.'s Figure 1 net, "a four-layer convolutional neural network" (three
  5x5 conv layers of 32, 32, 64 maps and one FC layer, as in cuda-convnet's CIFAR-10 nets), AlexNet's
  overlapping 3x3/2 max-pooling and, optionally, its local response normalization after the first two convs.
* ``vgg_small(config, ...)``: VGG's Table 1 configurations (A, A-LRN, B, D, E) at a quarter of the width, on
  32x32 inputs (five pools to 1x1), with one linear classifier in place of the three 4096-wide FC layers.
* ``vgg_stages(kernel)``: a VGG-style net whose stages hold either a pair of 3x3 convs or one 5x5 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.vgg import CONFIGS


def activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]()


def lenet5_with(act: str, num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """lenet5_modern (32x32 input, max-pooling, linear output) with ``act`` in place of each ReLU. The
    activations own no parameters, so twins built after the same seed start from identical weights."""
    from ..models import create_model

    model = create_model("lenet5_modern", num_classes=num_classes, in_chans=in_chans)
    for name in ("act1", "act3", "act5"):
        setattr(model.features, name, activation(act))
    model.act6 = activation(act)
    return model


class BandLRN(nn.Module):
    """nn.LocalResponseNorm's function, ``x / (k + alpha/n * sum of x^2 over n neighbouring channels)^beta``,
    with the channel-window sum as a 1x1 convolution by a fixed 0/1 band matrix: one matmul instead of
    PyTorch's padded 3-D average pool, ~10x faster on a CPU (tests/test_claims.py checks it equals
    nn.LocalResponseNorm). No parameters, so twins with and without it share every weight."""

    def __init__(self, size: int = 5, alpha: float = 5e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def band(self, channels: int, x: torch.Tensor) -> torch.Tensor:
        c = torch.arange(channels, device=x.device)
        lo, hi = c - self.size // 2, c + (self.size - 1) // 2  # torch's window: size//2 before, (size-1)//2 after
        band = ((c[None, :] >= lo[:, None]) & (c[None, :] <= hi[:, None])).to(x.dtype)
        return band[:, :, None, None]  # (C_out, C_in, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squares = (x * x).float()
        window = F.conv2d(squares, self.band(x.shape[1], squares))
        return x * (self.k + self.alpha / self.size * window).pow(-self.beta).to(x.dtype)


def krizhevsky_lrn() -> nn.Module:
    """AlexNet's LRN (k=2, n=5, alpha=1e-4, beta=0.75); PyTorch's convention divides alpha by n, hence 5e-4."""
    return BandLRN(size=5, alpha=5e-4, beta=0.75, k=2.0)


def _pooled(size: int) -> int:
    return (size - 3) // 2 + 1  # 3x3 max-pool, stride 2, no padding


def convnet4(act: str = "relu", lrn: bool = False, num_classes: int = 10, in_chans: int = 1, size: int = 28) -> nn.Module:  # fmt: skip
    """conv5x5(32)-act-[LRN]-pool3/2, conv5x5(32)-act-[LRN]-pool3/2, conv5x5(64)-act-pool3/2, FC."""
    layers: list[nn.Module] = []
    channels, side = in_chans, size
    for i, width in enumerate((32, 32, 64)):
        layers += [nn.Conv2d(channels, width, 5, padding=2), activation(act)]
        if lrn and i < 2:
            layers.append(krizhevsky_lrn())
        layers.append(nn.MaxPool2d(3, 2))
        channels, side = width, _pooled(side)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, num_classes))


def vgg_small(config: str, batch_norm: bool, *, lrn: bool = False, width_div: int = 4, num_classes: int = 10,
              in_chans: int = 1) -> nn.Module:  # fmt: skip
    """VGG config ``config`` (A, B, D, E) at 1/``width_div`` width for 32x32 inputs; ``lrn`` adds LRN after the
    first conv's ReLU (config A-LRN). He init like the zoo's VGG."""
    layers: list[nn.Module] = []
    channels = in_chans
    for item in CONFIGS[config]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        width = int(item) // width_div
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        if lrn and channels == in_chans:
            layers.append(krizhevsky_lrn())
        channels = width
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, num_classes))
    _he_init(model)
    return model


def vgg_stages(kernel: int, width: int = 64, stages: int = 3, num_classes: int = 10, in_chans: int = 1) -> nn.Module:  # fmt: skip
    """A VGG-style net (conv-BN-ReLU, 2x2 max-pools, global average pool, linear) of constant ``width``: a 3x3
    stem and pool, then ``stages`` stages, each two 3x3 convs (``kernel=3``) or one 5x5 conv (``kernel=5``)
    and a pool. Every stage maps C to C channels, the setting of Simonyan and Zisserman's count (18C^2 vs
    25C^2), and sees a 5x5 field either way."""
    if kernel not in (3, 5):
        raise ValueError(f"kernel must be 3 (a pair of 3x3 convs) or 5 (one 5x5 conv), got {kernel!r}")

    def conv(c_in: int, k: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]

    layers: list[nn.Module] = [*conv(in_chans, 3), nn.MaxPool2d(2, 2)]
    for _ in range(stages):
        layers += (conv(width, 3) + conv(width, 3)) if kernel == 3 else conv(width, 5)
        layers.append(nn.MaxPool2d(2, 2))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    _he_init(model)
    return model


def _he_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
