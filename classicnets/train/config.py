"""The training configuration: one typed dataclass, loaded from recipes (YAML) and ``--set key=value``.

Loading rejects unknown keys (naming the closest known one) and wrong types (naming the key and the
expected type); the resolved config is written to ``config.yaml`` in every run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
AMP_MODES = ("auto", "bf16", "fp16", "off")


class ConfigError(ValueError):
    """A bad recipe, key or value; the message names the key and how to fix it."""


@dataclass
class TrainConfig:
    # what to train, on what
    model: str = "lenet5_modern"
    model_kwargs: dict = field(default_factory=dict)  # extra builder options, e.g. {shortcut: B}
    data: str = "fashion-mnist"  # fashion-mnist, mnist, mnist-5k, cifar10, cifar100 or folder:PATH
    data_dir: str | None = None  # where to look for the files first (else CLASSICNETS_DATA, system, cache)
    download: bool = True  # download a missing dataset (verified by checksum)
    val_fraction: float = 0.1  # held out of the training set for model selection
    subset: int | None = None  # train on only the first N (seeded) training images
    image_size: int | None = None  # None: the smallest size the model takes (28x28 digits -> 32x32 padded)
    # fine-tuning
    weights: str | None = None  # start from these weights (.pth/.pt state dict, checkpoint, .safetensors)
    freeze: str | None = None  # freeze the model up to this top-level module (e.g. layer3), or "backbone"
    backbone_lr_scale: float = 1.0  # the backbone trains at lr * this; the head at lr
    # optimisation
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (He et al.: 64k iterations)
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list = field(default_factory=list)  # multistep: where the lr drops, in milestone_unit
    milestone_unit: str = "epoch"  # "epoch" or "step"
    gamma: float = 0.1  # step/multistep: lr factor at each drop
    step_size: float = 30  # step: epochs between drops
    warmup_epochs: float = 0.0  # linear warm-up from warmup_factor*lr to lr
    warmup_factor: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    ema_decay: float | None = None  # e.g. 0.999: evaluate an exponential moving average of the weights
    # augmentation (array datasets: batched on the device; folders: torchvision transforms)
    crop_padding: int = 0  # random crop with this much zero padding
    hflip: bool = False
    tta_flip: bool = False  # average predictions over the image and its mirror at evaluation
    # speed
    amp: str = "auto"  # auto: bf16 where the hardware has it (CPU with AVX512-BF16/AMX, CUDA), else off
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    num_workers: int = 2  # image folders only
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    sync_bn: bool = False  # under torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)
    # bookkeeping
    seed: int = 0
    deterministic: bool = False
    out_dir: str = "runs"
    name: str | None = None  # run directory name (default: MODEL-DATA-TIMESTAMP)
    progress: bool | None = None  # progress bar (None: only when stderr is a terminal)
    tensorboard: bool = True
    recipe: str | None = None  # the recipe this config came from (informational)

    def validate(self) -> "TrainConfig":
        for key, hint in _HINTS.items():  # NaN slips through every comparison below; inf is never meant
            value = getattr(self, key)
            if float in _allowed(hint) and isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("milestone_unit", self.milestone_unit, ("epoch", "step"))
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), e.g. 0.999; got {self.ema_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError("schedule 'multistep' needs milestones, e.g. --set milestones=[30,60]")
        if any(not isinstance(m, (int, float)) for m in self.milestones):
            raise ConfigError(f"milestones must be numbers, got {self.milestones}")
        if self.backbone_lr_scale < 0:
            raise ConfigError(f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")
        for key in ("subset", "max_steps", "image_size", "threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 (or null), got {value}")
        self._check_bounds()
        return self

    def _check_bounds(self) -> None:
        """Values that pass the checks above but would crash later or exhaust memory (a 10^6-pixel
        padding, a warm-up of 1e308 epochs, step_size 0): refused here, before anything is allocated."""
        for key, (low, high, why) in _RANGES.items():
            value = getattr(self, key)
            if value is not None and not (low <= value <= high and (key not in _OPEN_LOW or value > low)):
                bracket = "(" if key in _OPEN_LOW else "["
                raise ConfigError(f"config key {key!r} must be in {bracket}{low:g}, {high:g}], got {value!r}"
                                  f" ({why})")
        for key in ("model_kwargs", "milestones"):
            _check_small(key, getattr(self, key))
        if any(not math.isfinite(m) or m < 0 for m in self.milestones):
            raise ConfigError(f"milestones must be finite numbers >= 0, got {self.milestones}")
        if any(not isinstance(k, str) for k in self.model_kwargs):
            raise ConfigError(f"model_kwargs keys must be option names (strings), got {list(self.model_kwargs)}")
        from_data = sorted(set(self.model_kwargs) & {"num_classes", "in_chans"})
        if from_data:
            raise ConfigError(f"model_kwargs may not set {', '.join(f'{k}={self.model_kwargs[k]!r}' for k in from_data)}:"
                              f" the number of classes and channels come from the data ({self.data}); "
                              f"remove {' and '.join(from_data)} from model_kwargs")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


# key: (lowest, highest, why): far outside what any recipe uses, well inside what the machine survives
_RANGES: dict[str, tuple[float, float, str]] = {
    "crop_padding": (0, 64, "pixels of zero padding for the random crop; 4 is usual for 32x32 images"),
    "image_size": (1, 1024, "side in pixels fed to the model; a batch of larger images exhausts memory"),
    "batch_size": (1, 65536, "images per step"),
    "warmup_epochs": (0, 10_000, "epochs of linear warm-up; 0 to 5 is usual"),
    "warmup_factor": (0, 1, "the warm-up starts at lr * warmup_factor"),
    "step_size": (0, 1_000_000, "epochs between lr drops of the 'step' schedule; 0 divides by zero"),
    "gamma": (0, 1, "the lr factor at each drop"),
    "momentum": (0, 1, "SGD momentum; 0.9 is usual"),
    "weight_decay": (0, 1, "L2 penalty; 5e-4 is usual"),
    "grad_clip": (0, 1e6, "max global gradient norm"),
    "threads": (1, 1024, "torch intra-op threads"),
    "num_workers": (0, 64, "data-loading processes for image folders"),
}
_OPEN_LOW = {"step_size", "gamma", "grad_clip"}  # the lowest value itself is refused
_MAX_NESTED_VALUES = 10_000  # model_kwargs and milestones are a few plain values


def _check_small(key: str, value: Any) -> None:
    """Count the values inside ``value``, every reference counted: a YAML alias bomb (a few hundred bytes
    that expand to 10^9 values when copied or saved) stops at the budget, long before any copy is made."""
    budget, stack = _MAX_NESTED_VALUES, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > 32:
            raise ConfigError(f"config key {key!r} holds more than {_MAX_NESTED_VALUES} values or nests "
                              f"deeper than 32 (a YAML alias bomb?); give it a few plain values")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for pair in item.items() for v in pair)
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


_HINTS = typing.get_type_hints(TrainConfig)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def _allowed(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's type; ints are accepted where floats are expected."""
    allowed = _allowed(_HINTS[key])
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool) and bool not in allowed:
        pass  # a bool is an int to Python, but never a valid number here
    elif isinstance(value, allowed):
        return value
    elif isinstance(value, int) and float in allowed and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, str) and float in allowed:
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string; accept it as the number everyone means
            return float(value)
        except ValueError:
            pass
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"config key {key!r} must be {names}, got {value!r} ({type(value).__name__})")


def unknown_key_error(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(FIELDS)}"
    return ConfigError(f"unknown config key {key!r} in {where}{hint}")


def config_from_dict(values: dict[str, Any], where: str = "config", base: TrainConfig | None = None) -> TrainConfig:
    """Apply ``values`` on top of ``base`` (default: the defaults), checking every key and type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of key: value, got {type(values).__name__}")
    config = dataclasses.replace(base) if base is not None else TrainConfig()
    for key, value in values.items():
        if key not in _HINTS:
            raise unknown_key_error(str(key), where)
        setattr(config, key, _coerce(key, value))
    return config.validate()


def recipes_dir() -> Path:
    return Path(str(resources.files("classicnets") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name_or_path: str, base: TrainConfig | None = None) -> TrainConfig:
    """Load a shipped recipe by name (``he-cifar``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = recipes_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, list_recipes(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown recipe {name_or_path!r}{hint}; shipped recipes: {', '.join(list_recipes())}")
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, an impossible date (2020-13-01), absurd nesting
        raise ConfigError(f"{path}: not a readable YAML recipe ({type(exc).__name__}: {exc}); fix or "
                          "replace the file") from None
    config = config_from_dict(values, where=str(path), base=base)
    if config.recipe is None:
        config.recipe = path.stem
    return config


def parse_set(assignments: list[str], base: TrainConfig) -> TrainConfig:
    """Apply ``key=value`` strings (values parsed as YAML: 0.1, true, null, [30, 60], {shortcut: B})."""
    values = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an impossible date, 2020-13-01
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return config_from_dict(values, where="--set", base=base)


def save_config(config: TrainConfig, path: Path) -> None:
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())


def load_config_file(path: Path) -> TrainConfig:
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return config_from_dict(values, where=str(path))
