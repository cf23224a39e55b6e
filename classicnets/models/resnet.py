"""ResNet (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016), ImageNet
models 18-152 in torchvision's layout, and their *plain twins* (the same net with every skip removed).

``ResNet(block, [2, 2, 2, 2])`` is the whole architecture: a 7x7 stride-2 stem and a 3x3 max-pool, four
stages of residual blocks with 64-128-256-512 base widths (the first block of stages 2-4 halves the
resolution), global average pooling and one FC layer. Shortcut option B (Section 3.3): identity where the
shape is unchanged, a 1x1 projection + BN where it changes; option ``"none"`` removes the skip connections,
and with them the projections, giving the "plain" baselines of Table 2 / Fig. 4.

``resnet50``/``101``/``152`` put a Bottleneck's stride on its 3x3 conv (the "ResNet v1.5" of torchvision
and timm); ``resnet50_v1``/``101_v1``/``152_v1`` stride the first 1x1 as the paper and its released Caffe
models do (``stride_in_1x1=True``). Moving the stride changes no shape of any weight, so both have the
same parameters. v1 runs the first 1x1 of a downsampling block on the already subsampled map (a quarter of
the positions), which gives the MACs of He et al. Table 1 (3.86 / 7.57 / 11.28 G at 224x224 against
v1.5's 4.09 / 7.80 / 11.51), and its 3x3 after the stride widens the receptive field (483 / 1027 / 1507
pixels against v1.5's 427 / 971 / 1451). Parameter counts and state-dict
keys (``conv1``, ``bn1``, ``layer1``-``layer4``, ``fc``) are torchvision's, so its weights load unchanged
into either (into v1 they are weights trained for another net: fine-tune before trusting them).
"""

from __future__ import annotations

from typing import Type

import torch
from torch import nn

from .base import GlobalPoolNet
from .registry import register_model, stage_infos

SHORTCUTS = ("A", "B", "none")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """What BasicBlock and Bottleneck share: ``relu(F(x) + shortcut(x))``, or ``relu(F(x))`` when
    ``has_skip`` is False (the plain twin). Subclasses set ``downsample``, ``has_skip`` and ``relu``."""

    def merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            identity = x
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        return self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs; ``out = relu(F(x) + shortcut(x))``, or ``relu(F(x))`` in a plain twin."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, skip: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.has_skip = skip

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.merge(self.bn2(self.conv2(out)), x)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand by 4; shortcut as in BasicBlock. The stride is on the 3x3 (v1.5), or on
    the first 1x1 with ``stride_in_1x1=True`` (v1, the paper's)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, skip: bool = True,
        *, stride_in_1x1: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes, stride if stride_in_1x1 else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1 if stride_in_1x1 else stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.has_skip = skip

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.merge(self.bn3(self.conv3(out)), x)


class PadShortcut(nn.Module):
    """Option A: subsample by taking every ``stride``-th pixel and zero-pad the new channels (no parameters).

    He et al. Section 3.3 / 4.2; the padding is split evenly between both ends of the channel axis, as in
    the widely used reproduction, so parameter counts match Table 6.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


def make_shortcut(shortcut: str, inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    """The module a block adds to its residual, or None for the identity (or for a plain block)."""
    if shortcut == "none" or (stride == 1 and inplanes == outplanes):
        return None
    if shortcut == "A":
        return PadShortcut(inplanes, outplanes, stride)
    return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))


def check_shortcut(shortcut: str, zero_init_residual: bool) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if shortcut == "none" and zero_init_residual:
        raise ValueError(
            "zero_init_residual=True would make every block of a plain net output zero; "
            "use it only with a residual shortcut ('A' or 'B')"
        )


def init_resnet(model: nn.Module, zero_init_residual: bool) -> None:
    """He init for convs (fan_out, as torchvision), BN to (1, 0); optionally zero each block's last BN so
    every residual block starts as the identity (Goyal et al. 2017)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(m.last_bn().weight)


class ResNet(GlobalPoolNet):
    """ImageNet ResNet. ``stem="cifar"`` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (for 32x32);
    ``stride_in_1x1=True`` strides each Bottleneck's first 1x1 instead of its 3x3 (v1, the paper's)."""

    def __init__(
        self,
        block: Type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        shortcut: str = "B",
        zero_init_residual: bool = False,
        stem: str = "imagenet",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__(num_classes, in_chans)
        check_shortcut(shortcut, zero_init_residual)
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError("stride_in_1x1 applies to Bottleneck blocks only (ResNet-50 and deeper)")
        self.shortcut, self.stem = shortcut, stem
        self.stride_in_1x1 = stride_in_1x1
        self.default_input_size = (in_chans, 224, 224) if stem == "imagenet" else (in_chans, 32, 32)
        self.min_input_size = (1, 1)  # every conv and pool is padded, so even 1x1 flows through
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, 64)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        init_resnet(self, zero_init_residual)

    def _make_layer(self, block: Type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            down = make_shortcut(self.shortcut, self.inplanes, planes * block.expansion, s)
            extra = {"stride_in_1x1": True} if self.stride_in_1x1 else {}  # BasicBlock has no such option
            layers.append(block(self.inplanes, planes, s, down, skip=self.shortcut != "none", **extra))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 128*e, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 512*e, H/32, W/32)


_HE = "He et al., Deep Residual Learning for Image Recognition"


def _card(name: str, block: Type[BasicBlock | Bottleneck], tv_params: int | None = None) -> dict:
    """Card fields of ``resnetN`` (``tv_params``: torchvision's count) or of its plain twin ``plainN``.

    The stages are timm's ``feature_info``: the stem's ReLU (stride 2: the paper's conv1; Table 1 counts the
    max-pool as the start of conv2_x), then layer1-layer4 (the paper's conv2_x-conv5_x).
    """
    plain = name.startswith("plain")
    assert plain == (tv_params is None), "a residual net has torchvision's count, a plain twin none"
    depth, e = name.removeprefix("plain").removeprefix("resnet"), block.expansion
    if plain:
        source = (
            f"no published count (He et al. and torchvision give none); it is resnet{depth}'s count "
            "minus its 1x1 projection shortcuts"
        )
        notes = "plain twin: skip connections and projections removed"
    else:
        source = f"torchvision ResNet{depth}_Weights.IMAGENET1K_V1.meta['num_params'] (= timm; He et al. print none)"
        stride = f"stride on the 3x3 (v1.5; the paper's v1 is resnet{depth}_v1)" if e == 4 else "the paper's layout"
        notes = f"shortcut option B, {stride}; loads torchvision weights"
    stages = stage_infos(
        ("relu", 64, 2), ("layer1", 64 * e, 4), ("layer2", 128 * e, 8), ("layer3", 256 * e, 16), ("layer4", 512 * e, 32)
    )
    return dict(
        name=name, family="resnet", paper=_HE, year=2016, default_input_size=(3, 224, 224), default_num_classes=1000,
        paper_params=tv_params, params_kind="none" if plain else "torchvision", params_source=source,
        min_input_size=(1, 1), first_conv="conv1", classifier="fc", classifier_tensor="fc.weight", stages=stages,
        twin=f"resnet{depth}" if plain else f"plain{depth}", notes=notes,
        torchvision_name=None if plain else name, residual=not plain,
    )  # fmt: skip


# torchvision's parameter counts of the bottleneck nets (ResNetN_Weights.IMAGENET1K_V1.meta['num_params']).
TV_BOTTLENECK_PARAMS = {"50": 25_557_032, "101": 44_549_160, "152": 60_192_808}
# He et al. Table 1's FLOPs (multiply-adds, x10^9) of the bottleneck nets, which v1 reproduces.
TABLE1_GMACS = {"50": 3.8, "101": 7.6, "152": 11.3}


def _card_v1(depth: str) -> dict:
    """Card fields of ``resnet{depth}_v1``: resnet{depth}'s, with the paper's stride placement."""
    card = _card(f"resnet{depth}", Bottleneck, tv_params=TV_BOTTLENECK_PARAMS[depth])
    card.update(
        name=f"resnet{depth}_v1", params_kind="exact-of-reference", twin=None, torchvision_name=None,
        params_source=f"classicnets' exact count of the v1 layout (He et al.'s released Caffe models: stride on "
        f"the first 1x1); moving a stride changes no weight shape, so it equals torchvision's "
        f"ResNet{depth}_Weights.IMAGENET1K_V1.meta['num_params']; He et al. print no count",
        notes=f"the paper's v1: stride on the first 1x1 of a block, shortcut option B; He et al. Table 1's "
        f"{TABLE1_GMACS[depth]}x10^9 FLOPs at 224x224; loads torchvision's resnet{depth} state dict (same keys and "
        f"shapes; those weights were trained as v1.5); no plain twin (plain{depth} is v1.5's)",
    )  # fmt: skip
    return card


@register_model(**_card("resnet18", BasicBlock, tv_params=11_689_512))
def resnet18(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2])."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans,
                  shortcut="B", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("plain18", BasicBlock))
def plain18(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """Plain twin of ResNet-18 (BasicBlock, [2, 2, 2, 2])."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans,
                  shortcut="none", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("resnet34", BasicBlock, tv_params=21_797_672))
def resnet34(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_chans,
                  shortcut="B", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("plain34", BasicBlock))
def plain34(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """Plain twin of ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_chans,
                  shortcut="none", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("resnet50", Bottleneck, tv_params=TV_BOTTLENECK_PARAMS["50"]))
def resnet50(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans,
                  shortcut="B", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card_v1("50"))
def resnet50_v1(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-50 v1 as in the paper (Bottleneck, [3, 4, 6, 3], stride on the first 1x1 of a block)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, shortcut="B",
                  zero_init_residual=zero_init_residual, stem=stem, stride_in_1x1=True)


@register_model(**_card("plain50", Bottleneck))
def plain50(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """Plain twin of ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans,
                  shortcut="none", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("resnet101", Bottleneck, tv_params=TV_BOTTLENECK_PARAMS["101"]))
def resnet101(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_chans,
                  shortcut="B", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card_v1("101"))
def resnet101_v1(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-101 v1 as in the paper (Bottleneck, [3, 4, 23, 3], stride on the first 1x1 of a block)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_chans, shortcut="B",
                  zero_init_residual=zero_init_residual, stem=stem, stride_in_1x1=True)


@register_model(**_card("plain101", Bottleneck))
def plain101(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """Plain twin of ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_chans,
                  shortcut="none", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card("resnet152", Bottleneck, tv_params=TV_BOTTLENECK_PARAMS["152"]))
def resnet152(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-152 (Bottleneck, [3, 8, 36, 3])."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_chans,
                  shortcut="B", zero_init_residual=zero_init_residual, stem=stem)


@register_model(**_card_v1("152"))
def resnet152_v1(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """ResNet-152 v1 as in the paper (Bottleneck, [3, 8, 36, 3], stride on the first 1x1 of a block)."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_chans, shortcut="B",
                  zero_init_residual=zero_init_residual, stem=stem, stride_in_1x1=True)


@register_model(**_card("plain152", Bottleneck))
def plain152(
    num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False, stem: str = "imagenet"
) -> ResNet:
    """Plain twin of ResNet-152 (Bottleneck, [3, 8, 36, 3])."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_chans,
                  shortcut="none", zero_init_residual=zero_init_residual, stem=stem)
