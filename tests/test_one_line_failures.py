"""Issue #16, "every failure path ends in one line": the paths that still ended in a traceback or did the
wrong thing silently, each provoked for real through ``classicnets.commands.main`` in-process.

Each answer is exactly one stderr line starting ``classicnets CMD:``, naming the problem and the fix, with
exit code 2 (bad input), and never a traceback. The tests run as root, so unwritable destinations are made
with an existing *file* in the way or a path under /proc, not with permissions.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch

from classicnets.commands import main


def cli(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str, command: str) -> str:
    """The single stderr line, checked to be ``classicnets COMMAND: ...`` and no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"classicnets {command}: "), err
    return lines[0]


@pytest.fixture(scope="module")
def run(trained) -> Path:
    """A real run of lenet5_modern on a greyscale image folder (4 classes, 32x32), written by ``fit``."""
    return trained("lenet5_modern-folder")


@pytest.fixture(scope="module")
def image(run: Path) -> Path:
    return next((run.parent.parent / "grey").rglob("*.png"))


# ------------------------------------------------------------------ 1. eval: the confusion PNG cannot be written
@pytest.mark.parametrize("where", ["a-file-in-the-way", "under-proc"])
def test_eval_prints_the_metrics_then_one_line_when_the_png_cannot_be_written(run, tmp_path, capsys, where):
    out = tmp_path / "not-a-folder" if where == "a-file-in-the-way" else Path("/proc/classicnets-no-such-dir")
    if where == "a-file-in-the-way":
        out.write_text("")
    rc, stdout, err = cli(capsys, "eval", run / "best.pt", "--split", "val", "--out", out, "--device", "cpu")
    assert rc == 2
    assert stdout.startswith("val: ") and "top-1" in stdout  # the accuracies are printed, not lost
    assert all(f"  {c}" in stdout for c in ("cat", "dog", "frog", "ship"))  # per class too
    line = one_line(err, "eval")
    assert f"could not write the confusion matrix {out / 'confusion_val.png'}" in line
    assert "choose an --out folder you can write" in line and "accuracies above are complete" in line


# -------------------------------------------------------- 2. export: a suffix against --format, an unknown opset
@pytest.mark.parametrize("fmt, name, expected", [
    ("onnx", "x.safetensors", "does not end in .onnx, the suffix of the onnx format; name it x.onnx, or pass "
                              "--format safetensors"),
    ("safetensors", "x.onnx", "does not end in .safetensors"),
    ("onnx", "x.pt", "name it x.onnx"),
    ("torchscript", "x.onnx", "ends in .onnx, the suffix of the onnx format, but --format is torchscript; name it "
                              "x.torchscript.pt"),
    ("hf", "x.safetensors", "but --format is hf; name it x-hf"),
])  # fmt: skip
def test_export_refuses_a_suffix_that_contradicts_the_format(run, tmp_path, capsys, fmt, name, expected):
    rc, _, err = cli(capsys, "export", run / "best.pt", "--format", fmt, "--out", tmp_path / name, "--no-verify")
    assert rc == 2
    line = one_line(err, "export")
    assert expected in line.replace(" (files are read back by their suffix)", ""), line
    assert not (tmp_path / name).exists() and not list(tmp_path.iterdir())  # nothing written, no temp left


@pytest.mark.parametrize("opset", [3, 17, 1000])
def test_export_refuses_an_unsupported_opset_naming_the_range(run, tmp_path, capsys, opset):
    import onnx

    out = tmp_path / "m.onnx"
    rc, _, err = cli(capsys, "export", run / "best.pt", "--opset", opset, "--out", out, "--no-verify")
    assert rc == 2
    line = one_line(err, "export")
    assert f"ONNX opset {opset} is not supported" in line
    assert f"opsets 18 to {onnx.defs.onnx_opset_version()}" in line and "--opset" in line
    assert not out.exists()


def test_an_opset_the_exporter_would_not_write_is_never_silently_replaced(monkeypatch, tmp_path):
    """The safety net behind the range check: if the exporter writes another opset, the export is refused
    (the dynamo exporter writes opset 18 for any opset it cannot convert to, without an error)."""
    from classicnets import create_model, export

    monkeypatch.setattr(export, "onnx_opsets", lambda dynamo=True: (1, 1000))  # let 30 through the range check
    with pytest.raises(ValueError, match="wrote opset 18, not the opset 30 asked for"):
        export.export(create_model("lenet5_modern", num_classes=4), tmp_path / "m.onnx", opset=30)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------ 3. predict: an image declaring too many pixels
def png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1x1 greyscale PNG whose header declares ``width`` x ``height``: a few dozen bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.mark.parametrize("width, height", [(20_000, 5_000), (70_000, 1_000), (15_000, 15_000)])
def test_predict_refuses_an_image_declaring_too_many_pixels_before_decoding(run, tmp_path, capsys, width, height):
    huge = png_declaring(tmp_path / "huge.png", width, height)
    assert huge.stat().st_size < 100
    rc, stdout, err = cli(capsys, "predict", run / "best.pt", huge, "--device", "cpu")
    assert rc == 2 and stdout == ""
    line = one_line(err, "predict")
    if width * height < 2 * 89_478_485:
        assert f"{huge}: the image declares {width}x{height} = {width * height:,} pixels" in line
    else:  # PIL refuses to open past twice its warning threshold: the same line, its own bound
        assert f"{huge}: the image declares more than 178,956,970 pixels" in line
    assert "beyond the limit of 64,000,000 (64 megapixels); downscale it first" in line


def test_an_image_under_the_pixel_limit_is_still_read(run, image, capsys):
    rc, stdout, err = cli(capsys, "predict", run / "best.pt", image, "--device", "cpu")
    assert rc == 0 and err == "" and stdout.startswith(f"{image}: ")


# ------------------------------------------------------------------ 4. train: a run folder that cannot be made
def train_args(run: Path, tmp_path: Path, *extra) -> list:
    return ["train", "lenet5_modern", "--data", f"folder:{run.parent.parent / 'grey'}", "--epochs", "1",
            "--set", "image_size=32", "--no-progress", "--threads", "1", "--out-dir", tmp_path / "runs", *extra]  # fmt: skip


@pytest.mark.parametrize("where", ["under-proc", "a-file-in-the-way"])
def test_train_names_a_run_folder_that_cannot_be_created(run, tmp_path, capsys, where):
    if where == "under-proc":
        out_dir = Path("/proc/classicnets-no-such-dir")
    else:
        out_dir = tmp_path / "a-file"
        out_dir.write_text("")
    rc, _, err = cli(capsys, *train_args(run, tmp_path, "--out-dir", out_dir, "--name", "r"))
    assert rc == 2
    line = one_line(err, "train")
    assert f"cannot create the run directory {out_dir / 'r'}: " in line
    assert "choose an --out-dir you can write" in line


# -------------------------------------------------------------------------- 5. a device this machine lacks
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_cuda_without_cuda_is_one_line(run, image, tmp_path, capsys, command):
    argv = {"train": train_args(run, tmp_path), "eval": ["eval", run / "best.pt", "--split", "val"],
            "predict": ["predict", run / "best.pt", image]}[command]  # fmt: skip
    rc, _, err = cli(capsys, *argv, "--device", "cuda")
    assert rc == 2
    line = one_line(err, command)
    assert "device 'cuda' requested but CUDA is not available here; use --device cpu" in line
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made


@pytest.mark.parametrize("device", ["tpu", "garbage!", "cuda:x", ""])
def test_an_unknown_device_is_one_line(run, tmp_path, capsys, device):
    rc, _, err = cli(capsys, *train_args(run, tmp_path, "--device", device))
    assert rc == 2
    line = one_line(err, "train")
    assert f"unknown device {device!r}; use auto, cpu, cuda or cuda:N" in line


def test_the_device_check_reaches_the_user_through_train_config(run, tmp_path, capsys):
    """``--set device=...`` goes through train_config's --set parsing, then the same one line."""
    rc, _, err = cli(capsys, *train_args(run, tmp_path, "--set", "device=tpu"))
    assert rc == 2
    assert "unknown device 'tpu'" in one_line(err, "train")


# ------------------------------------------------- 6. a checkpoint whose tensors contradict its model
@pytest.fixture(scope="module")
def mismatched(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of a real checkpoint with one tensor's shape changed, saved through the real save path (so its
    checksum is valid: only the shapes are wrong)."""
    from classicnets.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "best.pt")
    key = next(k for k, v in state["model"].items() if v.dim() == 4)  # the first conv's weight
    state["model"][key] = torch.zeros(state["model"][key].shape[0] + 1, *state["model"][key].shape[1:])
    path = tmp_path_factory.mktemp("mismatch") / "edited.pt"
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version", "checksum")})
    return path, key


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_checkpoint_whose_tensors_do_not_fit_its_model_is_one_line(mismatched, image, tmp_path, capsys, command):
    path, key = mismatched
    argv = {"eval": ["eval", path, "--split", "val", "--out", tmp_path], "predict": ["predict", path, image],
            "export": ["export", path, "--out", tmp_path / "m.onnx"]}[command]  # fmt: skip
    rc, stdout, err = cli(capsys, *argv)
    assert rc == 2 and stdout == ""
    line = one_line(err, command)
    assert f"{path}: its weights do not fit a lenet5_modern" in line
    assert f"size mismatch for {key}" in line  # the mismatch itself, not only "Error(s) in loading"
    assert "use the checkpoint its run wrote" in line
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------- 7. absurd sizes: no memory blow-up
@pytest.mark.parametrize("argv, expected", [
    (["summary", "resnet20", "--num-classes", "10000000000"],
     "num_classes=10,000,000,000 is beyond the sane limit of 1,000,000"),
    (["summary", "lenet5", "--num-classes", "1000001"], "num_classes=1,000,001 is beyond the sane limit"),
    (["summary", "resnet20", "--input-size", "100000x32x32"], "in_chans=100,000 is beyond the sane limit of 4,096"),
    (["summary", "resnet20", "--num-classes", "0"], "num_classes must be a positive integer, got 0"),
])  # fmt: skip
def test_summary_refuses_absurd_sizes(capsys, argv, expected):
    rc, stdout, err = cli(capsys, *argv)
    assert rc == 2 and stdout == ""
    assert expected in one_line(err, "summary")


@pytest.mark.parametrize("value, expected", [
    ("{num_classes: 10000000000}", "model_kwargs may not set num_classes=10000000000"),
    ("{in_chans: 10000000000}", "model_kwargs may not set in_chans=10000000000"),
    ("{widen: 100000000}", "unexpected keyword argument 'widen'"),
])  # fmt: skip
def test_train_refuses_absurd_model_kwargs(run, tmp_path, capsys, value, expected):
    rc, _, err = cli(capsys, *train_args(run, tmp_path, "--set", f"model_kwargs={value}"))
    assert rc == 2
    assert expected in one_line(err, "train")


def test_create_model_refuses_a_net_past_the_parameter_limit_without_allocating_it():
    """vgg16 with 900,000 classes fits the class bound but would be 3.8e9 parameters (15 GB): sized on the
    meta device and refused in milliseconds."""
    import resource
    import time

    from classicnets import create_model

    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ValueError, match=r"would have 3,821,560,544 parameters, beyond the sane limit of "
                                         r"2,000,000,000; use smaller options"):  # fmt: skip
        create_model("vgg16", num_classes=900_000)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: under 0.5 GB grown
