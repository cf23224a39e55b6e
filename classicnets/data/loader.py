"""InMemoryLoader: the whole dataset as one uint8 tensor on the device, augmented a batch at a time.

This is the data path airbench (Keller Jordan, 2024) uses to make small-image training fast: no worker
processes, no per-sample Python, no PIL. Every random draw of an epoch (order, crop offsets, flips) is made
up front from a generator seeded with (seed, epoch), so epoch k is the same whether or not the run resumed.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .arrays import ArrayDataset, seeded_generator
from .inputs import normalizer, pad_center, to_model_input

__all__ = ["InMemoryLoader", "EpochPlan", "augment_batch"]


class EpochPlan(NamedTuple):
    """One rank's draws for one epoch: sample indices in order, crop offsets (dy, dx) and flips."""
    indices: torch.Tensor   # (M,) int64
    offsets: torch.Tensor   # (M, 2) int64, each in [0, 2 * crop_padding]
    flips: torch.Tensor     # (M,) bool


def augment_batch(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  padding: int) -> torch.Tensor:
    """Random crop with zero padding, then horizontal flip, for a whole batch at once.

    Equivalent to torchvision's RandomCrop(H, padding) + RandomHorizontalFlip per sample, with the draws
    given: the crop of sample i starts at ``offsets[i]`` in the padded image, and ``flips[i]`` mirrors it.
    Works on any dtype; one gather, no Python loop over samples.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4) if padding else images      # (B, C, Hp, Wp), Hp = H + 2p
    hp, wp = padded.shape[-2:]
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)     # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)     # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)               # a flip reverses the columns read
    # One gather over the flattened pixels: 6x faster than indexing with four broadcast index tensors.
    where = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, where).view(b, c, h, w)


class InMemoryLoader:
    """Batches ``(x, y)`` from an ArrayDataset held on ``device``: x float32 (B, C, H, W) normalised as
    ``(pixel / 255 - mean) / std``, y int64 (B,).

    Per batch: index the uint8 tensor, pad/crop/flip (``crop_padding``, ``hflip``), then the shared
    :func:`~classicnets.data.inputs.to_model_input` (float, normalise, ``resize_to`` if given). ``pad_to``
    zero-pads every image once, up front, before any of that. ``Preprocessing.arrays`` applies the same
    steps to one batch, so evaluation, ``predict`` and this loader feed a model identical numbers.

    Call ``set_epoch(e)`` before each epoch (as with DistributedSampler); otherwise every pass repeats the
    same order. With ``world_size > 1`` each rank takes every world_size-th sample of the epoch's order.
    ``drop_last=False`` pads the order by wrapping around so all ranks get the same number of samples (a
    few samples are seen twice) and keeps the last partial batch; ``drop_last=True`` trims the order to a
    multiple of world_size (ranks stay disjoint) and drops the last partial batch.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, drop_last: bool = False,
                 device: str | torch.device = "cpu", mean: Sequence[float], std: Sequence[float],
                 pad_to: int | None = None, resize_to: int | None = None, crop_padding: int = 0, hflip: bool = False,
                 channels_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        _check_args(dataset, batch_size, mean=mean, std=std, crop_padding=crop_padding, rank=rank, world_size=world_size)
        images = pad_center(dataset.images, pad_to) if pad_to else dataset.images
        self.device = torch.device(device)
        self.images = images.to(self.device)          # (N, C, H, W) uint8, resident for the whole run
        self.labels = dataset.labels.to(self.device)  # (N,) int64
        self._scale, self._shift = normalizer(mean, std, self.device)
        self.resize_to = resize_to
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.crop_padding, self.hflip, self.channels_last = crop_padding, hflip, channels_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (including wrap-around padding with world_size > 1)."""
        n, ws = len(self.images), self.world_size
        return n // ws if self.drop_last else math.ceil(n / ws)

    def __len__(self) -> int:
        m = self.num_samples
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """This rank's draws for ``epoch`` (default: the current one), on the CPU."""
        g = seeded_generator(self.seed, "InMemoryLoader", self.epoch if epoch is None else epoch)
        n, p = len(self.images), self.crop_padding
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        offsets = (torch.randint(0, 2 * p + 1, (n, 2), generator=g) if p
                   else torch.zeros(n, 2, dtype=torch.long))
        flips = torch.rand(n, generator=g) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
        total = self.num_samples * self.world_size
        pos = torch.arange(total) % max(n, 1)         # wrap-around padding, or trimming, of the order
        mine = pos[self.rank::self.world_size]
        return EpochPlan(order[mine], offsets[mine], flips[mine])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = EpochPlan(*(t.to(self.device) for t in self.plan()))
        augment = bool(self.crop_padding or self.hflip)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = plan.indices[sl]
            x = self.images[idx]                                           # (B, C, H, W) uint8
            if augment:
                x = augment_batch(x, plan.offsets[sl], plan.flips[sl], self.crop_padding)
            yield to_model_input(x, self._scale, self._shift, self.resize_to, self.channels_last), self.labels[idx]

    def __repr__(self) -> str:
        return (f"InMemoryLoader({len(self.images)} images {tuple(self.images.shape[1:])} on {self.device}, "
                f"batch {self.batch_size}, {len(self)} batches, rank {self.rank}/{self.world_size})")


def _check_args(dataset: ArrayDataset, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                crop_padding: int, rank: int, world_size: int) -> None:
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"InMemoryLoader needs an ArrayDataset, got {type(dataset).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    channels = dataset.images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need one value per channel ({channels}), got {list(mean)} and "
                         f"{list(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {list(std)}")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
