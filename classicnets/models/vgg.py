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
from .registry import register_model

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
# torchvision's published parameter counts (its weights' metadata).
_TV_PARAMS = {
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
}  # fmt: skip


def _register_vgg(depth: int, config: str, batch_norm: bool) -> None:
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")

    def builder(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
        return VGG(config, num_classes, in_chans, batch_norm=batch_norm, dropout=dropout)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"VGG-{depth} (configuration {config}){' with batch normalisation' if batch_norm else ''}."
    register_model(
        name=name, family="vgg", paper=_VGG, year=2015, default_input_size=(3, 224, 224),
        default_num_classes=1000, paper_params=_TV_PARAMS[name], params_source="torchvision VGG weights metadata",
        notes=f"configuration {config} of Table 1" + (", batch norm after every conv" if batch_norm else ""),
        torchvision_name=name,
    )(builder)  # fmt: skip
    globals()[name] = builder


for _depth, _config in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    for _bn in (False, True):
        _register_vgg(_depth, _config, _bn)
