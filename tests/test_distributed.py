"""DistributedDataParallel under a real `torchrun` (2 CPU processes, gloo over loopback)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from classicnets.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.processes  # every test here runs real processes

PY = sys.executable
REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON = ["lenet5_modern", "--data", "fashion-mnist", "--subset", "1000", "--batch-size", "128", "--lr", "0.05",
          "--no-amp", "--threads", "1", "--no-progress", "--set", "tensorboard=false"]  # fmt: skip


def torchrun_cmd(*args: str, nproc: int = 2, max_restarts: int = 0) -> list[str]:
    return [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "classicnets", *args]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}  # this checkout's classicnets


def torchrun(*args: str, cwd: Path, nproc: int = 2, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(torchrun_cmd(*args, nproc=nproc), capture_output=True, text=True, timeout=600, cwd=cwd, env=ENV)
    assert (result.returncode == 0) == ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_processes_train_checkpoint_and_resume(tmp_path: Path) -> None:
    out = torchrun("train", *COMMON, "--epochs", "2", "--name", "ddp", cwd=tmp_path)
    run = tmp_path / "runs" / "ddp"
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"]), "the DDP wrapper was saved"
    # rank 0 alone logs: one header + one line per epoch, no duplicated rows
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert out.stdout.count("epoch   1/2") == 1 and "2 processes" in out.stdout
    # resume the distributed run for two more epochs
    torchrun("train", "--resume", str(run), "--epochs", "4", cwd=tmp_path)
    assert load_checkpoint(run / "last.pt")["epoch"] == 4
    assert [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv"))] == ["1", "2", "3", "4"]


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    """Same global batch, same seed: the 2-process run sees the same batches (each rank half of each), and
    DDP averages the two half-batch gradients, which equals the full-batch gradient for a net without
    BatchNorm. What remains is float32 summation order: measured 1.5e-8 after 1 epoch, asserted < 1e-5."""
    torchrun("train", *COMMON, "--epochs", "1", "--name", "two", cwd=tmp_path)
    torchrun("train", *COMMON, "--epochs", "1", "--name", "one", cwd=tmp_path, nproc=1)
    a = load_checkpoint(tmp_path / "runs" / "two" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "runs" / "one" / "last.pt")["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst  # measured: 1.5e-8
    for name in ("one", "two"):  # ceil(1000 / 128) = 8 global steps either way
        assert load_checkpoint(tmp_path / "runs" / name / "last.pt")["step"] == 8


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid``, read from /proc (Linux)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _worker_of_rank(torchrun_pid: int, rank: int) -> int | None:
    for pid in _children(torchrun_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the workers through /proc (Linux)")
def test_elastic_restart_continues_from_last_commit(tmp_path: Path) -> None:
    """torchrun --max-restarts 1: SIGKILL the rank-1 worker after epoch 1 committed (during epoch 2); torchrun
    restarts the group with the same command line, the new workers find runs/el/last.pt and continue from it
    on their own, and the run ends with exactly the weights of an uninterrupted 2-process run."""
    args = ["train", *COMMON, "--epochs", "3", "--deterministic"]
    torchrun(*args, "--name", "straight", cwd=tmp_path)
    run = tmp_path / "runs" / "el"
    proc = subprocess.Popen(torchrun_cmd(*args, "--name", "el", max_restarts=1), cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline, epoch, victim = time.monotonic() + 120, 0, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                epoch = load_checkpoint(run / "last.pt")["epoch"] if (run / "last.pt").is_file() else 0
            except (CheckpointError, OSError):  # (last.pt is replaced atomically; belt and braces)
                epoch = 0
            if epoch >= 1:
                victim = _worker_of_rank(proc.pid, 1)
                break
            time.sleep(0.02)
        assert victim is not None and epoch < 3, f"no rank-1 worker to kill (epoch {epoch}, exit {proc.poll()})"
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "torchrun restart 1: continuing" in out, out  # (killed in epoch 2, or 3 on a slow machine)
    assert "resuming after epoch 1 " in out or "resuming after epoch 2 " in out, out
    assert [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv"))] == ["1", "2", "3"]
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp_path / "runs" / "straight" / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 24)
    assert a["model"].keys() == b["model"].keys()
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_elastic_refuses_a_run_without_name_and_cpu_sync_bn(tmp_path: Path) -> None:
    """One line each, before anything is written: a default name would differ per torchrun attempt, and
    PyTorch's SyncBatchNorm does not run on CPU tensors (gloo)."""
    out = subprocess.run(torchrun_cmd("train", *COMMON, "--epochs", "1", max_restarts=1), capture_output=True,
                         text=True, timeout=300, check=False, cwd=tmp_path, env=ENV)  # fmt: skip
    assert out.returncode != 0
    assert "classicnets train: error: elastic runs need --name so a restarted group finds its run" in out.stderr
    out = torchrun("train", *COMMON, "--epochs", "1", "--name", "sb", "--set", "sync_bn=true", cwd=tmp_path, ok=False)
    assert "classicnets train: error: sync_bn=true needs CUDA" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_torchrun_with_cuda_on_a_machine_without_it_is_one_line_per_rank(tmp_path: Path) -> None:
    """Each rank refuses before touching CUDA: one line each, no traceback (it was a traceback per rank)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be provoked")  # CI machines have none
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "classicnets", "train",
           *COMMON, "--epochs", "1", "--device", "cuda", "--name", "nocuda"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    lines = [line for line in result.stderr.splitlines() if line.startswith("classicnets train: error:")]
    assert result.returncode != 0 and len(lines) == 2, result.stderr[-3000:]
    assert all("CUDA is not available here; use --device cpu" in line for line in lines)
    # torchrun then prints its own summary of the failed workers (its traceback, in run.py); no frame of ours
    assert 'classicnets/' not in "".join(line for line in result.stderr.splitlines() if line.lstrip().startswith("File "))
