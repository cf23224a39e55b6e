"""Every input is bounded in memory and time before it is trusted; data is read as what it is (issue #16).

Each case is provoked for real: real IDX/CIFAR files in their real formats, a real HTTP server on
127.0.0.1 that drips or never ends, real 16-bit PNGs written by PIL, real folders.
"""

from __future__ import annotations

import gzip
import http.server
import json
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from classicnets.data import DATASETS, DataFormatError, DatasetNotFoundError, DownloadError, download, load_dataset
from classicnets.data.formats import MAX_IDX_BYTES, read_cifar_archive, read_idx
from data_files import _py2_pickle, replace_member, write_cifar_archive

ROOT = Path(__file__).resolve().parents[1]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def peak_rss_of(script: str, timeout: float = 120) -> dict:
    """Run ``script`` in a fresh interpreter (the worktree's classicnets first on the path); it prints one
    JSON line; the peak RSS of the process (ru_maxrss, MiB) is added to it."""
    code = textwrap.dedent(script) + textwrap.dedent("""
        import resource as _r
        RESULT["peak_mib"] = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(RESULT))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ IDX

def test_idx_gzip_bomb_at_the_limit_stays_under_2_gb(tmp_path):
    """The worst IDX case: a 260 KB gzip whose header announces the 256 MiB limit and whose zeros really
    decompress to it, plus one byte too many. It is read chunk by chunk into one buffer (no second copy)
    and refused at the end: the process peaks at its start-up size + 256 MiB."""
    result = peak_rss_of(f"""
        import json, time, zlib
        from pathlib import Path
        from classicnets.data.formats import MAX_IDX_BYTES, read_idx
        from classicnets.data import DATASETS, DataFormatError, DatasetNotFoundError, DownloadError, download, load_dataset
        path = Path({str(tmp_path / 'bomb.gz')!r})
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        with open(path, "wb") as f:
            f.write(z.compress(bytes([0, 0, 8, 3]) + (1024).to_bytes(4, "big") + (512).to_bytes(4, "big") * 2))
            zeros = bytes(1 << 24)
            for _ in range(MAX_IDX_BYTES // len(zeros)):
                f.write(z.compress(zeros))
            f.write(z.compress(b"!") + z.flush())
        import resource
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        try:
            read_idx(path)
            RESULT = {{"error": None}}
        except DataFormatError as e:
            RESULT = {{"error": str(e)}}
        RESULT["seconds"] = time.perf_counter() - start
        RESULT["file_bytes"] = path.stat().st_size
        RESULT["baseline_mib"] = baseline
    """)
    print(result)
    assert "1024x512x512 data" in result["error"] and "trailing bytes" in result["error"]
    assert result["file_bytes"] < 1 << 20
    assert result["peak_mib"] - result["baseline_mib"] < 300, result   # 256 MiB of data + one chunk
    assert result["peak_mib"] < 2048, result


def test_idx_header_over_the_limit_is_refused_before_reading(tmp_path):
    # 1 GiB + 1 byte announced, in a gzip that could hold it by the deflate ratio: the limit alone refuses
    path = tmp_path / "over.gz"
    header = bytes([0, 0, 8, 1]) + struct.pack(">I", MAX_IDX_BYTES + 1)
    path.write_bytes(gzip.compress(header + bytes(1 << 20)) + bytes(2 << 20))
    start = time.perf_counter()
    with pytest.raises(DataFormatError, match=rf"over\.gz: header announces {MAX_IDX_BYTES + 1} = .* over"):
        read_idx(path)
    assert time.perf_counter() - start < 1


# ---------------------------------------------------------------------------------------------- CIFAR

def _cifar(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10, 3, 32, 32), np.uint8), rng.integers(0, 10, 10)
    test = rng.integers(0, 256, (2, 3, 32, 32), np.uint8), np.array([0, 1])
    return write_cifar_archive(tmp_path / "good.tar.gz", "cifar10", train, test, CIFAR10_NAMES)


@pytest.mark.parametrize("shape", [(2, 3072), (1 << 20, 3072)])
def test_cifar_array_without_pixel_bytes_is_refused(tmp_path, shape):
    """``numpy.ndarray(shape, 'u1')`` called from a pickle builds an array of uninitialised memory (a
    'dataset' that trains to 100%), or 3 GiB from 60 bytes. Only _reconstruct + the pickled bytes may."""
    array = (b"cnumpy\nndarray\n(" + b"".join(b"J" + struct.pack("<i", d) for d in shape)
             + b"tU\x02u1\x86R")
    labels = _py2_pickle({b"labels": [0, 1]})[3:-2]  # the dict's items, without PROTO, '}' and STOP
    evil = b"\x80\x02}(U\x04data" + array + labels + b"u."
    bad = replace_member(_cifar(tmp_path), "test_batch", evil, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataFormatError, match=r"test_batch: refusing to call numpy\.ndarray"):
        read_cifar_archive(bad, "cifar10")


def test_cifar_member_announcing_too_many_bytes_is_refused_before_reading(tmp_path):
    # a tar header that claims 300 MB for data_batch_1, with nothing behind it
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 300 << 20
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
    with pytest.raises(DataFormatError, match=r"data_batch_1 claims 314572800 bytes .* more than any CIFAR"):
        read_cifar_archive(path, "cifar10")


# ------------------------------------------------------------------------------------------ downloads

class _BadServer(http.server.BaseHTTPRequestHandler):
    """/drip: one byte every 0.1 s, no length; /endless: zeros without end; /liar: announces 10 GB.
    Each stops by itself after 20 s, so a test that fails cannot leave a thread running for ever."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.endswith("/liar"):
            self.send_header("Content-Length", str(10 << 30))
        self.end_headers()
        stop = time.monotonic() + 20
        piece, pause = (b"x", 0.1) if self.path.endswith("/drip") else (bytes(1 << 16), 0)
        try:
            while time.monotonic() < stop:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client hung up: what a bounded download does
            pass


@pytest.fixture
def bad_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadServer)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_dripping_server_is_stopped_by_the_deadline(bad_server, tmp_path):
    # each read gets a byte well within the 1 s read timeout: only the overall deadline can stop it
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"/drip: not finished after 1\.5 s \(\d+ bytes received\)"):
        download(f"{bad_server}/drip", tmp_path / "f.gz", sha256="0" * 64, timeout=1, deadline=1.5,
                 quiet=True)
    assert time.perf_counter() - start < 1.5 + 1 + 1
    assert list(tmp_path.iterdir()) == []


def test_an_endless_response_is_cut_at_the_size_cap(bad_server, tmp_path):
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"/endless: the server sent more than the 1048576 bytes"):
        download(f"{bad_server}/endless", tmp_path / "f.gz", sha256="0" * 64, max_bytes=1 << 20, quiet=True)
    assert time.perf_counter() - start < 5
    assert list(tmp_path.iterdir()) == []  # and at most 1 MiB was ever on disk


def test_an_announced_length_over_the_cap_is_refused_before_the_body(bad_server, tmp_path):
    with pytest.raises(DownloadError, match=r"/liar: the server announces 10737418240 bytes, more than "
                                            r"the 1073741824"):
        download(f"{bad_server}/liar", tmp_path / "f.gz", sha256="0" * 64, quiet=True)  # default cap
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_caps_each_file_at_its_published_size(bad_server, tmp_path, monkeypatch):
    """The registry knows each file's size (MNIST's labels: 28881 bytes): a mirror that streams without
    end fills no disk; the error says where it looked and how to get the files."""
    monkeypatch.delenv("CLASSICNETS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert DATASETS["mnist"].files[0].size == 9912422
    with pytest.raises(DatasetNotFoundError, match=r"more than the 9912422 bytes"):
        load_dataset("mnist", data_dir=tmp_path / "none", mirror=f"{bad_server}/endless/", quiet=True)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# ------------------------------------------------------------------------------------------- configs

@pytest.mark.parametrize("values,message", [
    ({"crop_padding": 1_000_000}, r"'crop_padding' must be in \[0, 64\], got 1000000 \(pixels"),
    ({"crop_padding": -1}, r"'crop_padding' must be in \[0, 64\], got -1"),
    ({"image_size": 100_000}, r"'image_size' must be in \[1, 1024\], got 100000"),
    ({"warmup_epochs": 1e308}, r"'warmup_epochs' must be in \[0, 10000\], got 1e\+308"),
    ({"warmup_factor": -2.0}, r"'warmup_factor' must be in \[0, 1\], got -2\.0"),
    ({"step_size": 0}, r"'step_size' must be in \(0, 1e\+06\], got 0\.0 .*divides by zero"),
    ({"gamma": 1e300}, r"'gamma' must be in \(0, 1\]"),
    ({"momentum": -0.5}, r"'momentum' must be in \[0, 1\]"),
    ({"weight_decay": -1.0}, r"'weight_decay' must be in \[0, 1\]"),
    ({"grad_clip": 0}, r"'grad_clip' must be in \(0, 1e\+06\]"),
    ({"batch_size": 10**12}, r"'batch_size' must be in \[1, 65536\]"),
    ({"threads": 10**9}, r"'threads' must be in \[1, 1024\]"),
    ({"num_workers": -3}, r"'num_workers' must be in \[0, 64\]"),
    ({"milestones": [30, float("nan")]}, r"milestones must be finite numbers >= 0"),
    ({"milestones": list(range(20_000))}, r"'milestones' holds more than 10000 values"),
    ({"model_kwargs": {"num_classes": 5}}, r"model_kwargs may not set num_classes=5: .* come from the data "
                                           r"\(fashion-mnist\); remove num_classes"),
    ({"model_kwargs": {"in_chans": 3, "num_classes": 7}}, r"may not set in_chans=3, num_classes=7"),
    ({"model_kwargs": {1: "x"}}, r"model_kwargs keys must be option names"),
])
def test_config_values_that_would_crash_later_are_refused(values, message):
    from classicnets.train.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_an_alias_bomb_in_a_recipe_value_is_refused_before_it_is_copied(tmp_path):
    """Nine levels of nine aliases: 400 bytes of YAML, 387 million values once copied (``to_dict``, saving
    config.yaml). The count stops at 10,000 references, at once."""
    from classicnets.train.config import ConfigError, load_recipe
    lines = ["  a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("model_kwargs:\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"'model_kwargs' holds more than 10000 values .*alias bomb"):
        load_recipe(str(recipe))
    assert time.perf_counter() - start < 1


def test_the_cli_answers_a_huge_padding_in_one_line(capsys):
    from classicnets.commands import main
    code = main(["train", "--set", "crop_padding=1000000", "--set", "epochs=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'crop_padding' must be in [0, 64], got 1000000" in err


# --------------------------------------------------------------------------------- images as they are

def _grey16(path: Path, mode_hint: str = "png") -> tuple[Path, np.ndarray]:
    """A real 16-bit greyscale file written by PIL from a uint16 array, and its correct 8-bit reading."""
    from PIL import Image
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    img = Image.fromarray(values) if mode_hint == "png" else Image.fromarray(values.astype(np.int32))
    img.save(path)
    return path, ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


@pytest.mark.parametrize("fmt,opened_as", [("png", "I;16"), ("tiff", "I")])
def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped(tmp_path, fmt, opened_as):
    from PIL import Image
    from classicnets.data.inputs import read_image
    path, expected = _grey16(tmp_path / f"grey16.{fmt}", fmt)
    with Image.open(path) as img:
        assert img.mode == opened_as
        clipped = np.asarray(img.convert("L"))
    assert (clipped == 255).mean() > 0.95            # what PIL alone makes of it: almost all white
    got = np.asarray(read_image(path, 1))
    np.testing.assert_array_equal(got, expected)      # v * 255 / 65535, rounded
    assert got.min() == 0 and got.max() == 255 and abs(got.mean() - 127.5) < 1
    rgb = np.asarray(read_image(path, 3))
    assert rgb.shape == (32, 32, 3) and (rgb == expected[..., None]).all()


def test_a_16_bit_png_reaches_the_model_as_its_8_bit_twin(tmp_path):
    """predict's path (Preprocessing.image) and the folder datasets' decode give a 16-bit PNG exactly the
    input of the 8-bit PNG holding its correctly scaled values."""
    from PIL import Image
    from classicnets.data import ImageFolderData
    from classicnets.data.folder import FolderDataset
    from classicnets.data.inputs import InputPlan, Preprocessing
    path16, expected = _grey16(tmp_path / "grey16.png")
    path8 = tmp_path / "grey8.png"
    Image.fromarray(expected).save(path8)
    prep = Preprocessing("array", 1, (0.5,), (0.5,), InputPlan(32, 32))
    assert torch_equal(prep.image(path16), prep.image(path8))
    for name in ("a", "b"):
        (tmp_path / "tree" / name).mkdir(parents=True)
    _grey16(tmp_path / "tree" / "a" / "x.png")
    Image.fromarray(expected).save(tmp_path / "tree" / "b" / "x.png")
    data = ImageFolderData(tmp_path / "tree", image_size=32, val_fraction=0)
    dataset = FolderDataset(data.train_samples, data.eval_transform, data.mode)
    (x16, label16), (x8, label8) = dataset[0], dataset[1]
    assert data.mode == "L" and (label16, label8) == (0, 1) and torch_equal(x16, x8)


def torch_equal(a, b) -> bool:
    import torch
    return bool(torch.equal(a, b))


# ------------------------------------------------------------------------- empty splits, odd folders

def _tree(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def _train(*sets: str) -> tuple[int, str]:
    from classicnets.commands import main
    base = ["epochs=1", "num_workers=0", "tensorboard=false", "image_size=32", "batch_size=2", "model=lenet5"]
    args = ["train"] + [a for s in (*base, *sets) for a in ("--set", s)]
    return main(args), ""


@pytest.mark.parametrize("case", ["val_fraction", "one_image_per_class"])
def test_an_empty_training_split_is_one_line_before_training(tmp_path, capsys, case):
    """val_fraction close to 1 (or one image per class and a large one) left no training image: it was a
    ZeroDivisionError inside the loop."""
    root = _tree(tmp_path / "imgs", {"a": 1, "b": 1} if case == "one_image_per_class" else {"a": 3, "b": 3})
    code, _ = _train(f"data=folder:{root}", "val_fraction=0.95", f"out_dir={tmp_path / 'runs'}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "val_fraction=0.95 holds out all" in err and "lower val_fraction" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("last.pt"))


def test_a_valid_empty_idx_training_file_is_one_line_before_training(tmp_path, capsys):
    from data_files import write_idx
    data = tmp_path / "data"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(data / "train-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    write_idx(data / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    code, _ = _train("data=mnist", f"data_dir={data}", "download=false", f"out_dir={tmp_path / 'runs'}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "mnist: the training set is empty (0 images in" in err


@pytest.mark.parametrize("counts,message", [
    ({"only": 3}, r"imgs: only one class folder \(only\); a classifier needs two or more"),
    ({"a": 3, "b": 3, "empty": 0}, r"imgs: 1 class folder\(s\) without a readable image: .*imgs/empty; these "
                                   r"classes cannot be learned"),
])
def test_one_class_or_an_empty_class_folder_is_warned_about(tmp_path, counts, message):
    from classicnets.data import ImageFolderData
    root = _tree(tmp_path / "imgs", counts)
    with pytest.warns(UserWarning, match=message) as caught:
        ImageFolderData(root, image_size=32)
    assert all(len(str(w.message).splitlines()) == 1 for w in caught)


def test_class_names_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    """A folder named "\\x1b[31mred" turned the terminal red in the warning and in predict's answer; it is
    printed as the escape, and the data keeps the real name."""
    from classicnets.commands import main
    from classicnets.data import ImageFolderData
    evil = "\x1b[31mred\x07"
    root = _tree(tmp_path / "imgs", {"blue": 3, evil: 0})
    with pytest.warns(UserWarning) as caught:
        data = ImageFolderData(root, image_size=32)
    assert evil in data.classes                                   # the real name, in the data
    assert "\\x1b[31mred\\x07" in str(caught[0].message) and "\x1b" not in str(caught[0].message)
    (root / evil / "0.png").write_bytes((root / "blue" / "2.png").read_bytes())
    assert _train(f"data=folder:{root}", "val_fraction=0", f"out_dir={tmp_path / 'runs'}", "name=r")[0] == 0
    capsys.readouterr()
    image = root / evil / "0.png"
    assert main(["predict", str(tmp_path / "runs" / "r" / "best.pt"), str(image), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[31mred\\x07" in out, out
