"""Using a trained checkpoint: evaluate it on a dataset, or classify image files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import InMemoryLoader, load_dataset, split_validation
from .checkpoint import model_from_checkpoint
from .data_setup import InputPlan, resizer
from .hardware import amp_dtype, resolve_device


def _plan(ckpt: dict[str, Any]) -> InputPlan:
    return InputPlan(**ckpt["data"]["input"])


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data: str | None = None, split: str = "test", data_dir: str | None = None,
    device: str = "auto", out_dir: str | os.PathLike | None = None, batch_size: int = 512,
) -> dict[str, Any]:  # fmt: skip
    """Top-1, top-5, per-class accuracy and a confusion-matrix PNG for ``checkpoint`` on ``data``'s ``split``.

    The images are prepared exactly as in training (the checkpoint records padding/resizing and the
    normalisation statistics). ``split="val"`` re-creates the run's validation split from its seed.
    """
    from .engine import evaluate

    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train; got {split!r}")
    dev = resolve_device(device)
    model, ckpt = model_from_checkpoint(checkpoint, map_location=dev)
    model.to(dev)
    config, info = ckpt.get("config", {}), ckpt["data"]
    name = data or info["name"]
    if name.startswith("folder:"):
        raise ValueError("eval on image folders: use `classicnets finetune`'s run report, or pass an array dataset")
    splits = load_dataset(name, data_dir=data_dir or config.get("data_dir"))
    if len(splits.classes) != len(ckpt["classes"]) or splits.shape[0] != model.in_chans:
        raise ValueError(f"{checkpoint} was trained on {len(ckpt['classes'])}-class {model.in_chans}-channel data; "
                         f"{name} has {len(splits.classes)} classes and {splits.shape[0]} channels")  # fmt: skip
    if split == "test":
        dataset = splits.test
    else:
        train, val = split_validation(splits.train, config.get("val_fraction", 0.1), seed=config.get("seed", 0))
        dataset = val if split == "val" else train
    plan = _plan(ckpt)
    loader = InMemoryLoader(dataset, batch_size, shuffle=False, device=dev, mean=info["mean"], std=info["std"],
                            pad_to=plan.pad_to)  # fmt: skip
    metrics = evaluate(model, loader, len(ckpt["classes"]), dev, amp_dtype(config.get("amp", "auto"), dev),
                       config.get("tta_flip", False), resizer(plan, False))  # fmt: skip
    out = Path(out_dir) if out_dir else Path(checkpoint).parent
    metrics["confusion_png"] = str(plot_confusion(metrics["confusion"], ckpt["classes"], out / f"confusion_{split}.png",
                                                  title=f"{ckpt['model_name']} on {name} ({split})"))  # fmt: skip
    metrics["classes"] = ckpt["classes"]
    return metrics


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


def load_image(path: str | os.PathLike, in_chans: int, native: int) -> torch.Tensor:
    """An image file as a uint8 (C, H, W) tensor at the size the training data had."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if in_chans == 1 else "RGB")
            if native:
                img = img.resize((native, native), Image.BILINEAR)
            array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            h, w = img.height, img.width
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc}); pass a PNG/JPEG/BMP file") from None
    return array.view(h, w, in_chans).permute(2, 0, 1).contiguous()


@torch.no_grad()
def predict(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], topk: int = 3, device: str = "auto"
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, prepared as the training images were."""
    dev = resolve_device(device)
    model, ckpt = model_from_checkpoint(checkpoint, map_location=dev)
    model.to(dev).eval()
    info, plan = ckpt["data"], _plan(ckpt)
    native = plan.native or plan.size
    batch = torch.stack([load_image(p, model.in_chans, native) for p in images]).to(dev).float() / 255
    if plan.native == 0:  # image folders: ImageNet-style eval transform already at the final size
        pass
    elif plan.pad_to:
        pad = plan.pad_to - native
        batch = F.pad(batch, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    mean = torch.tensor(info["mean"], device=dev).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], device=dev).view(1, -1, 1, 1)
    x = resizer(plan, False)((batch - mean) / std)
    probs = model(x).float().softmax(1)
    k = min(topk, probs.shape[1])
    top = probs.topk(k, 1)
    classes = ckpt["classes"]
    return [
        {"image": str(p), "top": [(classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]}
        for p, vals, idx in zip(images, top.values, top.indices)
    ]
