"""Speedrun nets: small, shallow networks built from the classic families' blocks, for time to accuracy on a CPU.

The layout follows airbench's CIFAR-10 speedrun nets (Keller Jordan 2024), written with the blocks of this
zoo: a VGG-style stem (3x3 conv, BatchNorm, ReLU), then three stages, each a VGG-style conv-BN-ReLU that
widens the channels, with a 2x2 max-pool (pooling before the BN and ReLU, as airbench does, so they run on
a quarter of the pixels), then He et al.'s BasicBlock (two 3x3 convs with an identity shortcut) in
``speedrun_resnet``, or the same two convs without the shortcut in its plain twin ``speedrun_plain``. Global
average pooling and one linear head, as the ResNets. At 28x28 the stages run on 14x14, 7x7 and 3x3 maps.

Why this shape is fast on a CPU: 10 convs (ResNet-20 has 19), so fewer BatchNorm/ReLU passes, which run far
below the matmul peak; wider convs than ResNet-20's 16-channel stage, which oneDNN runs closer to the peak;
and all but 3.7 M of the 20.8 M multiply-adds on 14x14 or smaller maps, after the pools. Measured: 0.49x
ResNet-20's time per epoch (benchmarks/epoch_cost.py; benchmarks/README.md, speedrun section).

Parameters at the default widths (16, 32, 64, 128), one input channel and 10 classes: 486,650 (both nets:
the shortcuts are identities and add none); about 21M multiply-adds per 28x28 image, 0.7x ResNet-20's.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import GlobalPoolNet
from .registry import register_model, stage_infos
from .resnet import BasicBlock, conv3x3, init_resnet

DEFAULT_WIDTHS = (16, 32, 64, 128)
SPEEDRUN_PARAMS = 486_650  # speedrun_resnet / speedrun_plain, widths (16, 32, 64, 128), 1 channel, 10 classes


class ConvPoolBNReLU(nn.Sequential):
    """VGG's conv-BN-ReLU with an optional 2x2 max-pool between the conv and the BN (airbench's order)."""

    def __init__(self, cin: int, cout: int, pool: bool) -> None:
        layers = [conv3x3(cin, cout)] + ([nn.MaxPool2d(2)] if pool else [])
        super().__init__(*layers, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SpeedrunNet(GlobalPoolNet):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple | list = DEFAULT_WIDTHS,
                 residual: bool = True) -> None:  # fmt: skip
        super().__init__(num_classes, in_chans)
        widths = tuple(widths)
        if len(widths) != 4 or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 4096 for w in widths):
            raise ValueError(f"widths must be 4 channel counts (stem, stage 1, 2, 3) in 1..4096, e.g. "
                             f"{list(DEFAULT_WIDTHS)}; got {list(widths)}")  # fmt: skip
        self.widths, self.residual = widths, residual
        self.default_input_size, self.min_input_size = (in_chans, 28, 28), (8, 8)
        self.stem = ConvPoolBNReLU(in_chans, widths[0], pool=False)
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            stage = nn.Sequential(ConvPoolBNReLU(cin, cout, pool=True), BasicBlock(cout, cout, skip=residual))
            self.add_module(f"layer{i}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        init_resnet(self, zero_init_residual=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w0, 28, 28)
        return self.layer3(self.layer2(self.layer1(x)))  # (B, w3, 3, 3)


_NOTE = ("speedrun net (airbench-style layout): VGG conv-BN-ReLU stem, three stages of conv-pool-BN-ReLU + "
         "{block}; for time to accuracy on a CPU (recipe fashion-speedrun)")


def _card(name: str) -> dict:
    residual = name == "speedrun_resnet"
    return dict(
        name=name, family="speedrun", paper="classicnets (after Jordan 2024, airbench CIFAR-10 speedruns)",
        year=2026, default_input_size=(1, 28, 28), default_num_classes=10, paper_params=SPEEDRUN_PARAMS,
        params_kind="exact-of-reference",
        params_source="classicnets' exact count at widths (16, 32, 64, 128), 1 channel, 10 classes",
        min_input_size=(8, 8), first_conv="stem.0", classifier="fc", classifier_tensor="fc.weight",
        stages=stage_infos(("stem", 16, 1), ("layer1", 32, 2), ("layer2", 64, 4), ("layer3", 128, 8)),
        twin="speedrun_plain" if residual else "speedrun_resnet", residual=residual,
        notes=_NOTE.format(block="a BasicBlock (He et al.)" if residual else "two plain conv-BN-ReLU (VGG)"),
    )  # fmt: skip


@register_model(**_card("speedrun_resnet"))
def speedrun_resnet(num_classes: int = 10, in_chans: int = 1, widths: tuple | list = DEFAULT_WIDTHS) -> SpeedrunNet:
    """Speedrun net with a residual BasicBlock after each conv-pool-BN-ReLU (see classicnets.models.speedrun)."""
    return SpeedrunNet(num_classes, in_chans, widths, residual=True)


@register_model(**_card("speedrun_plain"))
def speedrun_plain(num_classes: int = 10, in_chans: int = 1, widths: tuple | list = DEFAULT_WIDTHS) -> SpeedrunNet:
    """Plain twin of speedrun_resnet: the same convs, no shortcuts (VGG-style conv-BN-ReLU stacks)."""
    return SpeedrunNet(num_classes, in_chans, widths, residual=False)
