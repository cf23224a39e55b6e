"""The weights that ship inside the package: present, hash-checked, accurate as recorded, usable everywhere."""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import classicnets.weights as weights
from classicnets import create_model
from classicnets.commands import main
from classicnets.data import InMemoryLoader, load_dataset
from classicnets.export import model_from_safetensors
from classicnets.train.step import predict_logits

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_weights", ROOT / "scripts" / "train_weights.py")
train_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_weights)


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_weight_the_script_trains_is_shipped_and_small() -> None:
    assert weights.list_weights() == list(train_weights.SPECS)
    total = sum(weights.get_weight(n).path.stat().st_size for n in weights.list_weights())
    assert total < 5e6, f"{total / 1e6:.1f} MB of weights: the package should stay small"


@pytest.mark.parametrize("name", list(train_weights.SPECS))
def test_record_is_consistent(name: str) -> None:
    """The recorded accuracy is the accuracy of the recorded per-image predictions, on the real test set;
    mean and spread are over the recorded seeds; the command reproduces the shipped seed."""
    w = weights.get_weight(name)
    test = load_dataset(w.dataset).test
    preds = torch.tensor([ord(c) - 48 for c in w.test_predictions])
    assert len(preds) == len(test) and w.test_acc == pytest.approx(int((preds == test.labels).sum()) / len(test), abs=1e-12)
    assert sorted(w.seed_accs) == list(train_weights.SEEDS) and w.seed_accs[w.seed] == w.test_acc
    assert w.test_acc_mean == pytest.approx(statistics.mean(w.seed_accs.values()))
    assert w.test_acc_std == pytest.approx(statistics.stdev(w.seed_accs.values()))
    assert sorted(w.seed_accs.values())[1] == w.test_acc  # the median seed is the one shipped
    assert w.command == train_weights.command_line(name, w.seed) and f"--seed {w.seed}" in w.command
    assert w.run.amp == "off" and w.config["seed"] == w.seed and w.config["model"] == w.model


def _near_ties(logits: torch.Tensor) -> torch.Tensor:
    """Images whose top two logits are within float32 reordering error: another CPU's kernels may swap them.
    Summation in another order changes a logit by ~1e-6 of the logits' scale; 1e-4 is a wide margin."""
    top2 = logits.topk(2, 1).values
    return (top2[:, 0] - top2[:, 1]) < 1e-4 * logits.abs().amax(1)


@pytest.mark.parametrize("name", list(train_weights.SPECS))
def test_shipped_weights_reproduce_their_recorded_predictions(name: str) -> None:
    """Every 10th test image, in fp32 as recorded: the predictions are the recorded ones (exactly, apart from
    near-ties, which only another CPU's summation order could flip). The whole test set: -m slow."""
    check_predictions(name, stride=10)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(train_weights.SPECS))
def test_shipped_weights_reach_their_recorded_accuracy_on_the_whole_test_set(name: str) -> None:
    check_predictions(name, stride=1)


def check_predictions(name: str, stride: int) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        model, record = weights.load(name)
        prep, test = record.preprocessing, load_dataset(record.data).test
        sample = test.subset(torch.arange(0, len(test), stride))
        loader = InMemoryLoader(sample, 500, shuffle=False, mean=prep.mean, std=prep.std, pad_to=prep.plan.pad_to,
                                resize_to=prep.plan.resize_to)  # fmt: skip
        with torch.no_grad():
            logits = torch.cat([predict_logits(model, x, None, record.tta_flip) for x, _ in loader])
    finally:
        torch.use_deterministic_algorithms(False)
    recorded = torch.tensor([ord(c) - 48 for c in weights.get_weight(name).test_predictions])[::stride]
    differ = logits.argmax(1) != recorded
    assert not (differ & ~_near_ties(logits)).any(), f"{int(differ.sum())} predictions differ"
    if stride == 1:
        acc = int((logits.argmax(1) == test.labels).sum()) / len(test)
        assert abs(acc - weights.get_weight(name).test_acc) * len(test) <= int(_near_ties(logits).sum())


def test_create_model_pretrained() -> None:
    model = create_model("lenet5_modern", pretrained="fashion-mnist")
    w = model.pretrained_cfg
    assert w.name == "fashion-mnist:lenet5_modern" and model.num_classes == 10 and model.in_chans == 1
    assert w.classes[0] == "T-shirt/top" and w.preprocessing.input_size == (1, 32, 32)
    reference = weights.load_state_dict("fashion-mnist:lenet5_modern")
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert model.training  # like any freshly created model
    assert create_model("lenet5", pretrained=True).pretrained_cfg.name == "fashion-mnist:lenet5"
    assert create_model("lenet5", pretrained="mnist-5k").pretrained_cfg.classes == tuple("0123456789")
    assert create_model("resnet20", pretrained="fashion-mnist", num_classes=10, in_chans=1).num_classes == 10
    with pytest.raises(ValueError, match="trained with .*not .*num_classes.*adapt"):
        create_model("resnet20", pretrained="fashion-mnist", num_classes=5)
    with pytest.raises(weights.WeightsError, match="unknown weight 'cifar10:resnet20'.*classicnets weights"):
        create_model("resnet20", pretrained="cifar10")
    with pytest.raises(weights.WeightsError, match="no shipped weights for 'vgg16'"):
        create_model("vgg16", pretrained=True)


def test_a_tampered_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR / "files", copy / "files")
    target = copy / "files" / weights.get_weight("fashion-mnist:lenet5_modern").file
    data = bytearray(target.read_bytes())
    data[-100] ^= 1  # one bit of one weight
    target.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", copy)
    with pytest.raises(weights.WeightsError, match="does not match its recorded SHA-256.*reinstall"):
        weights.load("fashion-mnist:lenet5_modern")
    (copy / "files" / weights.get_weight("mnist-5k:lenet5").file).unlink()
    with pytest.raises(weights.WeightsError, match="missing from the installed package"):
        create_model("lenet5", pretrained="mnist-5k")


def _test_image(tmp_path: Path, index: int) -> Path:
    test = load_dataset("fashion-mnist").test
    path = tmp_path / f"test{index}.png"
    Image.fromarray(test.images[index, 0].numpy(), "L").save(path)
    return path


def test_predict_eval_and_weights_commands_take_a_weight_name(tmp_path: Path, capsys) -> None:
    """The issue's "done when": predict with shipped weights on a fresh install, no training run."""
    w = weights.get_weight("fashion-mnist:lenet5_modern")
    images = [_test_image(tmp_path, i) for i in (0, 1, 2)]
    code, out, err = run(capsys, "predict", "fashion-mnist:lenet5_modern", *map(str, images), "--topk", "1")
    assert code == 0, err
    predicted = [line.split(": ", 1)[1].rsplit(" ", 1)[0] for line in out.strip().splitlines()]
    assert predicted == [w.classes[ord(c) - 48] for c in w.test_predictions[:3]]
    code, flagged, err = run(capsys, "predict", "--weights", "fashion-mnist:lenet5_modern", *map(str, images), "--topk", "1")
    assert code == 0 and flagged == out, err  # the spelling: predict --weights NAME IMAGE...
    code, out, err = run(capsys, "eval", "--weights", "fashion-mnist:lenet5_modern", "--out", str(tmp_path))
    assert code == 0 and "10,000 images" in out and (tmp_path / "confusion_test.png").is_file(), err
    code, out, err = run(capsys, "weights")
    assert code == 0 and all(name in out for name in train_weights.SPECS) and f"{w.test_acc:.2%}" in out
    code, out, err = run(capsys, "predict", "fashion-mnist:lenet6", str(images[0]))
    assert code == 2 and "unknown weight 'fashion-mnist:lenet6'; did you mean fashion-mnist:lenet5" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_export_hf_and_safetensors_from_a_weight_name(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lenet-hf"
    code, stdout, err = run(capsys, "export", "fashion-mnist:lenet5_modern", "--format", "hf", "--out", str(out))
    assert code == 0 and "bit-identical" in stdout, err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["9"] == "Ankle boot" and config["input_size"] == [1, 32, 32]
    assert config["weight"] == "fashion-mnist:lenet5_modern" and config["preprocessing"]["plan"]["pad_to"] == 32
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: classicnets") and "61,706" in card and "test accuracy" in card
    rebuilt, _ = model_from_safetensors(out)
    reference = weights.load_state_dict("fashion-mnist:lenet5_modern")
    assert all(torch.equal(v, reference[k]) for k, v in rebuilt.state_dict().items())


def test_finetune_from_a_weight_name(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "finetune", "--weights", "fashion-mnist:lenet5_modern", "--data", "mnist-5k",
                         "--epochs", "1", "--subset", "64", "--batch-size", "16", "--out-dir", str(tmp_path),
                         "--name", "ft", "--no-progress", "--set", "tensorboard=false", "--threads", "1")  # fmt: skip
    assert code == 0, err
    assert "loaded fashion-mnist:lenet5_modern (shipped weights fashion-mnist:lenet5_modern)" in out
    assert (tmp_path / "ft" / "best.pt").is_file()


def test_torch_hub_loads_shipped_weights_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.hub.load(str(ROOT), "lenet5_modern", source="local", pretrained=True, trust_repo=True)
    assert model.pretrained_cfg.name == "fashion-mnist:lenet5_modern"
    fresh = torch.hub.load(str(ROOT), "resnet20", source="local", trust_repo=True)
    assert not hasattr(fresh, "pretrained_cfg") and fresh.num_classes == 10


def test_predictions_on_real_test_images_are_mostly_right() -> None:
    """Not a record check: the shipped nets classify real images (a trained net, not a random one)."""
    for name in weights.list_weights():
        w = weights.get_weight(name)
        preds = np.array([ord(c) - 48 for c in w.test_predictions])
        assert w.test_acc > (0.95 if w.dataset == "mnist-5k" else 0.85), (name, w.test_acc)
        assert len(np.unique(preds)) == len(w.classes)


def test_show_views_work_on_shipped_weights(tmp_path: Path, capsys) -> None:
    image = str(_test_image(tmp_path, 0))
    for args in (["filters", "fashion-mnist:resnet20"], ["features", "fashion-mnist:resnet20", image,
                 "--twin", "fashion-mnist:plain20"], ["gradcam", "fashion-mnist:lenet5", image],
                 ["rf", "fashion-mnist:lenet5_modern", image]):  # fmt: skip
        out = tmp_path / f"{args[0]}.png"
        code, stdout, err = run(capsys, "show", *args, "--out", str(out))
        assert code == 0 and f"wrote {out}" in stdout, (args, err)
        assert Image.open(out).size[0] > 200


def test_weight_names_and_paths_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("fashion-mnist:resnet20", "mnist-5k:lenet5", "cifar10:vgg16"):
        assert weights.is_weight_name(name), name
    for path in ("C:/runs/best.pt", "C:\\runs\\best.pt", "runs:v2/best.pt", "http://x/y.pt", ":x", "best.pt"):
        assert not weights.is_weight_name(path), path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:name").write_bytes(b"")  # an existing file is a file, whatever its name
    assert not weights.is_weight_name("odd:name")


def test_pretrained_options_are_compared_with_what_the_weights_were_built_with() -> None:
    assert create_model("resnet20", pretrained="fashion-mnist", shortcut="A").shortcut == "A"  # the default: fine
    with pytest.raises(ValueError, match=r"trained with \{'shortcut': 'A'\}, not \{'shortcut': 'B'\}.*drop those"):
        create_model("resnet20", pretrained="fashion-mnist", shortcut="B")
    with pytest.raises(TypeError, match="pretrained must be True or a dataset name"):
        create_model("resnet20", pretrained=1)


def test_export_refuses_a_folder_or_a_foreign_hf_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "sub").mkdir()
    code, _, err = run(capsys, "export", "fashion-mnist:lenet5", "--format", "onnx", "--out", str(tmp_path / "sub"))
    assert code == 2 and "already exists; pass --force" in err
    code, _, err = run(capsys, "export", "fashion-mnist:lenet5", "--format", "onnx", "--out", str(tmp_path / "sub"),
                       "--force")  # a folder is never replaced by a file, even with --force
    assert code == 2 and "is a folder; name a file to write" in err and "Traceback" not in err
    notes = tmp_path / "proj" / "README.md"
    notes.parent.mkdir()
    notes.write_text("my notes")
    code, _, err = run(capsys, "export", "fashion-mnist:lenet5", "--format", "hf", "--out", str(notes.parent),
                       "--force")  # someone's folder is never replaced, even with --force
    assert code == 2 and "other files in it" in err and notes.read_text() == "my notes"
    good = tmp_path / "w.safetensors"
    assert run(capsys, "export", "fashion-mnist:lenet5", "--format", "safetensors", "--out", str(good))[0] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left behind
