"""VGG (Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015), configurations A, B, D and E of Table 1 as VGG-11, -13, -16 and -19, with and without
batch normalisation (BN is a later addition, as in torchvision), and the two paper-only configurations:
A-LRN (``vgg11_lrn``: A with local response normalisation after the first conv layer, Krizhevsky et al.'s
settings) and C (``vgg16_c``: D with a 1x1 conv as the last conv of stages 3, 4 and 5).

An architecture is a table plus a builder: ``CONFIGS`` lists the conv widths (a 3x3 conv), ``(1, width)``
is a 1x1 conv, ``"M"`` a 2x2 max-pool, ``"LRN"`` a local response normalisation, and one ``make_layers``
turns a row into layers. The layout and state-dict keys (``features``, ``avgpool``, ``classifier``) of
A, B, D and E are torchvision's, so its weights load unchanged (C's shapes and A-LRN's indices differ).
Five pools halve the input five times, so the smallest input is 32x32; the adaptive 7x7 pool lets any
larger size through.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FeaturesClassifierNet
from .registry import StageInfo, register_model

CONFIGS: dict[str, list[int | str | tuple[int, int]]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M", 512, 512, (1, 512), "M", 512, 512, (1, 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(config: list[int | str | tuple[int, int]], in_chans: int, batch_norm: bool) -> nn.Sequential:
    """3x3 same-padding convs (+BN) + ReLU; ``(1, width)`` a 1x1 conv (+BN) + ReLU; "M" a 2x2 stride-2
    max-pool; "LRN" Krizhevsky et al.'s local response normalisation (Section 2.1 of the paper: "the
    parameters for the LRN layer are those of (Krizhevsky et al., 2012)": k=2, n=5, alpha=1e-4, beta=0.75;
    PyTorch divides alpha by n, so it gets ``alpha * n``)."""
    layers: list[nn.Module] = []
    channels = in_chans
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        if item == "LRN":
            layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0))
            continue
        kernel, width = item if isinstance(item, tuple) else (3, int(item))
        layers.append(nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        channels = width
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
TABLE2_MILLIONS = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}  # the paper's rounded parameter counts (Table 2)
POOL_WIDTHS = (64, 128, 256, 512, 512)  # the channels each of the five max-pools passes on


def _card(name: str, config: str, batch_norm: bool, params: int, pools: tuple[int, ...]) -> dict:
    """Card fields of one VGG: ``params`` is the exact count (torchvision's for A, B, D, E; classicnets' own for
    the paper-only C and A-LRN), ``pools`` the indices in ``features`` of the five max-pools, the stages
    (64-128-256-512-512 channels, each halving the map)."""
    stages = tuple(StageInfo(f"features.{i}", width, 2**k) for k, (i, width) in enumerate(zip(pools, POOL_WIDTHS), 1))
    rounded = f"the paper's Table 2 rounds it to {TABLE2_MILLIONS[config]}M"
    if config in ("C", "A-LRN"):  # in no library: our own exact count of the paper's layout
        kind, tv_name = "exact-of-rounded", None
        source = f"classicnets' exact count of configuration {config} of Table 1; {rounded}"
    else:
        kind, tv_name = "torchvision", name
        weights = f"torchvision {name.upper()}_Weights.IMAGENET1K_V1.meta['num_params']"
        source = f"{weights} (batch norm is not in the paper)" if batch_norm else f"{weights}; {rounded}"
    notes = {"C": "configuration C of Table 1: D with a 1x1 conv as the last conv of stages 3-5",
             "A-LRN": "configuration A-LRN of Table 1: A with LRN (Krizhevsky et al.'s settings) after the first "
                      "conv layer; LRN has no parameters, so the count is A's"}.get(
        config, f"configuration {config} of Table 1" + (", batch norm after every conv" if batch_norm else ""))
    return dict(
        name=name, family="vgg", paper=_VGG, year=2015, default_input_size=(3, 224, 224), default_num_classes=1000,
        paper_params=params, params_kind=kind, params_source=source,
        min_input_size=(32, 32), first_conv="features.0", classifier="classifier.6",
        classifier_tensor="classifier.6.weight", stages=stages, twin=None, notes=notes, torchvision_name=tv_name,
    )  # fmt: skip


@register_model(**_card("vgg11", "A", batch_norm=False, params=132_863_336, pools=(2, 5, 10, 15, 20)))
def vgg11(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A)."""
    return VGG("A", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg11_bn", "A", batch_norm=True, params=132_868_840, pools=(3, 7, 14, 21, 28)))
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with batch normalisation."""
    return VGG("A", num_classes, in_chans, batch_norm=True, dropout=dropout)


@register_model(**_card("vgg11_lrn", "A-LRN", batch_norm=False, params=132_863_336, pools=(3, 6, 11, 16, 21)))
def vgg11_lrn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 with LRN after its first conv layer (configuration A-LRN)."""
    return VGG("A-LRN", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg13", "B", batch_norm=False, params=133_047_848, pools=(4, 9, 14, 19, 24)))
def vgg13(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B)."""
    return VGG("B", num_classes, in_chans, batch_norm=False, dropout=dropout)


@register_model(**_card("vgg13_bn", "B", batch_norm=True, params=133_053_736, pools=(6, 13, 20, 27, 34)))
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with batch normalisation."""
    return VGG("B", num_classes, in_chans, batch_norm=True, dropout=dropout)


@register_model(**_card("vgg16_c", "C", batch_norm=False, params=133_638_952, pools=(4, 9, 16, 23, 30)))
def vgg16_c(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 with a 1x1 conv as the last conv of stages 3, 4 and 5 (configuration C)."""
    return VGG("C", num_classes, in_chans, batch_norm=False, dropout=dropout)


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
