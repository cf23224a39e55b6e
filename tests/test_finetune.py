"""Your own network: fine-tune pretrained weights on a real folder of PNG files, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from classicnets.checkpoint import load_checkpoint, read_record
from classicnets.train.config import config_from_dict, load_recipe
from classicnets.train.engine import fit

BIN = Path(sys.executable).parent / "classicnets"
CLASSES = ("disc", "stripes", "square")


def make_folder(root: Path, per_class: int = 24, size: int = 40) -> Path:
    """Three visually distinct classes of RGB images with random colours, positions and noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx, r = rng.integers(12, 28), rng.integers(12, 28), rng.integers(6, 11)
            if name == "disc":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            elif name == "stripes":
                mask = ((xx + rng.integers(0, 6)) // 3) % 2 == 0
            else:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            img = rng.integers(0, 60, (size, size, 3))
            img[mask] = rng.integers(150, 256, 3)
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.mark.processes
def test_finetune_folder_learns_and_exports(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    cfg = config_from_dict(
        dict(model="resnet18", data=f"folder:{folder}", weights=str(weights), freeze="layer2", epochs=4,
             image_size=32, batch_size=16, lr=0.05, num_workers=0, out_dir=str(tmp_path / "runs"), name="ft",
             tensorboard=False, progress=False),
        base=load_recipe("finetune"),
    )  # fmt: skip
    messages: list[str] = []
    result = fit(cfg, log=messages.append)
    assert any("adapted" in m or "reinitialized" in m for m in messages), messages
    assert result.best_val_acc is not None and result.best_val_acc > 0.6, result  # chance is 1/3
    ckpt = load_checkpoint(tmp_path / "runs" / "ft" / "last.pt")
    record = read_record(ckpt)
    assert record.classes == tuple(sorted(CLASSES)) and record.model_kwargs["num_classes"] == 3
    # layers up to layer2 were frozen: identical to the pretrained file
    pretrained = torch.load(weights, weights_only=True)
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer2.1.bn2.running_mean"):
        assert torch.equal(ckpt["model"][key], pretrained[key]), key
    assert not torch.equal(ckpt["model"]["layer4.0.conv1.weight"], pretrained["layer4.0.conv1.weight"])
    # ... and the run ends in an ONNX file that onnxruntime agrees with
    out = subprocess.run([str(BIN), "export", str(tmp_path / "runs" / "ft" / "best.pt"), "--format", "onnx"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs" / "ft" / "best.onnx").stat().st_size > 1_000_000


@pytest.mark.processes
def test_finetune_cli_needs_weights_and_reports_mismatch(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images", per_class=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(BIN), "finetune", "resnet18", "--data", f"folder:{folder}"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "needs --weights" in out.stderr
    wrong = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    out = subprocess.run([str(BIN), "finetune", "resnet18", "--data", f"folder:{folder}", "--weights", str(wrong)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "not a resnet18 state dict" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("freeze", ["layer9", "everything"])
def test_unknown_freeze_target(tmp_path: Path, freeze: str) -> None:
    folder = make_folder(tmp_path / "images", per_class=4)
    cfg = config_from_dict(dict(model="resnet20", data=f"folder:{folder}", freeze=freeze, image_size=32,
                                out_dir=str(tmp_path), tensorboard=False, num_workers=0))  # fmt: skip
    with pytest.raises(ValueError, match="layer3"):
        fit(cfg, log=lambda _: None)
