"""Ship a model: ONNX, TorchScript, safetensors or the hf folder layout, each carrying the model's name,
kwargs, classes and preprocessing as metadata, and a check against PyTorch on real inputs.

ONNX uses ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, the default since
torch 2.9): on torch 2.14 it exports every classicnets family correctly, LeNet-5's ``index_copy`` and
RBF layers included, with a symbolic batch axis and no warnings. The legacy TorchScript-based exporter
(``dynamo=False``) also gives correct models but is deprecated ("will be removed") and warns that the
input checks are baked in at trace time; it is kept behind ``dynamo=False`` for older runtimes.
Either way the graph takes ``input`` (batch, C, H, W), H and W fixed, and returns ``logits`` (batch, K);
the Python input checks are not part of it (onnxruntime rejects a wrong shape itself).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .models.base import ClassicNet

__all__ = [
    "FORMATS",
    "ATOL",
    "RTOL",
    "ExportVerificationError",
    "export",
    "export_checkpoint",
    "verify_onnx",
    "verify_torchscript",
    "model_from_safetensors",
    "read_metadata",
    "parse_size",
    "read_inputs",
]

FORMATS = ("onnx", "torchscript", "safetensors", "hf")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors", "hf": "-hf"}
# Exported logits must match PyTorch's within ATOL + RTOL * max|logit|. float32 kernels in onnxruntime
# (MLAS) and PyTorch (oneDNN/cuDNN) sum in different orders; measured differences are ~1e-7 relative
# (resnet18: 3e-6 on logits of magnitude 6), so 1e-4 leaves a wide margin while a wrong op or weight
# shows up as an O(1) difference.
ATOL = 1e-4
RTOL = 1e-4
META_FORMAT = "classicnets"


class ExportVerificationError(ValueError):
    """An exported model whose outputs disagree with PyTorch's beyond the tolerance."""


def _check_model(model: nn.Module) -> ClassicNet:
    if not isinstance(model, ClassicNet):
        raise TypeError(
            f"expected a classicnets model (a ClassicNet from create_model), got {type(model).__name__}"
        )
    return model


def parse_size(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` -> (3, 32, 32); also ``"32x32"`` and ``"32"``; a ValueError for anything else."""
    try:
        dims = tuple(int(t) for t in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ValueError(f"input size must look like CxHxW or HxW, e.g. 3x32x32; got {text!r}") from None
    if len(dims) not in (1, 2, 3) or min(dims) < 1:
        raise ValueError(f"input size must be positive CxHxW, HxW or N, got {text!r}")
    return dims


def _resolve_input_size(model: ClassicNet, size: int | Sequence[int] | None) -> tuple[int, int, int]:
    """``None`` -> the model's default; ``n`` or ``(h, w)`` -> with the model's channels; ``(c, h, w)`` as is."""
    if size is None:
        return tuple(model.default_input_size)  # type: ignore[return-value]
    if isinstance(size, str):  # "3x32x32", "32x32" or "32"
        size = parse_size(size)
    dims = [size] if isinstance(size, int) else [int(d) for d in size]
    if len(dims) == 1:
        dims = [model.in_chans, dims[0], dims[0]]
    elif len(dims) == 2:
        dims = [model.in_chans, *dims]
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"input_size must be (C, H, W), (H, W) or an int, got {size!r}")
    if dims[0] != model.in_chans:
        raise ValueError(
            f"input_size has {dims[0]} channels but {model.model_name} takes {model.in_chans}; "
            f"pass ({model.in_chans}, H, W) or adapt the model's in_chans first"
        )
    min_h, min_w = model.min_input_size
    if dims[1] < min_h or dims[2] < min_w:
        raise ValueError(
            f"input_size {dims[1]}x{dims[2]} is too small for {model.model_name}: it needs at least {min_h}x{min_w}"
        )
    return tuple(dims)  # type: ignore[return-value]


def example_inputs(model: nn.Module, size: tuple[int, int, int], batch: int = 2) -> torch.Tensor:
    # Batch 2, not 1: torch.export specialises a dimension of size 0 or 1, which would fix the batch axis.
    p = next(model.parameters())
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *size, generator=g).to(device=p.device, dtype=p.dtype)


def _metadata(model: ClassicNet, size: tuple[int, int, int], extra: Mapping[str, Any] | None) -> dict[str, str]:
    """String metadata (values JSON-encoded) describing how to rebuild and feed the model."""
    extra = dict(extra or {})
    kwargs = {"num_classes": model.num_classes, "in_chans": model.in_chans, **(extra.pop("model_kwargs", None) or {})}
    kwargs["num_classes"], kwargs["in_chans"] = model.num_classes, model.in_chans  # the model is the truth
    meta: dict[str, Any] = {"model_kwargs": kwargs, "input_size": list(size)}
    for key in ("classes", "mean", "std"):
        if extra.get(key) is not None:
            meta[key] = list(extra.pop(key))
    meta.update({k: v for k, v in extra.items() if v is not None and k != "input_size"})
    out = {"format": META_FORMAT, "model_name": model.model_name}
    out.update({k: json.dumps(v) for k, v in meta.items()})
    return out


def export(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    input_size: int | Sequence[int] | None = None,
    opset: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    dynamo: bool = True,
) -> Path:
    """Export ``model`` (in eval mode; its mode is restored afterwards) to ``path``; returns the path.

    ``input_size`` fixes H and W of the ONNX graph and the example input (default: the model's default
    input size). ``opset``: ONNX opset (default: the exporter's). ``metadata``: ``model_kwargs``,
    ``classes``, ``mean``, ``std`` and any other JSON-able values stored with the weights.
    ``dynamo``: ONNX only, ``False`` selects the deprecated TorchScript-based exporter. ``format="hf"``
    writes the folder ``path`` in the layout model hubs read: ``config.json``, ``model.safetensors`` and a
    model card ``README.md``.
    """
    model = _check_model(model)
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    _check_suffix(path, format)
    if format == "onnx":
        _check_opset(opset, dynamo)
    _check_destination(path, format)
    size = _resolve_input_size(model, input_size)
    meta = _metadata(model, size, metadata)
    # Written next to the target under a temporary name, then renamed over it: a reader (or a kill, or a
    # failed export) sees the old file or the new one, never a half-written mix.
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    was_training = model.training
    model.eval()
    try:
        if format == "onnx":
            _export_onnx(model, tmp, example_inputs(model, size), opset, meta, dynamo)
        elif format == "torchscript":
            _export_torchscript(model, tmp, example_inputs(model, size), meta)
        elif format == "hf":
            _export_hf(model, tmp, meta)
        else:
            _export_safetensors(model, tmp, meta)
        _fsync(tmp)
        _replace(tmp, path)
    except OSError as exc:
        raise ValueError(f"could not write {path}: {exc.strerror or exc}; check the folder's permissions and free "
                         "space, or choose another --out") from None  # fmt: skip
    finally:
        model.train(was_training)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return path


# The suffixes readers (read_metadata, verify) go by: a file whose suffix names another format is refused.
_FILE_SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}
LEGACY_OPSETS = (7, 23)  # what the TorchScript-based exporter (dynamo=False) writes (torch 2.14)


def _check_suffix(path: Path, format: str) -> None:
    """``--format onnx --out x.safetensors`` is refused: the suffix is how the file is read back."""
    if path.is_dir():  # an existing folder: _check_destination says what to do with it
        return
    claimed = _FILE_SUFFIXES.get(path.suffix.lower())
    wanted = SUFFIXES[format]
    if format in ("onnx", "safetensors") and path.suffix.lower() != wanted:
        other = f", or pass --format {claimed}" if claimed else ""
        raise ValueError(f"--out {path} does not end in {wanted}, the suffix of the {format} format (files are read "
                         f"back by their suffix); name it {path.with_suffix(wanted).name}{other}")  # fmt: skip
    if format in ("torchscript", "hf") and claimed:
        raise ValueError(f"--out {path} ends in {path.suffix}, the suffix of the {claimed} format, but --format is "
                         f"{format}; name it {path.stem}{wanted}, or pass --format {claimed}")  # fmt: skip


def onnx_opsets(dynamo: bool = True) -> tuple[int, int]:
    """The ONNX opsets the exporter writes as asked (the dynamo exporter silently writes 18 for others)."""
    if not dynamo:
        return LEGACY_OPSETS
    import onnx

    return 18, onnx.defs.onnx_opset_version()


def _check_opset(opset: int | None, dynamo: bool) -> None:
    if opset is None:
        return
    low, high = onnx_opsets(dynamo)
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise ValueError(f"ONNX opset {opset!r} is not supported: this exporter writes opsets {low} to {high}; pass "
                         f"--opset in that range, or leave it out for the exporter's default")  # fmt: skip


def _check_destination(path: Path, format: str) -> None:
    """Refuse, before any work, a destination that cannot or must not be written."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder to write {path.name} into; create it first")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"{path.parent} is not writable; choose another --out")
    if format != "hf" and path.is_dir():
        raise ValueError(f"{path} is a folder; name a file to write, e.g. {path / ('model' + SUFFIXES[format])}")
    if format == "hf" and path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; the hf format writes a folder (config.json, "
                             "model.safetensors, README.md): choose another --out")  # fmt: skip
        config = path / "config.json"
        ours = config.is_file() and '"library_name": "classicnets"' in config.read_text(errors="replace")
        if any(path.iterdir()) and not ours:  # never replaced, even with --force: it holds someone's files
            raise ValueError(f"{path} is a folder with other files in it; the hf export writes config.json, "
                             "model.safetensors and README.md there: choose a new or empty folder")  # fmt: skip


def _fsync(path: Path) -> None:
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        with open(f, "rb+") as handle:
            os.fsync(handle.fileno())


def _replace(tmp: Path, path: Path) -> None:
    """``os.replace`` for a file; for a folder (hf), the old one is moved aside first, then removed."""
    if not tmp.is_dir() or not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _export_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, opset: int | None, meta: dict[str, str], dynamo: bool
) -> None:
    import onnx

    common: dict[str, Any] = dict(input_names=["input"], output_names=["logits"], opset_version=opset, verbose=False)
    try:
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, external_data=False,
                dynamic_shapes=({0: batch},), **common,
            )  # fmt: skip
        else:
            torch.onnx.export(
                model, (example,), str(path), dynamo=False,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **common,
            )  # fmt: skip
    except OSError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        other = "dynamo=False (the legacy exporter)" if dynamo else "dynamo=True"
        raise RuntimeError(f"ONNX export of {getattr(model, 'model_name', '?')} failed: {first}; try {other}") from exc
    proto = onnx.load(str(path))
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:  # never silently another opset than the one asked for
        low, high = onnx_opsets(dynamo)
        raise ValueError(f"the ONNX exporter wrote opset {written}, not the opset {opset} asked for; pass --opset "
                         f"from {low} to {high}, or leave it out")  # fmt: skip
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _export_torchscript(model: nn.Module, path: Path, example: torch.Tensor, meta: dict[str, str]) -> None:
    """``torch.jit.script`` keeps the input checks and any input size; ``trace`` is the fallback."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated")  # our documented choice
        try:
            module = torch.jit.script(model)
            meta = {**meta, "torchscript": "script"}
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(
                f"torch.jit.script failed for {getattr(model, 'model_name', '?')} ({first}); fell back to "
                "torch.jit.trace, which records the ops run on the example input only: Python control flow "
                "and the input checks are fixed at trace time",
                stacklevel=3,
            )
            with torch.no_grad():
                module = torch.jit.trace(model, example)
            meta = {**meta, "torchscript": "trace"}
        torch.jit.save(module, str(path), _extra_files={"classicnets.json": json.dumps(meta)})


def _jit_load(path: str | os.PathLike, map_location: Any, extra_files: dict[str, str] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated")
        return torch.jit.load(str(path), map_location=map_location, _extra_files=extra_files or {})


def _export_safetensors(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def _export_hf(model: ClassicNet, folder: Path, meta: dict[str, str]) -> None:
    """The Hugging Face layout: config.json (model, classes as id2label, preprocessing), model.safetensors
    (with the same metadata as a plain safetensors export) and a README.md model card."""
    from .models import model_card

    folder.mkdir()
    values = {k: (v if k in ("format", "model_name") else json.loads(v)) for k, v in meta.items()}
    classes = values.get("classes") or [str(i) for i in range(model.num_classes)]
    card = model_card(model.model_name)
    config = {
        "library_name": "classicnets", "model_type": model.model_name, "architectures": [type(model).__name__],
        "model_kwargs": values["model_kwargs"], "num_classes": model.num_classes, "in_chans": model.in_chans,
        "input_size": values["input_size"], "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: i for i, c in enumerate(classes)},
        **{k: values[k] for k in ("preprocessing", "mean", "std", "tta_flip", "weight", "test_acc") if k in values},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _export_safetensors(model, folder / "model.safetensors", meta)
    params = sum(p.numel() for p in model.parameters())
    acc = f"\n- test accuracy: {values['test_acc']:.2%}" if "test_acc" in values else ""
    c, h, w = values["input_size"]
    (folder / "README.md").write_text(
        f"---\nlibrary_name: classicnets\ntags:\n- image-classification\n- {card.family}\n---\n\n"
        f"# {model.model_name}\n\n{card.notes}. From {card.paper} ({card.year}).\n\n"
        f"- parameters: {params:,}\n- input: {c}x{h}x{w}\n- classes: {', '.join(classes)}{acc}\n\n"
        "```python\nimport classicnets as cn\nfrom safetensors.torch import load_file\n\n"
        f"model = cn.create_model({model.model_name!r}, **{values['model_kwargs']!r})\n"
        "model.load_state_dict(load_file(\"model.safetensors\"))\n```\n\n"
        "Preprocessing (`config.json`, `preprocessing`): the same as classicnets' "
        "`classicnets.data.inputs.Preprocessing`.\n"
    )  # fmt: skip


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The classicnets metadata of an exported file or hf folder (any format), JSON values decoded."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():  # an hf folder
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".onnx":
        import onnx

        raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
    else:
        files = {"classicnets.json": ""}
        _jit_load(path, "cpu", files)
        raw = json.loads(files["classicnets.json"] or "{}")
    if raw.get("format") != META_FORMAT:
        raise ValueError(f"{path} carries no classicnets metadata; was it written by classicnets.export?")
    return {k: (v if k in ("format", "model_name", "torchscript") else json.loads(v)) for k, v in raw.items()}


def model_from_safetensors(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a safetensors file written by ``export``; returns ``(model, metadata)``."""
    from safetensors.torch import load_file

    from .models import create_model, list_models

    if Path(path).is_dir():  # an hf folder
        path = Path(path) / "model.safetensors"
    meta = read_metadata(path)
    name = meta.get("model_name")
    if name not in list_models():
        raise ValueError(f"{path} holds weights of model {name!r}, which this version of classicnets does not know")
    model = create_model(name, **meta.get("model_kwargs", {}))
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model, meta


# ------------------------------------------------------------------------------------------ verification


def _compare(name: str, ref: np.ndarray, out: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Max abs diff and top-1 agreement; raise if beyond tolerance or if top-1 differs outside a near tie."""
    if out.shape != ref.shape:
        raise ExportVerificationError(f"{name} returned shape {out.shape}, PyTorch {ref.shape}")
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    tol = atol + rtol * scale
    diff = float(np.abs(out.astype(np.float64) - ref).max()) if ref.size else 0.0
    agree = out.argmax(1) == ref.argmax(1)
    if ref.shape[1] > 1:
        top2 = np.sort(ref, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = np.full(ref.shape[0], np.inf)
    real_flips = (~agree) & (margin > 2 * tol)  # a flip between two logits closer than the tolerance is a tie
    result = {
        "max_abs_diff": diff,
        "max_abs_logit": scale,
        "tolerance": tol,
        "top1_agreement": float(agree.mean()),
        "batch_size": int(ref.shape[0]),
    }
    if not np.isfinite(diff) or diff > tol or real_flips.any():
        raise ExportVerificationError(
            f"{name} disagrees with PyTorch: max abs diff {diff:.3g} (tolerance {tol:.3g} = {atol:g} + "
            f"{rtol:g} * max|logit| {scale:.3g}), top-1 agreement {agree.mean():.1%}"
        )
    return result


def _reference(model: nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    p = next(model.parameters())
    x = inputs.to(device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
    finally:
        model.train(was_training)
    return ref.float().cpu().numpy().astype(np.float64), x


def verify_onnx(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor, atol: float = ATOL, rtol: float = RTOL
) -> dict[str, Any]:
    """Run the ONNX file in onnxruntime (CPU) on ``inputs`` (B, C, H, W) and compare with ``model``.

    Returns ``max_abs_diff``, ``max_abs_logit``, ``tolerance``, ``top1_agreement`` and ``batch_size``.
    Raises ``ExportVerificationError`` if the logits differ by more than ``atol + rtol * max|logit|``
    (see ``ATOL``) or a top-1 prediction changes where PyTorch's top two logits are not a near tie.
    """
    import onnxruntime as ort

    ref, x = _reference(model, inputs)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"input": x.float().cpu().numpy()})[0]
    return _compare("onnxruntime", ref, out, atol, rtol)


def verify_torchscript(
    model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor, atol: float = ATOL, rtol: float = RTOL
) -> dict[str, Any]:
    """Load the TorchScript file and compare its logits with ``model``'s, as ``verify_onnx`` does."""
    ref, x = _reference(model, inputs)
    module = _jit_load(path, x.device)
    with torch.no_grad():
        out = module(x).float().cpu().numpy()
    return _compare("TorchScript", ref, out, atol, rtol)


def read_inputs(path: str, size: tuple[int, int, int]) -> torch.Tensor:
    """A (B, C, H, W) or (C, H, W) float tensor from a ``.npy`` array or a ``.pt`` tensor."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such inputs file")
    if p.suffix == ".npy":
        x = torch.from_numpy(np.load(p, allow_pickle=False))
    else:
        try:
            x = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"refusing to load {p} (unsafe or corrupt): {str(exc).splitlines()[0]}") from None
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{p} must hold one tensor of images (B, C, H, W), found {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != size:
        raise ValueError(
            f"{p} holds a tensor of shape {tuple(x.shape)}; the export takes (B, {', '.join(map(str, size))}) "
            "(set --input-size to match)"
        )
    return x.float()


# ------------------------------------------------------------------------------------- checkpoints


def default_output(checkpoint_path: str | os.PathLike, format: str) -> Path:
    """``runs/x/best.pt`` -> ``runs/x/best.onnx`` / ``best.torchscript.pt`` / ``best.safetensors``."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + SUFFIXES[format])


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    input_size: int | Sequence[int] | None = None,
    opset: int | None = None,
    force: bool = False,
) -> Path:
    """Rebuild the model of a classicnets checkpoint (or a shipped weight, by name) and export it; the run
    record's model kwargs, classes and preprocessing go into the metadata. The input size is ``input_size``,
    else the size the model was trained at (the record's input plan)."""
    return export_checkpoint_model(checkpoint_path, format, out, input_size, opset, force)[0]


def export_checkpoint_model(
    checkpoint_path: str | os.PathLike,
    format: str,
    out: str | os.PathLike | None,
    input_size: int | Sequence[int] | None,
    opset: int | None,
    force: bool = False,
) -> tuple[Path, nn.Module]:
    """The exported path and the model. An existing ``out`` is refused unless ``force``; then it is replaced
    atomically (never the checkpoint itself)."""
    from . import weights
    from .inference import load_trained

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    shipped = weights.is_weight_name(checkpoint_path)
    if out is None and shipped:
        out = str(checkpoint_path).replace(":", "-") + SUFFIXES[format]
    out = Path(out) if out is not None else default_output(checkpoint_path, format)
    if not shipped and out.resolve() == Path(checkpoint_path).resolve():
        raise ValueError(f"--out {out} would overwrite the checkpoint itself; choose another path")
    _check_suffix(out, format)  # refused before the checkpoint is read (export() checks again)
    if format == "onnx":
        _check_opset(opset, dynamo=True)
    if out.exists() and not force:
        raise ValueError(f"{out} already exists; pass --force to replace it, or choose another --out")
    model, record = load_trained(checkpoint_path)
    prep = record.preprocessing
    meta = {
        "model_kwargs": record.model_kwargs,
        "classes": list(record.classes),
        "mean": list(prep.mean),
        "std": list(prep.std),
        "preprocessing": prep.to_dict(),
        "amp": record.amp,  # how the accuracy was measured: autocast and test-time flip
        "tta_flip": record.tta_flip,
    }
    if shipped:
        shipped_record = weights.get_weight(str(checkpoint_path))
        meta.update(weight=shipped_record.name, test_acc=shipped_record.test_acc)
    return export(model, out, format, input_size=input_size or record.input_size, opset=opset, metadata=meta), model
