"""Readers for the on-disk formats of the classic datasets: IDX and the CIFAR python pickles.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code (0x08 = uint8), the
number of dimensions, each dimension as a big-endian uint32, then the data in C order. MNIST's images are
magic 0x00000803 (uint8, 3 dims), its labels 0x00000801 (uint8, 1 dim). Files may be gzipped.

CIFAR (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): a tar.gz of Python 2 pickles of
dicts; ``data`` is an N x 3072 uint8 array (1024 red, then 1024 green, then 1024 blue values, row-major).
The pickles are untrusted input, so they are loaded with an unpickler that can build numpy arrays and
nothing else.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import struct
import tarfile
import zlib
from pathlib import Path
from typing import IO, Iterator, NamedTuple

import numpy as np

from .errors import DataFormatError

__all__ = ["read_idx", "read_cifar_archive", "CifarArrays", "CIFAR_LAYOUT", "MAX_IDX_BYTES"]

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_BYTES = 1 << 28        # 256 MiB: 5x the largest IDX file read (MNIST's 47 MB of training images);
                               # reading one never holds more than this plus one chunk in memory
_READ_CHUNK = 1 << 22          # decompress 4 MiB at a time: memory follows the bytes that really arrive
_MAX_DEFLATE_RATIO = 1032      # deflate cannot expand more than this, so it bounds a gzip's content
_REDOWNLOAD = "delete it and download again"


def _shape_str(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read a raw or gzipped IDX file into a native-endian, writable array.

    ``ndim`` (3 for images, 1 for labels) makes a file of another shape an error. Every problem with the
    file's content raises DataFormatError naming the file; a missing file raises FileNotFoundError.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        size = os.fstat(raw.fileno()).st_size
        try:
            if is_gzip:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    return _read_idx_stream(stream, path.name, size, True, ndim)
            return _read_idx_stream(raw, path.name, size, False, ndim)
        except EOFError:
            raise DataFormatError(f"{path.name}: truncated: the gzip stream ends early (an interrupted "
                                  f"download?); {_REDOWNLOAD}") from None
        except (zlib.error, gzip.BadGzipFile) as e:
            raise DataFormatError(f"{path.name}: corrupt gzip data ({e}); {_REDOWNLOAD}") from None


def _read_idx_stream(stream: IO[bytes], name: str, size: int, is_gzip: bool,
                     ndim: int | None) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise DataFormatError(f"{name}: {len(head)} bytes is too short for an IDX header; {_REDOWNLOAD}")
    if head[0] or head[1] or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise DataFormatError(f"{name}: not an IDX file: magic number 0x{head.hex()} should be "
                              f"0x0000TTNN (TT = type code 08 for uint8, NN = number of dimensions)")
    if ndim is not None and head[3] != ndim:
        raise DataFormatError(f"{name}: expected a {ndim}-dimensional IDX file (magic 0x000008{ndim:02x}),"
                              f" got magic 0x{head.hex()}")
    dtype = np.dtype(_IDX_DTYPES[head[2]])
    raw_dims = stream.read(4 * head[3])
    if len(raw_dims) < 4 * head[3]:
        raise DataFormatError(f"{name}: truncated inside the header ({head[3]} dimensions announced)")
    dims = struct.unpack(f">{head[3]}I", raw_dims)
    nbytes = math.prod(dims) * dtype.itemsize
    _check_plausible_size(name, dims, nbytes, size, 4 + 4 * len(dims), is_gzip)
    out = np.empty(nbytes, np.uint8)  # untouched pages cost nothing: memory grows with the data read
    view, got = memoryview(out), 0
    while got < nbytes:  # a bounded read: never more than the header promised, and only what arrives
        n = stream.readinto(view[got:got + _READ_CHUNK])
        if not n:
            break
        got += n
    if got < nbytes:
        raise DataFormatError(f"{name}: truncated: header says {_shape_str(dims)} = {nbytes} bytes, "
                              f"file has {got}; {_REDOWNLOAD}")
    extra = stream.read(1)  # for gzip this also runs the CRC and length checks at the end of the stream
    if extra:
        raise DataFormatError(f"{name}: trailing bytes after the {_shape_str(dims)} data announced in the "
                              f"header; {_REDOWNLOAD}")
    return out.view(dtype).astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def _check_plausible_size(name: str, dims: tuple[int, ...], nbytes: int, file_size: int, header_len: int,
                          is_gzip: bool) -> None:
    """Reject absurd headers before allocating: compare the announced size with what the file can hold."""
    payload = file_size - header_len
    if math.prod(d for d in dims if d) > MAX_IDX_BYTES or nbytes > MAX_IDX_BYTES:  # 0x(huge) too
        raise DataFormatError(f"{name}: header announces {_shape_str(dims)} = {nbytes} bytes, over the "
                              f"{MAX_IDX_BYTES} byte limit: the header is corrupt; {_REDOWNLOAD}")
    if not is_gzip and payload != nbytes:
        what = "truncated" if payload < nbytes else "trailing bytes"
        raise DataFormatError(f"{name}: {what}: header says {_shape_str(dims)} = {nbytes} bytes, "
                              f"file has {payload}; {_REDOWNLOAD}")
    if is_gzip and nbytes > file_size * _MAX_DEFLATE_RATIO:
        raise DataFormatError(f"{name}: truncated: header says {_shape_str(dims)} = {nbytes} bytes, more "
                              f"than a {file_size}-byte gzip file can hold; {_REDOWNLOAD}")


# ----------------------------------------------------------------------------------------------- CIFAR

class _CifarLayout(NamedTuple):
    folder: str                 # top folder inside the archive
    train: tuple[str, ...]      # members holding the training batches, in order
    test: str
    meta: str
    label_key: bytes
    names_key: bytes
    num_classes: int


CIFAR_LAYOUT = {
    "cifar10": _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                            "test_batch", "batches.meta", b"labels", b"label_names", 10),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), "test", "meta",
                             b"fine_labels", b"fine_label_names", 100),
}
_MAX_MEMBER_BYTES = 1 << 28     # 256 MiB: the largest real member (CIFAR-100 train) is about 155 MB
_MAX_ARCHIVE_BYTES = 1 << 29    # 512 MiB for all the members read (CIFAR-10: 178 MB, CIFAR-100: 186 MB)


class CifarArrays(NamedTuple):
    """Images are uint8 (N, 3, 32, 32) in R, G, B plane order; labels int64 (N,)."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes, dicts, lists and strings; refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: D102
        allowed = _numpy_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


class _NdarrayName:
    """What ``numpy.ndarray`` unpickles to: the type argument of ``_reconstruct``, never callable. Calling
    the real class builds an array of any shape with no pixel bytes behind it (uninitialised memory, or
    gigabytes from a few bytes of pickle)."""

    def __call__(self, *args: object) -> None:
        raise pickle.UnpicklingError(f"refusing to call numpy.ndarray{args!r}: arrays must come with their "
                                     f"bytes")


_NDARRAY = _NdarrayName()


def _numpy_globals() -> dict[tuple[str, str], object]:
    return {("numpy.core.multiarray", "_reconstruct"): _empty_ndarray,
            ("numpy._core.multiarray", "_reconstruct"): _empty_ndarray,
            ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype}


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    """np.dtype as Python 2 pickles call it, ``dtype('u1', 0, 1)``: int flags, which numpy 2.4 deprecates."""
    return np.dtype(spec, bool(align), bool(copy))


def _empty_ndarray(subtype: type, shape: tuple, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` as numpy pickles use it: an empty array that BUILD then fills from the
    pickled bytes. Anything larger would allocate memory the file never paid for."""
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"unexpected array construction _reconstruct({subtype!r}, {shape!r})")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
_MAX_MEMO_INDEX = 1 << 20   # the unpickler sizes its memo table by the largest index it sees


def _check_opcodes(data: bytes, where: str) -> None:
    """Parse the pickle without running it; reject memo indices that would make the unpickler allocate
    gigabytes (a denial of service a few bytes long)."""
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _MEMO_OPS and not 0 <= arg <= _MAX_MEMO_INDEX:
                raise DataFormatError(f"{where}: corrupt pickle (memo index {arg}); {_REDOWNLOAD}")
    except DataFormatError:
        raise
    except Exception as e:  # pickletools raises ValueError, and others on garbage
        raise DataFormatError(f"{where}: corrupt pickle ({e}); {_REDOWNLOAD}") from None


def _unpickle(data: bytes, where: str) -> dict[bytes, object]:
    _check_opcodes(data, where)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataFormatError(f"{where}: {e}; this is not a genuine CIFAR file, delete it") from None
    except Exception as e:  # malformed pickles raise almost anything (EOFError, TypeError, ValueError...)
        raise DataFormatError(f"{where}: corrupt pickle ({type(e).__name__}: {e}); {_REDOWNLOAD}") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def read_cifar_archive(path: str | os.PathLike, variant: str) -> CifarArrays:
    """Read cifar-10-python.tar.gz / cifar-100-python.tar.gz (or the folder it extracts to).

    ``variant`` is "cifar10" or "cifar100" (CIFAR-100 uses the 100 fine labels). The archive is read
    in one pass without extracting it to disk.
    """
    layout = _layout(variant)
    path = Path(path)
    needed = [*layout.train, layout.test, layout.meta]
    members = dict(_cifar_members(path, layout, set(needed)))
    missing = [m for m in needed if m not in members]
    if missing:
        raise DataFormatError(f"{path.name}: missing {', '.join(f'{layout.folder}/{m}' for m in missing)};"
                              f" is this the {variant} python version? {_REDOWNLOAD}")
    meta = _unpickle(members.pop(layout.meta), f"{path.name}:{layout.meta}")
    classes = _class_names(meta, layout, f"{path.name}:{layout.meta}")
    # pop: each member's bytes are freed once its array is built, so the peak is about the data's size
    train = [_cifar_batch(members.pop(m), layout, f"{path.name}:{m}") for m in layout.train]
    test_x, test_y = _cifar_batch(members.pop(layout.test), layout, f"{path.name}:{layout.test}")
    return CifarArrays(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                       test_x, test_y, classes)


def _layout(variant: str) -> _CifarLayout:
    if variant not in CIFAR_LAYOUT:
        raise ValueError(f"unknown CIFAR variant {variant!r}; use one of {sorted(CIFAR_LAYOUT)}")
    return CIFAR_LAYOUT[variant]


def _cifar_members(path: Path, layout: _CifarLayout, needed: set[str]) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) for the needed members of the archive or extracted folder."""
    total = 0
    if path.is_dir():
        folder = path / layout.folder if (path / layout.folder).is_dir() else path
        for name in needed:
            if (folder / name).is_file():
                total += _check_member_size(path.name, name, (folder / name).stat().st_size, total)
                yield name, (folder / name).read_bytes()
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parent, _, name = member.name.rpartition("/")
                if name not in needed or parent.strip("./") != layout.folder or not member.isfile():
                    continue
                needed = needed - {name}  # a second copy of a member would be read twice
                total += _check_member_size(path.name, member.name, member.size, total)
                data = tar.extractfile(member).read(member.size)
                if len(data) != member.size:
                    raise DataFormatError(f"{path.name}: member {member.name} is truncated; {_REDOWNLOAD}")
                yield name, data
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataFormatError(f"{path.name}: not a readable tar.gz archive ({e}); {_REDOWNLOAD}") from None


def _check_member_size(archive: str, member: str, size: int, total: int) -> int:
    """Refuse a member before reading it if it, or all members so far, are larger than real CIFAR."""
    if size > _MAX_MEMBER_BYTES or total + size > _MAX_ARCHIVE_BYTES:
        raise DataFormatError(f"{archive}: member {member} claims {size} bytes ({total} read before it), "
                              f"more than any CIFAR file (limits {_MAX_MEMBER_BYTES} per member, "
                              f"{_MAX_ARCHIVE_BYTES} in all); {_REDOWNLOAD}")
    return size


def _class_names(meta: dict, layout: _CifarLayout, where: str) -> list[str]:
    names = meta.get(layout.names_key)
    if (not isinstance(names, list) or len(names) != layout.num_classes
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise DataFormatError(f"{where}: {layout.names_key.decode()} should be a list of "
                              f"{layout.num_classes} names")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError:
        raise DataFormatError(f"{where}: class names are not valid UTF-8") from None


def _cifar_batch(data: bytes, layout: _CifarLayout, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data, where)
    x, y = batch.get(b"data"), batch.get(layout.label_key)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataFormatError(f"{where}: 'data' should be an N x 3072 uint8 array, got {desc}")
    if not isinstance(y, (list, np.ndarray)) or len(y) != len(x):
        got = len(y) if isinstance(y, (list, np.ndarray)) else type(y).__name__
        raise DataFormatError(f"{where}: {layout.label_key.decode()} should list {len(x)} labels, got {got}")
    try:
        labels = np.asarray(y, dtype=np.int64).reshape(len(x))
    except (TypeError, ValueError, OverflowError):
        raise DataFormatError(f"{where}: labels are not integers") from None
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataFormatError(f"{where}: labels outside 0..{layout.num_classes - 1} "
                              f"(min {labels.min()}, max {labels.max()})")
    return np.ascontiguousarray(x).reshape(-1, 3, 32, 32), labels
