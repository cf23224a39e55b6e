"""Transfer learning on real models and real files: adapt, freeze, param groups, load_weights, stage outputs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from classicnets import create_model
from classicnets.checkpoint import load_checkpoint
from classicnets.transfer import (
    adapt,
    freeze,
    load_weights,
    param_groups,
    set_frozen_bn_eval,
    stage_outputs,
    unfreeze,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory: pytest.TempPathFactory):
    """A torchvision resnet18 with random (non-default) weights, saved as a plain .pth state dict."""
    torch.manual_seed(1)
    tv = torchvision.models.resnet18()
    with torch.no_grad():  # make BN statistics non-trivial so "kept" really means kept
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return path, tv.state_dict()


# ------------------------------------------------------------------------------------------ adapt


def test_adapt_torchvision_resnet18_to_one_channel_five_classes(tv_resnet18_file) -> None:
    path, tv_state = tv_resnet18_file
    model = create_model("resnet18")
    report = load_weights(model, path)
    assert report.ok and len(report.loaded) == len(tv_state)
    original = create_model("resnet18").eval()
    original.load_state_dict(tv_state)

    rep = adapt(model, num_classes=5, in_chans=1)

    state = model.state_dict()
    assert rep.adapted == ["conv1.weight: summed 3->1 channels"]
    assert rep.reinitialized == ["fc.weight", "fc.bias"]
    assert set(rep.kept) == set(tv_state) - {"conv1.weight", "fc.weight", "fc.bias"}
    for key in rep.kept:
        assert torch.equal(state[key], tv_state[key]), key
    assert torch.equal(state["conv1.weight"], tv_state["conv1.weight"].sum(dim=1, keepdim=True))
    assert state["fc.weight"].shape == (5, 512) and model.num_classes == 5
    assert model.in_chans == 1 and model.default_input_size == (1, 224, 224)
    text = str(rep)
    assert "conv1.weight: summed 3->1 channels" in text and "fc.weight, fc.bias" in text and "layer4 (30)" in text

    # A grey image gives the adapted net the features the RGB net had on the image copied to 3 channels. In
    # float32 the two sum the same products in another order (kernel-then-image vs image-then-kernel), and
    # the summed kernel itself is rounded, so they differ by rounding that depends on the CPU's kernels (2e-5
    # seen on AVX2). Adapted and compared in float64 that rounding is ~1e-16 relative per operation, and a
    # 1e-9 tolerance checks the adaptation itself on any CPU.
    model64 = create_model("resnet18").double()
    model64.load_state_dict(tv_state)  # float32 values are exact in float64
    adapt(model64, num_classes=5, in_chans=1)
    gray = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ours = model64.eval().forward_features(gray)
        theirs = original.double().forward_features(gray.expand(-1, 3, -1, -1))
    torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-9)
    assert model(gray.float()).shape == (2, 5)


def test_adapt_three_to_five_channels_repeats_and_rescales() -> None:
    model = create_model("resnet20")
    w = model.conv1.weight.detach().clone()  # (16, 3, 3, 3)
    rep = adapt(model, in_chans=5)
    new = model.conv1.weight.detach()
    assert new.shape == (16, 5, 3, 3) and model.conv1.in_channels == 5
    torch.testing.assert_close(new, torch.cat([w, w[:, :2]], dim=1) * (3 / 5))
    assert rep.adapted == ["conv1.weight: repeated 3->5 channels, scaled by 3/5"]
    assert rep.reinitialized == [] and "fc.weight" in rep.kept
    assert model(torch.randn(2, 5, 32, 32)).shape == (2, 10)


def test_adapt_lenet5_one_to_three_channels_keeps_its_response() -> None:
    model = create_model("lenet5").eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        before = model.forward_features(x)
    rep = adapt(model, in_chans=3)
    assert rep.adapted == ["features.c1.weight: repeated 1->3 channels, scaled by 1/3"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x.expand(-1, 3, -1, -1)), before)


def test_adapt_new_head_only() -> None:
    model = create_model("lenet5")
    rep = adapt(model, num_classes=26)
    assert rep.adapted == [] and rep.reinitialized == ["output.centres"]
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 26)


def test_adapt_errors() -> None:
    with pytest.raises(TypeError, match="classicnets model"):
        adapt(torchvision.models.resnet18(), num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        adapt(create_model("resnet20"), num_classes=0)
    model = create_model("resnet20")
    model.conv1 = nn.Conv2d(3, 15, 3, padding=1, groups=3)
    with pytest.raises(ValueError, match="grouped"):
        adapt(model, in_chans=1)


# ------------------------------------------------------------------------------------- freeze


def test_freeze_up_to_layer3_trains_only_layer4_and_fc() -> None:
    model = create_model("resnet18", num_classes=4)
    frozen = freeze(model, up_to="layer3")
    assert "conv1.weight" in frozen and "layer3.1.bn2.bias" in frozen
    assert not any(n.startswith("layer4") for n in frozen)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("layer4.", "fc.")) for n in trainable)

    model.train()
    assert set_frozen_bn_eval(model) == 1 + 3 * 2 * 2 + 2  # bn1, 2 BNs x 2 blocks x layers 1-3, 2 downsample BNs
    assert not model.bn1.training and not model.layer3[0].bn1.training and model.layer4[0].bn1.training

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(param_groups(model, lr=0.1), momentum=0.9)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer3.1.bn2.running_var", "layer3.1.conv2.weight"):
        assert torch.equal(before[key], after[key]), key
    for key in ("layer4.1.conv2.weight", "layer4.1.bn2.running_mean", "fc.weight"):
        assert not torch.equal(before[key], after[key]), key

    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters()) and model.bn1.training
    assert set_frozen_bn_eval(model) == 0


def test_freeze_none_is_a_linear_probe_and_features_for_vgg_style_names() -> None:
    model = create_model("resnet20")
    freeze(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    lenet = create_model("lenet5_modern")
    freeze(lenet, up_to="features")
    assert [n for n, p in lenet.named_parameters() if p.requires_grad] == [
        "f6.weight", "f6.bias", "output.weight", "output.bias"
    ]  # fmt: skip


def test_freeze_errors() -> None:
    model = create_model("resnet18")
    with pytest.raises(ValueError, match=r"no top-level module 'layer5'.*conv1, maxpool, bn1, relu, layer1"):
        freeze(model, up_to="layer5")
    with pytest.raises(ValueError, match="no trainable parameter.*up_to='features'"):
        freeze(create_model("lenet5"))  # its RBF output has no parameters
    with pytest.raises(ValueError, match="no trainable parameter"):
        freeze(model, up_to="fc")
    assert all(p.requires_grad for p in model.parameters())  # a refused freeze changes nothing


def test_param_groups_lrs_weight_decay_and_frozen() -> None:
    model = create_model("resnet20")
    freeze(model, up_to="layer2")
    groups = param_groups(model, lr=0.1, backbone_lr_scale=0.1, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["backbone", "backbone_no_decay", "head", "head_no_decay"]
    assert by_name["head"]["params"] == [model.fc.weight] and by_name["head_no_decay"]["params"] == [model.fc.bias]
    assert by_name["head"]["lr"] == 0.1 and by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert by_name["backbone"]["weight_decay"] == 5e-4 and by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in by_name["backbone"]["params"])
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())
    expected = [*model.layer3.parameters(), *model.fc.parameters()]
    assert {id(p) for p in grouped} == {id(p) for p in expected}
    torch.optim.AdamW(groups)  # the groups are valid optimizer input

    everything = param_groups(create_model("resnet20"), lr=0.1, no_decay_1d=False, weight_decay=1e-4)
    assert [g["name"] for g in everything] == ["backbone", "head"]
    with pytest.raises(ValueError, match="lr > 0"):
        param_groups(model, lr=0)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(model, lr=0.1)


# -------------------------------------------------------------------------------- load_weights


def _assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_load_weights_wrapped_and_prefixed(tmp_path, tv_resnet18_file) -> None:
    _, tv_state = tv_resnet18_file
    path = tmp_path / "ddp.pt"
    torch.save({"epoch": 3, "state_dict": {f"module._orig_mod.{k}": v for k, v in tv_state.items()}}, path)
    model = create_model("resnet18")
    report = load_weights(model, path)
    assert report.ok and report.source == "state dict under 'state_dict'"
    _assert_loaded(model, tv_state)

    path2 = tmp_path / "model_key.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tv_state.items()}}, path2)
    model2 = create_model("resnet18")
    assert load_weights(model2, path2).ok
    _assert_loaded(model2, tv_state)


def test_load_weights_classicnets_checkpoint_and_safetensors(tmp_path, trained) -> None:
    ckpt = trained("resnet20-folder") / "best.pt"  # a real run: resnet20 (shortcut B), 4 classes, RGB
    state = load_checkpoint(ckpt)["model"]
    model = create_model("resnet20", num_classes=4, shortcut="B")
    report = load_weights(model, ckpt)
    assert report.ok and report.source == "classicnets checkpoint of 'resnet20'"
    _assert_loaded(model, state)

    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    model = create_model("resnet20", num_classes=4, shortcut="B")
    assert load_weights(model, st).source == "safetensors"
    _assert_loaded(model, state)


def test_load_weights_reports_mismatches(tv_resnet18_file, tmp_path) -> None:
    path, tv_state = tv_resnet18_file
    model = create_model("resnet18", num_classes=10)
    conv_before = model.conv1.weight.detach().clone()
    with pytest.raises(ValueError) as info:
        load_weights(model, path)
    message = str(info.value)
    assert "nothing loaded" in message and "fc.weight: file (1000, 512) vs model (10, 512)" in message
    assert "adapt(model" in message and "Traceback" not in message
    assert torch.equal(model.conv1.weight, conv_before)  # strict failure loads nothing

    report = load_weights(model, path, strict=False)
    assert report.shape_mismatch == [("fc.weight", (1000, 512), (10, 512)), ("fc.bias", (1000,), (10,))]
    assert not report.ok and len(report.loaded) == len(tv_state) - 2
    assert torch.equal(model.conv1.weight, tv_state["conv1.weight"])

    partial = {k: v for k, v in tv_state.items() if not k.startswith("layer4.1.")}
    partial["extra.weight"] = torch.zeros(3)
    torch.save(partial, tmp_path / "partial.pth")
    report = load_weights(create_model("resnet18"), tmp_path / "partial.pth", strict=False)
    assert report.unexpected == ["extra.weight"]
    assert "layer4.1.conv1.weight" in report.missing
    assert not any(k.endswith("num_batches_tracked") for k in report.missing)  # tolerated, as torch does
    assert "missing from the file: layer4.1.conv1.weight" in str(report)


class _Payload:
    """Unpickling this runs a shell command: what a malicious .pth would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_load_weights_refuses_code_in_pickles(tmp_path) -> None:
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(_Payload(str(control))))  # the payload is real: plain unpickling runs it
    assert control.exists()

    marker = tmp_path / "MARKER"
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps({"conv1.weight": _Payload(str(marker))}, protocol=2))
    zipped = tmp_path / "evil_zip.pth"
    torch.save({"conv1.weight": _Payload(str(marker))}, zipped)
    for path in (raw, zipped):
        with pytest.raises(ValueError, match=r"refusing to load .* \(unsafe or corrupt\)"):
            load_weights(create_model("resnet18"), path)
    assert not marker.exists()


def test_load_weights_corrupt_and_wrong_files(tmp_path) -> None:
    model = create_model("resnet20")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(ValueError, match="refusing to load .*unsafe or corrupt"):
        load_weights(model, garbage)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="refusing to load .*unsafe or corrupt"):
        load_weights(model, bad_st)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "not_weights.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_weights(model, tmp_path / "not_weights.pt")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        load_weights(model, tmp_path / "missing.pth")


# ------------------------------------------------------------------------------- stage outputs


@pytest.mark.parametrize(
    "name, size, expected",
    [
        ("resnet18", (3, 64, 64), {"relu": (64, 32, 32), "layer1": (64, 16, 16), "layer2": (128, 8, 8),
                                   "layer3": (256, 4, 4), "layer4": (512, 2, 2)}),
        ("resnet20", (3, 32, 32), {"relu": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16),
                                   "layer3": (64, 8, 8)}),
        ("vgg11", (3, 32, 32), {"features.2": (64, 16, 16), "features.5": (128, 8, 8), "features.10": (256, 4, 4),
                                "features.15": (512, 2, 2), "features.20": (512, 1, 1)}),
        ("lenet5", (1, 32, 32), {"features.act1": (6, 28, 28), "features.act2": (6, 14, 14),
                                 "features.act3": (16, 10, 10), "features.act4": (16, 5, 5),
                                 "features.act5": (120, 1, 1)}),
        ("lenet5_modern", (1, 32, 32), {"features.act1": (6, 28, 28), "features.s2": (6, 14, 14),
                                        "features.act3": (16, 10, 10), "features.s4": (16, 5, 5),
                                        "features.act5": (120, 1, 1)}),
    ],
)  # fmt: skip
def test_stage_outputs(name: str, size: tuple[int, int, int], expected: dict) -> None:
    """The model card's stages, written out here (LeNet-5's C1, S2, C3, S4, C5; each ResNet stage)."""
    model = create_model(name).eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        out = stage_outputs(model, x)
        features = model.forward_features(x)
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == expected
    assert list(out) == list(expected)  # forward order
    torch.testing.assert_close(out[list(out)[-1]], features)  # the last stage is forward_features
    assert not model._forward_hooks and not model._forward_pre_hooks  # hooks removed
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_stage_outputs_keeps_gradients() -> None:
    model = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    stage_outputs(model, x)["layer2"].sum().backward()
    assert x.grad is not None and model.layer2[0].conv1.weight.grad is not None


def test_cifar_nets_of_any_depth_adapt_and_give_stage_outputs() -> None:
    """resnet8 (a depth the studies build, without a model card of its own) has resnet20's module names."""
    from classicnets.studies.setup import build_net

    model = build_net("resnet8", num_classes=10, in_chans=1)
    adapt(model, in_chans=3)
    assert model.conv1.in_channels == 3
    out = stage_outputs(model.eval(), torch.randn(2, 3, 16, 16))
    assert list(out) == ["relu", "layer1", "layer2", "layer3"] and out["layer3"].shape == (2, 64, 4, 4)
