"""Using a trained checkpoint: evaluate it on a dataset, or classify image files.

Both read the checkpoint's :class:`~classicnets.checkpoint.RunRecord` and feed the model through the one
preprocessing path (:mod:`classicnets.data.inputs`) with the run's own autocast and test-time flip, so
``predict`` on a test image gives exactly the class that ``eval`` counted for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import RunRecord, model_from_checkpoint
from .data import InMemoryLoader, load_dataset, split_validation
from .train.runtime import amp_dtype, resolve_device
from .train.step import evaluate, predict_logits


def load_trained(source: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunRecord]:
    """A trained model (in eval mode, on ``device``) and its :class:`RunRecord`, from a checkpoint file
    written by ``classicnets train`` or from a shipped weight's name such as ``fashion-mnist:resnet20``."""
    from . import weights

    if weights.is_weight_name(source):
        model, record = weights.load(str(source))
    else:
        model, record, _ = model_from_checkpoint(source)
    return model.to(device).eval(), record


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data: str | None = None, *, split: str = "test", data_dir: str | None = None,
    device: str = "auto", out_dir: str | os.PathLike | None = None, batch_size: int = 512, amp: str | None = None,
    plot: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Top-1, top-5, per-class accuracy, per-image predictions (``pred``, ``logits``) and a confusion-matrix
    PNG for ``checkpoint`` (a file, or a shipped weight's name) on ``data``'s ``split`` (default: the data
    it was trained on).

    The images are prepared exactly as in training (the record's preprocessing) and evaluated with the run's
    autocast and test-time flip (``amp="off"`` forces fp32); ``split="val"`` re-creates the run's validation
    split from its seed. Image folders (``folder:PATH``) work too. The PNG goes beside the checkpoint
    (``runs/eval/<weight>/`` for a shipped weight) or to ``out_dir``; ``plot=False`` skips it. A PNG that
    cannot be written loses no metric: ``confusion_png`` is then None and ``confusion_png_error`` says why.
    """
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train; got {split!r}")
    dev = resolve_device(device)
    model, record = load_trained(checkpoint, dev)
    name = data or record.data
    loader = _loader(record, name, split, data_dir or record.data_dir, dev, batch_size)
    metrics = evaluate(model, loader, len(record.classes), amp=amp_dtype(amp or record.amp, dev),
                       tta_flip=record.tta_flip, predictions=True)  # fmt: skip
    metrics["classes"] = list(record.classes)
    if plot:
        from . import weights

        default = Path("runs") / "eval" / str(checkpoint).replace(":", "-") if weights.is_weight_name(checkpoint) \
            else Path(checkpoint).parent  # fmt: skip
        out = Path(out_dir) if out_dir else default
        png = out / f"confusion_{split}.png"
        try:
            metrics["confusion_png"] = str(plot_confusion(metrics["confusion"], list(record.classes), png,
                                                          title=f"{record.model} on {name} ({split})"))  # fmt: skip
        except OSError as exc:  # the metrics are kept: the caller reports both
            metrics["confusion_png"] = None
            metrics["confusion_png_error"] = (f"could not write the confusion matrix {png}: {exc.strerror or exc}; "
                                              "choose an --out folder you can write")  # fmt: skip
    return metrics


def _loader(record: RunRecord, name: str, split: str, data_dir: str | None, dev: torch.device, batch_size: int):
    """Batches of ``split`` of dataset ``name``, prepared as ``record`` says, in a fixed order."""
    prep = record.preprocessing
    if name.startswith("folder:"):
        from .data import ImageFolderData

        if prep.kind != "folder":
            raise ValueError(f"this checkpoint was trained on arrays ({record.data}); evaluate it on an array dataset")
        folder = ImageFolderData(name[len("folder:") :], image_size=prep.plan.size, val_fraction=record.val_fraction,
                                 seed=record.seed, mode="L" if prep.in_chans == 1 else "RGB")  # fmt: skip
        _check_fits(record, name, folder.classes, folder.channels)
        pick = {"test": folder.test_loader, "val": folder.val_loader, "train": folder.val_loader}[split]
        if split == "train":
            raise ValueError("split 'train' of an image folder is augmented at random; evaluate 'val' or 'test'")
        return pick(batch_size)
    if prep.kind != "array":
        raise ValueError(f"this checkpoint was trained on image files ({record.data}); evaluate it on folder:PATH")
    splits = load_dataset(name, data_dir=data_dir)
    _check_fits(record, name, splits.classes, splits.shape[0])
    if split == "test":
        dataset = splits.test
    else:
        train, val = split_validation(splits.train, record.val_fraction, seed=record.seed)
        dataset = val if split == "val" else train
    return InMemoryLoader(dataset, batch_size, shuffle=False, device=dev, mean=prep.mean, std=prep.std,
                          pad_to=prep.plan.pad_to, resize_to=prep.plan.resize_to)  # fmt: skip


def _check_fits(record: RunRecord, name: str, classes: list[str], channels: int) -> None:
    if len(classes) != len(record.classes) or channels != record.preprocessing.in_chans:
        raise ValueError(f"the checkpoint was trained on {len(record.classes)}-class {record.preprocessing.in_chans}-"
                         f"channel data; {name} has {len(classes)} classes and {channels} channels")  # fmt: skip


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(classes)
    rates = confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def predict(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], topk: int = 3, device: str = "auto"
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, prepared as the run's test images were."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    dev = resolve_device(device)
    model, record = load_trained(checkpoint, dev)
    prep = record.preprocessing
    x = torch.stack([prep.image(p) for p in images]).to(dev)  # (B, C, size, size), model-ready
    probs = predict_logits(model, x, amp_dtype(record.amp, dev), record.tta_flip).softmax(1)
    top = probs.topk(min(topk, probs.shape[1]), 1)
    return [
        {"image": str(p), "top": [(record.classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]}
        for p, vals, idx in zip(images, top.values, top.indices)
    ]
