"""Tests for classicnets.summary: MACs, parameters, formulas, receptive fields, renderers."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import torchvision
from torch import nn

from classicnets.summary import Summary, eval_formula, summary


def tv_meta(name: str) -> nn.Module:
    """A torchvision model built straight on the meta device (no weights allocated)."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def row(s: Summary, name: str):
    return next(r for r in s.rows if r.name == name)


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8x8
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x4x4
        nn.Conv2d(8, 16, 3, groups=2),  # 16x2x2
        nn.Flatten(),  # 64
        nn.Linear(64, 10),
    )


# ---------------------------------------------------------------------------------------------- MACs


@pytest.mark.parametrize("name, weights", [("vgg16", "VGG16"), ("resnet50", "ResNet50"), ("alexnet", "AlexNet")])
def test_macs_match_torchvision_published(name: str, weights: str) -> None:
    """torchvision's "GFLOPS" (15.47, 4.089, 0.714) are multiply-accumulates at 224x224."""
    meta = getattr(torchvision.models, f"{weights}_Weights").DEFAULT.meta
    model = tv_meta(name)
    s = summary(model, (3, 224, 224))
    assert s.total_macs / 1e9 == pytest.approx(meta["_ops"], rel=0.005)
    assert s.total_params == trainable(model) == meta["num_params"]
    assert s.output_shape == (1000,)


def test_tiny_net_by_hand() -> None:
    s = summary(tiny_net(), (3, 8, 8))
    got = [(r.type, r.output_shape, r.params, r.formula, r.macs, r.receptive_field, r.stride) for r in s.rows]
    assert got == [
        ("Conv2d", (8, 8, 8), 224, "3*3*3*8 + 8", 8 * 8 * 8 * 3 * 9, 3, 1),
        ("ReLU", (8, 8, 8), 0, "", 0, 3, 1),
        ("MaxPool2d", (8, 4, 4), 0, "", 0, 4, 2),
        ("Conv2d", (16, 2, 2), 592, "3*3*(8/2)*16 + 16", 16 * 2 * 2 * 4 * 9, 8, 2),
        ("Flatten", (64,), 0, "", 0, "global", None),  # flattening a 2x2 map: every unit sees it all
        ("Linear", (10,), 650, "64*10 + 10", 640, "global", None),
    ]
    assert [r.name for r in s.rows] == ["0", "1", "2", "3", "4", "5"]
    assert s.total_params == 224 + 592 + 650 and s.non_trainable_params == 0
    assert s.total_macs == 13824 + 2304 + 640
    assert s.input_size == (3, 8, 8) and s.output_shape == (10,)


def test_custom_macs_and_functional_calls_outside_leaves() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 2))  # owned by the container, used functionally
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(nn.functional.linear(x.flatten(1), self.w))

    s = summary(Net(), (2, 1, 1))
    assert s.total_macs == 8 and s.total_params == 8
    assert [(r.name, r.output_shape, r.params, r.formula) for r in s.rows] == [
        ("act", (4,), 0, ""),
        ("", None, 8, "4*2"),  # the container's own parameter: no executed leaf owns it
    ]


# ------------------------------------------------------------------------------------ receptive field


def test_receptive_field_of_a_hand_computed_chain() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, dilation=2))
    s = summary(net, (1, 16, 16))
    assert [(r.receptive_field, r.stride) for r in s.rows] == [(3, 1), (5, 1), (6, 2), (6 + 2 * 2 * 2, 2)]


def test_shortcut_reads_the_block_input() -> None:
    s = summary(tv_meta("resnet18"), (3, 224, 224))
    layer1_out = [r for r in s.rows if r.name.startswith("layer1.")][-1]
    assert layer1_out.receptive_field == 43
    ds = row(s, "layer2.0.downsample.0")  # 1x1 stride-2 conv on the block input, not on the row above
    assert (ds.receptive_field, ds.stride) == (43, 8)
    assert row(s, "layer2.0.bn2").receptive_field == 67
    assert [r for r in s.rows if r.name.startswith("layer2.0")][-1].receptive_field == 67  # add: main path


def test_global_pool_is_global_and_identity_pool_is_not() -> None:
    s = summary(tv_meta("vgg16"), (3, 224, 224))
    assert (row(s, "avgpool").receptive_field, row(s, "avgpool").stride) == (212, 32)  # 7x7 -> 7x7
    assert row(s, "classifier.0").receptive_field == "global"  # flattened 7x7 map
    r = summary(tv_meta("resnet18"), (3, 224, 224))
    assert row(r, "avgpool").receptive_field == "global" and row(r, "avgpool").stride is None


def _ones_resnet18_body() -> nn.Module:
    """resnet18 up to layer4 with positive weights, BN = identity and max-pool replaced by an average
    pool of the same geometry, so every input pixel inside the receptive field gets a nonzero gradient."""
    m = torchvision.models.resnet18().eval()
    m.maxpool = nn.AvgPool2d(3, 2, 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.fill_(1.0 / mod.weight[0].numel())
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


def test_resnet18_receptive_field_by_brute_force() -> None:
    expected = row(summary(tv_meta("resnet18"), (3, 224, 224)), "layer4.1.conv2")
    x = torch.ones(1, 3, 480, 480, requires_grad=True)
    y = _ones_resnet18_body()(x)  # (1, 512, 15, 15)
    # Rows see output pixels (7, 7) and (8, 7): their union spans rf + jump; columns see rf alone.
    (g,) = torch.autograd.grad(y[0, :, 7, 7].sum() + y[0, :, 8, 7].sum(), x)
    hit = g[0].abs().sum(0) > 0
    rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < 479 and cols.min() > 0  # not clipped by the image border
    rf = int(cols.max() - cols.min() + 1)
    jump = int(rows.max() - rows.min() + 1) - rf
    assert (rf, jump) == (expected.receptive_field, expected.stride) == (435, 32)


def test_custom_spatial_layer_uses_its_attributes() -> None:
    class SumPool(nn.Module):  # like LeNet's trainable subsampling: attributes, no nn pooling inside
        kernel_size, stride, padding = 2, 2, 0

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2)) * self.weight.view(1, -1, 1, 1)

        def param_formula(self) -> str:
            return "1*3"

        def macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
            return output_shape[0] * output_shape[1] * output_shape[2]

    s = summary(nn.Sequential(nn.Conv2d(3, 3, 3), SumPool()), (3, 10, 10))
    pool = s.rows[1]
    assert (pool.receptive_field, pool.stride, pool.formula, pool.macs) == (4, 2, "1*3", 3 * 4 * 4)


def test_param_formula_module_is_one_leaf() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

        def param_formula(self) -> str:
            return "(1*1*2*2 + 2) + 1*1*2*2"

    s = summary(nn.Sequential(Block(), nn.ReLU()), (2, 3, 3))
    assert [(r.name, r.params, r.macs) for r in s.rows] == [("0", 10, 2 * 9 * 2 * 2), ("1", 0, 0)]


# ---------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "resnet18", "resnet50"])
def test_formulas_evaluate_to_params_and_totals_add_up(name: str) -> None:
    model = tv_meta(name)
    s = summary(model, (3, 224, 224))
    for r in s.rows:
        assert eval_formula(r.formula) == r.params + r.non_trainable, r
    assert sum(r.params for r in s.rows) == s.total_params == trainable(model)


def test_frozen_and_unexecuted_parameters() -> None:
    class WithSpareHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.unused = tiny_net(), nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)  # the spare head never runs

    net = WithSpareHead()
    net.body[0].requires_grad_(False)
    s = summary(net, (3, 8, 8))
    first = row(s, "body.0")
    assert s.non_trainable_params == 224 and first.non_trainable == 224 and first.params == 0
    assert row(s, "unused").output_shape is None and row(s, "unused").params == 8
    assert sum(r.params for r in s.rows) == s.total_params == trainable(net)


def test_shared_module_counted_once() -> None:
    conv = nn.Conv2d(2, 2, 3, padding=1)
    s = summary(nn.Sequential(conv, nn.ReLU(), conv), (2, 5, 5))
    assert [r.params for r in s.rows] == [38, 0, 0] and s.total_params == 38
    assert s.total_macs == 2 * 25 * 2 * 2 * 9


@pytest.mark.parametrize("bad", ["__import__('os')", "2**10", "a*3", "7/2"])
def test_eval_formula_rejects_anything_but_arithmetic(bad: str) -> None:
    with pytest.raises(ValueError):
        eval_formula(bad)


def test_eval_formula() -> None:
    assert eval_formula("6*(3*5*5+1) + 9*(4*5*5+1) + 1*(6*5*5+1)") == 1516
    assert eval_formula("5*5*(96/2)*256 + 256") == 307456 and eval_formula("") == 0


# ----------------------------------------------------------------------------------- devices, errors


def test_real_device_matches_meta_and_leaves_model_alone() -> None:
    net = tiny_net().train()
    before = [p.clone() for p in net.parameters()]
    a, b = summary(net, (3, 8, 8)), summary(net, (3, 8, 8), device=None)
    assert a.to_dict() == b.to_dict()
    assert all(m.training for m in net.modules())
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    assert next(net.parameters()).device.type == "cpu"


def test_errors() -> None:
    with pytest.raises(ValueError, match="input_size"):
        summary(tiny_net())
    with pytest.raises(ValueError, match="move it"):
        summary(tiny_net(), (3, 8, 8), device="cuda:0")

    class Picky(nn.Module):
        default_input_size = (3, 8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("this model takes 1-channel images")

    with pytest.raises(ValueError, match="1-channel"):
        summary(Picky())


# -------------------------------------------------------------------------------------- renderers


def test_renderers() -> None:
    model = tv_meta("vgg16")
    model.paper_params = 138_000_000
    s = summary(model, (3, 224, 224))
    table = s.to_table()
    assert "15.47 G" in table and "138,357,544" in table and "differs by +357,544" in table
    assert "Skip connections:     0" in table and "classifier.6" in table
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert len(rows) == len(s.rows) and rows[0]["output_shape"] == "64x224x224"
    assert rows[0]["formula"] == "3*3*3*64 + 64"
    data = json.loads(s.to_json())
    assert data["total_params"] == 138_357_544 and data["total_macs"] == s.total_macs
    assert data["rows"][-1]["receptive_field"] == "global"


# ------------------------------------------------------------------------------- classicnets models


def _create(name: str) -> nn.Module:
    from classicnets.models import registry

    return registry.create_model(name)


def test_lenet5_paper_formulas() -> None:
    s = summary(_create("lenet5"))
    formulas = {r.name.split(".")[-1]: r.formula for r in s.rows}
    assert formulas["c1"] == "5*5*1*6 + 6"
    assert formulas["s2"] == "2*6"
    assert formulas["c3"] == "6*(3*5*5+1) + 9*(4*5*5+1) + 1*(6*5*5+1)"
    assert s.total_params == 60_000 and s.paper_params == 60_000
    assert "60,000   paper: 60,000 (matches)" in s.to_table()
    assert [r.receptive_field for r in s.rows if r.name.startswith("features.")][-1] == 32


@pytest.mark.parametrize("name, skips", [("resnet18", 8), ("plain18", 0), ("resnet20", 9)])
def test_classicnets_resnets(name: str, skips: int) -> None:
    model = _create(name)
    s = summary(model)
    assert s.skip_connections == skips and s.total_params == trainable(model)
    if name == "resnet20":  # option-A shortcut: x[:, :, ::2, ::2] doubles the jump
        shortcut = row(s, "layer2.0.downsample")
        assert (shortcut.params, shortcut.stride) == (0, 2)


def test_vgg16_table_prints() -> None:
    with torch.device("meta"):
        model = _create("vgg16")
    table = summary(model).to_table()
    assert "Total MACs:           15.47 G" in table and "(matches)" in table


def test_wrong_channels_propagates_model_error() -> None:
    with pytest.raises(ValueError, match="channel"):
        summary(_create("lenet5"), (3, 32, 32))
