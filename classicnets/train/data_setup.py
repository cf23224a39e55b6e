"""From a config to loaders: dataset, validation split, subset, input size and augmentation.

The input-size rule: a model sees its data at the native size when it can; smaller images are zero-padded
when they are at most 8 pixels short (28x28 digits -> LeNet-5's 32x32, as LeCun et al. did), otherwise
resized (bilinear) on the device, one batch at a time. ``image_size`` overrides the choice. The run records
which it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data import InMemoryLoader, load_dataset, split_validation
from ..data.arrays import seeded_generator
from .config import ConfigError, TrainConfig
from .hardware import DistInfo

MAX_PAD = 8


@dataclass(frozen=True)
class InputPlan:
    native: int  # side of the stored images (0 for image folders: sizes vary)
    size: int  # side the model sees
    pad_to: int | None = None
    resize_to: int | None = None

    def note(self) -> str:
        if self.native == 0:
            return f"images resized and cropped to {self.size}x{self.size}"
        if self.pad_to:
            return f"{self.native}x{self.native} images zero-padded to {self.size}x{self.size}"
        if self.resize_to:
            return f"{self.native}x{self.native} images resized (bilinear) to {self.size}x{self.size}"
        return f"{self.native}x{self.native} images at their native size"

    def to_dict(self) -> dict[str, Any]:
        return {"native": self.native, "size": self.size, "pad_to": self.pad_to, "resize_to": self.resize_to}


def plan_input(native: int, min_size: int, requested: int | None, model: str = "the model") -> InputPlan:
    if requested is not None and requested < min_size:
        raise ConfigError(f"image_size={requested} is too small for {model}: it needs at least {min_size}")
    target = requested if requested is not None else max(native, min_size)
    if target == native:
        return InputPlan(native, native)
    if requested is None and target - native > MAX_PAD:
        target = -(-target // 8) * 8  # round an automatic resize up to a multiple of 8
    if 0 < target - native <= MAX_PAD:
        return InputPlan(native, target, pad_to=target)
    return InputPlan(native, target, resize_to=target)


def resizer(plan: InputPlan, channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if plan.resize_to is None:
        return _identity
    return _Resize(plan.resize_to, channels_last)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _Resize:
    def __init__(self, size: int, channels_last: bool) -> None:
        self.size, self.channels_last = size, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, size, size)
        out = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out


@dataclass
class DataBundle:
    name: str
    train: Any  # InMemoryLoader or FolderLoader: iterable of (x, y), set_epoch, len, num_samples
    val: Any | None
    test: Any | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    plan: InputPlan
    source: str
    sizes: dict[str, int]
    transform: Callable[[torch.Tensor], torch.Tensor] = _identity

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "classes": self.classes, "mean": list(self.mean),
            "std": list(self.std), "in_chans": self.in_chans, "input": self.plan.to_dict(),
            "input_note": self.plan.note(), "sizes": self.sizes,
        }  # fmt: skip


def build_data(config: TrainConfig, min_size: int, default_size: int, device: torch.device, dist: DistInfo) -> DataBundle:
    if config.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is the global batch and must divide evenly over "
            f"{dist.world_size} processes; use a multiple of {dist.world_size}"
        )
    per_rank = config.batch_size // dist.world_size
    if config.data.startswith("folder:"):
        return _folder_data(config, min_size, default_size, per_rank, dist)
    splits = load_dataset(config.data, data_dir=config.data_dir, download=config.download)
    train, val = split_validation(splits.train, config.val_fraction, seed=config.seed)
    if config.subset is not None and config.subset < len(train):
        pick = torch.randperm(len(train), generator=seeded_generator(config.seed, "subset"))[: config.subset]
        train = train.subset(pick.sort().values)
    c, h, w = splits.shape
    plan = plan_input(min(h, w), min_size, config.image_size, config.model)
    common = dict(device=device, mean=splits.mean, std=splits.std, pad_to=plan.pad_to,
                  channels_last=config.channels_last)  # fmt: skip
    train_loader = InMemoryLoader(
        train, per_rank, shuffle=True, crop_padding=config.crop_padding, hflip=config.hflip,
        seed=config.seed, rank=dist.rank, world_size=dist.world_size, **common,
    )  # fmt: skip
    eval_batch = max(config.batch_size, 512)
    val_loader = InMemoryLoader(val, eval_batch, shuffle=False, **common) if len(val) else None
    test_loader = InMemoryLoader(splits.test, eval_batch, shuffle=False, **common)
    return DataBundle(
        name=config.data, train=train_loader, val=val_loader, test=test_loader, classes=list(splits.classes),
        mean=tuple(splits.mean), std=tuple(splits.std), in_chans=c, plan=plan, source=splits.source,
        sizes={"train": len(train), "val": len(val), "test": len(splits.test)}, transform=resizer(plan, config.channels_last),
    )  # fmt: skip


def _folder_data(config: TrainConfig, min_size: int, default_size: int, per_rank: int, dist: DistInfo) -> DataBundle:
    from ..data import ImageFolderData

    root = config.data[len("folder:") :]
    size = config.image_size or max(default_size, min_size)
    if size < min_size:
        raise ConfigError(f"image_size={size} is too small for {config.model}: it needs at least {min_size}")
    data = ImageFolderData(root, image_size=size, val_fraction=config.val_fraction, seed=config.seed)
    workers = config.num_workers
    train = data.train_loader(per_rank, num_workers=workers, rank=dist.rank, world_size=dist.world_size)
    val = data.val_loader(max(per_rank, 64), num_workers=workers) if data.val_samples else None
    test = data.test_loader(max(per_rank, 64), num_workers=workers) if data.test_samples else None
    return DataBundle(
        name=config.data, train=train, val=val, test=test, classes=list(data.classes), mean=tuple(data.mean),
        std=tuple(data.std), in_chans=data.channels, plan=InputPlan(0, size), source=str(data.root),
        sizes={"train": len(data.train_samples), "val": len(data.val_samples),
               "test": len(data.test_samples or [])},
    )  # fmt: skip
