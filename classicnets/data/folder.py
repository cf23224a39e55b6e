"""ImageFolderData: a folder of images with one subfolder per class (torchvision ImageFolder's layout).

Two layouts are understood:
    root/<class>/<image>                          all images are for training (a validation part is held out)
    root/train/<class>/<image> [+ root/test/ or root/val/<class>/<image>]    with a separate test set

Unreadable images are skipped, with one warning that counts them and names a few: a stray thumbnail or a
half-copied file should not stop a run over thousands of images, but it must not pass unnoticed either.
Only the header is checked up front (fast); ``verify=True`` decodes every image once. An image that passes
the check but fails to decode later raises DataFormatError naming it (substituting another image
silently would bias the data).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .arrays import seeded_generator
from .errors import DataFormatError, printable
from .inputs import convert_image, folder_eval_transform, folder_train_transform

__all__ = ["ImageFolderData", "FolderDataset", "FolderLoader", "IMG_EXTENSIONS", "IMAGENET_MEAN",
           "IMAGENET_STD"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)   # the averages of ImageNet's three channels
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class FolderDataset(Dataset):
    """(path, label) pairs decoded with PIL on access, converted to ``mode`` and transformed."""

    def __init__(self, samples: list[tuple[Path, int]], transform, mode: str) -> None:
        self.samples, self.transform, self.mode = samples, transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img = convert_image(img, self.mode)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataFormatError(f"{printable(path)}: cannot decode image ({e}); remove or replace the "
                                  f"file") from None
        return self.transform(img), label


class FolderLoader:
    """A DataLoader over a DistributedSampler (also for one process) with InMemoryLoader's interface:
    ``set_epoch``, ``len``, ``num_samples``; yields (x, y)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 num_workers: int, rank: int, world_size: int, seed: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.seed = seed
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                          seed=seed, drop_last=drop_last)
        self._generator = seeded_generator(seed, "FolderLoader", 0)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=num_workers, generator=self._generator)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; with num_workers > 0 the workers' augmentation seeds follow it too."""
        self.sampler.set_epoch(epoch)
        self._generator.set_state(seeded_generator(self.seed, "FolderLoader", epoch).get_state())

    @property
    def num_samples(self) -> int:
        return self.sampler.num_samples

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


class ImageFolderData:
    """Train / validation / test loaders over a class-per-subfolder image tree.

    ``image_size`` is the square side fed to the network. Training augmentation (``"standard"``) is
    RandomResizedCrop + horizontal flip; evaluation resizes to image_size / 0.875 and centre-crops;
    ``train_transform="none"`` uses the evaluation transform for training too. RGB images are normalised
    with ImageNet's mean/std; if every image is greyscale the data is loaded as one channel.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 224, train_transform: str = "standard",
                 val_fraction: float = 0.1, seed: int = 0, *, verify: bool = False,
                 mode: str | None = None) -> None:
        if train_transform not in ("standard", "none"):
            raise ValueError(f"train_transform must be 'standard' or 'none', got {train_transform!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if mode not in (None, "RGB", "L"):
            raise ValueError(f"mode must be None (automatic), 'RGB' or 'L', got {mode!r}")
        self.root, self.image_size, self.seed = Path(root).expanduser(), int(image_size), seed
        train_root, test_root = _split_roots(self.root)
        self.classes = _class_names(train_root)
        train, modes, skipped = _scan(train_root, self.classes, verify)
        test, test_modes, test_skipped = (_scan(test_root, self.classes, verify) if test_root
                                          else ([], set(), []))
        self.skipped = skipped + test_skipped
        if self.skipped:
            warnings.warn(f"{printable(self.root)}: skipped {len(self.skipped)} unreadable image(s): "
                          f"{', '.join(printable(p) for p in self.skipped[:5])}"
                          f"{' ...' if len(self.skipped) > 5 else ''}", stacklevel=2)
        _warn_about_classes(train_root, self.classes, train)
        self.mode = mode or ("L" if modes | test_modes <= _GREY_MODES else "RGB")
        self.mean, self.std = (GREY_MEAN, GREY_STD) if self.mode == "L" else (IMAGENET_MEAN, IMAGENET_STD)
        self.channels = 1 if self.mode == "L" else 3
        perm = torch.randperm(len(train), generator=seeded_generator(seed, "validation")).tolist()
        n_val = round(val_fraction * len(train))
        self.train_samples = [train[i] for i in sorted(perm[n_val:])]
        self.val_samples = [train[i] for i in sorted(perm[:n_val])]
        self.test_samples = test if test_root else None
        self.train_transform = (self._eval_transform() if train_transform == "none"
                                else self._train_transform())
        self.eval_transform = self._eval_transform()

    def _train_transform(self):
        return folder_train_transform(self.image_size, self.mean, self.std)

    def _eval_transform(self):
        return folder_eval_transform(self.image_size, self.mean, self.std)

    def train_loader(self, batch_size: int, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                     drop_last: bool = False) -> FolderLoader:
        """Shuffled, augmented batches of the training part; call ``set_epoch`` each epoch."""
        return FolderLoader(FolderDataset(self.train_samples, self.train_transform, self.mode), batch_size,
                            shuffle=True, drop_last=drop_last, num_workers=num_workers, rank=rank,
                            world_size=world_size, seed=self.seed)

    def val_loader(self, batch_size: int, num_workers: int = 0, rank: int = 0,
                   world_size: int = 1) -> FolderLoader:
        """The held-out part of the training images, in a fixed order, with the evaluation transform."""
        return self._eval_loader(self.val_samples, batch_size, num_workers, rank, world_size)

    def test_loader(self, batch_size: int, num_workers: int = 0, rank: int = 0,
                    world_size: int = 1) -> FolderLoader:
        """The images of root/test (or root/val); a ValueError if the folder has no test set."""
        if self.test_samples is None:
            raise ValueError(f"{self.root} has no test set: add root/test/<class>/ (or root/val/) and put "
                             f"the training images under root/train/<class>/, or use val_loader")
        return self._eval_loader(self.test_samples, batch_size, num_workers, rank, world_size)

    def _eval_loader(self, samples, batch_size, num_workers, rank, world_size) -> FolderLoader:
        return FolderLoader(FolderDataset(samples, self.eval_transform, self.mode), batch_size, shuffle=False,
                            drop_last=False, num_workers=num_workers, rank=rank, world_size=world_size,
                            seed=self.seed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        test = "no test set" if self.test_samples is None else f"{len(self.test_samples)} test"
        return (f"ImageFolderData({self.root}: {len(self.classes)} classes, {len(self.train_samples)} train, "
                f"{len(self.val_samples)} val, {test}, {self.mode} {self.image_size}px)")


def _warn_about_classes(folder: Path, classes: list[str], samples: list[tuple[Path, int]]) -> None:
    """One line each for a tree that trains but cannot learn what it should: one class, or empty classes."""
    if len(classes) == 1:
        warnings.warn(f"{printable(folder)}: only one class folder ({printable(classes[0])}); a classifier "
                      f"needs two or more, this one will answer {printable(classes[0])} for everything",
                      stacklevel=3)
    seen = {label for _, label in samples}
    empty = [name for label, name in enumerate(classes) if label not in seen]
    if empty:
        warnings.warn(f"{printable(folder)}: {len(empty)} class folder(s) without a readable image: "
                      f"{', '.join(printable(folder / n) for n in empty[:5])}{' ...' if len(empty) > 5 else ''};"
                      f" these classes cannot be learned: add images or remove the folders", stacklevel=3)


def _split_roots(root: Path) -> tuple[Path, Path | None]:
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; expected root/<class>/<image> files")
    if (root / "train").is_dir():
        test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        return root / "train", test
    return root, None


def _class_names(folder: Path) -> list[str]:
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder} has no class subfolders; expected {folder}/<class name>/<image files>, "
                         f"one subfolder per class")
    return classes


def _scan(folder: Path, classes: list[str],
          verify: bool) -> tuple[list[tuple[Path, int]], set[str], list[Path]]:
    """(path, label) of every readable image under folder/<class>/, the image modes seen, the skipped."""
    present = {e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")}
    if present - set(classes):
        raise ValueError(f"{printable(folder)} has classes that the training folder lacks: "
                         f"{', '.join(printable(c) for c in sorted(present - set(classes)))}")
    samples, modes, skipped = [], set(), []
    for label, name in enumerate(classes):
        class_dir = folder / name
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS
                       and not p.name.startswith(".") and p.is_file()) if class_dir.is_dir() else []
        for path in files:
            mode = _probe(path, verify)
            if mode is None:
                skipped.append(path)
            else:
                samples.append((path, label))
                modes.add(mode)
    if not samples:
        raise ValueError(f"{folder}: no readable images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    return samples, modes, skipped


def _probe(path: Path, verify: bool) -> str | None:
    """The image's PIL mode, or None if it cannot be read (header only unless ``verify``)."""
    try:
        with Image.open(path) as img:
            if verify:
                img.load()
            return img.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
