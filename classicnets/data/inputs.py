"""One preprocessing path: how stored images and image files become model inputs.

Training, evaluation, ``predict``, the studies and the web views all call the functions here, so the
three cannot drift apart (a model evaluated one way and served another gives answers that its measured
accuracy does not describe).

Two kinds of data, recorded in every checkpoint as a :class:`Preprocessing`:

``"array"``  datasets stored as uint8 arrays at one native size (MNIST, Fashion-MNIST, CIFAR). An image is
            zero-padded when it is at most ``MAX_PAD`` pixels short of the size the model takes (28x28
            digits -> LeNet-5's 32x32, as LeCun et al. did), converted to float and normalised as
            ``(pixel / 255 - mean) / std``, then resized (bilinear, antialiased) if it is still not the
            model's size. A batch at a time, on the device.
``"folder"`` image files of any size (a class-per-subfolder tree): resized so the short side is
            ``size / 0.875`` and centre-cropped to ``size`` (Krizhevsky et al., He et al.), then normalised.
            Training replaces the resize and crop by RandomResizedCrop + flip.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "MAX_PAD", "EVAL_CROP_RATIO", "InputPlan", "Preprocessing", "plan_input", "pad_center", "to_model_input",
    "read_image", "convert_image", "folder_eval_transform", "folder_train_transform",
]  # fmt: skip

MAX_PAD = 8  # pad (rather than resize) images at most this many pixels short of the model's minimum
EVAL_CROP_RATIO = 0.875  # image folders: resize to size / 0.875, centre-crop size (224 from 256)


@dataclass(frozen=True)
class InputPlan:
    """How stored images reach the size the model sees."""

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


def plan_input(native: int, min_size: int, requested: int | None, model: str = "the model") -> InputPlan:
    """The plan for images of side ``native`` and a model that needs at least ``min_size``.

    Native size when the model takes it; zero-padding when at most ``MAX_PAD`` short; else a resize (an
    automatic one rounded up to a multiple of 8). ``requested`` (the ``image_size`` option) overrides.
    """
    if requested is not None and requested < min_size:
        raise ValueError(f"image_size={requested} is too small for {model}: it needs at least {min_size}")
    target = requested if requested is not None else max(native, min_size)
    if target == native:
        return InputPlan(native, native)
    if requested is None and target - native > MAX_PAD:
        target = -(-target // 8) * 8
    if 0 < target - native <= MAX_PAD:
        return InputPlan(native, target, pad_to=target)
    return InputPlan(native, target, resize_to=target)


def pad_center(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (N, C, H, W) images to (N, C, size, size), centred; an odd margin puts the extra row/column
    at the bottom/right. Zero is the raw background value (e.g. LeNet-5's 28 -> 32 for MNIST)."""
    h, w = images.shape[-2:]
    if size < h or size < w:
        raise ValueError(f"pad_to={size} is smaller than the images ({h}x{w}); use pad_to >= {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top))


def normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``x * scale - shift == (x / 255 - mean) / std``, each shaped (1, C, 1, 1)."""
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1 / (255 * std_t), mean_t / std_t


def to_model_input(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, resize_to: int | None = None, channels_last: bool = False
) -> torch.Tensor:
    """uint8 (B, C, H, W), already padded and augmented -> normalised float32 at the model's size.

    Augmenting the uint8 values before this conversion gives the same numbers as converting first, at a
    quarter of the memory traffic.
    """
    x = x.float().mul_(scale).sub_(shift)
    if resize_to is not None and x.shape[-2:] != (resize_to, resize_to):
        x = F.interpolate(x, size=(resize_to, resize_to), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into this model's input; saved with every checkpoint."""

    kind: str  # "array" or "folder" (see the module docstring)
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    plan: InputPlan

    def __post_init__(self) -> None:
        if self.kind not in ("array", "folder"):
            raise ValueError(f"Preprocessing.kind must be 'array' or 'folder', got {self.kind!r}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean and std need one value per channel ({self.in_chans}), got {self.mean}, {self.std}")

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's input: the size it was trained at."""
        return (self.in_chans, self.plan.size, self.plan.size)

    def note(self) -> str:
        return self.plan.note()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        return cls(kind=d["kind"], in_chans=int(d["in_chans"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   plan=InputPlan(**d["plan"]))  # fmt: skip

    def arrays(self, images: torch.Tensor) -> torch.Tensor:
        """Stored uint8 images (B, C, native, native) -> model inputs (B, C, size, size), float32, normalised.

        The function the in-memory loader applies to every batch (``pad`` up front, then augmentation, then
        :func:`to_model_input`), written out for one batch without augmentation.
        """
        if self.kind != "array":
            raise ValueError("Preprocessing.arrays is for array datasets; image files go through .image()")
        x = pad_center(images, self.plan.pad_to) if self.plan.pad_to else images
        scale, shift = normalizer(self.mean, self.std, x.device)
        return to_model_input(x, scale, shift, self.plan.resize_to)

    def image(self, path: str | os.PathLike) -> torch.Tensor:
        """An image file -> the model's input (C, size, size), exactly as a test image of the data was fed."""
        img = read_image(path, self.in_chans)
        if self.kind == "folder":
            return folder_eval_transform(self.plan.size, self.mean, self.std)(img)
        native = self.plan.native
        if img.size != (native, native):  # a photo or drawing of another size: to the dataset's format first
            from PIL import Image

            img = img.resize((native, native), Image.BILINEAR)
        array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return self.arrays(array.view(1, native, native, self.in_chans).permute(0, 3, 1, 2))[0]


MAX_IMAGE_PIXELS = 64_000_000  # 64 megapixels (an 8000x8000 photo); checked from the header, before decoding


class ImageTooLargeError(ValueError):
    """An image file whose header declares more than :data:`MAX_IMAGE_PIXELS` pixels."""


def _too_large(path: str | os.PathLike, pixels: str) -> str:
    return (f"{path}: the image declares {pixels} pixels, beyond the limit of {MAX_IMAGE_PIXELS:,} "
            f"({MAX_IMAGE_PIXELS // 10**6} megapixels); downscale it first (the models see at most a few hundred "
            "pixels a side)")  # fmt: skip


def read_image(path: str | os.PathLike, in_chans: int):
    """A decoded PIL image in mode ``L`` (1 channel) or ``RGB`` (3); a clear error for anything unreadable,
    or declaring more than :data:`MAX_IMAGE_PIXELS` pixels (refused from the header, before decoding)."""
    from PIL import Image, UnidentifiedImageError

    if in_chans not in (1, 3):
        raise ValueError(f"image files can feed 1- or 3-channel models, this one takes {in_chans} channels")
    try:
        with warnings.catch_warnings():  # PIL warns past ~89 MP; our own, lower limit below answers first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError:  # PIL's own refusal, past twice its warning threshold
                raise ImageTooLargeError(_too_large(path, f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}")) from None
        with img:
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageTooLargeError(_too_large(path, f"{width}x{height} = {width * height:,}"))
            return convert_image(img, "L" if in_chans == 1 else "RGB")
    except ImageTooLargeError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not an image file; pass PNG/JPEG/BMP files") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc}); pass a PNG/JPEG/BMP file") from None


_WIDE_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit greyscale (PNG, TIFF), and 32-bit integers


def convert_image(img, mode: str):
    """A PIL image in ``mode`` ("L" or "RGB"), its values scaled to 8 bits as what they are.

    PIL's own ``convert("L")`` clips 16-bit values to 255 (a 16-bit PNG comes out 98% white). 16-bit
    greyscale is full scale at 65535 (PNG, TIFF), so it becomes ``round(v * 255 / 65535)``; mode "I"
    (how older Pillow opens 16-bit PNGs, and 32-bit TIFFs) is read on the same 16-bit scale, clipped to it.
    The one place image files are decoded: :func:`read_image` and the image-folder datasets call it.
    """
    if img.mode in _WIDE_GREY:
        import numpy as np
        from PIL import Image

        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)  # 65535 * 255 fits in 32 bits
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img.convert(mode)


def folder_eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> tensor: resize the short side to ``size / 0.875``, centre-crop ``size``, normalise."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(math.ceil(size / EVAL_CROP_RATIO)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])  # fmt: skip


def folder_train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], torch.Tensor]:
    """PIL image -> tensor: RandomResizedCrop(size) + horizontal flip, normalised."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
