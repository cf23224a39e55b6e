"""What a run leaves behind: metrics.csv (one row per epoch), TensorBoard events and curves.png."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "seconds"]


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not Path(path).is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
            except (TypeError, ValueError):  # a row cut short by a kill or a full disk: the epoch is redone
                continue
    return [r for r in rows if "epoch" in r]


class RunLog:
    """Appends epoch rows to ``metrics.csv`` (flushed and fsynced each epoch), mirrors them to TensorBoard
    and redraws ``curves.png``. On resume, rows after the checkpoint's epoch are dropped so the file always
    matches the weights."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_epoch: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        rows = read_metrics(self.csv_path) if resume_epoch is not None else []
        self.rows = [r for r in rows if r["epoch"] <= (resume_epoch or 0)]
        self._rewrite()
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Events are logged at step = epoch (1-based); a resume after epoch k keeps steps <= k.
            purge = resume_epoch + 1 if resume_epoch is not None else None
            with _naming(self.run_dir / "tensorboard"):
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)

    def _rewrite(self) -> None:
        from ..checkpoint import atomic_write_bytes

        lines = [",".join(COLUMNS)] + [",".join(_fmt(r.get(c)) for c in COLUMNS) for r in self.rows]
        atomic_write_bytes(self.csv_path, ("\n".join(lines) + "\n").encode())

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with _naming(self.csv_path), open(self.csv_path, "a") as f:
            f.write(",".join(_fmt(row.get(c)) for c in COLUMNS) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None:
            with _naming(self.run_dir / "tensorboard"):
                for key in COLUMNS[1:]:
                    if row.get(key) is not None:
                        group = "loss" if key.endswith("loss") else "accuracy" if key.endswith("acc") else "speed"
                        self.writer.add_scalar(f"{group}/{key}", row[key], int(row["epoch"]))
                self.writer.flush()
        with _naming(self.run_dir / "curves.png"):
            self.plot()

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        return plot_curves(self.rows, self.run_dir / "curves.png", title=self.run_dir.name)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def _naming(path: Path):
    """Make an OSError (e.g. a full disk) name the file the run log was writing."""
    try:
        yield
    except OSError as exc:
        exc.filename = str(path)
        raise


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy against epoch, train vs validation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [r.get(f"{split}_{key}") for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
