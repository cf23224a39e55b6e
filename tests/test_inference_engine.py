"""``--engine onnxruntime`` for eval and predict: the same answers as the torch engine on real checkpoints
(written by ``fit``) and real image files, through the functions and the command line.

Tolerance: with the run's autocast off, both engines compute in float32 and differ only in the order of the
sums (MLAS vs oneDNN): the export check's 1e-4 + 1e-4 * max|logit| (classicnets.export.ATOL/RTOL, measured
differences ~1e-6) holds on every CPU; a prediction may only change where the top two logits are within
twice that (a tie). Under bf16 autocast (the default on AVX512-BF16/AMX CPUs) the torch engine is compared
only through the CLI's printed classes, on a checkpoint whose record says amp "off".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from classicnets.commands import main
from classicnets.export import ATOL, RTOL
from classicnets.inference import evaluate_checkpoint, onnx_cache_path, predict
from tests.conftest import rewrite_record

pytest.importorskip("onnxruntime", reason="the onnxruntime engine is optional")  # installed in the project venv


def _fp32_checkpoint(trained, tmp_path: Path, run: str) -> Path:
    """The run's best.pt with amp "off" in its record (real save path), so the torch engine runs in fp32."""
    return rewrite_record(trained(run) / "best.pt", tmp_path / "fp32.pt", amp="off")


def _images(ckpt: Path) -> list[Path]:
    from classicnets.inference import load_trained

    folder = Path(load_trained(ckpt)[1].data[len("folder:") :])
    return sorted(folder.glob("*/*.png"))[::3]  # files of every class


@pytest.mark.parametrize("run", ["resnet20-folder", "lenet5_modern-folder"])
def test_eval_engines_agree_in_fp32(trained, tmp_path: Path, run: str) -> None:
    ckpt = _fp32_checkpoint(trained, tmp_path, run)
    ref = evaluate_checkpoint(ckpt, split="val", device="cpu", plot=False, engine="torch")
    ort = evaluate_checkpoint(ckpt, split="val", device="cpu", plot=False, engine="onnxruntime")
    tol = ATOL + RTOL * float(ref["logits"].abs().max())
    assert ref["n"] == ort["n"] > 0
    assert float((ort["logits"] - ref["logits"]).abs().max()) <= tol
    top2 = ref["logits"].topk(2, 1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * tol
    assert torch.equal(ort["pred"][decided], ref["pred"][decided])
    assert abs(ort["acc"] - ref["acc"]) <= float((~decided).sum()) / ref["n"]


def _parse(stdout: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """``image: class p%, class p%`` lines -> (image, [(class, percent), ...])."""
    out = []
    for line in stdout.strip().splitlines():
        image, tops = line.rsplit(": ", 1)
        out.append((image, [(m[1], float(m[2])) for m in re.finditer(r"(\S+) ([\d.]+)%", tops)]))
    return out


def test_cli_predict_engines_agree(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _fp32_checkpoint(trained, tmp_path, "resnet20-folder")
    images = [str(p) for p in _images(ckpt)]
    answers = {}
    for engine in ("torch", "onnxruntime"):
        assert main(["predict", str(ckpt), *images, "--topk", "4", "--engine", engine, "--device", "cpu"]) == 0
        answers[engine] = _parse(capsys.readouterr().out)
    assert [a[0] for a in answers["torch"]] == images
    for (_, ref), (_, got) in zip(answers["torch"], answers["onnxruntime"]):
        # fp32 logits within 1e-4 move a printed percentage (0.1% steps) by at most one rounding step
        assert sorted(c for c, _ in ref) == sorted(c for c, _ in got)
        ref_p, got_p = dict(ref), dict(got)
        assert all(abs(ref_p[c] - got_p[c]) <= 0.1 + 1e-9 for c in ref_p)
        if ref[0][1] - ref[1][1] > 0.2:  # not a tie at the printed precision: the same top class
            assert ref[0][0] == got[0][0]


def test_export_is_cached_outside_the_run_folder(trained, tmp_path: Path) -> None:
    ckpt = _fp32_checkpoint(trained, tmp_path, "lenet5_modern-folder")
    before = set(tmp_path.iterdir())
    image = _images(ckpt)[:1]
    first = predict(ckpt, image, device="cpu", engine="onnxruntime")
    from classicnets.inference import load_trained

    cached = onnx_cache_path(ckpt, load_trained(ckpt)[1].input_size)
    assert cached.is_file() and set(tmp_path.iterdir()) == before  # nothing written beside the checkpoint
    stamp = cached.stat().st_mtime_ns
    assert predict(ckpt, image, device="cpu", engine="onnxruntime") == first
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    retrained = rewrite_record(ckpt, tmp_path / "other.pt", seed=123)  # other bytes: another cache entry
    assert onnx_cache_path(retrained, load_trained(ckpt)[1].input_size) != cached


def test_unknown_engine_is_one_clear_line(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = trained("lenet5_modern-folder") / "best.pt"
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'; choose --engine torch or --engine onnxruntime"):
        predict(ckpt, _images(ckpt)[:1], engine="tensorrt")
    with pytest.raises(ValueError, match="unknown engine"):
        evaluate_checkpoint(ckpt, engine="ort", plot=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(ckpt), "--engine", "tensorrt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # argparse's one line; Python 3.12+ quotes the choices
    assert "argument --engine: invalid choice: 'tensorrt' (choose from " in err and "onnxruntime" in err


def test_missing_onnxruntime_names_the_package(trained, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import sys

    ckpt = trained("lenet5_modern-folder") / "best.pt"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when it is not installed
    assert main(["predict", str(ckpt), str(_images(ckpt)[0]), "--engine", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("classicnets predict: error: --engine onnxruntime needs the onnxruntime package (pip install onnx "
                   "onnxruntime); or use --engine torch")  # fmt: skip


def test_serve_predictions_in_onnxruntime_match_torch(trained, tmp_path: Path) -> None:
    """The web app's predictor with engine="onnxruntime" against the torch one on the same upload (fp32 record:
    logits within ATOL + RTOL * max|logit|, so each probability within twice that, softmax being 1-Lipschitz
    per logit in max-norm up to a factor 2, plus the 1e-6 rounding of the answer)."""
    from classicnets.inference import load_trained
    from classicnets.serve import ServeConfig, create_app
    from classicnets.serve.catalog import Catalog
    from classicnets.serve.engine import ModelCache
    from classicnets.serve.views import predict as serve_predict

    (tmp_path / "runs" / "r").mkdir(parents=True)
    ckpt = rewrite_record(trained("resnet20-folder") / "best.pt", tmp_path / "runs" / "r" / "best.pt", amp="off")
    (entry,) = Catalog(tmp_path / "runs", weights=()).entries()
    scale = 0.0
    with torch.no_grad():
        model, record = load_trained(ckpt)
        for image in _images(ckpt):
            scale = max(scale, float(model(record.preprocessing.image(image)[None]).abs().max()))
    tol = 2 * (ATOL + RTOL * scale) + 1e-6
    torch_loaded = ModelCache(replicas=1).get(entry)
    ort_loaded = ModelCache(replicas=1, engine="onnxruntime").get(entry)
    assert torch_loaded.fast is None and ort_loaded.fast is not None
    for image in _images(ckpt):
        ref = serve_predict(torch_loaded, image.read_bytes())["top"]
        got = serve_predict(ort_loaded, image.read_bytes())["top"]
        ref_p, got_p = {t["class"]: t["prob"] for t in ref}, {t["class"]: t["prob"] for t in got}
        assert ref_p.keys() == got_p.keys() and all(abs(ref_p[c] - got_p[c]) <= tol for c in ref_p)
        if ref[0]["prob"] - ref[1]["prob"] > 2 * tol:
            assert ref[0]["class"] == got[0]["class"]
    with pytest.raises(ValueError, match="unknown engine 'tvm'; choose --engine torch or --engine onnxruntime"):
        create_app(ServeConfig(runs_dir=tmp_path / "runs", weights=(), engine="tvm"))


def test_torch_engine_runs_channels_last_with_the_same_logits(trained, tmp_path: Path) -> None:
    """eval/predict run the torch model in channels_last (benchmarks/inference.py: faster than NCHW); in fp32
    only the order of the sums changes, so the logits match NCHW's within the export tolerance."""
    from classicnets.inference import load_engine, load_trained

    ckpt = _fp32_checkpoint(trained, tmp_path, "resnet20-folder")
    model, record, amp = load_engine(ckpt, "torch", "cpu")
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert amp is None and convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    nchw, _ = load_trained(ckpt)
    x = torch.stack([record.preprocessing.image(p) for p in _images(ckpt)])
    with torch.no_grad():
        ref, got = nchw(x), model(x)
    assert float((got - ref).abs().max()) <= ATOL + RTOL * float(ref.abs().max())
