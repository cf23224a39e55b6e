"""In-memory datasets: uint8 image tensors with int64 labels, the train/test pair, and validation splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

__all__ = ["ArrayDataset", "Splits", "split_validation", "seeded_generator"]


class ArrayDataset(torch.utils.data.Dataset):
    """A whole dataset held as one tensor: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"ArrayDataset: images must be uint8 (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(f"ArrayDataset: need one label per image: {len(images)} images, labels "
                             f"of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def subset(self, indices: torch.Tensor | list[int]) -> "ArrayDataset":
        """The samples at ``indices`` (a copy), in that order."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return ArrayDataset(self.images[idx], self.labels[idx])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"ArrayDataset({len(self)} images of {'x'.join(map(str, self.shape))})"


@dataclass
class Splits:
    """A dataset's official train and test sets, with its class names and normalisation statistics.

    ``mean``/``std`` are per channel on the [0, 1] scale (pixel / 255) of the training set.
    ``source`` says where the files were read from.
    """
    train: ArrayDataset
    test: ArrayDataset
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = field(default="")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.train.shape


def seeded_generator(seed: int, *salt: int | str) -> torch.Generator:
    """A CPU generator whose seed mixes ``seed`` with ``salt`` (e.g. the epoch) without collisions."""
    key = ":".join(str(s) for s in (seed, *salt)).encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def split_validation(dataset: ArrayDataset, fraction: float = 0.1,
                     seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Hold out ``round(fraction * N)`` random samples (not stratified) as a validation set.

    The same (dataset, fraction, seed) always gives the same split; both parts keep the original order.
    He et al. (2016) held out 5k of CIFAR-10's 50k training images: ``fraction=0.1``.
    """
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"split_validation: fraction must be in [0, 1), got {fraction!r}")
    n_val = round(fraction * len(dataset))
    perm = torch.randperm(len(dataset), generator=seeded_generator(seed, "validation"))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return dataset.subset(train_idx), dataset.subset(val_idx)
