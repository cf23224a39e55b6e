"""A trained net and how to feed it one image: load it from a checkpoint, read an image file exactly as its
test images were fed, turn a model input back into a picture, name a class, check a twin."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..checkpoint import RunRecord
from ..models import model_card

# An image file is refused when it is more than this many times smaller than the model's input: its picture
# would be mostly the interpolation, not the image (a 10x10 icon blown up to LeNet's 32x32, say).
MAX_UPSCALE = 2


@dataclass(frozen=True)
class TrainedNet:
    """A trained model (eval mode, CPU), its run record and the source it was loaded from."""

    model: nn.Module
    record: RunRecord
    source: str

    @property
    def name(self) -> str:
        return self.record.model

    def input(self, image: str | os.PathLike | torch.Tensor) -> torch.Tensor:
        """``image`` as the model's input (1, C, H, W): a file goes through the run's preprocessing
        (``record.preprocessing.image``); a tensor must already have the model's input size."""
        size = self.record.input_size
        if isinstance(image, torch.Tensor):
            x = image.unsqueeze(0) if image.dim() == 3 else image
            if tuple(x.shape) != (1, *size):
                raise ValueError(f"expected one model-ready image shaped {size} or (1, *{size}), got "
                                 f"{tuple(image.shape)}; pass an image file to have it prepared")  # fmt: skip
            return x.float()
        self._check_size(image)
        return self.record.preprocessing.image(image).unsqueeze(0)

    def _check_size(self, path: str | os.PathLike) -> None:
        from ..data.inputs import read_image

        prep = self.record.preprocessing
        w, h = read_image(path, prep.in_chans).size
        side = prep.plan.native or prep.plan.size
        need = math.ceil(side / MAX_UPSCALE)
        if min(w, h) < need:
            raise ValueError(f"{path} is {w}x{h}, too small for {self.name} (trained on {side}x{side} images): "
                             f"pass an image at least {need}x{need}, or the views would show the interpolation, "
                             "not the image")  # fmt: skip

    def picture(self, x: torch.Tensor) -> np.ndarray:
        """A model input (1, C, H, W) as the picture it came from: (H, W) grey or (H, W, 3) RGB in [0, 1]."""
        prep = self.record.preprocessing
        mean = torch.tensor(prep.mean).view(-1, 1, 1)
        std = torch.tensor(prep.std).view(-1, 1, 1)
        img = (x.detach()[0].float().cpu() * std + mean).clamp(0, 1)
        return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()

    def class_index(self, target: int | str) -> int:
        """A class given by name (first) or by index, as an index; a ValueError listing the classes."""
        classes = list(self.record.classes)
        if isinstance(target, str) and target in classes:
            return classes.index(target)
        try:
            index = int(target)
        except (TypeError, ValueError):
            raise ValueError(f"unknown class {target!r} for {self.name}; pass one of: {', '.join(classes)} "
                             f"(or an index 0..{len(classes) - 1})") from None  # fmt: skip
        if not 0 <= index < len(classes):
            raise ValueError(f"class index {index} is out of range: {self.name} has {len(classes)} classes, "
                             f"0..{len(classes) - 1}")  # fmt: skip
        return index


def load(source: str | os.PathLike) -> TrainedNet:
    """The net ``source`` names, on the CPU: anything :func:`classicnets.inference.load_trained` accepts (a
    checkpoint written by ``classicnets train``, or a shipped weight's name). One image at a time needs no
    accelerator; ``errors`` evaluates a whole split on its own ``device``."""
    from ..inference import load_trained

    model, record = load_trained(source, "cpu")
    return TrainedNet(model, record, str(source))


def check_twin(net: TrainedNet, twin: TrainedNet) -> None:
    """Refuse a pair that is not a net and its plain/residual twin (model card ``twin``), naming the fix."""
    expected = model_card(net.name).twin
    if expected is None:
        raise ValueError(f"{net.name} has no plain/residual twin; --twin applies to the CIFAR and ImageNet "
                         "ResNets and their plain nets (resnet20 / plain20, ...)")  # fmt: skip
    if twin.name != expected:
        raise ValueError(f"{twin.source} is a {twin.name}, not the twin of {net.name}; pass a {expected} "
                         "checkpoint to --twin")  # fmt: skip
