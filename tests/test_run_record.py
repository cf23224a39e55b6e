"""The run record and the one preprocessing path, end to end through the real engine.

Two bugs these tests pin down: ``export`` once ignored the size a model was trained at (a resnet20 trained on
28x28 digits exported as 1x32x32, a resnet18 fine-tuned at 32x32 as 3x224x224), and ``predict`` once fed a
folder-trained model squashed images without the test-time flip and autocast that ``eval`` used.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from classicnets.checkpoint import CheckpointError, RunRecord, load_checkpoint, model_from_checkpoint, read_record
from classicnets.data import load_dataset
from classicnets.data.inputs import Preprocessing
from classicnets.export import export_checkpoint, read_metadata
from classicnets.inference import evaluate_checkpoint, predict
from classicnets.train.config import TrainConfig, config_from_dict
from classicnets.train.engine import fit
from conftest import write_image_folder

CLASSES = ("circle", "cross", "plus")


def _fit(tmp_path, **values):
    base = dict(epochs=1, batch_size=16, lr=0.01, threads=1, num_workers=0, tensorboard=False, progress=False,
                out_dir=str(tmp_path / "runs"))  # fmt: skip
    return fit(config_from_dict({**base, **values}, base=TrainConfig()), log=lambda _: None)


def _onnx_input_shape(path) -> list[int | str]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def test_export_uses_the_size_the_model_was_trained_at(tmp_path) -> None:
    # ResNet-20 takes any size, so the 28x28 digits are fed at their native size...
    digits = _fit(tmp_path, model="resnet20", data="mnist-5k", subset=32, name="digits")
    assert digits.input_size == (1, 28, 28)
    out = export_checkpoint(digits.run_dir / "best.pt", "onnx")
    assert _onnx_input_shape(out)[1:] == [1, 28, 28] and read_metadata(out)["input_size"] == [1, 28, 28]
    # ...and a ResNet-18 fine-tuned on 32x32 crops exports at 32x32, not at ImageNet's 224x224.
    folder = write_image_folder(tmp_path / "images", CLASSES, per_class=4, size=40)
    tuned = _fit(tmp_path, model="resnet18", data=f"folder:{folder}", image_size=32, name="tuned")
    assert tuned.input_size == (3, 32, 32)
    out = export_checkpoint(tuned.run_dir / "best.pt", "onnx")
    assert _onnx_input_shape(out)[1:] == [3, 32, 32]


def _save_pngs(images: torch.Tensor, folder) -> list:
    """uint8 (N, 1, H, W) -> lossless PNG files, in order."""
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:04d}.png"
        Image.fromarray(img[0].numpy(), "L").save(path)
        paths.append(path)
    return paths


def test_predict_on_the_test_images_gives_the_predictions_eval_counts(tmp_path) -> None:
    """An array-trained model (padding 28 -> 32, bf16 autocast where the CPU has it, test-time flip): predict
    on the test images saved as PNG files gives exactly the predictions eval counted. The same batch (all
    1,000 test images at once) goes through the same kernels, so the logits are bit-identical."""
    run = _fit(tmp_path, model="lenet5_modern", data="mnist-5k", subset=128, tta_flip=True, name="lenet")
    record = read_record(load_checkpoint(run.run_dir / "best.pt"))
    assert record.tta_flip and record.preprocessing.plan.pad_to == 32
    test = load_dataset("mnist-5k").test
    metrics = evaluate_checkpoint(run.run_dir / "best.pt", batch_size=len(test), device="cpu")
    paths = _save_pngs(test.images, tmp_path / "test-images")
    predicted = predict(run.run_dir / "best.pt", paths, topk=1, device="cpu")
    names = [item["top"][0][0] for item in predicted]
    assert names == [record.classes[i] for i in metrics["pred"].tolist()]
    assert metrics["acc"] == pytest.approx(np.mean([n == record.classes[y] for n, y in zip(names, test.labels.tolist())]))


def test_predict_on_a_folder_trained_model_matches_eval(tmp_path) -> None:
    """A folder-trained model: predict resizes and centre-crops each file as the evaluation did (not a squash
    to size x size), so its predictions on the test folder are eval's, image for image."""
    root = tmp_path / "shapes"
    write_image_folder(root / "train", CLASSES, per_class=6, size=48)
    write_image_folder(root / "test", CLASSES, per_class=3, size=60, seed=1)  # another size: the crop matters
    (root / "test" / CLASSES[0] / "wide.png").unlink(missing_ok=True)
    Image.fromarray(np.full((40, 90, 3), 120, np.uint8)).save(root / "test" / CLASSES[0] / "wide.png")  # not square
    run = _fit(tmp_path, model="lenet5_modern", data=f"folder:{root}", image_size=32, tta_flip=True, name="folder")
    n_test = sum(1 for _ in (root / "test").rglob("*.png"))
    metrics = evaluate_checkpoint(run.run_dir / "best.pt", batch_size=n_test, device="cpu")
    files = sorted((root / "test" / c / f.name for c in CLASSES for f in (root / "test" / c).iterdir()),
                   key=lambda p: (CLASSES.index(p.parent.name), p.name))  # the folder loader's order
    predicted = predict(run.run_dir / "best.pt", files, topk=1, device="cpu")
    _, record, _ = model_from_checkpoint(run.run_dir / "best.pt")
    assert [item["top"][0][0] for item in predicted] == [record.classes[i] for i in metrics["pred"].tolist()]


def test_the_run_record_travels_with_every_checkpoint(tmp_path) -> None:
    run = _fit(tmp_path, model="lenet5_modern", data="mnist-5k", subset=32, seed=3, name="rec")
    for name in ("best.pt", "last.pt"):
        record = read_record(load_checkpoint(run.run_dir / name))
        assert isinstance(record, RunRecord) and isinstance(record.preprocessing, Preprocessing)
        assert record.model == "lenet5_modern" and record.model_kwargs == {"num_classes": 10, "in_chans": 1}
        assert record.classes == tuple(str(d) for d in range(10)) and record.seed == 3
        assert record.preprocessing.kind == "array" and record.input_size == (1, 32, 32) == run.input_size
        assert RunRecord.from_dict(record.to_dict()) == record  # a lossless round trip
    assert json.loads((run.run_dir / "result.json").read_text())["input_size"] == [1, 32, 32]
    assert run.classes == list(record.classes)


def test_checkpoints_without_a_record_get_a_clear_error(tmp_path) -> None:
    """A version-1 checkpoint (metadata as loose keys) is refused with the fix, not half-read."""
    from classicnets.checkpoint import save_checkpoint

    run = _fit(tmp_path, model="lenet5_modern", data="mnist-5k", subset=32, name="old")
    state = load_checkpoint(run.run_dir / "best.pt")
    old = {k: v for k, v in state.items() if k not in ("format", "version", "checksum", "record")}
    path = tmp_path / "old.pt"
    save_checkpoint(path, {**old, "model_name": "lenet5_modern", "version": 1})
    with pytest.raises(CheckpointError, match="older classicnets.*retrain it"):
        model_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="older classicnets"):
        predict(path, [tmp_path / "x.png"])
