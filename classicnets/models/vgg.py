"""VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015), configurations A, B, D and E of Table 1 as VGG-11, -13, -16 and -19, with and without
batch normalisation (BN is a later addition, as in torchvision).

An architecture is a table plus a builder: ``CONFIGS`` lists the conv widths, ``"M"`` is a 2x2 max-pool,
and one ``make_layers`` turns a row into layers. The layout and state-dict keys (``features``,
``avgpool``, ``classifier``) are torchvision's, so its weights load unchanged. Five pools halve the input
five times, so the smallest input is 32x32; the adaptive 7x7 pool lets any larger size through.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FeaturesClassifierNet
from .registry import StageInfo, register_model

CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(config: list[int | str], in_chans: int, batch_norm: bool) -> nn.Sequential:
    """3x3 same-padding convs (+BN) + ReLU; "M" is a 2x2 stride-2 max-pool."""
    layers: list[nn.Module] = []
    channels = in_chans
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(item)
    return nn.Sequential(*layers)


class VGG(FeaturesClassifierNet):
    def __init__(
        self, config: str, num_classes: int = 1000, in_chans: int = 3, batch_norm: bool = False, dropout: float = 0.5
    ) -> None:
        super().__init__(num_classes, in_chans)
        self.default_input_size, self.min_input_size = (in_chans, 224, 224), (32, 32)
        self.features = make_layers(CONFIGS[config], in_chans, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # The paper pre-trained config A and copied its layers into deeper nets; like torchvision we use
        # He init for the convs instead (Simonyan and Zisserman note Glorot init works as well).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


_VGG = "Simonyan and Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition"
TABLE2_MILLIONS = {"A": 133, "B": 133, "D": 138, "E": 144}  # the paper's rounded parameter counts (Table 2)
POOL_WIDTHS = (64, 128, 256, 512, 512)  # the channels each of the five max-pools passes on


def _card(name: str, config: str, batch_norm: bool, params: int, pools: tuple[int, ...]) -> dict:
    """Card fields of one VGG: ``params`` is torchvision's count, ``pools`` the indices in ``features`` of the
    five max-pools, the stages (64-128-256-512-512 channels, each halving the map)."""
    weights = f"torchvision {name.upper()}_Weights.IMAGENET1K_V1.meta['num_params']"
    stages = tuple(StageInfo(f"features.{i}", width, 2**k) for k, (i, width) in enumerate(zip(pools, POOL_WIDTHS), 1))
    return dict(
        name=name, family="vgg", paper=_VGG, year=2015, default_input_size=(3, 224, 224), default_num_classes=1000,
        paper_params=params, params_kind="torchvision",
        params_source=f"{weights} (batch norm is not in the paper)" if batch_norm
        else f"{weights}; the paper's Table 2 rounds it to {TABLE2_MILLIONS[config]}M",
        min_input_size=(32, 32), first_conv="features.0", classifier="classifier.6",
        classifier_tensor="classifier.6.weight", stages=stages,
        twin=None, notes=f"configuration {config} of Table 1" + (", batch norm after every conv" if batch_norm else ""),
        torchvision_name=name,
    )  # fmt: skip


@register_model(**_card("vgg11", "A", batch_norm=False, params=132_863_336, pools=(2, 5, 10, 15, 20)))
def vgg11(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A)."""
    return VGG("A", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg11_bn", "A", batch_norm=True, params=132_868_840, pools=(3, 7, 14, 21, 28)))
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with batch normalisation."""
    return VGG("A", num_classes, in_chans, batch_norm=True, dropout=dropout)


@register_model(**_card("vgg13", "B", batch_norm=False, params=133_047_848, pools=(4, 9, 14, 19, 24)))
def vgg13(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B)."""
    return VGG("B", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg13_bn", "B", batch_norm=True, params=133_053_736, pools=(6, 13, 20, 27, 34)))
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with batch normalisation."""
    return VGG("B", num_classes, in_chans, batch_norm=True, dropout=dropout)


@register_model(**_card("vgg16", "D", batch_norm=False, params=138_357_544, pools=(4, 9, 16, 23, 30)))
def vgg16(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D)."""
    return VGG("D", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg16_bn", "D", batch_norm=True, params=138_365_992, pools=(6, 13, 23, 33, 43)))
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D) with batch normalisation."""
    return VGG("D", num_classes, in_chans, batch_norm=True, dropout=dropout)


@register_model(**_card("vgg19", "E", batch_norm=False, params=143_667_240, pools=(4, 9, 18, 27, 36)))
def vgg19(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E)."""
    return VGG("E", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg19_bn", "E", batch_norm=True, params=143_678_248, pools=(6, 13, 26, 39, 52)))
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E) with batch normalisation."""
    return VGG("E", num_classes, in_chans, batch_norm=True, dropout=dropout)
