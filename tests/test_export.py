"""Export round trips on real models: ONNX through onnxruntime, TorchScript, safetensors, checkpoints, CLI."""

from __future__ import annotations

import argparse
import warnings
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from classicnets import create_model
from classicnets.checkpoint import model_from_checkpoint
from classicnets.commands.export import register
from classicnets.data.folder import IMAGENET_MEAN
from classicnets.export import (
    ExportVerificationError,
    export,
    export_checkpoint,
    model_from_safetensors,
    read_metadata,
    verify_onnx,
    verify_torchscript,
)
from classicnets.models.base import ClassicNet
from conftest import FOLDER_CLASSES, rewrite_record


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _model(name: str, **kwargs) -> nn.Module:
    """A model whose logits are spread out, so top-1 agreement is a real check (not a pick among ties).

    LeNet-5's paper init gives near-zero F6 outputs, hence RBF logits all within 0.01 of -84.
    """
    model = create_model(name, **kwargs).eval()
    if name == "lenet5":
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)
    return model


def _images(model: nn.Module, batch: int, size: tuple[int, int, int] | None = None) -> torch.Tensor:
    return torch.rand(batch, *(size or model.default_input_size)) * 2 - 1


@pytest.fixture
def checkpoint(trained, tmp_path):
    """``checkpoint(path, name)`` -> (model, path): the best.pt of a real 1-epoch run on a 4-class image folder
    (resnet20 with shortcut B on RGB, or a faster to export 1-channel LeNet-5), copied to ``path``."""

    def make(path, name: str = "resnet20", **record_changes) -> tuple[nn.Module, object]:
        run = trained("resnet20-folder" if name == "resnet20" else "lenet5_modern-folder")
        path = rewrite_record(run / "best.pt", path, **record_changes)
        if record_changes:
            return None, path
        model, _, _ = model_from_checkpoint(path)
        return model.eval(), path

    return make


# -------------------------------------------------------------------------------------------- ONNX


# resnet18 at 64x64 keeps the test quick; the graph is the same apart from the fixed spatial size.
ONNX_CASES = {"lenet5": None, "resnet20": None, "resnet18": (3, 64, 64)}


@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each model exported once for the module: name -> (model, path, input size)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, size in ONNX_CASES.items():
        model = _model(name)
        meta = {"classes": [f"c{i}" for i in range(model.num_classes)]}
        path = export(model, folder / f"{name}.onnx", input_size=size, metadata=meta)
        out[name] = (model, path, size or model.default_input_size)
    return out


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_onnx_round_trip_dynamic_batch(onnx_exports, name: str) -> None:
    model, path, size = onnx_exports[name]
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch axis
    meta = read_metadata(path)
    assert meta["model_name"] == name and meta["input_size"] == list(size) and meta["classes"][0] == "c0"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = _images(model, batch, size)
        report = verify_onnx(model, path, x)
        assert report["batch_size"] == batch and report["top1_agreement"] == 1.0
        assert report["max_abs_diff"] <= report["tolerance"]
        out = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert out.shape == (batch, model.num_classes)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
        assert (out.argmax(1) == ref.argmax(1)).all()
        assert np.ptp(ref, axis=1).min() > 100 * report["tolerance"] or name != "lenet5"  # a meaningful check


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_legacy_exporter_and_input_size(tmp_path) -> None:
    model = _model("lenet5_modern")
    path = export(model, tmp_path / "legacy.onnx", dynamo=False, input_size=(40, 48))
    assert read_metadata(path)["input_size"] == [1, 40, 48]
    for batch in (2, 3):
        assert verify_onnx(model, path, _images(model, batch, (1, 40, 48)))["top1_agreement"] == 1.0


def test_verify_onnx_catches_a_wrong_model(onnx_exports) -> None:
    model, path, _ = onnx_exports["resnet20"]
    other = _model("resnet20")  # different random weights
    with pytest.raises(ExportVerificationError, match="disagrees with PyTorch: max abs diff"):
        verify_onnx(other, path, _images(model, 4))


def test_export_argument_errors(tmp_path) -> None:
    model = _model("resnet20")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(model, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match="input_size has 1 channels but resnet20 takes 3"):
        export(model, tmp_path / "m.onnx", input_size=(1, 32, 32))
    with pytest.raises(ValueError, match="too small for lenet5"):
        export(_model("lenet5"), tmp_path / "m.onnx", input_size=16)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        export(model, tmp_path / "nowhere" / "m.onnx")
    with pytest.raises(TypeError, match="classicnets model"):
        export(nn.Linear(2, 2), tmp_path / "m.onnx")


# ------------------------------------------------------------------------------------ TorchScript


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_torchscript_round_trip(tmp_path, name: str) -> None:
    model = _model(name)
    model.train()
    path = export(model, tmp_path / f"{name}.torchscript.pt", format="torchscript")
    assert model.training  # export restores the caller's mode
    report = verify_torchscript(model, path, _images(model, 3))
    assert report["max_abs_diff"] <= report["tolerance"] and report["top1_agreement"] == 1.0
    assert read_metadata(path)["torchscript"] == "script"
    with warnings.catch_warnings():  # torch.jit.load is deprecated upstream; classicnets' loaders silence it
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    bigger = torch.rand(2, model.in_chans, 64, 64)  # scripting keeps any input size ...
    with torch.no_grad():
        torch.testing.assert_close(loaded(bigger), model.eval()(bigger))
    with pytest.raises(Exception, match="channel"):  # ... and the input checks
        loaded(torch.rand(1, model.in_chans + 1, 32, 32))


class _Unscriptable(ClassicNet):
    """A net TorchScript cannot compile (a Fraction attribute), to exercise the trace fallback."""

    def __init__(self) -> None:
        super().__init__(num_classes=3, in_chans=1)
        self.default_input_size, self.min_input_size = (1, 8, 8), (8, 8)
        self.scale = Fraction(1, 2)
        self.fc = nn.Linear(64, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(self.scale)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_falls_back_to_trace(tmp_path) -> None:
    model = _Unscriptable().eval()
    with pytest.warns(UserWarning, match="fell back to torch.jit.trace"):
        path = export(model, tmp_path / "u.torchscript.pt", format="torchscript")
    assert read_metadata(path)["torchscript"] == "trace"
    assert verify_torchscript(model, path, torch.rand(4, 1, 8, 8))["top1_agreement"] == 1.0


# ------------------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_with_metadata(tmp_path) -> None:
    model = _model("lenet5")
    meta_in = {"classes": list("0123456789"), "mean": (0.1307,), "std": (0.3081,)}
    path = export(model, tmp_path / "lenet5.safetensors", format="safetensors", metadata=meta_in)
    rebuilt, meta = model_from_safetensors(path)
    assert meta["model_name"] == "lenet5" and meta["model_kwargs"] == {"num_classes": 10, "in_chans": 1}
    assert meta["classes"] == list("0123456789") and meta["mean"] == [0.1307] and meta["std"] == [0.3081]
    own, theirs = model.state_dict(), rebuilt.state_dict()
    assert own.keys() == theirs.keys() and all(torch.equal(own[k], theirs[k]) for k in own)
    x = _images(model, 2)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


# ------------------------------------------------------------------------------------- checkpoints


def test_export_checkpoint_carries_kwargs_classes_and_normalisation(tmp_path, checkpoint) -> None:
    model, ckpt = checkpoint(tmp_path / "best.pt")
    out = export_checkpoint(ckpt, "safetensors")
    assert out == tmp_path / "best.safetensors"
    rebuilt, meta = model_from_safetensors(out)
    assert rebuilt.shortcut == "B" and meta["model_kwargs"] == {"num_classes": 4, "in_chans": 3, "shortcut": "B"}
    assert meta["classes"] == list(FOLDER_CLASSES) and meta["mean"] == list(IMAGENET_MEAN)
    assert meta["input_size"] == [3, 32, 32] and meta["preprocessing"]["kind"] == "folder"
    x = _images(model, 2)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))

    ts = export_checkpoint(ckpt, "torchscript", out=tmp_path / "deploy.pt")
    assert ts == tmp_path / "deploy.pt" and read_metadata(ts)["classes"][0] == "cat"
    assert verify_torchscript(model, ts, x)["top1_agreement"] == 1.0


def test_export_checkpoint_errors(tmp_path, checkpoint) -> None:
    _, ckpt = checkpoint(tmp_path / "unknown.pt", model="resnet9000")
    with pytest.raises(ValueError, match="model 'resnet9000', which this version of classicnets does not know"):
        export_checkpoint(ckpt, "onnx")
    _, good = checkpoint(tmp_path / "good.pt")
    with pytest.raises(ValueError, match="would overwrite the checkpoint"):
        export_checkpoint(good, "torchscript", out=good)
    with pytest.raises(ValueError, match="unknown export format"):
        export_checkpoint(good, "coreml")
    (tmp_path / "torn.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        export_checkpoint(tmp_path / "torn.pt", "onnx")


# --------------------------------------------------------------------------------------------- CLI


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="classicnets")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_handler_exports_and_verifies_onnx(tmp_path, capsys, checkpoint) -> None:
    model, ckpt = checkpoint(tmp_path / "best.pt", "lenet5_modern")
    inputs = tmp_path / "x.npy"
    np.save(inputs, _images(model, 3).numpy())
    assert _run_cli(["export", str(ckpt), "--inputs", str(inputs)]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'best.onnx'} (onnx" in out
    assert "verified with onnxruntime on inputs from" in out and "max abs diff" in out
    assert "top-1 agreement 100.0%" in out

    assert _run_cli(["export", str(ckpt), "--format", "safetensors", "--out", str(tmp_path / "w.safetensors")]) == 0
    assert "bit-identical" in capsys.readouterr().out
    assert _run_cli(["export", str(ckpt), "--format", "torchscript", "--no-verify"]) == 0
    assert "verified" not in capsys.readouterr().out and (tmp_path / "best.torchscript.pt").is_file()

    ts = tmp_path / "big.torchscript.pt"
    assert _run_cli(["export", str(ckpt), "--format", "torchscript", "--input-size", "40x48", "--out", str(ts),
                     "--verify-batch", "2"]) == 0  # fmt: skip
    assert read_metadata(ts)["input_size"] == [1, 40, 48] and "on 2 random inputs" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--verify-batch must be at least 1"):
        _run_cli(["export", str(ckpt), "--format", "torchscript", "--verify-batch", "0"])
    with pytest.raises(SystemExit):  # argparse rejects a malformed size itself
        _run_cli(["export", str(ckpt), "--input-size", "big"])
    assert "input size must look like CxHxW" in capsys.readouterr().err

    np.save(inputs, np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 32, 32\); the export takes \(B, 1, 32, 32\)"):
        _run_cli(["export", str(ckpt), "--format", "torchscript", "--inputs", str(inputs), "--force"])


def test_cli_main_wiring(tmp_path, capsys, checkpoint) -> None:
    """Through ``classicnets.commands.main``: the export command is registered and answers errors cleanly."""
    from classicnets import commands as cli

    choices = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "export" in choices
    _, ckpt = checkpoint(tmp_path / "best.pt")
    assert cli.main(["export", str(ckpt), "--format", "torchscript"]) == 0
    assert "verified with TorchScript" in capsys.readouterr().out
    _, unknown = checkpoint(tmp_path / "unknown.pt", model="resnet9000")
    assert cli.main(["export", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "does not know" in err and "Traceback" not in err
