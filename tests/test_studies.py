"""The "why ResNet works" studies: the measurements are right, the twins differ only in the skips, and every
study writes its numbers, figures and report. Tiny nets and budgets keep the whole file under a minute."""

from __future__ import annotations

import argparse
import csv

import pytest
import torch
import torch.nn.functional as F

from classicnets.studies import (
    DegradationReport, GradientReport, IdentityReport, Recipe, degradation, gradient_flow, identity_study,
    layer_gradients, zero_init_checks,
)  # fmt: skip
from classicnets.commands.studies import parse_list, register
from classicnets.studies.setup import build_net, twin_of
from classicnets.data.arrays import ArrayDataset, Splits
from classicnets.models.cifar_resnet import CifarResNet


def synthetic_splits(n_train: int = 256, n_test: int = 128, size: int = 12, classes: int = 3) -> Splits:
    """Learnable toy images: class k is a bright horizontal band at row k, plus noise."""
    g = torch.Generator().manual_seed(0)

    def make(n: int) -> ArrayDataset:
        labels = torch.randint(0, classes, (n,), generator=g)
        images = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.uint8)
        for k in range(classes):
            rows = slice(k * size // classes, (k + 1) * size // classes)
            images[labels == k, :, rows, :] += 150
        return ArrayDataset(images, labels)

    return Splits(make(n_train), make(n_test), [f"c{k}" for k in range(classes)], "toy", (0.3,), (0.3,))


@pytest.fixture(scope="module")
def toy() -> Splits:
    return synthetic_splits()


def png_has_content(path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 5_000, path
    pixels = mpimg.imread(path)[..., :3]
    # a blank canvas is one colour; a plot has axes, text and lines in several
    assert pixels.std() > 0.05 and len(torch.unique(torch.from_numpy(pixels).reshape(-1, 3), dim=0)) > 50


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("shortcut", ["A", "none"])
def test_hook_gradients_equal_autograd(shortcut: str) -> None:
    torch.manual_seed(0)
    model = CifarResNet(depth=8, num_classes=4, in_chans=1, shortcut=shortcut, width=4)
    x, y = torch.randn(6, 1, 10, 10), torch.tensor([0, 1, 2, 3, 0, 1])

    got = layer_gradients(model, x, y)

    outputs, handles = [], []
    for m in model.modules():
        if hasattr(m, "has_skip"):
            handles.append(m.register_forward_hook(lambda mod, args, out: outputs.append(out)))
    loss = F.cross_entropy(model(x), y)
    for h in handles:
        h.remove()
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    grads = torch.autograd.grad(loss, weights + outputs)
    expected_w = [float(g.norm()) for g in grads[: len(weights)]]
    expected_b = [float(g.norm()) for g in grads[len(weights) :]]

    assert got.loss == pytest.approx(loss.item(), rel=1e-6)
    assert [n for n, _ in got.weights][:2] == ["conv1", "layer1.0.conv1"] and got.weights[-1][0] == "fc"
    assert [v for _, v in got.weights] == pytest.approx(expected_w, rel=1e-5)
    assert [n for n, _ in got.blocks] == ["layer1.0", "layer2.0", "layer3.0"]
    assert [v for _, v in got.blocks] == pytest.approx(expected_b, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # it cleans up after itself


def test_gradient_flow_writes_report(toy: Splits, tmp_path) -> None:
    report = gradient_flow(["plain8", "resnet8"], data=toy, steps=2, batch=32, device="cpu", out=tmp_path, log=None)
    layers = 1 + 6 + 1  # stem conv, 3 blocks of 2 convs, fc
    rows = read_rows(tmp_path / "layers.csv")
    assert len(rows) == 2 * 2 * (layers + 3)  # nets x phases x (weights + blocks)
    assert {(r["net"], r["phase"]) for r in rows} == {(n, p) for n in ("plain8", "resnet8")
                                                      for p in ("init", "trained")}  # fmt: skip
    summary = read_rows(tmp_path / "summary.csv")
    assert len(summary) == 4 and all(float(s["max_over_min"]) >= 1 for s in summary)
    # same seed, same initial weights: at init only the skips make the twins' gradients differ
    assert report.get("plain8", "init")["loss"] != report.get("resnet8", "init")["loss"]
    png_has_content(tmp_path / "gradient_norms.png")
    text = (tmp_path / "report.md").read_text()
    assert "gradient_norms.png" in text and "plain8" in text and report.reading()[0] in text
    assert GradientReport.load(tmp_path).reading() == report.reading()


def test_gradient_flow_rejects_bad_input(toy: Splits) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        gradient_flow(["resnet21x"], data=toy, steps=0, write=False, log=None)
    with pytest.raises(ValueError, match="steps"):
        gradient_flow(["resnet8"], data=toy, steps=-1, write=False, log=None)


# ---------------------------------------------------------------------------------------------- degradation
@pytest.mark.parametrize("depth", [8, 20])
def test_twins_start_from_identical_weights(depth: int) -> None:
    torch.manual_seed(0)
    plain = build_net(f"plain{depth}", num_classes=10, in_chans=1)
    torch.manual_seed(0)
    residual = build_net(f"resnet{depth}", num_classes=10, in_chans=1)
    a, b = plain.state_dict(), residual.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in residual.parameters())
    assert twin_of(f"plain{depth}") == f"resnet{depth}" and twin_of("vgg16") is None


def test_degradation_twins_see_the_same_batches(toy: Splits) -> None:
    seen: dict[str, list[torch.Tensor]] = {}
    recipe = Recipe(epochs=2, subset=96, batch_size=32, test_size=64, train_eval_size=64, warmup_epochs=0.5)
    report = degradation([8], data=toy, recipe=recipe, device="cpu", write=False, log=None,
                         on_batch=lambda net, step, x, y: seen.setdefault(net, []).append(y.clone()))  # fmt: skip
    plain, residual = (next(r for r in report.runs if r["net"] == n) for n in ("plain8", "resnet8"))
    assert plain["params"] == residual["params"]
    assert plain["init_digest"] == residual["init_digest"]
    assert plain["batch_digest"] == residual["batch_digest"]
    assert len(seen["plain8"]) == len(seen["resnet8"]) == 2 * 3
    assert all(torch.equal(a, b) for a, b in zip(seen["plain8"], seen["resnet8"]))
    assert sum(len(y) for y in seen["plain8"][:3]) == 96  # one epoch covers the subset once
    assert report.twins_identical() == {8: True}
    assert plain["train_err"] != residual["train_err"] or plain["test_err"] != residual["test_err"]


def test_degradation_writes_fig6_report(toy: Splits, tmp_path) -> None:
    recipe = Recipe(epochs=2, subset=64, batch_size=32, test_size=64, train_eval_size=32, seeds=(0, 1))
    report = degradation([8, 14], data=toy, recipe=recipe, device="cpu", out=tmp_path, log=None)
    rows = read_rows(tmp_path / "epochs.csv")
    assert [(r["seed"], r["net"], r["epoch"]) for r in rows] == [
        (str(s), f"{f}{d}", str(e)) for s in (0, 1) for f in ("plain", "resnet") for d in (8, 14) for e in (1, 2)]
    assert all(0 <= float(r["train_err"]) <= 1 and 0 <= float(r["test_err"]) <= 1 for r in rows)
    final_rows = read_rows(tmp_path / "final.csv")
    assert len(final_rows) == 8 and report.twins_identical() == {8: True, 14: True}
    seeds_of = [float(r["train_err"]) for r in final_rows if r["net"] == "plain14"]
    assert report.final("plain14") == pytest.approx(sum(seeds_of) / 2, abs=1e-5)
    png_has_content(tmp_path / "degradation.png")
    png_has_content(tmp_path / "final_error.png")
    text = (tmp_path / "report.md").read_text()
    assert "degradation.png" in text and "final_error.png" in text
    reading = report.reading()
    assert any("plain14 ends with" in line and f"{report.final('plain14'):.3g}" in line and "2 seeds" in line
               for line in reading)  # fmt: skip
    assert all(line in text for line in reading)
    assert DegradationReport.load(tmp_path).reading() == reading


def test_degradation_rejects_bad_depth(toy: Splits) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        degradation([21], data=toy, write=False, log=None)
    with pytest.raises(ValueError, match="epochs"):
        degradation([8], data=toy, recipe=Recipe(epochs=0), write=False, log=None)
    with pytest.raises(ValueError, match="seeds"):
        degradation([8], data=toy, recipe=Recipe(seeds=(1, 1)), write=False, log=None)


# ---------------------------------------------------------------------------------------------- identity
def test_identity_residual_learns_faster(tmp_path) -> None:
    report = identity_study(steps=300, out=tmp_path, log=None)
    res, plain = report.steps_to_target("residual"), report.steps_to_target("plain")
    assert res is not None and (plain is None or res < plain)
    rows = read_rows(tmp_path / "curves.csv")
    assert len(rows) == 2 * 301
    png_has_content(tmp_path / "identity_loss.png")
    assert report.reading()[0] in (tmp_path / "report.md").read_text()
    assert IdentityReport.load(tmp_path).reading() == report.reading()


def test_zero_init_block_is_exactly_the_identity() -> None:
    checks = zero_init_checks()
    assert checks["block_max_abs_diff"] == 0.0 and checks["block_max_abs_diff_eval"] == 0.0
    assert checks["resnet20_max_abs_diff"] == 0.0 and checks["resnet20_blocks_checked"] == 7  # 9 blocks, 2 downsample
    assert checks["standard_init_max_abs_diff"] > 0.1  # a standard block is far from the identity
    assert checks["signed_input_max_abs_diff"] > 0  # the final ReLU cannot pass negative values


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classicnets")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_identity_writes_run_dir(tmp_path, capsys) -> None:
    args = _parser().parse_args(["study", "identity", "--steps", "60", "--out", str(tmp_path / "run")])
    assert args.handler(args) == 0
    assert (tmp_path / "run" / "report.md").is_file()
    assert "report:" in capsys.readouterr().out


def test_cli_errors_are_value_errors(tmp_path) -> None:
    args = _parser().parse_args(["study", "degradation", "--depths", "20,,56", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="comma-separated"):
        args.handler(args)
    args = _parser().parse_args(["compare", "lenet5,nonet", "--data", "fashion-mnist", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown model"):
        args.handler(args)
    assert parse_list("a, b") == ["a", "b"]


def test_wired_into_the_classicnets_command(tmp_path, capsys) -> None:
    from classicnets import commands as cli

    assert "study" in cli.build_parser()._subparsers._group_actions[0].choices
    assert cli.main(["study", "identity", "--steps", "30", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "identity_loss.png").is_file()
    assert cli.main(["study", "degradation", "--depths", "20,21", "--out", str(tmp_path / "deg")]) == 2
    assert "6n+2" in capsys.readouterr().err


def test_compare_table(tmp_path) -> None:
    from classicnets.studies import compare
    from classicnets.data import load_dataset
    from classicnets.train.config import TrainConfig

    load_dataset("fashion-mnist", download=False)  # installed by scripts/setup.sh; a missing copy must fail
    base = TrainConfig(val_fraction=0.02, tensorboard=False, progress=False, device="cpu", batch_size=64)
    report = compare(["lenet5_modern", "lenet5"], data="fashion-mnist", epochs=1, subset=256, base=base,
                     out=tmp_path, log=None)  # fmt: skip
    rows = read_rows(tmp_path / "compare.csv")
    assert [r["model"] for r in rows] == ["lenet5_modern", "lenet5"]
    assert all(int(r["params"]) > 10_000 and int(r["macs"]) > 100_000 and r["input"] == "1x32x32" for r in rows)
    assert all(0 < float(r["test_acc"]) <= 1 and float(r["wall_time_s"]) > 0 for r in rows)
    assert "| lenet5_modern |" in (tmp_path / "compare.md").read_text()
    png_has_content(tmp_path / "accuracy_vs_params.png")
    png_has_content(tmp_path / "accuracy_vs_time.png")
    assert report.reading()[0] in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="already holds a report; compare never replaces one"):
        compare(["lenet5"], data="fashion-mnist", epochs=1, subset=256, base=base, out=tmp_path, log=None)


def test_cli_defaults_are_the_studies_defaults() -> None:
    """The parsers are built without importing the studies (torch-free --help), so their defaults are written
    out in commands/studies.py; they must be the library's."""
    from classicnets.commands.studies import DEGRADATION_DEFAULTS, GRADIENT_MODELS
    from classicnets.studies import DEFAULT_MODELS

    assert GRADIENT_MODELS == DEFAULT_MODELS
    recipe = Recipe()
    assert DEGRADATION_DEFAULTS == {k: getattr(recipe, k) for k in DEGRADATION_DEFAULTS}
    args = _parser().parse_args(["study", "degradation"])
    assert (args.epochs, args.subset, args.lr, args.warmup_epochs) == (recipe.epochs, recipe.subset, recipe.lr,
                                                                       recipe.warmup_epochs)  # fmt: skip
