"""From a config to loaders: dataset, validation split, subset, and the run's :class:`Preprocessing`.

The input-size rule lives in :mod:`classicnets.data.inputs` (``plan_input``): a model sees its data at the
native size when it can; smaller images are zero-padded when at most 8 pixels short, otherwise resized.
``image_size`` overrides the choice. The loaders built here yield model-ready batches (padded, augmented,
normalised, resized), and the same :class:`Preprocessing` goes into every checkpoint of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data import InMemoryLoader, load_dataset, split_validation
from ..data.arrays import seeded_generator
from ..data.inputs import InputPlan, Preprocessing, plan_input
from ..models import ModelCard
from .config import ConfigError, TrainConfig
from .runtime import DistInfo


@dataclass
class DataBundle:
    name: str
    train: Any  # InMemoryLoader or FolderLoader: iterable of model-ready (x, y), set_epoch, len, num_samples
    val: Any | None
    test: Any | None
    classes: list[str]
    preprocessing: Preprocessing
    source: str
    sizes: dict[str, int]

    @property
    def in_chans(self) -> int:
        return self.preprocessing.in_chans


def build_data(config: TrainConfig, card: ModelCard, device: torch.device, dist: DistInfo) -> DataBundle:
    if config.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is the global batch and must divide evenly over "
            f"{dist.world_size} processes; use a multiple of {dist.world_size}"
        )
    per_rank = config.batch_size // dist.world_size
    if config.data.startswith("folder:"):
        return _folder_data(config, card, per_rank, dist)
    splits = load_dataset(config.data, data_dir=config.data_dir, download=config.download)
    train, val = split_validation(splits.train, config.val_fraction, seed=config.seed)
    _check_not_empty(config, len(splits.train), len(train), splits.source)
    if config.subset is not None and config.subset < len(train):
        pick = torch.randperm(len(train), generator=seeded_generator(config.seed, "subset"))[: config.subset]
        train = train.subset(pick.sort().values)
    c, h, w = splits.shape
    try:
        plan = plan_input(min(h, w), card.min_input_size[0], config.image_size, config.model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prep = Preprocessing("array", c, tuple(splits.mean), tuple(splits.std), plan)
    common = dict(device=device, mean=prep.mean, std=prep.std, pad_to=plan.pad_to, resize_to=plan.resize_to,
                  channels_last=config.channels_last)  # fmt: skip
    train_loader = InMemoryLoader(
        train, per_rank, shuffle=True, crop_padding=config.crop_padding, hflip=config.hflip,
        seed=config.seed, rank=dist.rank, world_size=dist.world_size, **common,
    )  # fmt: skip
    eval_batch = max(config.batch_size, 512)
    val_loader = InMemoryLoader(val, eval_batch, shuffle=False, **common) if len(val) else None
    test_loader = InMemoryLoader(splits.test, eval_batch, shuffle=False, **common) if len(splits.test) else None
    return DataBundle(
        name=config.data, train=train_loader, val=val_loader, test=test_loader, classes=list(splits.classes),
        preprocessing=prep, source=splits.source, sizes={"train": len(train), "val": len(val), "test": len(splits.test)},
    )  # fmt: skip


def _check_not_empty(config: TrainConfig, n_all: int, n_train: int, source: str) -> None:
    """An empty training split ends in a ZeroDivisionError deep in the loop: say why before training."""
    if n_train:
        return
    if not n_all:
        raise ConfigError(f"{config.data}: the training set is empty (0 images in {source}); point "
                          f"data/data_dir at the real files")
    raise ConfigError(f"{config.data}: val_fraction={config.val_fraction} holds out all {n_all} training "
                      f"image(s), none is left to train on; lower val_fraction (e.g. --set val_fraction=0) "
                      f"or add images")


def _folder_data(config: TrainConfig, card: ModelCard, per_rank: int, dist: DistInfo) -> DataBundle:
    from ..data import ImageFolderData

    root = config.data[len("folder:") :]
    min_size = card.min_input_size[0]
    size = config.image_size or max(card.default_input_size[1], min_size)
    if size < min_size:
        raise ConfigError(f"image_size={size} is too small for {config.model}: it needs at least {min_size}")
    data = ImageFolderData(root, image_size=size, val_fraction=config.val_fraction, seed=config.seed)
    _check_not_empty(config, len(data.train_samples) + len(data.val_samples), len(data.train_samples), root)
    workers = config.num_workers
    train = data.train_loader(per_rank, num_workers=workers, rank=dist.rank, world_size=dist.world_size)
    val = data.val_loader(max(per_rank, 64), num_workers=workers) if data.val_samples else None
    test = data.test_loader(max(per_rank, 64), num_workers=workers) if data.test_samples else None
    prep = Preprocessing("folder", data.channels, tuple(data.mean), tuple(data.std), InputPlan(0, size))
    return DataBundle(
        name=config.data, train=train, val=val, test=test, classes=list(data.classes), preprocessing=prep,
        source=str(data.root), sizes={"train": len(data.train_samples), "val": len(data.val_samples),
                                      "test": len(data.test_samples or [])},
    )  # fmt: skip
