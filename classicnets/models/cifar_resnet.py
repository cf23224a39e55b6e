"""The CIFAR-10 ResNets of He et al. 2016, Section 4.2, and their plain twins.

6n+2 weighted layers: a 3x3 conv with 16 filters, then three stages of n BasicBlocks on 32x32, 16x16 and
8x8 maps with 16, 32 and 64 filters, global average pooling and a 10-way FC layer. Shortcut option A
(zero-padding identity, no parameters) is the paper's CIFAR choice and the default; "B" projects with a
1x1 conv + BN where the shape changes; "none" is the plain net of Fig. 6. With option A the plain twin has
exactly the residual net's parameters, so any difference between them is the skip connections alone.

Parameters with option A and 10 classes (Table 6 rounds them to 0.27M ... 19.4M):

========== ===== =========== ==========================
model       n    layers      parameters
========== ===== =========== ==========================
resnet20    3    20          269,722
resnet32    5    32          464,154
resnet44    7    44          658,586
resnet56    9    56          853,018
resnet110   18   110         1,727,962
resnet1202  200  1202        19,421,274
========== ===== =========== ==========================
"""

from __future__ import annotations

import torch
from torch import nn

from .base import GlobalPoolNet
from .registry import register_model, stage_infos
from .resnet import BasicBlock, check_shortcut, conv3x3, init_resnet, make_shortcut

CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
TABLE6_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}  # as printed


class CifarResNet(GlobalPoolNet):
    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        zero_init_residual: bool = False,
        width: int = 16,
    ) -> None:
        super().__init__(num_classes, in_chans)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110, ...), got depth={depth!r}")
        check_shortcut(shortcut, zero_init_residual)
        self.depth, self.shortcut = depth, shortcut
        self.default_input_size, self.min_input_size = (in_chans, 32, 32), (1, 1)
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_chans, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_layer(width, n, 1)
        self.layer2 = self._make_layer(width * 2, n, 2)
        self.layer3 = self._make_layer(width * 4, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = width * 4
        self.fc = nn.Linear(self.num_features, num_classes)
        init_resnet(self, zero_init_residual)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            down = make_shortcut(self.shortcut, self.inplanes, planes, s)
            layers.append(BasicBlock(self.inplanes, planes, s, down, skip=self.shortcut != "none"))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer2(self.layer1(x))  # (B, 32, 16, 16)
        return self.layer3(x)  # (B, 64, 8, 8)


_HE = "He et al., Deep Residual Learning for Image Recognition"


def _card(name: str) -> dict:
    """Card fields of ``resnetN`` or its plain twin ``plainN``. Stages: the stem's ReLU (the output of the
    first 3x3 conv, its BN and ReLU), then the three stages of n blocks on 32x32, 16x16 and 8x8 maps."""
    plain = name.startswith("plain")
    depth = int(name.removeprefix("plain").removeprefix("resnet"))
    rounded = TABLE6_PARAMS[depth]
    if plain:
        source = (
            f"classicnets' exact count; He et al. 2016, Section 4.2: the plain net has exactly resnet{depth}'s "
            f"parameters (option A adds none), for which Table 6 prints {rounded}"
        )
    else:
        source = f"classicnets' exact count (option A, 10 classes); He et al. 2016, Table 6 prints {rounded}"
    return dict(
        name=name, family="cifar_resnet", paper=_HE, year=2016, default_input_size=(3, 32, 32), default_num_classes=10,
        paper_params=CIFAR_PARAMS[depth], params_kind="exact-of-rounded", params_source=source,
        min_input_size=(1, 1), first_conv="conv1", classifier="fc", classifier_tensor="fc.weight",
        stages=stage_infos(("relu", 16, 1), ("layer1", 16, 1), ("layer2", 32, 2), ("layer3", 64, 4)),
        twin=f"resnet{depth}" if plain else f"plain{depth}", residual=not plain,
        notes="plain twin of the CIFAR ResNet (Fig. 6)" if plain else "CIFAR ResNet, shortcut option A (default) or B",
    )  # fmt: skip


def _plain(depth: int, num_classes: int, in_chans: int, shortcut: str, zero_init_residual: bool) -> CifarResNet:
    """A plain twin takes ``shortcut`` only to refuse anything but "none" with a pointer to its residual twin."""
    if shortcut != "none":
        raise ValueError(f"plain{depth} is the plain twin (no shortcuts); use resnet{depth} for shortcut={shortcut!r}")
    return CifarResNet(depth, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet20"))
def resnet20(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 20 layers (n=3)."""
    return CifarResNet(20, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain20"))
def plain20(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 20 layers (n=3)."""
    return _plain(20, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet32"))
def resnet32(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 32 layers (n=5)."""
    return CifarResNet(32, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain32"))
def plain32(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 32 layers (n=5)."""
    return _plain(32, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet44"))
def resnet44(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 44 layers (n=7)."""
    return CifarResNet(44, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain44"))
def plain44(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 44 layers (n=7)."""
    return _plain(44, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet56"))
def resnet56(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 56 layers (n=9)."""
    return CifarResNet(56, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain56"))
def plain56(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 56 layers (n=9)."""
    return _plain(56, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet110"))
def resnet110(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 110 layers (n=18)."""
    return CifarResNet(110, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain110"))
def plain110(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 110 layers (n=18)."""
    return _plain(110, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("resnet1202"))
def resnet1202(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", zero_init_residual: bool = False
) -> CifarResNet:
    """Residual CIFAR net with 1202 layers (n=200)."""
    return CifarResNet(1202, num_classes, in_chans, shortcut, zero_init_residual)


@register_model(**_card("plain1202"))
def plain1202(
    num_classes: int = 10, in_chans: int = 3, shortcut: str = "none", zero_init_residual: bool = False
) -> CifarResNet:
    """Plain CIFAR net with 1202 layers (n=200)."""
    return _plain(1202, num_classes, in_chans, shortcut, zero_init_residual)
