"""The benchmarks compare like with like: the standard-recipe data path (torchvision-style PIL transforms
in a DataLoader, benchmarks/_common.py) yields the same tensors as classicnets' InMemoryLoader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torchvision  # noqa: E402,F401  (a dependency: the baseline networks and transforms)

from classicnets.data import ArrayDataset, InMemoryLoader  # noqa: E402

import _common  # noqa: E402


@pytest.mark.parametrize("shape, pad_to", [((1, 28, 28), 32), ((3, 32, 32), None)])
def test_standard_loader_matches_in_memory_loader(shape: tuple[int, int, int], pad_to: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (12,), generator=g)
    mean, std = (0.3,) * shape[0], (0.2,) * shape[0]
    standard = _common.standard_loader(images, labels, 12, pad_to=pad_to, crop_padding=0, hflip=False,
                                       mean=mean, std=std, num_workers=0, shuffle=False)
    fast = InMemoryLoader(ArrayDataset(images, labels), 12, shuffle=False, mean=mean, std=std, pad_to=pad_to)
    (xs, ys), (xf, yf) = next(iter(standard)), next(iter(fast))
    assert xs.shape == xf.shape
    torch.testing.assert_close(xs, xf, rtol=0, atol=1e-5)
    assert torch.equal(ys, yf)


def test_standard_transform_augments_like_torchvision_recipe() -> None:
    """Pad, RandomCrop(padding) and RandomHorizontalFlip are all there when asked for."""
    t = _common.standard_transform(32, 2, True, (0.5,), (0.5,), 28)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["Pad", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]


@pytest.mark.parametrize("name, kwargs, in_chans", [("resnet18", {"stem": "cifar"}, 1), ("alexnet", {}, 3)])
def test_standard_model_is_the_same_network(name: str, kwargs: dict, in_chans: int) -> None:
    """The baseline trains the same architecture: torchvision's network loads classicnets' weights strictly
    and computes the same function (so any speed difference is the recipe, not the net)."""
    from classicnets import create_model

    torch.manual_seed(0)
    ours = create_model(name, num_classes=10, in_chans=in_chans, **kwargs).eval()
    theirs = _common.standard_model(name, 10, in_chans, **kwargs).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    size = 32 if name == "resnet18" else 224
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


@pytest.mark.processes
def test_time_to_accuracy_script_runs_both_paths(tmp_path: Path) -> None:
    """The benchmark itself keeps working: both recipes train, evaluate and report (512 images, 1 epoch)."""
    import json
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    out_json = tmp_path / "tta.json"
    cmd = [sys.executable, str(script), "--model", "lenet5_modern", "--seeds", "0", "--threads", "1",
           "--set", "subset=512", "--set", "epochs=1", "--target", "0.05", "--allocator", "glibc",
           "--json", str(out_json)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out_json.read_text())["summary"]
    for path in ("classicnets", "standard"):  # a target below chance (10%), so each path reports a time
        assert summary[path]["median_s"] is not None and summary[path]["median_s"] > 0, summary
    assert "speed-up:" in result.stdout


# ---------------------------------------------------------------------------------------------- CPU classes
AVX2_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2"  # an AVX2-only EPYC (Zen 2/3)
AVX512_FLAGS = AVX2_FLAGS + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"  # e.g. Skylake-SP
BF16_FLAGS = AVX512_FLAGS + " avx512_bf16"  # e.g. Zen 4, Cooper Lake
AMX_FLAGS = BF16_FLAGS + " amx_bf16 amx_tile amx_int8"  # e.g. Sapphire Rapids


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse sse2 ssse3 sse4_1 sse4_2 avx", "pre-AVX2"), (AVX2_FLAGS, "AVX2"), (AVX512_FLAGS, "AVX512"),
    (BF16_FLAGS, "AVX512-BF16"), (AMX_FLAGS, "AMX"), ("fp asimd evtstrm aes pmull sha1 sha2 crc32", "other"),
    ("avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16", "AVX2"),  # without the rest of AVX512: not trusted
])  # fmt: skip
def test_classify_cpu_from_flags(flags: str, expected: str) -> None:
    from classicnets.train.runtime import classify_cpu

    assert classify_cpu(flags) == expected


@pytest.mark.parametrize("aten, isa, expected", [
    ("AVX512", None, "AMX"), ("AVX2", None, "AVX2"), ("AVX2", "AVX2", "AVX2"), ("AVX512", "AVX2", "AVX2"),
    ("AVX512", "avx512_core", "AVX512"), ("AVX512", "AVX512_CORE_BF16", "AVX512-BF16"),
    ("AVX512", "AVX512_CORE_AMX", "AMX"), ("AVX512", "ALL", "AMX"), ("DEFAULT", None, "pre-AVX2"),
])  # fmt: skip
def test_classify_cpu_honours_the_emulation_caps(aten: str, isa: str | None, expected: str) -> None:
    """ATEN_CPU_CAPABILITY (what torch reports) and ONEDNN_MAX_CPU_ISA cap the class the flags give, so an
    AMX machine told to run AVX2 kernels does not autocast to bf16 it would then emulate."""
    from classicnets.train.runtime import classify_cpu

    assert classify_cpu(AMX_FLAGS, aten, isa) == expected


@pytest.mark.parametrize("cls, native", [("pre-AVX2", False), ("AVX2", False), ("AVX512", False),
                                         ("AVX512-BF16", True), ("AMX", True), ("other", False)])
def test_amp_auto_is_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch, cls: str, native: bool) -> None:
    from classicnets.train import runtime

    monkeypatch.setattr(runtime, "cpu_class", lambda: cls)
    cpu = torch.device("cpu")
    assert runtime.amp_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert runtime.amp_dtype("bf16", cpu) == torch.bfloat16  # asked for explicitly: always honoured
    assert runtime.amp_dtype("off", cpu) is None
    assert runtime.device_class(cpu) == f"CPU class {cls}"


@pytest.mark.processes
def test_avx2_emulation_reads_as_avx2_and_turns_bf16_off() -> None:
    """On any x86 CPU with AVX2 or more, the documented emulation (benchmarks/README.md) reads as AVX2 and
    ``amp: auto`` trains in fp32 there."""
    import os
    import subprocess

    code = ("import torch; from classicnets.train.runtime import cpu_class, amp_dtype; "
            "print(torch.backends.cpu.get_cpu_capability(), cpu_class(), amp_dtype('auto', torch.device('cpu')))")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    capability, cls, amp = out.stdout.split()
    from classicnets.train.runtime import cpu_class

    if cpu_class() in ("AVX2", "AVX512", "AVX512-BF16", "AMX"):
        assert (capability, cls, amp) == ("AVX2", "AVX2", "None")
    else:  # below AVX2 or not x86: the caps never raise the class
        assert cls == cpu_class() and amp == "None"


@pytest.mark.processes
def test_throughput_script_prints_the_class_first_and_is_time_boxed() -> None:
    """benchmarks/throughput.py names the CPU class on its first line and times each repeat by a time box
    (a slow CPU runs fewer steps instead of running longer)."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    cmd = [sys.executable, str(script), "--models", "resnet20", "--quick", "--repeats", "1", "--seconds", "0.05",
           "--threads", "1", "--allocator", "glibc"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    from classicnets.train.runtime import device_class

    assert lines[0] == f"# {device_class('cpu')}"
    assert any("0.05 s x 1 repeats" in line for line in lines), out.stdout
    rows = [line.split() for line in lines if line.startswith("resnet20 ")]
    assert [r[1] for r in rows] == ["standard", "classicnets"] and all(float(r[2].replace(",", "")) > 0 for r in rows)


@pytest.mark.parametrize("cls, autocast", [("AVX2", False), ("AVX512-BF16", True)])
def test_run_header_names_the_cpu_class_and_amp_auto_follows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 cls: str, autocast: bool) -> None:
    """A training run's first line says which CPU class it ran on, and ``amp: auto`` autocasts only there
    (a real run of the engine, with the class as detected replaced)."""
    from classicnets.train import runtime
    from classicnets.train.config import config_from_dict
    from classicnets.train.engine import fit

    monkeypatch.setattr(runtime, "cpu_class", lambda: cls)
    lines: list[str] = []
    cfg = config_from_dict(dict(model="lenet5_modern", data="fashion-mnist", subset=256, epochs=1, batch_size=128,
                                threads=1, out_dir=str(tmp_path), tensorboard=False, name="run", progress=False))
    fit(cfg, log=lines.append)
    assert f"on cpu (CPU class {cls})" in lines[0], lines[0]
    assert ("bfloat16 autocast" in lines[0]) == autocast, lines[0]


def test_train_step_takes_a_forward_without_a_truth_value() -> None:
    """torch.compile's wrapper raises TypeError on len(), so ``forward or model`` broke every compiled step
    (`--compile`, throughput.py's compile variants); the step must call the wrapper it is given."""
    from torch import nn

    from classicnets.train.step import train_step

    class NoLen(nn.Module):  # what torch._dynamo's OptimizedModule does for a module without __len__
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.inner(x)

        def __len__(self) -> int:
            raise TypeError("no len()")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    forward = NoLen(model)
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    before = model[1].weight.detach().clone()
    train_step(model, opt, x, y, loss_fn=nn.CrossEntropyLoss(), forward=forward)
    assert forward.calls == 1 and not torch.equal(model[1].weight, before)
