"""The benchmarks compare like with like: the standard-recipe data path (torchvision-style PIL transforms
in a DataLoader, benchmarks/_common.py) yields the same tensors as classicnets' InMemoryLoader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest.importorskip("torchvision")

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
