"""Every bad input through the real ``classicnets`` console script: a non-zero exit, one message that names
the problem and the fix, never a traceback, and never code run from an untrusted file.

The cases run two at a time (each is a fresh process: most of its cost is importing torch); the cases the
older CLI tests already cover are not repeated: unknown model and dataset names with close matches, --set
typos and wrong types, a missing resume directory or checkpoint (tests/test_train.py::test_cli_errors), an
input size too small for `summary` (tests/test_cli_models.py), finetune without --weights
(tests/test_finetune.py).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import rewrite_record
from data_files import write_cifar_archive

pytestmark = pytest.mark.processes  # every test here runs real processes

BIN = Path(sys.executable).parent / "classicnets"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CLASSICNETS_DATA": ""}
FAST = ["--threads", "1", "--no-progress", "--epochs", "1", "--subset", "64", "--set", "tensorboard=false"]


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png(path: Path, seed: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def build_fixtures(root: Path, good_checkpoint: Path) -> dict[str, str]:
    """Every bad input the cases need; ``good_checkpoint`` is a real 1-channel, 10-class LeNet-5 checkpoint."""
    f: dict[str, Path] = {}
    f["ckpt"] = rewrite_record(good_checkpoint, root / "good.pt")
    f["unknown_model"] = rewrite_record(good_checkpoint, root / "lenet6.pt", model="lenet6")
    marker = root / "PWNED"
    f["marker"] = marker
    f["evil"] = root / "evil.pt"
    torch.save({"format": "classicnets-checkpoint", "model": _Payload(str(marker))}, f["evil"])
    f["evil_raw"] = root / "evil_raw.pth"
    f["evil_raw"].write_bytes(pickle.dumps({"conv1.weight": _Payload(str(marker))}, protocol=2))
    f["evil_run"] = root / "evil_run"
    f["evil_run"].mkdir()
    (f["evil_run"] / "config.yaml").write_text("model: lenet5_modern\ndata: fashion-mnist\n")
    torch.save({"format": "classicnets-checkpoint", "epoch": _Payload(str(marker))}, f["evil_run"] / "last.pt")
    f["evil_yaml"] = root / "evil.yaml"
    f["evil_yaml"].write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    f["corrupt_run"] = root / "corrupt_run"
    f["corrupt_run"].mkdir()
    (f["corrupt_run"] / "config.yaml").write_text("model: lenet5_modern\ndata: fashion-mnist\n")
    data = f["ckpt"].read_bytes()
    (f["corrupt_run"] / "last.pt").write_bytes(data[: len(data) // 3])
    (f["corrupt_run"] / "best.pt").write_bytes(data)
    f["no_config_run"] = root / "no_config_run"
    f["no_config_run"].mkdir()
    for name, text in [("syntax", "lr: [0.1\nepochs: 3\n"), ("wrong_type", "epochs: ten\n")]:
        f[name] = root / f"{name}.yaml"
        f[name].write_text(text)
    f["bad_idx"] = root / "bad_idx"
    f["bad_idx"].mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (f["bad_idx"] / name).write_bytes(b"\x00\x00\x08\x03" + os.urandom(64))
    f["bad_cifar"] = root / "bad_cifar"
    f["bad_cifar"].mkdir()
    (f["bad_cifar"] / "cifar-10-python.tar.gz").write_bytes(os.urandom(4096))
    f["rgb_cifar"] = root / "rgb_cifar"  # a real (tiny) CIFAR-10 archive: 3-channel data
    f["rgb_cifar"].mkdir()
    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))  # noqa: E731
    write_cifar_archive(f["rgb_cifar"] / "cifar-10-python.tar.gz", "cifar10", split(50), split(10), [str(i) for i in range(10)])
    f["empty_folder"] = root / "empty_folder"
    f["empty_folder"].mkdir()
    f["one_bad_image"] = root / "one_bad_image"
    for cls in ("cats", "dogs"):
        for i in range(4):
            _png(f["one_bad_image"] / cls / f"{i}.png", seed=i + 10 * len(cls))
    (f["one_bad_image"] / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    f["not_an_image"] = root / "not_an_image.png"
    f["not_an_image"].write_text("definitely not a PNG")
    f["image"] = root / "image.png"
    _png(f["image"], seed=1, size=28)
    f["out"] = root / "out"
    f["out"].mkdir()
    return {k: str(v) for k, v in f.items()}


# (id, arguments with {fixture} placeholders, expected exit code, substrings of stderr, in order)
CASES = [
    # unknown names, with close matches
    ("export-unknown-model", ["export", "{unknown_model}", "--format", "safetensors", "--no-verify"], 2,
     ["checkpoint is for model 'lenet6'", "does not know", "upgrade classicnets"]),
    # channels and sizes
    ("eval-wrong-channels", ["eval", "{ckpt}", "--data", "cifar10", "--data-dir", "{rgb_cifar}"], 2,
     ["trained on 10-class 1-channel data", "cifar10 has 10 classes and 3 channels"]),
    ("train-image-too-small", ["train", "lenet5", "--set", "image_size=16", "--out-dir", "{out}", *FAST], 2,
     ["image_size=16 is too small for lenet5: it needs at least 32"]),
    # image folders
    ("train-empty-folder", ["train", "--data", "folder:{empty_folder}", "--out-dir", "{out}", *FAST], 2,
     ["empty_folder has no class subfolders", "<class name>/<image files>"]),
    ("train-folder-one-unreadable-image", ["train", "lenet5_modern", "--data", "folder:{one_bad_image}", "--out-dir",
     "{out}", "--batch-size", "4", "--set", "num_workers=0", "--set", "val_fraction=0.25", *FAST], 0,
     ["skipped 1 unreadable image(s)", "broken.png"]),
    ("predict-unreadable-image", ["predict", "{ckpt}", "{not_an_image}"], 2,
     ["not_an_image.png: cannot read the image", "pass a PNG/JPEG/BMP file"]),
    # corrupt dataset files
    ("train-corrupt-idx", ["train", "--data", "mnist", "--data-dir", "{bad_idx}", "--out-dir", "{out}", *FAST], 2,
     ["train-images-idx3-ubyte"]),
    ("train-corrupt-cifar", ["train", "resnet20", "--data", "cifar10", "--data-dir", "{bad_cifar}", "--out-dir", "{out}",
                             *FAST], 2, ["cifar-10-python.tar.gz"]),
    # recipes and --set
    ("recipe-bad-yaml", ["train", "--recipe", "{syntax}"], 2, ["syntax.yaml: invalid YAML at line"]),
    ("recipe-wrong-type", ["train", "--recipe", "{wrong_type}"], 2, ["'epochs' must be int", "got 'ten'"]),
    # resume
    ("resume-not-a-run", ["train", "--resume", "{no_config_run}"], 2, ["config.yaml is missing", "not a classicnets run"]),
    ("resume-corrupt-last", ["train", "--resume", "{corrupt_run}", "--threads", "1"], 2,
     ["cannot resume", "last.pt: not a readable checkpoint", "best.pt may still be loadable"]),
    # untrusted files: refused, and the payload never runs (checked after all cases)
    ("untrusted-eval", ["eval", "{evil}"], 2, ["evil.pt: not a readable checkpoint (corrupt, truncated or unsafe)"]),
    ("untrusted-predict", ["predict", "{evil}", "{image}"], 2, ["evil.pt: not a readable checkpoint"]),
    ("untrusted-export", ["export", "{evil}", "--format", "safetensors"], 2, ["evil.pt: not a readable checkpoint"]),
    ("untrusted-resume", ["train", "--resume", "{evil_run}", "--threads", "1"], 2,
     ["cannot resume", "last.pt: not a readable checkpoint"]),
    ("untrusted-weights", ["train", "--weights", "{evil_raw}", "--out-dir", "{out}", *FAST], 2,
     ["refusing to load", "evil_raw.pth"]),
    ("untrusted-recipe", ["train", "--recipe", "{evil_yaml}"], 2, ["evil.yaml: invalid YAML", "python/object/apply"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, trained) -> tuple[dict[str, subprocess.CompletedProcess], dict]:
    root = tmp_path_factory.mktemp("cli_errors")
    fixtures = build_fixtures(root, trained("lenet5_modern-fashion") / "best.pt")
    env = {**ENV, "XDG_CACHE_HOME": str(root / "cache")}  # never the user's cache, never a download

    def run(case) -> subprocess.CompletedProcess:
        args = [a.format(**fixtures) for a in case[1]]
        return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300, env=env, cwd=root)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([c[0] for c in CASES], pool.map(run, CASES)))
    return results, fixtures


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case_id, args, code, messages", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_answered(outcomes, case_id: str, args: list[str], code: int, messages: list[str]) -> None:
    result = outcomes[0][case_id]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    position = 0
    for message in messages:  # each substring, in order
        found = result.stderr.find(message, position)
        assert found >= 0, f"{message!r} not in: {result.stderr}"
        position = found
    if code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("classicnets ")]
        assert len(errors) == 1, result.stderr


def test_no_untrusted_payload_ran(outcomes) -> None:
    assert not Path(outcomes[1]["marker"]).exists()
