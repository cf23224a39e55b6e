"""ImageFolderData on generated folders of real PNG files, including a corrupt one."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classicnets.data import DataFormatError, ImageFolderData, load_dataset

CLASSES = ["cat", "dog", "zebra"]


def write_png(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (20, 16)) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def make_tree(root: Path, per_class: int = 4, mode: str = "RGB") -> Path:
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", seed=10 * c + i, mode=mode)
    return root


def test_folder_loads_and_skips_the_corrupt_file(tmp_path):
    root = make_tree(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (root / "cat" / "notes.txt").write_text("not an image, ignored without a warning")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): .*broken\.png"):
        data = ImageFolderData(root, image_size=8, val_fraction=0.25, seed=0)
    assert data.classes == CLASSES and data.num_classes == 3 and data.channels == 3
    assert [p.name for p in data.skipped] == ["broken.png"]
    assert len(data.train_samples) == 9 and len(data.val_samples) == 3 and data.test_samples is None
    assert not {p for p, _ in data.train_samples} & {p for p, _ in data.val_samples}
    loader = data.train_loader(batch_size=4)
    loader.set_epoch(0)
    xs, ys = zip(*loader)
    assert xs[0].shape == (4, 3, 8, 8) and xs[0].dtype == torch.float32
    assert sorted(torch.cat(ys).tolist()) == sorted(label for _, label in data.train_samples)
    x_val, _ = next(iter(data.val_loader(batch_size=8)))
    assert x_val.shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="has no test set"):
        data.test_loader(4)


def test_folder_split_is_deterministic_and_epochs_reshuffle(tmp_path):
    root = make_tree(tmp_path / "imgs", per_class=6)
    a, b = ImageFolderData(root, 8, seed=3), ImageFolderData(root, 8, seed=3)
    assert a.val_samples == b.val_samples and len(a.val_samples) == 2
    loader = a.train_loader(batch_size=16)
    orders = []
    for e in (0, 1, 0):
        loader.set_epoch(e)
        orders.append(list(loader.sampler))
    assert orders[0] == orders[2] and orders[0] != orders[1]


def test_folder_train_test_layout_and_grey_images(tmp_path):
    make_tree(tmp_path / "ds" / "train", mode="L")
    make_tree(tmp_path / "ds" / "val", per_class=2, mode="L")
    data = load_dataset(f"folder:{tmp_path / 'ds'}", image_size=6, val_fraction=0.0,
                        train_transform="none")
    assert isinstance(data, ImageFolderData)
    assert data.mode == "L" and data.channels == 1 and len(data.test_samples) == 6
    x, y = next(iter(data.test_loader(batch_size=6)))
    assert x.shape == (6, 1, 6, 6) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_folder_distributed_shards(tmp_path):
    data = ImageFolderData(make_tree(tmp_path / "imgs"), 8, val_fraction=0.0)
    shards = [data.train_loader(batch_size=2, rank=r, world_size=2) for r in range(2)]
    seen = [set(s.sampler) for s in shards]
    assert all(s.num_samples == 6 for s in shards) and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(12))


def test_verify_catches_a_truncated_image(tmp_path):
    root = make_tree(tmp_path / "imgs")
    good = write_png(root / "cat" / "big.png", seed=99, size=(64, 64)).read_bytes()
    (root / "cat" / "big.png").write_bytes(good[: len(good) // 2])  # the header still parses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lazy = ImageFolderData(root, 8)  # header check only: not noticed yet
    with pytest.warns(UserWarning, match=r"skipped 1 .*big\.png"):
        ImageFolderData(root, 8, verify=True)
    from classicnets.data.folder import FolderDataset
    index = [p.name for p, _ in lazy.train_samples + lazy.val_samples].index("big.png")
    dataset = FolderDataset(lazy.train_samples + lazy.val_samples, lazy.eval_transform, lazy.mode)
    with pytest.raises(DataFormatError, match=r"big\.png: cannot decode image"):
        dataset[index]


def test_empty_or_flat_folders_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class subfolders"):
        ImageFolderData(tmp_path / "empty", 8)
    write_png(tmp_path / "flat" / "a.png", 0)
    with pytest.raises(ValueError, match="has no class subfolders"):
        ImageFolderData(tmp_path / "flat", 8)
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    (tmp_path / "noimages" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolderData(tmp_path / "noimages", 8)
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolderData(tmp_path / "missing", 8)
    with pytest.raises(ValueError, match="train_transform must be"):
        ImageFolderData(make_tree(tmp_path / "ok"), 8, train_transform="fancy")
