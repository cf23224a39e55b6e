"""The studies' defaults (the degradation recipe, the gradient study's nets); torch-free, so the command line
can show them."""

from __future__ import annotations

from dataclasses import dataclass

from ..train.config import TrainConfig

DEFAULT_MODELS = ("plain20", "resnet20", "plain56", "resnet56", "plain110", "resnet110")  # the gradient study's


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass
class Recipe:
    """One recipe for every net. The defaults train the 4 x 2 nets of depth 20-56 in ~10 min on 2 idle CPU
    cores (with bf16): 8 epochs of 40 steps, a one-epoch warm-up, then a cosine decay to zero."""

    epochs: int = 8
    subset: int | None = 5000  # training images (a seeded draw from the training set); None: all
    batch_size: int = 128  # He et al.
    lr: float = 0.1  # He et al.
    momentum: float = 0.9
    weight_decay: float = 1e-4  # He et al.'s CIFAR value
    warmup_epochs: float = 1.0  # linear from lr/10 (He et al. warm ResNet-110 up at lr/10)
    schedule: str = "cosine"  # or "constant", "multistep" (x0.1 at 50% and 75%)
    test_size: int | None = 2000  # test images evaluated after every epoch; None: the whole test set
    train_eval_size: int | None = 2000  # training images the end-of-epoch training error is measured on
    amp: str = "auto"
    seeds: tuple[int, ...] = (0,)  # each seed: its own initial weights and batch order (the data draws use the first)

    def check(self) -> "Recipe":
        self.seeds = tuple(self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or \
                any(isinstance(x, bool) or not isinstance(x, int) for x in self.seeds):  # fmt: skip
            raise ValueError(f"seeds must be distinct integers, e.g. (0, 1, 2); got {self.seeds!r}")
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        for key in ("subset", "test_size", "train_eval_size"):
            if getattr(self, key) is not None:
                _positive(key, getattr(self, key))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("constant", "cosine", "multistep"):
            raise ValueError(f"schedule must be constant, cosine or multistep, got {self.schedule!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        return self

    def train_config(self) -> TrainConfig:
        """The learning-rate part as a TrainConfig, so the schedule is the engine's ``lr_at``."""
        milestones = [0.5 * self.epochs, 0.75 * self.epochs] if self.schedule == "multistep" else []
        return TrainConfig(lr=self.lr, schedule=self.schedule, milestones=milestones, warmup_epochs=self.warmup_epochs,
                           warmup_factor=0.1, epochs=self.epochs)  # fmt: skip
