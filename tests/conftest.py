"""Shared fixtures: small, real data kept fast for a 2-core CI machine."""

from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread per test process: the CI machine has 2 cores, and oversubscribed OpenMP threads
# spin-wait each other into 10x slowdowns.
torch.set_num_threads(int(os.environ.get("CLASSICNETS_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's dataset cache from a test (downloads go to a temp dir)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


# ---------------------------------------------------------------------------------------------- real runs
# Checkpoints for the tests that use one are written by the real engine (``fit``) on tiny budgets, never
# assembled by hand, so a key the engine writes and a reader misreads cannot hide in a fixture.
def write_image_folder(root, classes, per_class: int = 6, size: int = 36, mode: str = "RGB", seed: int = 0):
    """A class-per-subfolder tree of real PNG files: each class a bright square on noise at its own place."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, channels))
            top = (c * 7) % (size - 10)
            img[top : top + 10, top : top + 10] = 200 + 10 * c
            array = img.astype(np.uint8)
            Image.fromarray(array[:, :, 0] if channels == 1 else array, mode).save(root / name / f"{i:02d}.png")
    return root


RUNS = {
    # name: (model, model_kwargs, data, extra config)
    "lenet5_modern-fashion": ("lenet5_modern", {}, "fashion-mnist", {"subset": 64}),
    "resnet20-folder": ("resnet20", {"shortcut": "B"}, "folder:rgb", {"image_size": 32}),
    "lenet5_modern-folder": ("lenet5_modern", {}, "folder:grey", {"image_size": 32}),
}
FOLDER_CLASSES = ("cat", "dog", "frog", "ship")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """``trained(name)`` -> the run directory of RUNS[name], trained once per session by ``fit`` (1 epoch)."""
    from classicnets.train.config import TrainConfig, config_from_dict
    from classicnets.train.engine import fit

    root = tmp_path_factory.mktemp("trained")
    folders = {"folder:rgb": write_image_folder(root / "rgb", FOLDER_CLASSES, mode="RGB"),
               "folder:grey": write_image_folder(root / "grey", FOLDER_CLASSES, mode="L")}  # fmt: skip
    done: dict[str, object] = {}

    def run(name: str):
        if name not in done:
            model, kwargs, data, extra = RUNS[name]
            data = f"folder:{folders[data]}" if data in folders else data
            config = config_from_dict(
                dict(model=model, model_kwargs=kwargs, data=data, epochs=1, batch_size=16, lr=0.01, threads=1,
                     num_workers=0, tensorboard=False, progress=False, out_dir=str(root / "runs"), name=name, **extra),
                base=TrainConfig(),
            )  # fmt: skip
            done[name] = fit(config, log=lambda _: None).run_dir
        return done[name]

    return run


def rewrite_record(src, dst, **changes):
    """Copy the checkpoint ``src`` to ``dst`` with fields of its run record changed (a checkpoint of a model
    this version does not know, say), through the real save path so the checksum is valid."""
    from classicnets.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(src)
    state["record"] = {**state["record"], **changes}
    return save_checkpoint(dst, {k: v for k, v in state.items() if k not in ("format", "version", "checksum")})
