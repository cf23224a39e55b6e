"""Checkpoints that survive crashes and never run code.

* Written atomically: to a temporary file in the same folder, flushed and fsynced, then ``os.replace``d
  over the old one, so a kill or a full disk mid-write leaves the previous checkpoint intact.
* Loaded with ``torch.load(weights_only=True)``: only tensors and plain containers are unpickled, so a
  crafted file cannot execute code.
* Carrying a SHA-256 over their content (tensors' bytes included), checked on load, so a corrupt or
  truncated file is reported as such rather than half-loaded.

A checkpoint is a dict: ``format``, ``version``, ``record`` (a :class:`RunRecord`: what was trained on
what, and how its inputs are prepared), ``model`` (the bare model's state dict, never a DDP or compiled
wrapper's), and whatever training state the engine adds (``optimizer``, ``epoch``, ``step``, ``rng``,
``config``, ``metrics``). Readers never pick metadata out by string key: they call :func:`read_record`.

This module sits below everything that trains or uses a trained net (train, transfer, export, inference,
the studies): it imports only the models and the preprocessing types.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.inputs import Preprocessing

FORMAT = "classicnets-checkpoint"
VERSION = 2  # 2: the typed run record; version-1 files (untyped "data"/"classes" keys) are refused


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, truncated, tampered with or not a classicnets checkpoint."""


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Hash a nested structure deterministically (dict keys in sorted order, tensors by dtype, shape, bytes)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(b"D%d" % len(value))
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d" % len(value))
        for item in value:
            _feed(h, item)
    else:
        h.update(repr(value).encode())


def content_digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically save ``state`` (plain containers and tensors only) with format tag and checksum."""
    state = {"format": FORMAT, "version": VERSION, **state}
    state["checksum"] = content_digest(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint; raise ``CheckpointError`` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, refused global: all mean "do not trust this file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, truncated or unsafe): {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a classicnets checkpoint (no '{FORMAT}' tag); for plain state dicts "
                              "use classicnets.transfer.load_weights")  # fmt: skip
    if state.get("checksum") != content_digest(state):
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was modified after saving")
    return state


@dataclass(frozen=True)
class RunRecord:
    """What a trained net is and how to feed it: written by the engine into every checkpoint, read by eval,
    predict, export, compare, the studies and the web views (never as loose string keys)."""

    model: str  # registered model name
    model_kwargs: dict[str, Any]  # builder arguments, num_classes and in_chans included
    classes: tuple[str, ...]
    preprocessing: Preprocessing  # kind, channels, mean/std, the input plan with the trained size
    data: str  # dataset name or folder:PATH
    data_dir: str | None = None
    seed: int = 0  # with val_fraction: re-creates the run's validation split
    val_fraction: float = 0.1
    amp: str = "off"  # how the run evaluated: autocast mode and test-time flip
    tta_flip: bool = False
    sizes: dict[str, int] = field(default_factory=dict)  # train / val / test image counts

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model was trained at."""
        return self.preprocessing.input_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        return cls(**d)


def read_record(state: dict[str, Any], path: str | os.PathLike = "checkpoint") -> RunRecord:
    """The typed run record of a loaded checkpoint; a ``CheckpointError`` naming the fix if it has none."""
    if state.get("version") != VERSION or not isinstance(state.get("record"), dict):
        raise CheckpointError(
            f"{path} was written by an older classicnets (checkpoint format {state.get('version')!r}, without the "
            f"run record this version needs); retrain it with `classicnets train`, or load its weights with "
            f"classicnets.transfer.load_weights into a model you build yourself"
        )
    try:
        return RunRecord.from_dict(state["record"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its run record is malformed ({exc}); the file was not written by "
                              "classicnets' engine") from None  # fmt: skip


def model_from_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, RunRecord, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from and load its weights.

    Returns ``(model, record, state)``: the model (on ``map_location``), its :class:`RunRecord`, and the
    whole checkpoint dict (training state) for callers that need more.
    """
    from .models import create_model, list_models

    state = load_checkpoint(path, map_location)
    record = read_record(state, path)
    if record.model not in list_models():
        raise ValueError(
            f"{path}: checkpoint is for model {record.model!r}, which this version of classicnets does not know; "
            "upgrade classicnets or load the weights into a model you build yourself"
        )
    model = create_model(record.model, **record.model_kwargs)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # "Error(s) in loading state_dict for X:" then one line per problem
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        details = lines[1:] or lines[:1]
        what = "; ".join(details[:2]) + (f"; and {len(details) - 2} more" if len(details) > 2 else "")
        raise CheckpointError(f"{path}: its weights do not fit a {record.model} built with {record.model_kwargs} "
                              f"({what}); the file was edited or not written for this model: use the "
                              "checkpoint its run wrote (runs/NAME/best.pt)") from None  # fmt: skip
    return model.to(map_location), record, state
