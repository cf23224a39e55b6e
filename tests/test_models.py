"""The model zoo: every registered model builds, runs, learns, pickles; counts and layouts are exact.

The full-size ImageNet nets (VGG's 133M-143M parameters take a second or more each just to initialise on a
2-core machine) are run for real once per family and per variant whose code differs: ``REAL_REPRESENTATIVES``.
The others are built on the meta device, where every layer still applies its shape rules (a wrong channel
count or a map shrunk to nothing fails as it would for real), autograd still builds the graph (a parameter
the forward pass skips gets no ``.grad``) and pickling still round-trips, but no weights are allocated and
there are no values to compare; their state-dict layout is checked against torchvision's builder there too.
"""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
import torchvision

from classicnets import create_model, list_models, model_card
from classicnets.models.lenet import C3_TABLE, DIGIT_BITMAPS, LeNet5
from classicnets.models.resnet import BasicBlock

# The two 1202-layer nets are slow on 2 cores; they are covered by the count tests and test_model_cards.py.
FAST_MODELS = [n for n in list_models() if not n.endswith("1202")]

IMAGENET_FAMILIES = ("alexnet", "vgg", "resnet")
# Run for real with real weights: AlexNet in torchvision's layout (alexnet_paper runs for real in
# test_minimum_input_size_is_exact and test_torchscript), VGG with batch norm (VGG without it runs for real in
# test_minimum_input_size_is_exact: vgg11), and a ResNet and its plain twin for each block type.
REAL_REPRESENTATIVES = ("alexnet", "vgg11_bn", "resnet18", "plain18", "resnet50", "plain50")


def device_for(name: str) -> str:
    """Where a test builds ``name``: "cpu" (real weights) unless it is a full-size ImageNet net other than its
    family's representatives, which go on the meta device (shapes only)."""
    if model_card(name).family in IMAGENET_FAMILIES and name not in REAL_REPRESENTATIVES:
        return "meta"
    return "cpu"


def test_every_imagenet_family_has_a_real_representative() -> None:
    families = {model_card(n).family for n in REAL_REPRESENTATIVES}
    assert families == set(IMAGENET_FAMILIES)
    assert {model_card(n).residual for n in REAL_REPRESENTATIVES if model_card(n).family == "resnet"} == {True, False}


@functools.cache
def meta_model(name: str) -> torch.nn.Module:
    """``create_model(name)`` at its defaults on the meta device, built once for all the count tests that read it
    (never change it)."""
    with torch.device("meta"):
        return create_model(name)


def shapes(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state.items()}


def small_input(name: str, batch: int = 2, in_chans: int | None = None) -> torch.Tensor:
    card = model_card(name)
    c, h, w = card.default_input_size
    if card.family in ("vgg", "resnet"):
        h = w = 64  # every size >= the minimum works; 64 keeps the tests quick
    elif card.family == "alexnet":
        h = w = max(h // 2, 67)
    return torch.randn(batch, in_chans or c, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", FAST_MODELS)
def test_forward_backward_and_pickle(name: str) -> None:
    device = device_for(name)
    real = device == "cpu"  # on meta: shapes, the autograd graph and pickling, but no values
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model(name, num_classes=7)
    x = small_input(name).to(device).requires_grad_(True)
    out = model(x)
    assert out.shape == (2, 7)
    if real:
        assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert x.grad is not None, "no gradient reached the input"
    if real:
        assert x.grad.abs().sum() > 0, "no gradient reached the input"
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained), "a parameter got no gradient"
    model.eval()
    clone = pickle.loads(pickle.dumps(model))
    assert shapes(clone.state_dict()) == shapes(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))  # on meta: shape, dtype and device only


@pytest.mark.parametrize("name", FAST_MODELS)
def test_in_chans_and_interface(name: str) -> None:
    device = device_for(name)
    x = small_input(name, in_chans=1).to(device)
    with torch.device(device):  # reset_classifier's new head goes on the model's device, as a caller's would
        model = create_model(name, num_classes=5, in_chans=1).eval()
        with torch.no_grad():
            feats = model.forward_features(x)
            assert feats.dim() == 4
            torch.testing.assert_close(model.forward_head(feats), model(x))  # on meta: the shape only
        model.reset_classifier(3)
    assert model.num_classes == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# What a plain twin leaves out of an ImageNet ResNet: its 1x1 projection shortcuts (option B), each a conv
# weight plus a BN scale and shift. BasicBlock nets project where stages 2-4 begin; Bottleneck nets also
# where stage 1 begins (64 -> 256 channels).
BASIC_PROJECTIONS = (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256) + (256 * 512 + 2 * 512)  # 173,824
BOTTLENECK_PROJECTIONS = (
    (64 * 256 + 2 * 256) + (256 * 512 + 2 * 512) + (512 * 1024 + 2 * 1024) + (1024 * 2048 + 2 * 2048)
)  # 2,776,576

# Every model's trainable-parameter count at its default classes, written out here so that a wrong card (or
# a card and a model wrong together) cannot hide a wrong model. Sources: the papers (LeNet-5's per-layer
# counts, AlexNet's Fig. 2 layout, He et al.'s CIFAR nets counted exactly, VGG's C and A-LRN from the arithmetic
# beside them), torchvision's published
# figures (its weights' metadata), and for the plain twins the arithmetic above.
REFERENCE_COUNTS = {
    "lenet5": 60_000, "lenet5_modern": 61_706, "alexnet": 61_100_840, "alexnet_paper": 60_965_224,
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    # the paper-only configurations: A-LRN is A plus a parameter-free LRN; C is D with three 3x3 convs made 1x1
    "vgg11_lrn": 132_863_336, "vgg16_c": 138_357_544 - (256 * 256 + 2 * 512 * 512) * (9 - 1),  # 133,638,952
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512, "plain18": 11_689_512 - BASIC_PROJECTIONS,  # 11,515,688
    "resnet34": 21_797_672, "plain34": 21_797_672 - BASIC_PROJECTIONS,  # 21,623,848
    "resnet50": 25_557_032, "plain50": 25_557_032 - BOTTLENECK_PROJECTIONS,  # 22,780,456
    "resnet101": 44_549_160, "plain101": 44_549_160 - BOTTLENECK_PROJECTIONS,  # 41,772,584
    "resnet152": 60_192_808, "plain152": 60_192_808 - BOTTLENECK_PROJECTIONS,  # 57,416,232
    # v1 moves a stride, no weight: the counts of v1.5
    "resnet50_v1": 25_557_032, "resnet101_v1": 44_549_160, "resnet152_v1": 60_192_808,
    # CIFAR (option A): the plain twin has exactly the residual net's parameters (He et al. Section 4.2).
    "resnet20": 269_722, "plain20": 269_722, "resnet32": 464_154, "plain32": 464_154,
    "resnet44": 658_586, "plain44": 658_586, "resnet56": 853_018, "plain56": 853_018,
    "resnet110": 1_727_962, "plain110": 1_727_962, "resnet1202": 19_421_274, "plain1202": 19_421_274,
    # the speedrun net (classicnets' own, 1x28x28, 10 classes): its plain twin differs only in the skips
    "speedrun_resnet": 486_650, "speedrun_plain": 486_650,
}  # fmt: skip


@pytest.mark.parametrize("name", list_models())
def test_exact_parameter_counts(name: str) -> None:
    card = model_card(name)
    trainable = count_params(meta_model(name))
    if card.paper_params is not None:
        assert trainable == card.paper_params
    else:  # no published count: only the ImageNet plain twins, = torchvision's ResNet less its projections
        assert name.startswith("plain") and card.family == "resnet"
        assert trainable == REFERENCE_COUNTS[name]
    if name.startswith("plain") and card.family == "cifar_resnet":
        twin = meta_model(name.replace("plain", "resnet"))
        assert trainable == sum(p.numel() for p in twin.parameters())


def test_reference_counts_from_the_papers() -> None:
    """The published figures, written out so a wrong card cannot hide a wrong model (every model has one)."""
    assert set(REFERENCE_COUNTS) == set(list_models())
    for name, count in REFERENCE_COUNTS.items():
        assert count_params(meta_model(name)) == count, name


TV_MODELS = [n for n in list_models() if model_card(n).torchvision_name]


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_layout_counts(name: str) -> None:
    """A torchvision-layout model has exactly the parameters of torchvision's builder and of its weights."""
    tv_name = model_card(name).torchvision_name
    with torch.device("meta"):
        tv = getattr(torchvision.models, tv_name)(weights=None)
    ours = meta_model(name)
    assert count_params(ours) == count_params(tv) == REFERENCE_COUNTS[name]
    published = {w.meta["num_params"] for w in torchvision.models.get_model_weights(tv_name)}
    assert published == {count_params(ours)}


PLAIN_IMAGENET = [n for n in list_models() if n.startswith("plain") and model_card(n).family == "resnet"]


@pytest.mark.parametrize("name", PLAIN_IMAGENET)
def test_imagenet_plain_twin_counts(name: str) -> None:
    """A plain twin is torchvision's ResNet less its projection shortcuts (its ``downsample`` modules)."""
    with torch.device("meta"):
        tv = getattr(torchvision.models, name.replace("plain", "resnet"))(weights=None)
    ours = meta_model(name)
    projections = sum(count_params(m) for n, m in tv.named_modules() if n.endswith(".downsample"))
    assert projections in (BASIC_PROJECTIONS, BOTTLENECK_PROJECTIONS)
    assert count_params(ours) == count_params(tv) - projections == REFERENCE_COUNTS[name]


def test_lenet5_paper_structure() -> None:
    model = LeNet5()
    sizes = sorted(len(t) for t in C3_TABLE)
    assert sizes == [3] * 6 + [4] * 9 + [6]
    assert all(len(set(t)) == len(t) and max(t) < 6 for t in C3_TABLE)
    per_layer = {n: sum(p.numel() for p in m.parameters()) for n, m in model.features.named_children()}
    assert per_layer == {"c1": 156, "act1": 0, "s2": 12, "act2": 0, "c3": 1516, "act3": 0,
                         "s4": 32, "act4": 0, "c5": 48120, "act5": 0}  # fmt: skip
    assert sum(p.numel() for p in model.f6.parameters()) == 10164
    assert sum(p.numel() for p in model.output.parameters()) == 0  # the RBF layer is fixed
    assert all(len(b.replace("|", "")) == 84 and b.count("|") == 11 for b in DIGIT_BITMAPS)
    # C3's dense kernel is zero exactly where Table I has no connection.
    c3 = model.features.c3
    dense = c3.weight.new_zeros(16 * 6, 5, 5).index_copy(0, c3.index, c3.weight).view(16, 6, 5, 5)
    for o, inputs in enumerate(C3_TABLE):
        for i in range(6):
            assert bool(dense[o, i].abs().sum() > 0) == (i in inputs)


def test_lenet5_rbf_output_is_negative_squared_distance() -> None:
    model = LeNet5().eval()
    x = torch.randn(3, 84)
    expected = -((x[:, None, :] - model.output.centres[None]) ** 2).sum(-1)
    torch.testing.assert_close(model.output(x), expected)
    assert model.output.centres.abs().eq(1).all()


def test_lenet5_scaled_tanh() -> None:
    act = LeNet5().features.act1
    torch.testing.assert_close(act(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0)


def leaf_modules(model: torch.nn.Module) -> dict[str, str]:
    """Every module without children, by name, as its repr: its type and hyper-parameters."""
    return {n: repr(m) for n, m in model.named_modules() if next(m.children(), None) is None}


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_layout_on_meta(name: str) -> None:
    """Every torchvision-layout model has the state dict of torchvision's builder, keys in order and shapes, and
    its layers with their hyper-parameters under the same names; it loads that state dict strictly (all on
    the meta device: nothing allocated). One per family also matches torchvision's outputs (below)."""
    with torch.device("meta"):
        tv = getattr(torchvision.models, model_card(name).torchvision_name)(weights=None).eval()
        ours = create_model(name).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert shapes(ours.state_dict()) == shapes(tv.state_dict())
    assert leaf_modules(ours) == leaf_modules(tv)
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = small_input(name).to("meta")
    with torch.no_grad():
        assert ours(x).shape == tv(x).shape


@pytest.mark.parametrize("name", [n for n in TV_MODELS if device_for(n) == "cpu"])
def test_loads_torchvision_weights_and_matches(name: str) -> None:
    """Real weights, for the representatives in torchvision's layout: alexnet, vgg11_bn, resnet18, resnet50."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, model_card(name).torchvision_name)(weights=None).eval()
    ours = create_model(name).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = small_input(name)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=1e-5)


def test_zero_init_residual_block_is_identity() -> None:
    block = BasicBlock(16, 16)
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.rand(4, 16, 8, 8)  # non-negative, so the final ReLU keeps it
    for mode in (True, False):
        block.train(mode)
        torch.testing.assert_close(block(x), x)
    model = create_model("resnet20", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in model.modules() if isinstance(b, BasicBlock))


def test_plain_twins_have_no_skips() -> None:
    assert create_model("resnet20").num_skip_connections == 9
    assert create_model("plain20").num_skip_connections == 0
    assert meta_model("resnet50").num_skip_connections == 16
    assert meta_model("plain50").num_skip_connections == 0


def test_shortcut_b_adds_projections() -> None:
    a = create_model("resnet20")
    b = create_model("resnet20", shortcut="B")
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 projections, 16->32 and 32->64, each + BN
    assert sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters()) == extra


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet21"}, "resnet20"),
        ({"name": "vgg15"}, "vgg16"),
        ({"name": "resnet20", "in_chans": 0}, "in_chans"),
        ({"name": "resnet20", "num_classes": -1}, "num_classes"),
        ({"name": "resnet20", "shortcut": "C"}, "shortcut"),
        ({"name": "plain20", "zero_init_residual": True}, "plain"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(**kwargs)


def test_unknown_option_names_the_model() -> None:
    with pytest.raises(TypeError, match="lenet5.*colour"):
        create_model("lenet5", colour=True)


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("lenet5", (1, 1, 28, 28), "too small.*32x32"),
        ("vgg16", (1, 3, 16, 16), "too small.*32x32"),
        ("alexnet", (1, 3, 62, 62), "too small.*63x63"),
        ("resnet20", (1, 1, 32, 32), "3-channel.*1 channels"),
        ("resnet20", (3, 32, 32), "batch"),
    ],
)
def test_bad_inputs_give_clear_errors(name: str, shape: tuple, message: str) -> None:
    device = device_for(name)  # the input is checked before any layer runs, so the meta device is as good
    with torch.device(device):
        model = create_model(name).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape, device=device))


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "alexnet_paper", "vgg11"])
def test_minimum_input_size_is_exact(name: str) -> None:
    """The smallest size the model claims to take really works, and one pixel less really does not."""
    model = create_model(name, num_classes=3).eval()
    h, w = model.min_input_size
    with torch.no_grad():
        assert model(torch.zeros(1, model.in_chans, h, w)).shape == (1, 3)
        model.min_input_size = (1, 1)  # switch the check off: the layers themselves must fail below it
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, model.in_chans, h - 1, w - 1))


@pytest.mark.parametrize("name", ["lenet5", "lenet5_modern", "alexnet_paper", "vgg11_bn", "resnet18", "resnet20", "plain20"])
def test_torchscript(name: str) -> None:
    model = create_model(name, num_classes=4).eval()
    x = small_input(name, batch=1)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    with pytest.raises(Exception, match="too small|channel"):
        scripted(torch.zeros(1, model.in_chans + 1, 64, 64))
