"""Verified downloads against a real HTTP server on 127.0.0.1 serving real-format files."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from classicnets.data import (DATASETS, ChecksumError, DatasetNotFoundError, DownloadError, RemoteFile,
                              download, load_dataset)
from data_files import write_cifar_archive, write_idx

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/short":  # announces 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(base URL, folder it serves) of a threaded HTTP server on a free port of 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.delenv("CLASSICNETS_DATA", raising=False)
    monkeypatch.delenv("CLASSICNETS_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def serve_mnist_like(root: Path, n_train: int = 30, n_test: int = 10) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), np.uint8), rng.integers(0, 10, n_train).astype(np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)]
    return {name: write_idx(root / name, a) for name, a in zip(MNIST_FILES, arrays)}


def spec_for(served: dict[str, Path], base: str = "mnist"):
    """The registered spec with the digests of the served fixture files instead of the real ones."""
    files = tuple(replace(f, sha256=sha256(served[f.name]), md5=None) for f in DATASETS[base].files)
    return replace(DATASETS[base], files=files)


# ----------------------------------------------------------------------------------------- download()

def test_good_file_is_accepted(server, tmp_path):
    url, root = server
    served = write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    dest = tmp_path / "dl" / "labels.gz"
    got = download(url + served.name, dest, sha256=sha256(served), md5=md5(served), quiet=True)
    assert got == dest and dest.read_bytes() == served.read_bytes()
    assert leftovers(dest.parent) == ["labels.gz"]  # no .part file left behind


@pytest.mark.parametrize("which", ["sha256", "md5"])
def test_tampered_file_is_rejected_and_removed(server, tmp_path, which):
    url, root = server
    served = write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    genuine = hashlib.new(which, b"the genuine file").hexdigest()
    dest = tmp_path / "dl" / "train-images-idx3-ubyte.gz"
    with pytest.raises(ChecksumError) as info:
        download(url + served.name, dest, **{which: genuine}, quiet=True)
    err = info.value
    assert err.expected == genuine and err.actual == hashlib.new(which, served.read_bytes()).hexdigest()
    assert f"train-images-idx3-ubyte.gz: {which} mismatch: expected {genuine}, got {err.actual}" in str(err)
    assert leftovers(dest.parent) == []  # neither the file nor its .part


def test_both_digests_must_match(server, tmp_path):
    url, root = server
    served = write_idx(root / "x.gz", np.zeros(5, np.uint8))
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        download(url + "x.gz", tmp_path / "x.gz", sha256=sha256(served), md5="0" * 32, quiet=True)
    assert not (tmp_path / "x.gz").exists()


def test_a_digest_is_required(server, tmp_path):
    url, root = server
    write_idx(root / "x.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="refusing to download x.gz without a published sha256 or md5"):
        download(url + "x.gz", tmp_path / "x.gz")
    assert leftovers(tmp_path) == ["served"]


def test_http_404_is_a_clear_error(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match=r"missing\.gz: HTTP 404"):
        download(url + "missing.gz", tmp_path / "dl" / "missing.gz", sha256="0" * 64, quiet=True)
    assert leftovers(tmp_path / "dl") == []


def test_connection_cut_short(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="short: connection closed after 10 of 1000 bytes"):
        download(url + "short", tmp_path / "dl" / "short", sha256="0" * 64, quiet=True, timeout=5)
    assert leftovers(tmp_path / "dl") == []


def test_connection_refused(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", sha256="0" * 64, quiet=True, timeout=5)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ load_dataset(download)

def test_load_dataset_downloads_and_verifies(server, tmp_path):
    url, root = server
    served = serve_mnist_like(root)
    splits = load_dataset(spec_for(served), data_dir=tmp_path / "data", mirror=url, quiet=True)
    assert (len(splits.train), len(splits.test)) == (30, 10)
    assert splits.source == str(tmp_path / "data" / "mnist")
    assert leftovers(tmp_path / "data" / "mnist") == sorted(MNIST_FILES)
    # Found on disk the next time: no server needed.
    for f in served.values():
        f.unlink()
    again = load_dataset(spec_for({n: tmp_path / "data" / "mnist" / n for n in MNIST_FILES}),
                         data_dir=tmp_path / "data", download=False)
    assert again.train.images.equal(splits.train.images)


def test_registered_digests_reject_files_that_are_not_the_real_ones(server, tmp_path):
    url, root = server
    serve_mnist_like(root)
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz: sha256 mismatch: expected "
                                            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"):
        load_dataset("mnist", data_dir=tmp_path / "data", mirror=url, quiet=True)
    assert leftovers(tmp_path / "data" / "mnist") == []


def test_download_goes_to_the_cache_and_mirror_env_is_used(server, tmp_path, monkeypatch):
    url, root = server
    served = serve_mnist_like(root)
    monkeypatch.setenv("CLASSICNETS_MIRROR", url)
    splits = load_dataset(spec_for(served), quiet=True)
    cache = tmp_path / "cache" / "classicnets" / "mnist"
    assert splits.source == str(cache) and leftovers(cache) == sorted(MNIST_FILES)


def test_failed_download_reports_where_it_looked(server, tmp_path):
    url, _ = server  # serves nothing: every file is a 404
    with pytest.raises(DatasetNotFoundError, match=r"mnist: dataset files not found \(download failed: .*"
                                                   r"HTTP 404.*Looked in: "):
        load_dataset(spec_for({n: Path(__file__) for n in MNIST_FILES}), data_dir=tmp_path / "d",
                     mirror=url, quiet=True)


def test_spec_without_digest_is_not_downloaded(server, tmp_path):
    url, root = server
    serve_mnist_like(root)
    spec = replace(DATASETS["mnist"], files=tuple(replace(f, sha256=None, md5=None)
                                                  for f in DATASETS["mnist"].files))
    with pytest.raises(DatasetNotFoundError, match="no published checksum is known"):
        load_dataset(spec, data_dir=tmp_path / "d", mirror=url, quiet=True)
    assert leftovers(tmp_path / "d") == []


def test_cifar10_download_and_load(server, tmp_path):
    url, root = server
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (25, 3, 32, 32), np.uint8), rng.integers(0, 10, 25)
    test = rng.integers(0, 256, (5, 3, 32, 32), np.uint8), rng.integers(0, 10, 5)
    archive = write_cifar_archive(root / "cifar-10-python.tar.gz", "cifar10", train, test,
                                  list(DATASETS["cifar10"].classes))
    spec = replace(DATASETS["cifar10"], files=(RemoteFile(archive.name, sha256=sha256(archive)),))
    splits = load_dataset(spec, data_dir=tmp_path / "data", mirror=url, quiet=True)
    assert splits.train.images.shape == (25, 3, 32, 32) and splits.classes[0] == "airplane"
    np.testing.assert_array_equal(splits.test.images.numpy(), test[0])
    np.testing.assert_array_equal(splits.train.labels.numpy(), train[1])
