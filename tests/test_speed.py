"""The benchmarks compare like with like: the standard-recipe data path (torchvision-style PIL transforms
in a DataLoader, benchmarks/_common.py) yields the same tensors as classicnets' InMemoryLoader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torchvision  # noqa: E402,F401  (a dependency: the baseline networks and transforms)

from classicnets.data import ArrayDataset, InMemoryLoader  # noqa: E402

import _common  # noqa: E402


@pytest.mark.parametrize("shape, pad_to", [((1, 28, 28), 32), ((3, 32, 32), None)])
def test_standard_loader_matches_in_memory_loader(shape: tuple[int, int, int], pad_to: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (12,), generator=g)
    mean, std = (0.3,) * shape[0], (0.2,) * shape[0]
    standard = _common.standard_loader(images, labels, 12, pad_to=pad_to, crop_padding=0, hflip=False,
                                       mean=mean, std=std, num_workers=0, shuffle=False)
    fast = InMemoryLoader(ArrayDataset(images, labels), 12, shuffle=False, mean=mean, std=std, pad_to=pad_to)
    (xs, ys), (xf, yf) = next(iter(standard)), next(iter(fast))
    assert xs.shape == xf.shape
    torch.testing.assert_close(xs, xf, rtol=0, atol=1e-5)
    assert torch.equal(ys, yf)


def test_standard_transform_augments_like_torchvision_recipe() -> None:
    """Pad, RandomCrop(padding) and RandomHorizontalFlip are all there when asked for."""
    t = _common.standard_transform(32, 2, True, (0.5,), (0.5,), 28)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["Pad", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]


@pytest.mark.parametrize("name, kwargs, in_chans", [("resnet18", {"stem": "cifar"}, 1), ("alexnet", {}, 3)])
def test_standard_model_is_the_same_network(name: str, kwargs: dict, in_chans: int) -> None:
    """The baseline trains the same architecture: torchvision's network loads classicnets' weights strictly
    and computes the same function (so any speed difference is the recipe, not the net)."""
    from classicnets import create_model

    torch.manual_seed(0)
    ours = create_model(name, num_classes=10, in_chans=in_chans, **kwargs).eval()
    theirs = _common.standard_model(name, 10, in_chans, **kwargs).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    size = 32 if name == "resnet18" else 224
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


@pytest.mark.processes
def test_time_to_accuracy_script_runs_both_paths(tmp_path: Path) -> None:
    """The benchmark itself keeps working: both recipes train, evaluate and report (512 images, 1 epoch)."""
    import json
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    out_json = tmp_path / "tta.json"
    cmd = [sys.executable, str(script), "--model", "lenet5_modern", "--seeds", "0", "--threads", "1",
           "--set", "subset=512", "--set", "epochs=1", "--target", "0.05", "--allocator", "glibc",
           "--json", str(out_json)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out_json.read_text())["summary"]
    for path in ("classicnets", "standard"):  # a target below chance (10%), so each path reports a time
        assert summary[path]["median_s"] is not None and summary[path]["median_s"] > 0, summary
    assert "speed-up:" in result.stdout
