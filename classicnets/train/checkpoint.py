"""Checkpoints that survive crashes and never run code.

* Written atomically: to a temporary file in the same folder, flushed and fsynced, then ``os.replace``d
  over the old one, so a kill or a full disk mid-write leaves the previous checkpoint intact.
* Loaded with ``torch.load(weights_only=True)``: only tensors and plain containers are unpickled, so a
  crafted file cannot execute code.
* Carrying a SHA-256 over their content (tensors' bytes included), checked on load, so a corrupt or
  truncated file is reported as such rather than half-loaded.

A checkpoint is a dict: ``format``, ``version``, ``model_name``, ``model_kwargs``, ``model`` (the bare
model's state dict, never a DDP or compiled wrapper's), and whatever training state the engine adds
(``optimizer``, ``scheduler``, ``epoch``, ``rng``, ``config``, ``classes``, ``data``, ``metrics``).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "classicnets-checkpoint"
VERSION = 1


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


def model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from and load its weights; returns ``(model, checkpoint)``."""
    from ..models import create_model, list_models

    state = load_checkpoint(path, map_location)
    name = state.get("model_name")
    if name not in list_models():
        raise ValueError(
            f"{path}: checkpoint is for model {name!r}, which this version of classicnets does not know; "
            "upgrade classicnets or load the weights into a model you build yourself"
        )
    model = create_model(name, **state.get("model_kwargs", {}))
    model.load_state_dict(state["model"])
    return model, state
