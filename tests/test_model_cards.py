"""Every model card's declared facts agree with the model they describe.

The cards are written by hand in the registrations (declare, do not discover); these tests build each model
and check each fact against it. The small nets are built with real weights (for them that is faster than the
meta device, whose shape rules run in Python); the ImageNet-sized ones on the meta device (shapes only, by
the same shape rules as the real kernels), except that the forward-pass test builds one ImageNet ResNet per
block type and its plain twin for real too (resnet18, plain18, resnet50, plain50: the representatives
test_models.py runs for real). On the meta device that test's in-place check reads version counters.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import pytest
import torch
from torch import nn

from classicnets.models import PARAMS_KINDS, StageInfo, create_model, list_models, model_card

ALL = list_models()
# Families whose convs and pools are all "same"-padded: there a stage's map is exactly input / reduction.
EXACT_STRIDE_FAMILIES = ("vgg", "resnet", "cifar_resnet")
SMALL_FAMILIES = ("lenet", "cifar_resnet")  # cheap enough to build with real weights in every test
IMAGENET_RESNETS_REAL = ("resnet18", "plain18", "resnet50", "plain50")  # one per block type, and its twin


def build(name: str, also_real: tuple[str, ...] = (), **kwargs) -> tuple[nn.Module, str]:
    """The model in eval mode and its device: real weights for ``SMALL_FAMILIES`` and the models named in
    ``also_real``, the meta device otherwise."""
    device = "cpu" if model_card(name).family in SMALL_FAMILIES or name in also_real else "meta"
    with torch.device(device):
        return create_model(name, **kwargs).eval(), device


@functools.cache
def built(name: str) -> tuple[nn.Module, str]:
    """``build(name, num_classes=7)`` once per model, for the tests that only read it (never change it): the
    1202-layer nets take half a second each to build."""
    return build(name, num_classes=7)


@pytest.mark.parametrize("name", ALL)
def test_card_names_real_modules_and_tensors(name: str) -> None:
    card = model_card(name)
    model, _ = build(name, num_classes=7, in_chans=2)
    assert card.min_input_size == model.min_input_size
    assert card.residual == (model.num_skip_connections > 0)

    first = model.get_submodule(card.first_conv)
    assert isinstance(first, nn.Conv2d) and first.in_channels == 2
    assert model.get_submodule(card.classifier) is model.get_classifier()
    # What a caller holding only a state dict reads: the channel count and the class count.
    state = model.state_dict()
    assert state[card.first_conv + ".weight"].shape[1] == 2
    assert card.classifier_tensor.startswith(card.classifier + ".")
    assert state[card.classifier_tensor].shape[0] == 7

    assert all(isinstance(s, StageInfo) for s in card.stages)
    assert [s.reduction for s in card.stages] == sorted(s.reduction for s in card.stages)
    for stage in card.stages:
        model.get_submodule(stage.name)  # raises AttributeError for a name the model lacks


@pytest.mark.parametrize("name", ALL)
def test_builder_is_a_written_out_function(name: str) -> None:
    """One public ``def`` per model, named like it, so grep and IDEs find it (torchvision style)."""
    builder = model_card(name).builder
    assert builder.__name__ == builder.__qualname__ == name
    assert getattr(sys.modules[builder.__module__], name) is builder
    assert builder.__doc__ and builder.__doc__.strip()


def _input_sizes(name: str) -> tuple[int, int]:
    """(H, W) with H >= the minimum, a multiple of the largest reduction, and W = H + that reduction."""
    card = model_card(name)
    step = max(s.reduction for s in card.stages)
    h = -(-max(card.min_input_size) // step) * step
    return h, h + step


@pytest.mark.parametrize("name", ALL)
def test_first_conv_and_stages_match_a_forward_pass(name: str) -> None:
    card = model_card(name)
    model, device = build(name, IMAGENET_RESNETS_REAL, num_classes=7)
    real = device == "cpu"
    convs_in_call_order: list[str] = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(lambda m, args, n=module_name: convs_in_call_order.append(n))
    seen: dict[str, list[tuple[torch.Tensor, int, torch.Tensor | None]]] = {s.name: [] for s in card.stages}
    for stage in card.stages:  # keep each output, its version counter, and on real weights a copy of its values
        model.get_submodule(stage.name).register_forward_hook(
            lambda m, args, out, n=stage.name: seen[n].append((out, out._version, out.clone() if real else None))
        )
    h, w = _input_sizes(name)
    step = w - h  # the largest reduction
    x = torch.randn(1, model.in_chans, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        assert model(x).shape == (1, 7)

    assert convs_in_call_order[0] == card.first_conv
    for stage in card.stages:
        assert len(seen[stage.name]) == 1, f"{stage.name} ran {len(seen[stage.name])} times in one forward pass"
        out, version, copy = seen[stage.name][0]
        _, channels, out_h, out_w = out.shape
        assert channels == stage.channels, stage
        # ``step`` more input pixels give ``step / reduction`` more output pixels: the total stride is right.
        assert out_w - out_h == step // stage.reduction, stage
        if card.family in EXACT_STRIDE_FAMILIES:
            assert (out_h, out_w) == (h // stage.reduction, w // stage.reduction), stage
        # e.g. a BN followed by an in-place ReLU: the hook would see values the ReLU then overwrites. Every
        # in-place op bumps the tensor's version counter, on the meta device too; real values are compared too.
        changed = f"{stage.name}'s output is changed in place later; name a later module"
        assert out._version == version, changed
        if real:  # (equal_nan: an untrained 1202-layer net in eval mode overflows; the check is the same)
            torch.testing.assert_close(out, copy, rtol=0, atol=0, equal_nan=True, msg=changed)
    # The last stage is the map forward_head pools: forward_features returns that very tensor.
    with torch.no_grad():
        features = model.forward_features(x)
    last = seen[card.stages[-1].name][0][0]
    assert last.shape == features.shape
    assert seen[card.stages[-1].name][1][0] is features
    if real:
        torch.testing.assert_close(last, features, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", ALL)
def test_min_input_size_is_enforced(name: str) -> None:
    card = model_card(name)
    model, device = built(name)  # eval mode, no_grad: the forward passes change nothing
    h, w = card.min_input_size
    with torch.no_grad():
        assert model(torch.zeros(1, model.in_chans, h, w, device=device)).shape == (1, 7)
        for smaller in ((h - 1, w), (h, w - 1)):
            if min(smaller) < 1:
                continue  # a 1x1 minimum has no smaller image to refuse
            with pytest.raises(ValueError, match=f"too small.*{h}x{w}"):
                model(torch.zeros(1, model.in_chans, *smaller, device=device))


@pytest.mark.parametrize("name", ALL)
def test_twins_name_each_other(name: str) -> None:
    card = model_card(name)
    if card.twin is None:
        # The v1 ResNets are the one exception: their stride placement exists for counting the paper's
        # Table 1, and the plain twins keep v1.5's layout (plainN is resnetN's twin).
        v1 = card.family == "resnet" and name.endswith("_v1")
        assert not card.residual or v1, "a residual net should name its plain twin"
        assert not [n for n in ALL if model_card(n).twin == name]
        return
    twin = model_card(card.twin)
    assert twin.twin == name and twin.family == card.family and twin.residual != card.residual
    for fact in ("default_input_size", "min_input_size", "first_conv", "classifier", "classifier_tensor", "stages"):
        assert getattr(twin, fact) == getattr(card, fact), fact
    # The plain twin is the residual net less its projection shortcuts (none at all with option A).
    keys, twin_keys = (set(built(n)[0].state_dict()) for n in (name, card.twin))
    residual_keys, plain_keys = (keys, twin_keys) if card.residual else (twin_keys, keys)
    assert plain_keys <= residual_keys
    assert all(".downsample." in k for k in residual_keys - plain_keys)


@pytest.mark.parametrize("name", ALL)
def test_params_kind_says_where_the_count_comes_from(name: str) -> None:
    card = model_card(name)
    assert card.params_kind in PARAMS_KINDS
    assert (card.paper_params is None) == (card.params_kind == "none")
    assert card.params_source
    if card.params_kind == "torchvision":
        assert card.torchvision_name and "torchvision" in card.params_source


def test_cards_refuse_undeclared_count_kinds() -> None:
    card = model_card("resnet20")
    with pytest.raises(ValueError, match="params_kind"):
        dataclasses.replace(card, params_kind="folklore")
    with pytest.raises(ValueError, match="paper_params"):
        dataclasses.replace(card, paper_params=None)
    with pytest.raises(ValueError, match="stages"):
        dataclasses.replace(card, stages=())
