"""What every study shares: building nets by name, loading data, the run directory, CSV/JSON and plotting."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ...data import load_dataset
from ...data.arrays import Splits

_CIFAR_NAME = re.compile(r"^(plain|resnet)(\d+)$")


def build_net(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A registered model by name, or any CIFAR depth 6n+2 as ``plainN`` / ``resnetN`` (e.g. ``resnet8``).

    ``plainN`` and ``resnetN`` built after the same ``torch.manual_seed`` have identical weights: option A
    shortcuts have no parameters and draw no random numbers.
    """
    from ...models import create_model, list_models
    from ...models.cifar_resnet import CifarResNet

    if name in list_models():
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    match = _CIFAR_NAME.match(name)
    if match is None:
        return create_model(name)  # raises the registry's ValueError with close matches
    plain, depth = match.group(1) == "plain", int(match.group(2))
    shortcut = "none" if plain else kwargs.pop("shortcut", "A")
    model = CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, **kwargs)
    model.model_name = name
    return model


def twin_of(name: str) -> str | None:
    """``plain56`` <-> ``resnet56``; None for a net without a CIFAR twin."""
    match = _CIFAR_NAME.match(name)
    if match is None:
        return None
    return f"{'resnet' if match.group(1) == 'plain' else 'plain'}{match.group(2)}"


def get_data(data: str | Splits, data_dir: str | None = None) -> Splits:
    """A dataset name (``fashion-mnist``, ...) is loaded; a :class:`Splits` is used as it is (tests)."""
    if isinstance(data, Splits):
        return data
    if not isinstance(data, str):
        raise TypeError(f"data must be a dataset name such as 'fashion-mnist' or a Splits, got {type(data).__name__}")
    if data.startswith("folder:"):
        raise ValueError("the studies need an in-memory dataset (fashion-mnist, mnist, mnist-5k, cifar10, "
                         f"cifar100), got {data!r}")  # fmt: skip
    return load_dataset(data, data_dir=data_dir)


def print_flush(message: str) -> None:
    """The default progress log: print, flushed (so a redirected log shows progress as it happens)."""
    print(message, flush=True)


def parse_list(text: str, kind: Callable[[str], Any] = str, what: str = "value") -> list[Any]:
    """``"plain20, resnet20"`` -> ``["plain20", "resnet20"]``; an empty item is a ValueError."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}") from None


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def run_dir(kind: str, out: str | os.PathLike | None) -> Path:
    """``out`` if given, else ``runs/study-<kind>-<timestamp>``; created if missing."""
    path = Path(out) if out is not None else Path("runs") / f"study-{kind}-{datetime.now():%Y%m%d-%H%M%S}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory; choose another path")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    return path


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
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave torch's setting), restoring the previous count after."""
    if n is None:
        yield
        return
    check_positive_int("threads", n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def resolve_device(device: str | torch.device) -> torch.device:
    from ...train.hardware import resolve_device as _resolve

    return device if isinstance(device, torch.device) else _resolve(device)
