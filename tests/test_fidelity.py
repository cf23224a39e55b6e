"""The zoo against the papers: the figures a paper prints that classicnets' models reproduce, and the places
where a common layout differs from the paper, measured both ways.

* ResNet v1 (stride on the first 1x1 of a bottleneck, He et al.) against v1.5 (torchvision's, stride on
  the 3x3): Table 1's multiply-adds, the receptive fields, the same weights.
* VGG configurations C and A-LRN (Simonyan & Zisserman Table 1/2).
* AlexNet's dropout on the outputs of fc6 and fc7 (Krizhevsky et al. Section 4.2).
* LeNet-5's MACs against the paper's connection counts.
* The Keras ResNet-50 count, from the layer shapes.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from classicnets import create_model, model_card
from classicnets.models.lenet import C3_TABLE
from classicnets.summary import summary


def meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return create_model(name)


def macs_and_rf(name: str) -> tuple[int, int]:
    """Total MACs at 224x224 and the receptive field of the last feature map (the largest finite one)."""
    s = summary(meta(name), (3, 224, 224))
    return s.total_macs, max(r.receptive_field for r in s.rows if isinstance(r.receptive_field, int))


# ------------------------------------------------------------------------------------------- ResNet v1
# He et al. Table 1 prints 3.8 / 7.6 / 11.3 x10^9 FLOPs (multiply-adds) for ResNet-50 / 101 / 152; the
# receptive fields of the v1 nets are 483 / 1027 / 1507 (Araujo et al., Distill 2019, "Computing Receptive
# Fields of Convolutional Neural Networks").
V1 = {"50": (3.86, 483), "101": (7.57, 1027), "152": (11.28, 1507)}
V1_5 = {"50": (4.09, 427), "101": (7.80, 971), "152": (11.51, 1451)}  # measured: torchvision's layout
TABLE1 = {"50": 3.8, "101": 7.6, "152": 11.3}


@pytest.mark.parametrize("depth", list(V1))
def test_resnet_v1_reproduces_table1(depth: str) -> None:
    v1_macs, v1_rf = macs_and_rf(f"resnet{depth}_v1")
    v15_macs, v15_rf = macs_and_rf(f"resnet{depth}")
    assert (round(v1_macs / 1e9, 2), v1_rf) == V1[depth]
    assert (round(v15_macs / 1e9, 2), v15_rf) == V1_5[depth]
    # the paper's one decimal (3.86 is printed as 3.8): v1 is within it, v1.5 is not
    assert abs(v1_macs / 1e9 - TABLE1[depth]) < 0.1 < abs(v15_macs / 1e9 - TABLE1[depth])
    # Why they differ. In the first block of stages 2-4 v1.5 runs the first 1x1 (C_in -> planes) on the
    # full map before the strided 3x3; v1 runs it on the subsampled map, a quarter of the positions. Every
    # such block costs 3/4 * H*W*C_in*planes more in v1.5: 56*56*256*128, 28*28*512*256 and 14*14*1024*512
    # are the same 102,760,448, whatever the depth.
    assert v15_macs - v1_macs == 3 * 3 * 56 * 56 * 256 * 128 // 4 == 231_211_008
    # And the receptive field: v1's 3x3 sits after the stride, so it spans 2x the step (jump) of v1.5's 3x3:
    # each of the three downsampling blocks adds 2 * jump more, at jumps 4, 8, 16.
    assert v1_rf - v15_rf == 2 * (4 + 8 + 16) == 56


@pytest.mark.parametrize("depth", list(V1))
def test_resnet_v1_has_v15s_weights(depth: str) -> None:
    """Same parameters and state-dict layout as torchvision's resnetN (v1.5): its state dict loads strictly."""
    ours, v15 = meta(f"resnet{depth}_v1"), meta(f"resnet{depth}")
    with torch.device("meta"):
        tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in v15.parameters()) == model_card(f"resnet{depth}").paper_params
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]
    ours.load_state_dict(tv.state_dict(), strict=True)
    # Only the strides moved: in the first block of layers 2-4, from the 3x3 (conv2) to the first 1x1 (conv1).
    for layer in ("layer2", "layer3", "layer4"):
        block, tv_block = ours.get_submodule(f"{layer}.0"), tv.get_submodule(f"{layer}.0")
        assert (block.conv1.stride, block.conv2.stride) == ((2, 2), (1, 1))
        assert (tv_block.conv1.stride, tv_block.conv2.stride) == ((1, 1), (2, 2))
        assert block.downsample[0].stride == (2, 2)


def test_resnet_v1_runs_torchvision_weights() -> None:
    """For real: torchvision's resnet50 weights in resnet50_v1 give the same output as a v1 net built by moving
    the strides in torchvision's own model (an independent construction of v1)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    ours = create_model("resnet50_v1").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v15_out = tv(x)
        for layer in (tv.layer2, tv.layer3, tv.layer4):
            layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours(x).detach(), v15_out, atol=1e-3), "v1 computed what v1.5 does"


def test_resnet_v1_refuses_basic_blocks() -> None:
    from classicnets.models.resnet import BasicBlock, ResNet

    with pytest.raises(ValueError, match="Bottleneck"):
        ResNet(BasicBlock, [2, 2, 2, 2], stride_in_1x1=True)


# ------------------------------------------------------------------------------------------------ VGG
def conv_shapes(name: str) -> list[tuple[int, int, int]]:
    return [(m.out_channels, m.in_channels, m.kernel_size[0]) for m in meta(name).features if isinstance(m, nn.Conv2d)]


def test_vgg_c_is_d_with_three_1x1_convs() -> None:
    c, d = conv_shapes("vgg16_c"), conv_shapes("vgg16")
    assert len(c) == len(d) == 13
    ones = [i for i, (o, i_, k) in enumerate(c) if k == 1]
    assert ones == [6, 9, 12]  # the last conv of stages 3, 4 and 5
    assert [(o, i_) for o, i_, _ in c] == [(o, i_) for o, i_, _ in d]
    # each 1x1 has 8 fewer weights per (out, in) pair than D's 3x3: 256^2*8 + 2 * 512^2*8 fewer parameters
    count = sum(p.numel() for p in meta("vgg16_c").parameters())
    assert count == 138_357_544 - (256 * 256 + 2 * 512 * 512) * 8 == 133_638_952
    assert round(count / 1e6) == 134 and model_card("vgg16_c").paper_params == count  # Table 2: 134M
    assert model_card("vgg16_c").params_kind == "exact-of-rounded"


def test_vgg_a_lrn_is_a_with_lrn_after_the_first_conv() -> None:
    lrn_net, a = meta("vgg11_lrn"), meta("vgg11")
    types = [type(m).__name__ for m in lrn_net.features]
    assert types[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert types.count("LocalResponseNorm") == 1
    lrn = lrn_net.features[2]
    # Krizhevsky et al.'s settings: k=2, n=5, alpha=1e-4, beta=0.75 (PyTorch divides alpha by n)
    assert (lrn.size, lrn.alpha / lrn.size, lrn.beta, lrn.k) == (5, pytest.approx(1e-4), 0.75, 2.0)
    assert conv_shapes("vgg11_lrn") == conv_shapes("vgg11")
    count = sum(p.numel() for p in lrn_net.parameters())
    assert count == sum(p.numel() for p in a.parameters()) == 132_863_336  # LRN has no parameters
    assert round(count / 1e6) == 133 and model_card("vgg11_lrn").paper_params == count  # Table 2: 133M
    assert model_card("vgg11_lrn").params_kind == "exact-of-rounded"


def test_vgg_lrn_is_the_alexnet_formula() -> None:
    """The LRN layer computes b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta."""
    lrn = create_model("vgg11_lrn").features[2]
    a = torch.randn(1, 7, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sq = nn.functional.pad(a * a, (0, 0, 0, 0, 2, 2))
    window = sum(sq[:, i : i + 7] for i in range(5))
    torch.testing.assert_close(lrn(a), a / (2 + 1e-4 * window) ** 0.75)


# -------------------------------------------------------------------------------------------- AlexNet
def test_alexnet_paper_drops_the_outputs_of_fc6_and_fc7() -> None:
    torch.manual_seed(0)
    model = create_model("alexnet_paper", num_classes=10)
    assert [type(m).__name__ for m in model.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]  # fmt: skip
    # torchvision's layout keeps its own order (its weights' keys): dropout on the inputs of fc6 and fc7
    assert [type(m).__name__ for m in meta("alexnet").classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]  # fmt: skip
    seen: dict[str, torch.Tensor] = {}
    fc6, fc7, fc8 = (m for m in model.classifier if isinstance(m, nn.Linear))
    model.avgpool.register_forward_hook(lambda m, a, out: seen.__setitem__("pool5", out.flatten(1).clone()))
    for name, layer in (("fc6", fc6), ("fc7", fc7), ("fc8", fc8)):
        layer.register_forward_pre_hook(lambda m, args, n=name: seen.__setitem__(n + "_in", args[0].clone()))
    for name, layer in (("fc6", fc6), ("fc7", fc7)):
        layer.register_forward_hook(lambda m, a, out, n=name: seen.__setitem__(n, out.clone()))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.randn(2, 3, 67, 67, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(seen["fc6_in"], seen["pool5"], rtol=0, atol=0)  # pool5 is never dropped
    for fc, nxt in (("fc6", "fc7_in"), ("fc7", "fc8_in")):
        relu = seen[fc].clamp(min=0)
        alive = relu > 0
        assert alive.float().mean() > 0.5  # the biases start at 1: most hidden units fire
        dropped = (seen[nxt] == 0) & alive
        assert 0.4 < dropped.sum() / alive.sum() < 0.6, f"{fc}'s output is not dropped with p=0.5"
        kept = alive & ~dropped
        torch.testing.assert_close(seen[nxt][kept], 2 * relu[kept])  # inverted dropout scales by 1/(1-p)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 67, 67, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(seen["fc8_in"], seen["fc7"].clamp(min=0), rtol=0, atol=0)  # eval: no dropout


# -------------------------------------------------------------------------------------------- LeNet-5
def test_lenet5_macs_against_the_papers_connections() -> None:
    model = create_model("lenet5")
    s = summary(model, (1, 32, 32))
    macs = {r.name.split(".")[-1]: r.macs for r in s.rows}
    # S2 / S4: one multiply (the coefficient) per output unit; the paper counts 4 inputs + bias per unit.
    assert (macs["s2"], macs["s4"]) == (6 * 14 * 14, 16 * 5 * 5) == (1_176, 400)
    assert (macs["s2"] * (4 + 1), macs["s4"] * (4 + 1)) == (5_880, 2_000)  # the paper's "connections"
    # C3: the table's 60 kernels of 5x5 at 10x10 positions; the paper's 151,600 connections add the biases.
    connections = sum(len(t) for t in C3_TABLE)
    assert macs["c3"] == connections * 25 * 100 == 150_000
    assert macs["c3"] + 16 * 100 == 151_600
    # What runs: one dense 16x6 conv with a masked kernel. FlopCounterMode counts 2 FLOPs per executed MAC.
    x = torch.randn(1, 6, 14, 14)
    with FlopCounterMode(display=False) as counter:
        model.features.c3(x)
    assert counter.get_total_flops() // 2 == 16 * 6 * 25 * 100 == 240_000


# ---------------------------------------------------------------------------------------------- Keras
def test_keras_resnet50_count_from_the_layer_shapes() -> None:
    """Keras' ResNet50 reports 25,636,712 parameters: every conv has ``use_bias=True`` (one bias per output
    channel) and every BatchNormalization's moving mean and variance count as non-trainable parameters. The
    convs and BNs are torchvision's (each conv is followed by one BN of its width)."""
    model = meta("resnet50")
    conv_channels = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert conv_channels == bn_channels == 26_560
    ours = sum(p.numel() for p in model.parameters())
    assert ours == 25_557_032
    assert ours + conv_channels == 25_583_592  # Keras' "trainable params"
    assert 2 * bn_channels == 53_120  # Keras' "non-trainable params"
    assert ours + conv_channels + 2 * bn_channels == 25_636_712  # Keras' "total params"
