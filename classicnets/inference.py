"""Using a trained checkpoint: evaluate it on a dataset, or classify image files.

Both read the checkpoint's :class:`~classicnets.checkpoint.RunRecord` and feed the model through the one
preprocessing path (:mod:`classicnets.data.inputs`) with the run's own autocast and test-time flip, so
``predict`` on a test image gives exactly the class that ``eval`` counted for it.

Engines: ``torch`` (default) runs the model in channels_last under the run's autocast; ``onnxruntime`` exports
it to ONNX once (cached under ``$XDG_CACHE_HOME/classicnets/onnx/``, keyed by the weights' bytes) and runs it
in ONNX Runtime on the CPU in fp32: 1.6-12x faster per single image (resnet18 to LeNet-5), slower for big
batches of ResNets (benchmarks/inference.py; benchmarks/README.md, Inference). torch stays the default: its
autocast is what the run's accuracy was measured with.
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

ENGINES = ("torch", "onnxruntime")


def _check_engine(engine: str, device: str) -> torch.device:
    """The device ``engine`` runs on; a ValueError naming the fix for an unknown engine or an impossible pair."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose --engine torch or --engine onnxruntime")
    if engine == "torch":
        return resolve_device(device)
    dev = torch.device("cpu") if device == "auto" else resolve_device(device)
    if dev.type != "cpu":
        raise ValueError(f"--engine onnxruntime runs on the CPU, not {dev}; pass --device cpu, or --engine torch")
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--engine onnxruntime needs the {exc.name} package (pip install onnx onnxruntime); "
                         "or use --engine torch") from None  # fmt: skip
    return dev


class OnnxRuntimeModel(torch.nn.Module):
    """A trained model exported to ONNX and run by ONNX Runtime (CPU, fp32), in place of the torch module:
    it takes the same model-ready (B, C, H, W) batch and returns the same float32 logits (B, K)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # the cores torch would use
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        # evaluate() asks the model's parameters where to put the batches: the CPU, and nothing to train
        self.anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(["logits"], {"input": batch})[0])


def onnx_cache_path(source: str | os.PathLike, input_size: tuple[int, ...]) -> Path:
    """Where the ONNX export of ``source`` (a checkpoint file or a shipped weight) is cached: under
    ``$XDG_CACHE_HOME/classicnets/onnx/``, named by a hash of the weights file's bytes, the input size and the
    torch version, so a retrained checkpoint at the same path is exported again and no user file is written."""
    import hashlib

    from . import weights
    from .data.datasets import cache_dir

    file = weights.get_weight(str(source)).path if weights.is_weight_name(source) else Path(source)
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"{tuple(input_size)} torch {torch.__version__}".encode())
    return cache_dir("onnx") / f"{digest.hexdigest()[:32]}.onnx"


def onnxruntime_model(
    source: str | os.PathLike, model: torch.nn.Module, record: RunRecord, threads: int | None = None
) -> OnnxRuntimeModel:
    """``model`` (loaded from ``source``) as an :class:`OnnxRuntimeModel`, exported once and cached."""
    from .export import export

    size = tuple(record.input_size)  # the size the run trained at: what eval and predict feed it
    path = onnx_cache_path(source, size)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export(model.cpu(), path, "onnx", input_size=size)  # atomic: a reader never sees half a file
    return OnnxRuntimeModel(path, threads)


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in place) in the layout eval and predict run it in: channels_last, as training runs by
    default. benchmarks/inference.py measured it against NCHW under bf16 autocast, one thread: 1.2-1.3x at
    batch 256 for lenet5_modern, resnet20 and resnet18, and 1.1-3.4x at batch 1 (benchmarks/README.md)."""
    return model.to(memory_format=torch.channels_last)


def load_engine(source: str | os.PathLike, engine: str = "torch", device: str = "auto"):
    """``(model, record, amp)``: the trained net ready to call on model-ready batches with ``engine``, and the
    autocast dtype to run it under (the run's for torch; None for onnxruntime, which computes in fp32)."""
    dev = _check_engine(engine, device)
    model, record = load_trained(source, dev)
    if engine == "onnxruntime":
        return onnxruntime_model(source, model, record), record, None
    return for_inference(model), record, amp_dtype(record.amp, dev)


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
    plot: bool = True, engine: str = "torch",
) -> dict[str, Any]:  # fmt: skip
    """Top-1, top-5, per-class accuracy, per-image predictions (``pred``, ``logits``) and a confusion-matrix
    PNG for ``checkpoint`` (a file, or a shipped weight's name) on ``data``'s ``split`` (default: the data
    it was trained on).

    The images are prepared exactly as in training (the record's preprocessing) and evaluated with the run's
    autocast and test-time flip (``amp="off"`` forces fp32); ``split="val"`` re-creates the run's validation
    split from its seed. ``engine="onnxruntime"`` runs the model exported to ONNX (cached, see
    :func:`onnx_cache_path`) in ONNX Runtime on the CPU, in fp32. Image folders (``folder:PATH``) work too.
    The PNG goes beside the checkpoint (``runs/eval/<weight>/`` for a shipped weight) or to ``out_dir``;
    ``plot=False`` skips it. A PNG that
    cannot be written loses no metric: ``confusion_png`` is then None and ``confusion_png_error`` says why.
    """
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train; got {split!r}")
    model, record, run_amp = load_engine(checkpoint, engine, device)
    dev = next(model.parameters()).device
    if amp is not None and engine == "torch":
        run_amp = amp_dtype(amp, dev)
    name = data or record.data
    loader = _loader(record, name, split, data_dir or record.data_dir, dev, batch_size)
    metrics = evaluate(model, loader, len(record.classes), amp=run_amp, tta_flip=record.tta_flip, predictions=True)
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
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], topk: int = 3, device: str = "auto",
    engine: str = "torch",
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, prepared as the run's test images were.
    ``engine="onnxruntime"``: run the model in ONNX Runtime (CPU, fp32), as in :func:`evaluate_checkpoint`."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    model, record, amp = load_engine(checkpoint, engine, device)
    prep = record.preprocessing
    x = torch.stack([prep.image(p) for p in images]).to(next(model.parameters()).device)  # model-ready
    probs = predict_logits(model, x, amp, record.tta_flip).softmax(1)
    top = probs.topk(min(topk, probs.shape[1]), 1)
    return [
        {"image": str(p), "top": [(record.classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]}
        for p, vals, idx in zip(images, top.values, top.indices)
    ]
