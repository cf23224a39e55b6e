"""Weights that ship inside the package: trained here by the project's own recipes, verified by hash.

    import classicnets as cn
    model = cn.create_model("resnet20", pretrained="fashion-mnist")   # or pretrained=True: the default data
    model.pretrained_cfg.preprocessing.image("shirt.png")              # the input exactly as the test images

    classicnets weights                                               # the list, with accuracies
    classicnets predict fashion-mnist:lenet5_modern shirt.png         # a weight name wherever a checkpoint goes

Each weight is a safetensors file in ``files/`` and one entry of ``weights.json``: a :class:`WeightRecord`
with the run record (model, classes, preprocessing), the recipe and its resolved config, the test accuracy
as mean and standard deviation over three seeds with the shipped seed's own figure, the file's SHA-256 and
the command that reproduces it. ``scripts/train_weights.py`` writes both. A file whose hash does not match
its record is refused before it is read.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..checkpoint import RunRecord
from ..data.inputs import Preprocessing

__all__ = ["WeightRecord", "WeightsError", "list_weights", "get_weight", "default_weight", "load",
           "is_weight_name", "load_state_dict", "WEIGHTS_DIR"]  # fmt: skip

WEIGHTS_DIR = Path(__file__).parent
MANIFEST = WEIGHTS_DIR / "weights.json"
DEFAULT_DATASETS = ("fashion-mnist", "mnist-5k")  # pretrained=True takes the first that has the model


_WEIGHT_NAME = re.compile(r"[a-z0-9][a-z0-9-]*:[a-z][a-z0-9_]*")  # dataset:model, e.g. fashion-mnist:lenet5_modern


class WeightsError(ValueError):
    """A shipped weight that is unknown, missing or does not match its recorded hash."""


@dataclass(frozen=True)
class WeightRecord:
    """Everything known about one shipped weight (torchvision's ``Weights.meta``, timm's ``pretrained_cfg``)."""

    name: str  # "<dataset>:<model>"
    file: str  # under classicnets/weights/files/
    sha256: str
    run: RunRecord  # model, kwargs, classes, preprocessing, evaluation mode (fp32, the recipe's tta_flip)
    recipe: str
    config: dict[str, Any]  # the shipped seed's resolved TrainConfig
    seed: int  # the shipped seed
    test_acc: float  # the shipped seed's test accuracy, fp32
    test_acc_mean: float  # over all seeds
    test_acc_std: float
    seed_accs: dict[int, float] = field(default_factory=dict)
    command: str = ""  # reproduces the shipped seed's training run
    test_predictions: str = ""  # the shipped weights' class index for every test image, in order (one char each)

    @property
    def model(self) -> str:
        return self.run.model

    @property
    def dataset(self) -> str:
        return self.run.data

    @property
    def classes(self) -> tuple[str, ...]:
        return self.run.classes

    @property
    def preprocessing(self) -> Preprocessing:
        """How to turn an image into this model's input (torchvision's ``weights.transforms()``)."""
        return self.run.preprocessing

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / "files" / self.file

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run"] = self.run.to_dict()
        d["seed_accs"] = {str(k): v for k, v in self.seed_accs.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeightRecord":
        d = dict(d)
        d["run"] = RunRecord.from_dict(d["run"])
        d["seed_accs"] = {int(k): float(v) for k, v in d.get("seed_accs", {}).items()}
        return cls(**d)


@lru_cache(maxsize=1)
def _manifest() -> dict[str, WeightRecord]:
    if not MANIFEST.is_file():
        return {}
    entries = json.loads(MANIFEST.read_text())
    return {e["name"]: WeightRecord.from_dict(e) for e in entries}


def list_weights(pattern: str = "*") -> list[str]:
    """Names of the shipped weights matching a shell-style pattern, e.g. ``list_weights("*:resnet*")``."""
    return [n for n in _manifest() if fnmatch.fnmatchcase(n, pattern)]


def get_weight(name: str) -> WeightRecord:
    """The record of a shipped weight; a ``WeightsError`` with close matches for an unknown name."""
    records = _manifest()
    if name not in records:
        close = difflib.get_close_matches(str(name), list(records), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise WeightsError(f"unknown weight {name!r}; {hint}the shipped weights are {', '.join(records) or 'none'} "
                           "(`classicnets weights` lists them)")  # fmt: skip
    return records[name]


def default_weight(model: str) -> str:
    """The weight ``pretrained=True`` loads for ``model``: the first of DEFAULT_DATASETS that has one."""
    for dataset in DEFAULT_DATASETS:
        if f"{dataset}:{model}" in _manifest():
            return f"{dataset}:{model}"
    have = sorted({r.model for r in _manifest().values()})
    raise WeightsError(f"no shipped weights for {model!r}; weights ship for {', '.join(have)}; train your own with "
                       f"`classicnets train {model}`")  # fmt: skip


def is_weight_name(source: str | os.PathLike) -> bool:
    """True if ``source`` names a shipped weight rather than a file: it reads ``dataset:model`` in lower case
    (no path separator, no drive letter's capital) and is not an existing path. An unknown name of that form
    is still a weight name, so that the error says "unknown weight", not "no such file"."""
    text = str(source)
    return _WEIGHT_NAME.fullmatch(text) is not None and not os.path.exists(text)


def _verified_bytes(record: WeightRecord) -> bytes:
    if not record.path.is_file():
        raise WeightsError(f"{record.name}: its file {record.path} is missing from the installed package; "
                           "reinstall classicnets")  # fmt: skip
    data = record.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.sha256:
        raise WeightsError(f"{record.name}: {record.path} does not match its recorded SHA-256 (expected "
                           f"{record.sha256[:16]}..., found {digest[:16]}...): the file was modified or damaged; "
                           "reinstall classicnets")  # fmt: skip
    return data


def load_state_dict(name: str) -> dict[str, Any]:
    """The verified state dict of a shipped weight (CPU tensors)."""
    from safetensors.torch import load

    return load(_verified_bytes(get_weight(name)))


def load(name: str):
    """``(model, run_record)`` for a shipped weight: the model built from its record, weights loaded strictly
    after the hash check, in eval mode on the CPU, with ``model.pretrained_cfg`` set to its WeightRecord."""
    from ..models import create_model

    record = get_weight(name)
    model = create_model(record.run.model, **record.run.model_kwargs)
    model.load_state_dict(load_state_dict(name))
    model.pretrained_cfg = record
    return model.eval(), record.run
