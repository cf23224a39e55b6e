"""What the web app may read: the models it offers (shipped weights and run checkpoints, each under an opaque
id) and the case-study reports under ``runs/claims/``.

The page and the API name a model only by the id listed here; the server opens only files it found by its
own fixed patterns under the runs folder (``*/best.pt``, ``*/*/best.pt``, ``claims/*/report.md``,
``claims/*/*verdict*.json``), never a path a request names, and never one whose real location (after
symbolic links) is outside the runs folder. Checkpoints are read with ``weights_only=True`` (no code runs).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ApiError

RUN_PATTERNS = ("*/best.pt", "*/*/best.pt")
MAX_RUNS = 200  # checkpoints listed at most (the newest first); a bigger runs folder is cut, and says so
MAX_REPORT_BYTES = 256 * 1024  # a claims report.md larger than this is cut
MAX_VERDICT_BYTES = 64 * 1024
ID_PATTERN = re.compile(r"^m[0-9a-f]{10}$")
CLAIMS_HOWTO = "classicnets claims run all"


@dataclass(frozen=True)
class ModelEntry:
    """One model the server offers. ``source`` (a weight name or a checkpoint path) stays on the server."""

    id: str
    kind: str  # "weight" (shipped with classicnets) or "run" (a checkpoint under the runs folder)
    label: str  # what the page shows: the weight's name, or the run folder relative to the runs folder
    source: str
    model: str
    data: str
    classes: tuple[str, ...]
    input_size: tuple[int, int, int]  # (C, H, W) the model was trained at
    twin: str | None  # the registered name of the plain/residual twin (model card), if any
    residual: bool  # the model card's: has shortcut connections
    accuracy: float | None  # test accuracy (shipped weights) or best validation accuracy (runs)
    accuracy_kind: str  # "test" or "val"

    def public(self) -> dict[str, Any]:
        """The entry as the API shows it: everything but the source."""
        return {"id": self.id, "kind": self.kind, "label": self.label, "model": self.model, "data": self.data,
                "classes": list(self.classes), "input_size": list(self.input_size), "twin_model": self.twin,
                "residual": self.residual,
                "accuracy": self.accuracy, "accuracy_kind": self.accuracy_kind}  # fmt: skip


def _id(kind: str, key: str) -> str:
    return "m" + hashlib.sha256(f"{kind}\0{key}".encode()).hexdigest()[:10]


def _inside(path: Path, root: Path) -> bool:
    """True if ``path``, symbolic links followed, is a regular file inside ``root`` (already resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root)


class Catalog:
    """The shipped weights named at start-up and the checkpoints found under ``runs_dir``, re-scanned on
    :meth:`refresh` (a checkpoint's record is read again only when its size or mtime changed)."""

    def __init__(self, runs_dir: str | Path, weights: Sequence[str] | None = None) -> None:
        from .. import weights as shipped

        self.runs_dir = Path(runs_dir)
        names = shipped.list_weights() if weights is None else list(weights)
        for name in names:
            shipped.get_weight(name)  # a WeightsError (ValueError) naming close matches for an unknown name
        self._weights = [self._weight_entry(name) for name in names]
        self._runs: dict[Path, tuple[tuple[int, int], ModelEntry | str]] = {}  # path -> (stat, entry or problem)
        self._lock = threading.Lock()
        self._entries: dict[str, ModelEntry] = {e.id: e for e in self._weights}
        self.skipped: list[dict[str, str]] = []
        self.refresh()

    @staticmethod
    def _weight_entry(name: str) -> ModelEntry:
        from ..models import model_card
        from ..weights import get_weight

        w = get_weight(name)
        card = model_card(w.model)
        return ModelEntry(id=_id("weight", name), kind="weight", label=name, source=name, model=w.model,
                          data=w.dataset, classes=tuple(w.classes), input_size=tuple(w.run.input_size),
                          twin=card.twin, residual=card.residual, accuracy=w.test_acc,
                          accuracy_kind="test")  # fmt: skip

    def _run_entry(self, path: Path) -> ModelEntry:
        from ..checkpoint import load_checkpoint, read_record
        from ..models import model_card

        state = load_checkpoint(path)  # weights_only=True, checksum verified
        record = read_record(state, path)
        card = model_card(record.model)
        rel = path.relative_to(self.runs_dir)
        acc = state.get("best_val_acc")
        return ModelEntry(id=_id("run", rel.as_posix()), kind="run", label=rel.parent.as_posix(),
                          source=str(path.resolve()), model=record.model, data=record.data,
                          classes=tuple(record.classes), input_size=tuple(record.input_size), twin=card.twin,
                          residual=card.residual, accuracy=float(acc) if isinstance(acc, (int, float)) else None,
                          accuracy_kind="val")  # fmt: skip

    def refresh(self) -> None:
        """Look for checkpoints again: new ones are listed, removed ones dropped, changed ones re-read."""
        root = self.runs_dir.resolve() if self.runs_dir.is_dir() else None
        found: list[Path] = []
        if root is not None:
            for pattern in RUN_PATTERNS:
                found += [p for p in self.runs_dir.glob(pattern) if _inside(p, root)]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        cut = len(found) - MAX_RUNS
        runs, skipped = {}, []
        for path in found[:MAX_RUNS]:
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            cached = self._runs.get(path)
            if cached is None or cached[0] != key:
                try:
                    cached = (key, self._run_entry(path))
                except (ValueError, KeyError, TypeError, OSError) as exc:  # CheckpointError is a ValueError
                    cached = (key, str(exc).replace(str(self.runs_dir), "runs").splitlines()[0])
            runs[path] = cached
            if isinstance(cached[1], str):
                skipped.append({"file": path.relative_to(self.runs_dir).as_posix(), "reason": cached[1]})
        if cut > 0:
            skipped.append({"file": "...", "reason": f"{cut} older checkpoints not listed (at most {MAX_RUNS})"})
        with self._lock:
            self._runs = runs
            self.skipped = skipped
            entries = self._weights + [e for _, e in runs.values() if isinstance(e, ModelEntry)]
            self._entries = {e.id: e for e in entries}

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def get(self, model_id: Any) -> ModelEntry:
        """The entry with this id; a 400 for anything that is not an id (a path, a weight name), 404 if unknown."""
        if not isinstance(model_id, str) or not model_id:
            raise ApiError(400, "name the model by the 'id' that GET /api/models lists (a string like "
                                "'m1a2b3c4d5e')")  # fmt: skip
        if not ID_PATTERN.match(model_id):
            by_label = [e for e in self.entries() if e.label == model_id]
            hint = f"; {model_id!r} is listed as id {by_label[0].id!r}" if by_label else ""
            raise ApiError(400, f"models are chosen by the ids GET /api/models lists, never by a file path or a "
                                f"name: got {model_id[:80]!r}{hint}")  # fmt: skip
        with self._lock:
            entry = self._entries.get(model_id)
        if entry is None:
            raise ApiError(404, f"unknown model id {model_id!r}; GET /api/models lists the ids this server offers")
        return entry

    def twins(self, entry: ModelEntry) -> list[ModelEntry]:
        """Listed models that are ``entry``'s plain/residual twin trained on the same data and classes."""
        return [e for e in self.entries() if entry.twin and e.model == entry.twin and e.data == entry.data
                and e.classes == entry.classes]  # fmt: skip

    def claims(self) -> dict[str, Any]:
        """The case studies under ``runs/claims/*/``: each one's report (markdown text) and verdict JSON."""
        root = self.runs_dir / "claims"
        real_root = self.runs_dir.resolve() if self.runs_dir.is_dir() else None
        studies = []
        if real_root is not None and root.is_dir():
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                report = folder / "report.md"
                verdicts = sorted(folder.glob("*verdict*.json"))
                study: dict[str, Any] = {"name": folder.name, "report": None, "verdicts": []}
                if _inside(report, real_root):
                    study["report"] = _read_text(report, MAX_REPORT_BYTES)
                for path in verdicts:
                    if _inside(path, real_root):
                        study["verdicts"].append({"file": path.name, **_read_verdict(path)})
                if study["report"] is not None or study["verdicts"]:
                    studies.append(study)
        message = None if studies else (
            f"No case studies yet: no report.md or verdict JSON in claims/*/ of the runs folder. Run "
            f"{CLAIMS_HOWTO} to test the papers' claims; its reports appear here.")  # fmt: skip
        return {"claims": studies, "command": CLAIMS_HOWTO, "message": message}


def _read_text(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n\n[... cut: the report is longer than the server shows]" if len(data) > limit else "")


def _read_verdict(path: Path) -> dict[str, Any]:
    text = _read_text(path, MAX_VERDICT_BYTES)
    try:
        return {"verdict": json.loads(text)}
    except json.JSONDecodeError as exc:
        return {"verdict": None, "problem": f"not valid JSON ({exc.msg} at line {exc.lineno})"}
