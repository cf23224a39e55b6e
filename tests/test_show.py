"""``classicnets show`` and ``classicnets.viz``: every view on nets trained by the real engine, checked against
an independent computation (stage outputs, CAM for a GAP net, the layer geometry, evaluate's predictions),
through the Python API and the command line in-process, and every bad input as a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from classicnets import create_model, viz
from classicnets.commands import main
from classicnets.data import load_dataset
from classicnets.inference import evaluate_checkpoint
from classicnets.summary import summary
from classicnets.train.config import TrainConfig, config_from_dict
from classicnets.train.engine import fit
from classicnets.train.runtime import amp_dtype
from classicnets.train.step import predict_logits
from classicnets.transfer import stage_outputs
from classicnets.viz.filters import kernel


def _fit(root, **values):
    base = dict(epochs=1, batch_size=16, lr=0.01, threads=1, num_workers=0, tensorboard=False, progress=False,
                out_dir=str(root / "runs"))  # fmt: skip
    return fit(config_from_dict({**base, **values}, base=TrainConfig()), log=lambda _: None).run_dir / "best.pt"


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """A residual net and its plain twin, trained on the same 64 digits (option A shortcuts, 28x28 inputs)."""
    root = tmp_path_factory.mktemp("twins")
    return {m: _fit(root, model=m, data="mnist-5k", subset=64, name=m) for m in ("resnet20", "plain20")}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Test images of Fashion-MNIST and of the digits as PNG files, plus a non-image and a too-small image."""
    root = tmp_path_factory.mktemp("pictures")
    fashion, digits = load_dataset("fashion-mnist").test, load_dataset("mnist-5k").test
    Image.fromarray(fashion.images[0, 0].numpy(), "L").save(root / "boot.png")
    Image.fromarray(digits.images[0, 0].numpy(), "L").save(root / "digit.png")
    Image.fromarray(np.zeros((6, 6), np.uint8), "L").save(root / "tiny.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def lenet(trained):
    return trained("lenet5_modern-fashion") / "best.pt"


def _assert_png(path) -> None:
    """A real, non-trivial picture: decodes, is larger than a thumbnail, and is not one flat colour."""
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= 200
        assert np.asarray(img.convert("L")).std() > 10


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["show", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------- filters


def test_filters_of_the_first_conv_and_of_a_deeper_one(lenet, trained, tmp_path, monkeypatch, capsys) -> None:
    net = viz.load(lenet)
    grid = viz.filters(net)
    assert grid.layer == "features.c1" and not grid.colour and grid.shape == (6, 1, 5, 5)
    assert np.array_equal(grid.weights, net.model.features.c1.weight.detach().numpy())
    deep = viz.filters(net, "features.c3")  # the first 8 outputs over their first 8 (of 6) inputs
    assert deep.shape == (16, 6, 5, 5) and deep.weights.shape == (8, 6, 5, 5)
    assert np.array_equal(deep.weights, net.model.features.c3.weight.detach()[:8].numpy())
    rgb = viz.filters(viz.load(trained("resnet20-folder") / "best.pt"))  # an RGB first conv: colour patches
    assert rgb.colour and rgb.weights.shape == (16, 3, 3, 3)
    patches = rgb.patches()
    assert patches.shape == (16, 3, 3, 3) and patches.min() >= 0 and patches.max() <= 1
    assert np.allclose(np.abs(patches - 0.5).reshape(16, -1).max(1), 0.5)  # each kernel fills its own scale
    _assert_png(viz.plot_filters(rgb, tmp_path / "rgb.png"))
    monkeypatch.chdir(tmp_path)  # the default output: runs/show/<view>-<model>.png under the working folder
    code, out, err = _cli(capsys, "filters", lenet, "--layer", "features.c3")
    assert (code, out, err) == (0, "wrote runs/show/filters-lenet5_modern.png\n", "")
    _assert_png(tmp_path / "runs/show/filters-lenet5_modern.png")


def test_lenet5_c3_kernel_is_the_dense_kernel_its_forward_uses() -> None:
    c3 = create_model("lenet5").features.c3
    dense = kernel(c3)
    assert dense.shape == (16, 6, 5, 5) and int((dense.abs().sum((2, 3)) > 0).sum()) == 60  # Table I's connections
    x = torch.randn(2, 6, 14, 14)
    assert torch.allclose(F.conv2d(x, dense, c3.bias), c3(x), atol=1e-6)


# ------------------------------------------------------------------------------------------------ features


def test_features_are_the_stage_outputs_with_their_shapes(lenet, pictures, tmp_path) -> None:
    net = viz.load(lenet)
    maps = viz.features(net, pictures / "boot.png", max_channels=4)
    x = net.record.preprocessing.image(pictures / "boot.png").unsqueeze(0)
    with torch.no_grad():
        expected = stage_outputs(net.model, x)
    assert [s.label for s in maps.stages] == ["C1", "S2", "C3", "S4", "C5"]
    assert [s.shape for s in maps.stages] == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]
    for stage in maps.stages:
        assert np.array_equal(stage.maps, expected[stage.name][0, :4].numpy())
    assert maps.picture.shape == (32, 32) and 0 <= maps.picture.min() and maps.picture.max() <= 1
    _assert_png(viz.plot_features(maps, tmp_path / "features.png"))


def test_features_and_rf_of_a_net_beside_its_twin(twins, pictures, tmp_path, capsys) -> None:
    res, plain = twins["resnet20"], twins["plain20"]
    out = tmp_path / "twin.png"
    code, printed, _ = _cli(capsys, "features", res, pictures / "digit.png", "--twin", plain, "--out", out)
    assert (code, printed) == (0, f"wrote {out}\n")
    _assert_png(out)
    assert _cli(capsys, "rf", res, pictures / "digit.png", "--twin", plain, "--layer", "layer1", "--out", out)[0] == 0
    _assert_png(out)
    code, _, err = _cli(capsys, "features", res, pictures / "digit.png", "--twin", res)
    assert code == 2 and err == (f"classicnets show: error: {res} is a resnet20, not the twin of resnet20; pass a "
                                 "plain20 checkpoint to --twin\n")


def test_twin_of_a_net_without_one_is_refused(lenet, twins) -> None:
    with pytest.raises(ValueError, match="lenet5_modern has no plain/residual twin; --twin applies to"):
        viz.check_twin(viz.load(lenet), viz.load(twins["plain20"]))


# ------------------------------------------------------------------------------------------------- gradcam


def _manual_gradcam(a: torch.Tensor, rest, c: int) -> torch.Tensor:
    """Grad-CAM's map (eq. 1-2) written out without hooks: ``rest`` maps the layer's activations ``a``
    (1, C, h, w) to the logits."""
    a = a.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(rest(a)[0, c], a)
    return F.relu((g[0].mean((1, 2))[:, None, None] * a[0].detach()).sum(0))


def _place(raw: np.ndarray, first: float, jump: float, size: int) -> np.ndarray:
    """A square map over a square input, unit i at pixel ``first + i * jump``, linear in between and the edge
    values beyond, then divided by its maximum: separable, one ``np.interp`` matrix per axis."""
    n = raw.shape[0]
    u = (np.arange(size) - first) / jump
    basis = np.stack([np.interp(u, np.arange(n), np.eye(n)[i]) for i in range(n)], 1)  # (size, n)
    up = basis @ raw @ basis.T
    return up / up.max()


def test_gradcam_matches_the_equations_written_out(lenet, pictures, tmp_path) -> None:
    """LeNet-5: C5 is 1x1 at 32x32, so the default layer is S4; the map equals eq. 1-2 computed by hand."""
    net = viz.load(lenet)
    cam = viz.gradcam(net, pictures / "boot.png")
    assert cam.layer == "features.s4" and cam.layer_shape == (16, 5, 5) and cam.target == cam.predicted
    x = net.record.preprocessing.image(pictures / "boot.png").unsqueeze(0)
    features = net.model.features
    a = features[:6](x.clone())  # C1 .. S4
    raw = _manual_gradcam(a, lambda t: net.model.forward_head(features[6:](t)), cam.target).numpy()
    assert np.allclose(cam.raw, raw, atol=1e-6)
    # S4 unit i sees input pixels 4i .. 4i+15 (5x5 conv, 2x2/2 pool, 5x5 conv, 2x2/2 pool): centred on 7.5 + 4i.
    assert np.allclose(cam.heatmap, _place(raw, 7.5, 4, 32), atol=1e-5)
    assert cam.heatmap.shape == (32, 32) and cam.heatmap.min() >= 0 and cam.heatmap.max() == pytest.approx(1)
    _assert_png(viz.plot_gradcam(cam, tmp_path / "cam.png"))


def test_gradcam_of_a_gap_net_is_cam_and_survives_inplace_relu(twins, pictures) -> None:
    """At the last stage of a ResNet (global average pooling, one FC layer) alpha_k = W[c, k] / (h w):
    Grad-CAM is CAM (Zhou et al. 2016). At ``bn1``, whose output the stem's ReLU overwrites in place, the
    map is still that of the BN output."""
    net = viz.load(twins["resnet20"])
    m = net.model
    image = pictures / "digit.png"
    cam = viz.gradcam(net, image, target="3")
    assert cam.layer == "layer3" and cam.layer_shape == (64, 7, 7) and cam.target == 3
    assert np.allclose(cam.weights, m.fc.weight[3].detach().numpy() / 49, atol=1e-7)
    x = net.record.preprocessing.image(image).unsqueeze(0)
    with torch.no_grad():
        a = stage_outputs(m, x)["layer3"][0]
    cam_of_zhou = F.relu(torch.einsum("k,khw->hw", m.fc.weight[3].detach(), a) / 49).numpy()
    assert np.allclose(cam.raw, cam_of_zhou, atol=1e-5)
    assert np.allclose(cam.heatmap, _place(cam_of_zhou, 0, 4, 28), atol=1e-5)  # "same" padding: unit i at 4i
    assert viz.gradcam(net, image, target=3).target == 3  # by index as by name
    stem = viz.gradcam(net, image, target=3, layer="bn1")
    with torch.no_grad():
        bn = m.bn1(m.conv1(x))
    raw = _manual_gradcam(bn, lambda t: m.forward_head(m.layer3(m.layer2(m.layer1(F.relu(t))))), 3).numpy()
    assert np.allclose(stem.raw, raw, atol=1e-5) and np.allclose(stem.heatmap, raw / raw.max(), atol=1e-5)


# -------------------------------------------------------------------------------------------------- errors


def test_errors_are_exactly_the_misclassified_test_images(lenet, tmp_path, capsys) -> None:
    net = viz.load(lenet)
    gallery = viz.errors(net, max_images=12, device="cpu")
    test = load_dataset("fashion-mnist").test
    # The net's predictions computed here, batch by batch as evaluate does (same kernels, same numbers).
    prep, dtype = net.record.preprocessing, amp_dtype(net.record.amp, torch.device("cpu"))
    with torch.no_grad():
        logits = torch.cat([predict_logits(net.model, prep.arrays(test.images[i : i + 512]), dtype, net.record.tta_flip)
                            for i in range(0, len(test), 512)])  # fmt: skip
    wrong = (logits.argmax(1) != test.labels).nonzero().flatten()
    assert gallery.total == len(test) and gallery.wrong == len(wrong) and len(gallery.indices) == 12
    assert set(gallery.indices.tolist()) <= set(wrong.tolist())
    confidence = logits.softmax(1)[wrong].max(1).values
    assert np.allclose(gallery.confidence, confidence.sort(descending=True).values[:12].numpy(), atol=1e-6)
    assert np.array_equal(gallery.true, test.labels[gallery.indices].numpy())
    assert np.array_equal(gallery.pred, logits.argmax(1)[gallery.indices].numpy())
    stored = test.images[gallery.indices, 0].numpy() / np.float32(255)
    assert all(np.array_equal(picture, image) for picture, image in zip(gallery.pictures, stored))
    confusion = evaluate_checkpoint(lenet, device="cpu", out_dir=tmp_path)["confusion"]
    assert np.array_equal(gallery.confusion, confusion.numpy())
    out = tmp_path / "errors.png"
    assert _cli(capsys, "errors", lenet, "--max", 9, "--device", "cpu", "--out", out)[:2] == (0, f"wrote {out}\n")
    _assert_png(out)


def test_errors_of_an_image_folder_read_the_files_in_loader_order(trained) -> None:
    from classicnets.data import ImageFolderData

    net = viz.load(trained("resnet20-folder") / "best.pt")
    with pytest.raises(ValueError, match="has no test set"):
        viz.errors(net, device="cpu")
    gallery = viz.errors(net, split="val", device="cpu")
    record = net.record
    folder = ImageFolderData(record.data[len("folder:") :], val_fraction=record.val_fraction, seed=record.seed)
    for picture, i, t in zip(gallery.pictures, gallery.indices, gallery.true):
        path, label = folder.val_samples[i]
        assert label == t and np.array_equal(picture, np.asarray(Image.open(path).convert("RGB")) / np.float32(255))
    assert gallery.total == len(folder.val_samples) and (gallery.pred != gallery.true).all()


# -------------------------------------------------------------------------------------------- receptive field


def test_effective_field_lies_inside_the_theoretical_one(lenet, twins, pictures) -> None:
    """|d unit / d input| is exactly zero outside the rectangle the geometry gives, and not zero at its
    centre; the rectangle's size is the one the layer table reports."""
    cases = [(lenet, "boot.png", "features.s4", [(2, 2), (0, 0), (4, 1)]),
             (twins["resnet20"], "digit.png", "layer1", [(14, 14), (0, 27)]),
             (twins["resnet20"], "digit.png", "layer2", [(0, 0), (13, 2)]),  # through option-A shortcuts
             (twins["plain20"], "digit.png", "layer2.0.conv1", [(3, 3)])]  # fmt: skip
    for source, image, layer, units in cases:
        net = viz.load(source)
        for unit in units:
            rf = viz.receptive_field(net, pictures / image, layer, unit)
            top, left, bottom, right = rf.box
            inside = np.zeros(rf.effective.shape, bool)
            inside[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = True
            assert (rf.effective[~inside] == 0).all(), (layer, unit)
            cy, cx = (top + bottom) // 2, (left + right) // 2
            assert rf.effective[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].sum() > 0, (layer, unit)
    lenet_rf = viz.receptive_field(viz.load(lenet), pictures / "boot.png")  # default: S4's centre unit
    assert (lenet_rf.layer, lenet_rf.unit, lenet_rf.box) == ("features.s4", (2, 2), (8, 8, 23, 23))
    table = {row.name: row.receptive_field for row in summary(create_model("lenet5_modern")).rows}
    assert lenet_rf.size == (table["features.s4"],) * 2 == (16, 16)
    table = {row.name: row.receptive_field for row in summary(create_model("resnet20", in_chans=1), (1, 28, 28)).rows}
    assert viz.receptive_field(viz.load(twins["resnet20"]), None, "layer2").size == (table["layer2.2.relu"],) * 2


def test_rf_without_an_image_averages_noise(twins, tmp_path, monkeypatch, capsys) -> None:
    rf = viz.receptive_field(viz.load(twins["plain20"]), layer="layer1")
    assert rf.picture is None and rf.inputs == 16 and rf.unit == (14, 14) and rf.size == (15, 15)
    assert rf.effective.shape == (28, 28) and rf.effective[14, 14] > 0 and 1 <= rf.effective_size() <= 15
    monkeypatch.chdir(tmp_path)
    assert _cli(capsys, "rf", twins["plain20"], "--unit", "3,4")[:2] == (0, "wrote runs/show/rf-plain20.png\n")
    _assert_png(tmp_path / "runs/show/rf-plain20.png")


# ---------------------------------------------------------------------------------------------- bad input

BAD = [
    (["gradcam", "{lenet}", "{pics}/notes.txt"], "cannot read the image"),
    (["features", "{lenet}", "{pics}/missing.png"], "no such image file"),
    (["gradcam", "{lenet}", "{pics}/tiny.png"], "is 6x6, too small for lenet5_modern (trained on 28x28 images): pass an image at least 14x14"),
    (["filters", "{lenet}", "--layer", "features.s2"], "'features.s2' is not a convolution of lenet5_modern; pass one of: features.c1, features.c3, features.c5"),
    (["gradcam", "{lenet}", "{pics}/boot.png", "--layer", "features.c9"], "'features.c9' is not a layer of lenet5_modern; pass a stage (features.act1, features.s2, features.act3, features.s4, features.act5)"),
    (["rf", "{lenet}", "--layer", "f6"], "'f6' has no feature map output in lenet5_modern"),
    (["gradcam", "{lenet}", "{pics}/boot.png", "--class", "Boot"], "unknown class 'Boot' for lenet5_modern; pass one of: T-shirt/top, Trouser,"),
    (["gradcam", "{lenet}", "{pics}/boot.png", "--class", "10"], "class index 10 is out of range: lenet5_modern has 10 classes, 0..9"),
    (["rf", "{lenet}", "--unit", "5,0"], "unit (5, 0) is outside features.s4's 5x5 map; pick y in 0..4 and x in 0..4"),
    (["rf", "{lenet}", "--unit", "centre"], "--unit takes Y,X (two integers, e.g. --unit 4,4), got 'centre'"),
    (["errors", "{lenet}", "--max", "0"], "max_images must be an integer from 1 to 100, got 0"),
    (["features", "{lenet}", "{pics}/boot.png", "--channels", "0"], "max_channels must be a positive integer, got 0"),
    (["filters", "{lenet}", "--out", "{pics}/filters.jpg"], "the views write PNG files; give the output a .png name"),
]  # fmt: skip


def test_bad_input_is_one_line_naming_the_fix(lenet, pictures, capsys) -> None:
    for argv, message in BAD:
        code, out, err = _cli(capsys, *[a.format(lenet=lenet, pics=pictures) for a in argv])
        assert code == 2 and out == "" and err.startswith("classicnets show: error: "), (argv, err)
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_views_of_an_rgb_folder_net(trained, tmp_path, capsys) -> None:
    """A net trained on RGB image files: the image goes through the folder preprocessing (resize, centre
    crop), the pictures are RGB, and the views run from the command line."""
    run = trained("resnet20-folder")
    net = viz.load(run / "best.pt")
    image = run.parent.parent / "rgb" / "cat" / "00.png"  # conftest's image folder, beside its runs
    maps = viz.features(net, image)
    assert maps.picture.shape == (32, 32, 3)
    assert [s.shape[1:] for s in maps.stages] == [(32, 32), (32, 32), (16, 16), (8, 8)]
    out = tmp_path / "cam.png"
    assert _cli(capsys, "gradcam", run / "best.pt", image, "--class", "dog", "--out", out)[:2] == (0, f"wrote {out}\n")
    _assert_png(out)
