"""Fuzzing the readers: whatever bytes they are given, they return data or raise DataFormatError."""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classicnets.data import DataFormatError
from classicnets.data.formats import read_cifar_archive, read_idx
from data_files import _py2_pickle, write_cifar_archive

# CLASSICNETS_FUZZ_EXAMPLES=5000 for a deeper run; the default keeps the whole file under ~10 s.
FUZZ = settings(max_examples=int(os.environ.get("CLASSICNETS_FUZZ_EXAMPLES", 120)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def read_idx_bytes(folder: Path, data: bytes) -> None:
    path = folder / "fuzz-idx3-ubyte"
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except DataFormatError:
        return
    assert isinstance(array, np.ndarray)


@FUZZ
@given(data=st.binary(max_size=512))
def test_idx_random_bytes(workdir, data):
    read_idx_bytes(workdir, data)
    read_idx_bytes(workdir, gzip.compress(data))


@FUZZ
@given(type_code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]),
       dims=st.lists(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)), min_size=0, max_size=5),
       declared_ndim=st.none() | st.integers(0, 255), payload=st.binary(max_size=300),
       zero_bytes=st.sampled_from([b"\x00\x00", b"\x00\x01", b"\xff\x00"]), compress=st.booleans())
def test_idx_random_headers(workdir, type_code, dims, declared_ndim, payload, zero_bytes, compress):
    ndim = len(dims) if declared_ndim is None else declared_ndim
    data = zero_bytes + bytes([type_code, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    read_idx_bytes(workdir, gzip.compress(data) if compress else data)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, 10**6))
def test_idx_damaged_gzip(workdir, flips, cut):
    good = bytearray(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 4, 6, 6) + bytes(range(144))))
    for pos, mask in flips:
        good[pos % len(good)] ^= mask
    read_idx_bytes(workdir, bytes(good[: cut % len(good)] if cut is not None else good))


# ------------------------------------------------------------------------------------------- CIFAR

def read_cifar_bytes(folder: Path, data: bytes, variant: str = "cifar10") -> None:
    path = folder / "cifar-fuzz.tar.gz"
    path.write_bytes(data)
    try:
        read_cifar_archive(path, variant)
    except DataFormatError:
        pass


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@functools.cache
def good_members() -> dict[str, bytes]:
    """The members of a small genuine-format CIFAR-10 archive."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        path = write_cifar_archive(Path(d) / "c.tar.gz", "cifar10",
                                   (rng.integers(0, 256, (10, 3, 32, 32), np.uint8), rng.integers(0, 10, 10)),
                                   (rng.integers(0, 256, (2, 3, 32, 32), np.uint8), rng.integers(0, 10, 2)),
                                   [f"c{i}" for i in range(10)])
        with tarfile.open(path) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


@FUZZ
@given(data=st.binary(max_size=1024))
def test_cifar_random_bytes(workdir, data):
    read_cifar_bytes(workdir, data)
    read_cifar_bytes(workdir, gzip.compress(data))


@FUZZ
@given(member=st.sampled_from(["data_batch_1", "test_batch", "batches.meta"]),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
       cut=st.none() | st.integers(0, 10**6))
def test_cifar_damaged_pickle(workdir, member, flips, cut):
    name = f"cifar-10-batches-py/{member}"
    data = bytearray(good_members()[name])
    for pos, mask in flips:  # aim at the pickle's structure: most flips land in its first 400 bytes
        data[pos % min(len(data), 400)] ^= mask
    data = bytes(data[: cut % len(data)] if cut is not None else data)
    read_cifar_bytes(workdir, tar_gz({**good_members(), name: data}))


_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**31, 2**31 - 1) | st.binary(max_size=40),
                       lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.binary(max_size=8), inner, max_size=4), max_leaves=12)


@FUZZ
@given(content=st.dictionaries(st.sampled_from([b"data", b"labels", b"label_names", b"x"]), _VALUES,
                               max_size=4) | _VALUES)
def test_cifar_well_formed_pickles_with_wrong_contents(workdir, content):
    data = _py2_pickle(content)
    read_cifar_bytes(workdir, tar_gz({**good_members(), "cifar-10-batches-py/test_batch": data}))
    read_cifar_bytes(workdir, tar_gz({**good_members(), "cifar-10-batches-py/batches.meta": data}))
