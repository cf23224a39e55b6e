"""``show errors``: the images a trained net gets wrong, with their true and predicted classes, beside the
confusion matrix of the whole split.

The predictions are ``evaluate_checkpoint``'s (the run's preprocessing, autocast and test-time flip: the
numbers ``classicnets eval`` prints); the pictures are the stored images themselves, read in the order the
evaluation loader feeds them (array datasets: the split's order; image folders: the sorted file list).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import RunRecord
from ..data import load_dataset, split_validation
from . import canvas
from .trained import TrainedNet

MAX_IMAGES = 36
LARGEST_GALLERY = 100  # beyond this the tiles are too small to read (and the figure too large to draw)


@dataclass(frozen=True)
class ErrorGallery:
    """The misclassified images of one split, the most confident mistakes first."""

    model: str
    data: str
    split: str
    classes: tuple[str, ...]
    indices: np.ndarray  # (n,) positions in the split, in the evaluation loader's order
    true: np.ndarray  # (n,) class indices
    pred: np.ndarray  # (n,)
    confidence: np.ndarray  # (n,) softmax probability of the (wrong) predicted class
    pictures: list[np.ndarray]  # n stored images, (H, W) or (H, W, 3) in [0, 1]
    confusion: np.ndarray  # (K, K) counts, rows true, columns predicted
    wrong: int  # misclassified images in the whole split
    total: int


def errors(
    net: TrainedNet, data: str | None = None, *, split: str = "test", max_images: int = MAX_IMAGES, device: str = "auto"
) -> ErrorGallery:
    """The up to ``max_images`` images of ``split`` of ``data`` (default: the run's data) that the net
    classifies wrong, the most confidently wrong first, with the confusion matrix of the split."""
    from ..inference import evaluate_checkpoint

    if isinstance(max_images, bool) or not isinstance(max_images, int) or not 1 <= max_images <= LARGEST_GALLERY:
        raise ValueError(f"max_images must be an integer from 1 to {LARGEST_GALLERY}, got {max_images!r}")
    name = data or net.record.data
    metrics = evaluate_checkpoint(net.source, name, split=split, device=device, plot=False)
    labels, pictures = _stored(net.record, name, split)
    pred, probs = metrics["pred"], metrics["logits"].softmax(1)
    k = len(net.record.classes)
    assert len(labels) == len(pred) and torch.equal(
        torch.bincount(labels * k + pred, minlength=k * k).view(k, k), metrics["confusion"]
    ), "the stored images are not in the evaluation loader's order"
    wrong = (pred != labels).nonzero().flatten()
    confidence = probs[wrong, pred[wrong]]
    order = confidence.argsort(descending=True, stable=True)[:max_images]
    idx = wrong[order]
    return ErrorGallery(net.name, name, split, net.record.classes, idx.numpy(), labels[idx].numpy(),
                        pred[idx].numpy(), confidence[order].numpy(), pictures(idx.tolist()),
                        metrics["confusion"].numpy(), len(wrong), len(labels))  # fmt: skip


def _stored(record: RunRecord, name: str, split: str) -> tuple[torch.Tensor, Callable[[list[int]], list[np.ndarray]]]:
    """The labels of ``split`` in the evaluation loader's order (``inference._loader``'s choice of images),
    and a function giving the stored pictures at some of its positions."""
    if name.startswith("folder:"):
        from PIL import Image

        from ..data import ImageFolderData

        prep = record.preprocessing
        folder = ImageFolderData(name[len("folder:") :], image_size=prep.plan.size, val_fraction=record.val_fraction,
                                 seed=record.seed, mode="L" if prep.in_chans == 1 else "RGB")  # fmt: skip
        samples = folder.test_samples if split == "test" else folder.val_samples

        def read(indices: list[int]) -> list[np.ndarray]:
            out = []
            for i in indices:
                with Image.open(samples[i][0]) as img:
                    out.append(np.asarray(img.convert(folder.mode), dtype=np.float32) / 255)
            return out

        return torch.tensor([label for _, label in samples], dtype=torch.long), read
    splits = load_dataset(name, data_dir=record.data_dir)
    dataset = splits.test
    if split != "test":
        train, val = split_validation(splits.train, record.val_fraction, seed=record.seed)
        dataset = val if split == "val" else train

    def pick(indices: list[int]) -> list[np.ndarray]:
        images = dataset.images[indices].float().div(255).permute(0, 2, 3, 1).numpy()  # (n, H, W, C)
        return [img[:, :, 0] if img.shape[2] == 1 else img for img in images]

    return dataset.labels, pick


def plot_errors(gallery: ErrorGallery, path: str | os.PathLike) -> Path:
    """One PNG: the gallery (true and predicted class, and the net's confidence, under each image) on the
    left, the confusion matrix (counts, shaded by row rate) on the right."""
    n, k = len(gallery.pictures), len(gallery.classes)
    rows, cols = canvas.grid_shape(max(n, 1), max_cols=6)
    height = max(1.45 * rows + 0.8, 0.42 * k + 2.2)
    fig = canvas.figure(1.35 * cols + 0.42 * k + 2.6, height)
    left, right = fig.subfigures(1, 2, width_ratios=[1.35 * cols, 0.42 * k + 2.2], wspace=0.02)
    for ax, pic, t, p, conf in zip(canvas.tiles(left, n, rows, cols), gallery.pictures, gallery.true,
                                   gallery.pred, gallery.confidence):  # fmt: skip
        canvas.tile(ax, pic, f"true {gallery.classes[t]}\npred {gallery.classes[p]} {conf:.0%}", 7)
    shown = f"the {n} most confident mistakes" if n < gallery.wrong else "all mistakes"
    left.suptitle(f"{gallery.wrong:,} of {gallery.total:,} wrong; {shown}" if n else "no mistakes", fontsize=9)
    _confusion(right, gallery.confusion, gallery.classes)
    fig.suptitle(f"{gallery.model} on {gallery.data} ({gallery.split}): "
                 f"{1 - gallery.wrong / gallery.total:.2%} correct", fontsize=11)  # fmt: skip
    return canvas.save(fig, path)


def _confusion(where, confusion: np.ndarray, classes: tuple[str, ...]) -> None:
    k = len(classes)
    rates = confusion / confusion.sum(1, keepdims=True).clip(min=1)
    ax = where.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title("confusion matrix", fontsize=9)
