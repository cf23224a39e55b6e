"""AlexNet (Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012) and the single-tower layout torchvision ships (Krizhevsky 2014, "One weird trick").

``alexnet_paper``: 227x227 input (the paper's "224" does not give its 55x55 maps), 96-256-384-384-256
conv channels; conv2, conv4 and conv5 only see the kernel maps on their own GPU, which is ``groups=2``;
local response normalisation after the ReLUs of conv1 and conv2 (k=2, n=5, alpha=1e-4, beta=0.75);
overlapping 3x3 stride-2 max-pooling; dropout 0.5 on the outputs of fc6 and fc7 (torchvision's layout drops
their inputs instead: pool5's and fc6's outputs). 60,965,224 parameters.
PyTorch's ``LocalResponseNorm`` divides alpha by n, so we pass ``alpha * n`` to get the paper's formula.
Init as in Section 5: weights N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden FC layers, else 0.

``alexnet``: torchvision's layout (64-192-384-256-256, no LRN, no groups), 61,100,840 parameters, with
its state-dict keys, so torchvision weights load unchanged.

Both pool adaptively to 6x6 before the classifier (the identity at the paper's input size), so any input
of at least 63x63 (torchvision layout) or 67x67 (paper) works.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FeaturesClassifierNet
from .registry import register_model, stage_infos


class AlexNet(FeaturesClassifierNet):
    """AlexNet: ``features`` (convs), ``avgpool`` (adaptive 6x6), ``classifier`` (three FC layers)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, paper: bool = False):
        super().__init__(num_classes, in_chans)
        self.paper = paper
        self.dropout = dropout
        if paper:
            self.default_input_size, self.min_input_size = (in_chans, 227, 227), (67, 67)
            self.features = nn.Sequential(
                nn.Conv2d(in_chans, 96, kernel_size=11, stride=4),
                nn.ReLU(inplace=True),
                nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
                nn.ReLU(inplace=True),
                nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(256, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
        else:
            self.default_input_size, self.min_input_size = (in_chans, 224, 224), (63, 63)
            self.features = nn.Sequential(
                nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = self._paper_classifier(num_classes) if paper else self._torchvision_classifier(num_classes)
        if paper:
            self._paper_init()

    def _paper_classifier(self, num_classes: int) -> nn.Sequential:
        """fc6, fc7, fc8; dropout zeroes the *outputs* of fc6 and fc7. Section 4.2: dropout is "setting to zero
        the output of each hidden neuron with probability 0.5" and "we use dropout in the first two
        fully-connected layers"; cuda-convnet's layers-imagenet config drops fc6's and fc7's outputs too.
        The last Linear is ``classifier.6`` in both layouts."""
        return nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(p=self.dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(p=self.dropout),
            nn.Linear(4096, num_classes),  # fc8
        )

    def _torchvision_classifier(self, num_classes: int) -> nn.Sequential:
        """torchvision's order (its state-dict keys): dropout on the *inputs* of fc6 and fc7."""
        return nn.Sequential(
            nn.Dropout(p=self.dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=self.dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    @torch.no_grad()
    def _paper_init(self) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for m in convs + linears:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        for m in (convs[1], convs[3], convs[4], linears[0], linears[1]):
            nn.init.ones_(m.bias)


_ALEX = "Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks"


def _card(name: str) -> dict:
    """Card fields both AlexNets share; the stages are the three max-pools of ``features``."""
    return dict(
        name=name, family="alexnet", paper=_ALEX, year=2012, default_num_classes=1000, first_conv="features.0",
        classifier="classifier.6", classifier_tensor="classifier.6.weight", twin=None,
    )  # fmt: skip


@register_model(
    **_card("alexnet"), default_input_size=(3, 224, 224), min_input_size=(63, 63),
    paper_params=61_100_840, params_kind="torchvision",
    params_source="torchvision AlexNet_Weights.IMAGENET1K_V1.meta['num_params']",
    stages=stage_infos(("features.2", 64, 8), ("features.5", 192, 16), ("features.12", 256, 32)),
    notes="torchvision layout (one-tower, 64-192-384-256-256, no LRN); loads torchvision weights",
    torchvision_name="alexnet",
)  # fmt: skip
def alexnet(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet in torchvision's one-tower layout (Krizhevsky 2014), which loads torchvision's weights."""
    return AlexNet(num_classes, in_chans, dropout=dropout, paper=False)


@register_model(
    **_card("alexnet_paper"), default_input_size=(3, 227, 227), min_input_size=(67, 67),
    paper_params=60_965_224, params_kind="exact-of-rounded",
    params_source="classicnets' exact count of the layout of Section 3.5 / Fig. 2; "
    "the paper says only '60 million parameters'",
    stages=stage_infos(("features.3", 96, 8), ("features.7", 256, 16), ("features.14", 256, 32)),
    notes="two-GPU split as groups=2 on conv2/4/5, LRN after conv1 and conv2, 227x227 input, "
    "dropout on the outputs of fc6 and fc7",
)  # fmt: skip
def alexnet_paper(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet as in the 2012 paper: two towers as groups=2, LRN after conv1 and conv2, 227x227 input."""
    return AlexNet(num_classes, in_chans, dropout=dropout, paper=True)
