"""LeNet-5 (LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition", 1998).

Two variants:

``lenet5`` follows Section II.B of the paper layer by layer, 60,000 trainable parameters:

==== ============================================== ======= ===============================
layer what                                           output  trainable parameters
==== ============================================== ======= ===============================
C1   6 conv 5x5                                      6x28x28 6*(5*5*1+1)   = 156
S2   2x2 sum * coefficient + bias, per map           6x14x14 6*2           = 12
C3   16 conv 5x5 on a *subset* of S2 maps (Table I)  16x10x10 6*76+9*101+151 = 1,516
S4   as S2                                           16x5x5  16*2          = 32
C5   120 conv 5x5                                    120x1x1 120*(400+1)   = 48,120
F6   84 units                                        84      84*(120+1)    = 10,164
OUT  10 Euclidean RBF units, fixed centres           10      0 (not trained)
==== ============================================== ======= ===============================

Every layer up to F6 is squashed by the scaled tanh ``f(a) = 1.7159 tanh(2a/3)`` (Appendix A), and
weights start uniform in ``+-2.4 / fan_in``.

Deviations from the paper, all deliberate:

* RBF centres: the paper uses hand-drawn 7x12 bitmaps of the ASCII set (Fig. 3), not published in a
  machine-readable form. We draw our own 7x12 bitmaps of the digits 0-9 (+1 ink, -1 paper); for other
  class counts the centres are a fixed, seeded random +-1 code. Either way they are buffers, not parameters.
* Output and loss: the RBF unit ``i`` outputs the squared distance ``y_i = sum_j (x_j - w_ij)^2``; we return
  ``-y_i`` as the logit, so cross-entropy on it is the paper's MAP criterion (eq. 9) without the constant
  ``e^-j`` rubbish-class term.
* Larger inputs: a global average pool after C5 (the identity at 32x32) lets the net take any input of at
  least 32x32. The paper's input scaling (background -0.1, ink 1.175) is left to the data pipeline.

MACs (``classicnets summary lenet5``) count what a layer multiplies, not the paper's "connections": S2 and
S4 count one multiply per output unit (the coefficient; the 2x2 sum is additions), 1,176 and 400, where
the paper counts each unit's 4 inputs + bias, 5,880 and 2,000 connections. C3 counts the 150,000 MACs of
its connection table (60 kernels of 5x5 at 10x10 positions; the paper's 151,600 connections add the 1,600
bias terms), but runs as one dense convolution with a masked kernel: 16*6*25*100 = 240,000 MACs executed,
90,000 of them multiplications by zero.

``lenet5_modern`` has the layer sizes of the LeNet-5 that courses and libraries teach (a fully connected
C3, F6 84 units, a linear 10-way output: 61,706 parameters) with ReLU and 2x2 max-pooling, as in PyTorch's
"Neural Networks" tutorial. Those tutorials share the sizes and the count, not the nonlinearity or the
pooling: d2l.ai's LeNet uses sigmoid and average pooling, mmpretrain's tanh and average pooling.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClassicNet
from .registry import register_model, stage_infos

# Table I of the paper: which S2 maps (0-5) each of the 16 C3 maps sees.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip

# 7x12 bitmaps of the digits, our stand-in for the paper's Fig. 3 ("#" = ink = +1, "." = paper = -1).
DIGIT_BITMAPS: tuple[str, ...] = (
    ".......|..###..|.#...#.|#.....#|#.....#|#.....#|#.....#|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|...#...|..##...|.#.#...|...#...|...#...|...#...|...#...|...#...|...#...|.#####.|.......",
    ".......|..###..|.#...#.|#.....#|......#|.....#.|....#..|...#...|..#....|.#.....|#######|.......",
    ".......|.####..|#....#.|......#|.....#.|..###..|.....#.|......#|......#|#....#.|.####..|.......",
    ".......|....#..|...##..|..#.#..|.#..#..|#...#..|#######|....#..|....#..|....#..|...###.|.......",
    ".......|#######|#......|#......|#.###..|##...#.|......#|......#|#.....#|.#...#.|..###..|.......",
    ".......|..###..|.#.....|#......|#......|#.###..|##...#.|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|#######|......#|.....#.|.....#.|....#..|....#..|...#...|...#...|..#....|..#....|.......",
    ".......|..###..|.#...#.|#.....#|.#...#.|..###..|.#...#.|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|..###..|.#...#.|#.....#|#.....#|.#...##|..###.#|......#|.....#.|....#..|.###...|.......",
)


class ScaledTanh(nn.Module):
    """LeCun's squashing function ``1.7159 * tanh(2x/3)`` (Appendix A): f(1) = 1, f(-1) = -1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: each unit sums a 2x2 patch, times one trainable coefficient per map, plus one bias per map."""

    kernel_size = 2
    stride = 2
    padding = 0

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        patch_sum = F.avg_pool2d(x, 2) * 4.0
        return patch_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def param_formula(self) -> str:
        return f"2*{self.channels}"

    def macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape)  # one multiply per output unit (the 4-way sum is additions)


class PartialConv2d(nn.Module):
    """C3: a 5x5 convolution where output map ``o`` sees only the input maps listed in ``table[o]``.

    Only the connected kernels are parameters (``weight`` is ``(connections, k, k)``), so the count is the
    paper's; forward scatters them into a dense, mostly zero kernel and runs one ordinary convolution.
    """

    stride = 1
    padding = 0

    def __init__(self, in_channels: int, table: tuple[tuple[int, ...], ...], kernel_size: int = 5) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.table = table
        flat = [o * in_channels + i for o, inputs in enumerate(table) for i in inputs]
        self.register_buffer("index", torch.tensor(flat, dtype=torch.long), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(flat), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(len(table)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels * self.in_channels, k, k)
        dense = dense.index_copy(0, self.index, self.weight)
        return F.conv2d(x, dense.view(self.out_channels, self.in_channels, k, k), self.bias)

    def fan_in(self, out_map: int) -> int:
        return len(self.table[out_map]) * self.kernel_size**2

    def param_formula(self) -> str:
        k, groups = self.kernel_size, {}
        for inputs in self.table:
            groups[len(inputs)] = groups.get(len(inputs), 0) + 1
        return " + ".join(f"{n}*({size}*{k}*{k}+1)" for size, n in groups.items())

    def macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
        h, w = output_shape[-2], output_shape[-1]
        return h * w * self.weight.numel()  # the table's connections; forward's dense conv runs 16*6/60 times more


class RBFOutput(nn.Module):
    """Euclidean RBF output units with fixed +-1 centres; returns ``-||x - c_i||^2`` as logits."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.register_buffer("centres", self.make_centres(in_features, num_classes))

    @staticmethod
    def make_centres(in_features: int, num_classes: int) -> torch.Tensor:
        if num_classes == 10 and in_features == 84:
            bits = [[1.0 if ch == "#" else -1.0 for ch in bmp.replace("|", "")] for bmp in DIGIT_BITMAPS]
            return torch.tensor(bits)
        generator = torch.Generator().manual_seed(0)  # a fixed code, the same on every machine
        return torch.randint(0, 2, (num_classes, in_features), generator=generator).float() * 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 84) -> (B, num_classes)
        c = self.centres.to(x.dtype)
        sq_dist = (x * x).sum(1, keepdim=True) - 2 * x @ c.t() + (c * c).sum(1)
        return -sq_dist

    def param_formula(self) -> str:
        return ""

    def macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
        return self.in_features * self.num_classes


class _LeNet(ClassicNet):
    """What both LeNets share: ``features`` (C1-C5), a global pool (the identity at 32x32), F6, ``output``."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, 32, 32) -> (B, 120, 1, 1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)  # (B, 120)
        return self.output(self.act6(self.f6(x)))  # (B, 84) -> (B, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.output

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = self.make_output(num_classes)

    def make_output(self, num_classes: int) -> nn.Module:
        raise NotImplementedError


class LeNet5(_LeNet):
    """LeNet-5 as in the paper (see the module docstring for the layer table and deviations)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__(num_classes, in_chans)
        self.default_input_size = (in_chans, 32, 32)
        self.min_input_size = (32, 32)
        self.features = nn.Sequential(OrderedDict(
            c1=nn.Conv2d(in_chans, 6, 5), act1=ScaledTanh(),
            s2=Subsampling(6), act2=ScaledTanh(),
            c3=PartialConv2d(6, C3_TABLE), act3=ScaledTanh(),
            s4=Subsampling(16), act4=ScaledTanh(),
            c5=nn.Conv2d(16, 120, 5), act5=ScaledTanh(),
        ))  # fmt: skip
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.f6 = nn.Linear(120, 84)
        self.act6 = ScaledTanh()
        self.output = self.make_output(num_classes)
        self.reset_parameters()

    def make_output(self, num_classes: int) -> nn.Module:
        return RBFOutput(84, num_classes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Uniform in +-2.4/F_i, F_i the fan-in of the unit (Appendix A); biases start at zero."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.uniform_(m.weight, -2.4 / fan_in, 2.4 / fan_in)
                nn.init.zeros_(m.bias)
            elif isinstance(m, Subsampling):
                nn.init.uniform_(m.weight, -2.4 / 4, 2.4 / 4)
                nn.init.zeros_(m.bias)
            elif isinstance(m, PartialConv2d):
                start = 0
                for o, inputs in enumerate(m.table):
                    bound = 2.4 / m.fan_in(o)
                    nn.init.uniform_(m.weight[start : start + len(inputs)], -bound, bound)
                    start += len(inputs)
                nn.init.zeros_(m.bias)


class LeNet5Modern(_LeNet):
    """The modern LeNet-5: ReLU, 2x2 max-pool, full C3, linear output (61,706 parameters; the count of the
    d2l.ai and mmpretrain LeNets too, which use sigmoid or tanh and average pooling)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__(num_classes, in_chans)
        self.default_input_size = (in_chans, 32, 32)
        self.min_input_size = (32, 32)
        self.features = nn.Sequential(OrderedDict(
            c1=nn.Conv2d(in_chans, 6, 5), act1=nn.ReLU(inplace=True), s2=nn.MaxPool2d(2),
            c3=nn.Conv2d(6, 16, 5), act3=nn.ReLU(inplace=True), s4=nn.MaxPool2d(2),
            c5=nn.Conv2d(16, 120, 5), act5=nn.ReLU(inplace=True),
        ))  # fmt: skip
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.f6 = nn.Linear(120, 84)
        self.act6 = nn.ReLU(inplace=True)
        self.output = self.make_output(num_classes)

    def make_output(self, num_classes: int) -> nn.Module:
        return nn.Linear(84, num_classes)


_LECUN = "LeCun et al., Gradient-Based Learning Applied to Document Recognition"


def _card(name: str) -> dict:
    """Card fields both LeNets share: 32x32 grey input, C1 the first conv, ``output`` the head."""
    return dict(
        name=name, family="lenet", paper=_LECUN, year=1998, default_input_size=(1, 32, 32), default_num_classes=10,
        min_input_size=(32, 32), first_conv="features.c1", classifier="output", twin=None,
    )  # fmt: skip


# Stages are the paper's feature maps C1, S2, C3, S4, C5 *after* their activation (the paper's unit
# "states"); F6 is a vector, not a map, so it is no stage. C5 is 1x1 at 32x32: the map forward_head pools.
@register_model(
    **_card("lenet5"), paper_params=60_000, params_kind="paper",
    params_source="LeCun et al. 1998, Section II.B, layer by layer: C1 156 + S2 12 + C3 1,516 + S4 32 "
    "+ C5 48,120 + F6 10,164 = 60,000 (the RBF output has no trainable parameters)",
    classifier_tensor="output.centres",  # the RBF centres are a buffer, (num_classes, 84)
    stages=stage_infos(("features.act1", 6, 1), ("features.act2", 6, 2), ("features.act3", 16, 2),
                       ("features.act4", 16, 4), ("features.act5", 120, 4)),
    notes="paper-faithful: scaled tanh, trainable subsampling, C3 connection table, fixed RBF output. MACs: S2/S4 "
    "count one multiply per output (the paper: 4 inputs + bias per unit); C3 counts its table's 150,000 but runs "
    "as a dense masked conv, 240,000 MACs executed",
)  # fmt: skip
def lenet5(num_classes: int = 10, in_chans: int = 1) -> LeNet5:
    """LeNet-5 as in the paper: scaled tanh, trainable subsampling, C3 connection table, fixed RBF output."""
    return LeNet5(num_classes, in_chans)


@register_model(
    **_card("lenet5_modern"), paper_params=61_706, params_kind="exact-of-reference",
    params_source="classicnets' exact count of the layer sizes the LeNet-5 of d2l.ai, mmpretrain and PyTorch's "
    "'Neural Networks' tutorial share: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706",
    classifier_tensor="output.weight",
    stages=stage_infos(("features.act1", 6, 1), ("features.s2", 6, 2), ("features.act3", 16, 2),
                       ("features.s4", 16, 4), ("features.act5", 120, 4)),
    notes="modern: ReLU, max-pool (as PyTorch's tutorial; d2l.ai uses sigmoid and average pooling, mmpretrain "
    "tanh and average pooling: only the layer sizes and the 61,706 count are shared), full C3, linear output",
)  # fmt: skip
def lenet5_modern(num_classes: int = 10, in_chans: int = 1) -> LeNet5Modern:
    """The modern LeNet-5 (the layer sizes courses teach): ReLU, 2x2 max-pool, full C3, linear output."""
    return LeNet5Modern(num_classes, in_chans)
