"""Writers of real dataset files (IDX, CIFAR python archives) for the tests: the inverse of
classicnets.data.formats' readers.

They write files in the layout the real downloads have: IDX files (gzipped or raw) and CIFAR tar.gz
archives of Python 2 protocol-2 pickles, so the tests run the readers on the kind of bytes a download
gives them.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
from gzip import compress as _gzip_compress  # write_idx's ``gzip`` flag shadows the module
from pathlib import Path

import numpy as np

from classicnets.data.formats import _IDX_DTYPES, _CifarLayout, _layout

__all__ = ["write_idx", "write_cifar_archive", "_py2_pickle"]

# numpy dtype (native byte order) -> IDX type code.
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> Path:
    """Write ``array`` as an IDX file (gzipped by default); the inverse of :func:`read_idx`."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: cannot store dtype {array.dtype} with {array.ndim} dimensions in IDX;"
                         f" use uint8/int8/int16/int32/float32/float64 with 1-255 dimensions")
    payload = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
               + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes())
    path = Path(path)
    if gzip:
        payload = _gzip_compress(payload, compresslevel=6, mtime=0)
    path.write_bytes(payload)
    return path



def write_cifar_archive(path: str | os.PathLike, variant: str, train: tuple[np.ndarray, np.ndarray],
                        test: tuple[np.ndarray, np.ndarray], label_names: list[str]) -> Path:
    """Write a tar.gz in the real CIFAR python layout, as Python 2 pickles like the originals.

    Images are uint8 (N, 3, 32, 32) or (N, 3072). CIFAR-10's training set is split over five batches;
    CIFAR-100's coarse labels are written as zeros.
    """
    layout = _layout(variant)
    if len(label_names) != layout.num_classes:
        raise ValueError(f"{variant} needs {layout.num_classes} label names, got {len(label_names)}")
    members: dict[str, bytes] = {}
    meta: dict[bytes, object] = {layout.names_key: [n.encode() for n in label_names]}
    if variant == "cifar100":
        meta[b"coarse_label_names"] = [f"superclass_{i}".encode() for i in range(20)]
    members[layout.meta] = _py2_pickle(meta)
    parts = np.array_split(np.arange(len(train[0])), len(layout.train))
    for name, idx in zip(layout.train, parts):
        members[name] = _py2_pickle(_batch_dict(train[0][idx], train[1][idx], layout, name))
    members[layout.test] = _py2_pickle(_batch_dict(*test, layout, layout.test))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{layout.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = Path(path)
    path.write_bytes(_gzip_compress(buf.getvalue(), compresslevel=1, mtime=0))
    return path


def _batch_dict(x: np.ndarray, y: np.ndarray, layout: _CifarLayout, name: str) -> dict[bytes, object]:
    x = np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), 3072)
    d: dict[bytes, object] = {b"batch_label": f"{name} (classicnets fixture)".encode(), b"data": x,
                              layout.label_key: [int(v) for v in y],
                              b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(x))]}
    if layout.label_key == b"fine_labels":
        d[b"coarse_labels"] = [0] * len(x)
    return d


def _py2_pickle(obj: object) -> bytes:
    """Pickle ``obj`` (dict/list/bytes/int/bool/None/uint8 ndarray) the way Python 2 cPickle protocol 2 did.

    Python 3 pickles bytes via ``_codecs.encode``, which the restricted reader rightly refuses; the real
    CIFAR files use Python 2 strings (opcodes U/T) and ``numpy.core.multiarray._reconstruct``.
    """
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _py2_write(out, obj)
    out.write(b".")
    return out.getvalue()


def _py2_write(out: io.BytesIO, obj: object) -> None:
    if obj is None:
        out.write(b"N")
    elif isinstance(obj, bool):
        out.write(b"\x88" if obj else b"\x89")
    elif isinstance(obj, int):
        out.write(b"K" + bytes([obj]) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj))
    elif isinstance(obj, bytes):
        out.write(b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj)))
        out.write(obj)
    elif isinstance(obj, (list, dict)):
        out.write(b"]" if isinstance(obj, list) else b"}")
        if obj:
            out.write(b"(")
            for item in (obj.items() if isinstance(obj, dict) else obj):
                for part in (item if isinstance(obj, dict) else (item,)):
                    _py2_write(out, part)
            out.write(b"e" if isinstance(obj, list) else b"u")
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        # _reconstruct(ndarray, (0,), 'b'), then __setstate__((1, shape, dtype('u1'), False, data))
        out.write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01")
        out.write(b"(" + b"".join(b"J" + struct.pack("<i", d) for d in obj.shape) + b"t")
        out.write(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R")  # dtype('u1', 0, 1), then its state:
        out.write(b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        out.write(b"\x89")
        _py2_write(out, np.ascontiguousarray(obj).tobytes())
        out.write(b"tb")
    else:
        raise TypeError(f"_py2_pickle cannot write {type(obj).__name__}")


def replace_member(archive: Path, member: str, data: bytes, out: Path) -> Path:
    """Copy a tar.gz, swapping one member's bytes."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            payload = data if info.name.endswith("/" + member) else src.extractfile(info).read()
            info.size = len(payload)
            dst.addfile(info, io.BytesIO(payload))
    return out
