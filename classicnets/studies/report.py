"""A study's report: its run directory, raw numbers (CSV, JSON), figures (PNG) and markdown tables.

Every study writes the same kinds of files the same way, through these helpers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn


REPORT = "report.md"


def run_dir(kind: str, out: str | os.PathLike | None, force: bool = False) -> Path:
    """``out`` if given, else a fresh ``runs/study-<kind>-<time to the µs>-<random>``; created if missing.

    A study's report is never replaced without ``force``: an ``out`` that already holds one is refused."""
    if out is None:
        path = Path("runs") / f"study-{kind}-{datetime.now():%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"
        path.mkdir(parents=True)  # fresh by construction: never an earlier study's directory
        return path
    path = check_out(out, force)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_out(out: str | os.PathLike | None, force: bool = False) -> Path | None:
    """Refuse, before any work, an ``--out`` that is a file or already holds a report (unless ``force``)."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory; choose another path")
    if (path / REPORT).exists() and not force:
        raise ValueError(f"--out {path} already holds a report ({path / REPORT}); pass --force to replace it, or "
                         "choose another --out")  # fmt: skip
    return path


def write_text(path: Path, text: str) -> Path:
    """Write a report file atomically: a reader (or a kill) sees the old file or the new one, never a mix."""
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, text.encode())
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    return write_text(path, buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A short SHA-256 of tensors' bytes, in order: equal digests mean equal values (weights, batches)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def state_digest(model: nn.Module) -> str:
    """Digest of the parameters and buffers, in state-dict order."""
    return tensor_digest(model.state_dict().values())


def pyplot():
    """matplotlib's pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, buffer.getvalue())
    return path


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a report: 0.131 -> '0.131', 4.8e3 -> '4.8e+03'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2g}"
    return f"{value:.{digits}g}"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        cells = [row.get(c) for c in columns]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_flush(message: str) -> None:
    """The default progress log: print, flushed (so a redirected log shows progress as it happens)."""
    print(message, flush=True)
