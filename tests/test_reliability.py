"""Nothing lost, nothing executed: real SIGKILLs, real full disks, corrupt checkpoints, diverging runs.

Every guarantee here is provoked for real where the machine allows it: training runs are separate
``classicnets`` processes killed with SIGKILL; a full disk is a small tmpfs filled to the last byte (when
this process may mount one, else ENOSPC is injected at the fsync every write goes through). The longest
sweep of kill points is in the slow suite: ``.venv/bin/python -m pytest -m slow tests/test_reliability.py``.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import http.server
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from classicnets.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from classicnets.train.config import config_from_dict
from classicnets.train.engine import TrainingError, fit

BIN = Path(sys.executable).parent / "classicnets"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A small deterministic run that still exercises the RNG on resume (random crops and flips), 4 epochs of
# 16 steps; the test set evaluation at the end makes result.json comparable too.
TRAIN = ["train", "lenet5_modern", "--data", "fashion-mnist", "--epochs", "4", "--subset", "1024", "--batch-size",
         "64", "--threads", "1", "--no-progress", "--deterministic", "--set", "val_fraction=0.02", "--set",
         "tensorboard=false", "--set", "crop_padding=2", "--set", "hflip=true"]  # fmt: skip
SAME_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]  # not the timings


def train_args(out: Path, name: str, *extra: str) -> list[str]:
    return [*TRAIN, "--out-dir", str(out), "--name", name, *extra]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.is_file() else []


def assert_same_run(got: Path, want: Path) -> None:
    """Bit-identical weights and optimizer state, identical metrics rows, result and best checkpoint."""
    a, b = load_checkpoint(got / "last.pt"), load_checkpoint(want / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"last.pt model tensor {key} differs"
    for idx, state in b["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(a["optimizer"]["state"][idx][name], tensor), f"optimizer state {idx}.{name} differs"
    best_a, best_b = load_checkpoint(got / "best.pt"), load_checkpoint(want / "best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(best_a["model"][k], v) for k, v in best_b["model"].items()), "best.pt differs"
    assert [[r[c] for c in SAME_COLUMNS] for r in metrics(got)] == [[r[c] for c in SAME_COLUMNS] for r in metrics(want)]
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (got, want))
    assert {k: ra[k] for k in ("test_acc", "best_epoch", "best_val_acc", "steps")} == \
           {k: rb[k] for k in ("test_acc", "best_epoch", "best_val_acc", "steps")}  # fmt: skip
    assert not list(got.glob(".*.tmp")), "half-written files left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    from classicnets.commands import main

    out = tmp_path_factory.mktemp("reference")
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:  # in this process (the same code path as the console script, without a second torch import)
        assert main(train_args(out, "straight")) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return out / "straight"


def resume(run: Path) -> subprocess.CompletedProcess:
    result = cli("train", "--resume", str(run), "--threads", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


# ---------------------------------------------------------------------------------------------- killed mid-run
def kill_during_run(out: Path, name: str, after_epoch: int, delay: float) -> int:
    """Start a run, wait until metrics.csv shows ``after_epoch`` epochs, wait ``delay`` s more, SIGKILL it.

    Returns the epoch of the last.pt the kill left behind (0: none yet)."""
    run = out / name
    proc = subprocess.Popen([str(BIN), *train_args(out, name)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=ENV)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while len(metrics(run)) < after_epoch and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (rc {proc.returncode}): {err}"
    if not (run / "last.pt").exists():
        return 0
    return load_checkpoint(run / "last.pt")["epoch"]  # never corrupt, whatever the moment of the kill


def check_kill_and_resume(reference: Path, out: Path, after_epoch: int, delay: float) -> None:
    name = "killed"
    epoch = kill_during_run(out, name, after_epoch, delay)
    assert epoch >= after_epoch - 1  # epoch k's metrics row is written just before its last.pt
    if epoch == 0:  # killed before the first checkpoint: the same command starts it again
        result = cli(*train_args(out, name))
        assert result.returncode == 0, result.stderr
    else:
        assert f"resuming after epoch {epoch} " in resume(out / name).stdout
    assert_same_run(out / name, reference)


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_weights(reference: Path, tmp_path: Path) -> None:
    # Killed at a (seeded) random moment of epoch 2: the resume restarts epoch 2 from the end of epoch 1.
    delay = random.Random(7).uniform(0, _epoch_seconds(reference))
    check_kill_and_resume(reference, tmp_path, after_epoch=1, delay=delay)


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("after_epoch", [0, 1, 2, 3])
@pytest.mark.parametrize("draw", range(3))
def test_sigkill_sweep(reference: Path, tmp_path: Path, after_epoch: int, draw: int) -> None:
    """Kill points across the whole run: during start-up, every epoch, every checkpoint write."""
    seconds = 3.0 if after_epoch == 0 else _epoch_seconds(reference)
    delay = random.Random(f"{after_epoch}-{draw}").uniform(0, 1.3 * seconds)
    check_kill_and_resume(reference, tmp_path, after_epoch, delay)


def _epoch_seconds(run: Path) -> float:
    rows = metrics(run)
    return sum(float(r["seconds"]) for r in rows) / len(rows)


# A SIGKILL at an exact point of the end-of-epoch sequence (best.pt, metrics row, last.pt), delivered by the
# process to itself: the windows a random kill rarely hits.
HOOK = textwrap.dedent("""
    import os, signal, sys
    import classicnets.checkpoint as checkpoint
    import classicnets.train.engine as engine
    from classicnets.commands import main

    where, epoch = sys.argv[1], int(sys.argv[2])
    save, replace = engine._save, checkpoint.os.replace

    def hooked_save(path, state):
        if where == f"before {path.name}" and state["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        save(path, state)
        # best.pt is only written when validation improves: the first such epoch from ``epoch`` on
        if where == f"after {path.name}" and (state["epoch"] == epoch or path.name == "best.pt" and state["epoch"] > epoch):
            os.kill(os.getpid(), signal.SIGKILL)

    class Os:  # os, except that replacing last.pt at that epoch dies first: the temp file is complete
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if where == "replacing last.pt" and str(dst).endswith("last.pt") and engine_epoch[0] == epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst)

    engine_epoch = [0]
    def counting_save(path, state):
        engine_epoch[0] = state["epoch"]
        hooked_save(path, state)

    engine._save = counting_save
    checkpoint.os = Os()
    sys.exit(main(sys.argv[3:]))
""")


def kill_at(out: Path, name: str, where: str, epoch: int) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", HOOK, where, str(epoch), *train_args(out, name)],
                            capture_output=True, text=True, timeout=300, env=ENV)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", [
    "after best.pt",  # the new best.pt written, its metrics row and last.pt not yet
    pytest.param("before last.pt", marks=pytest.mark.slow),  # best.pt and the metrics row written
    pytest.param("replacing last.pt", marks=pytest.mark.slow),  # the new last.pt complete in its temp file
    pytest.param("after last.pt", marks=pytest.mark.slow),
])  # fmt: skip
@pytest.mark.processes
def test_sigkill_inside_the_end_of_epoch_writes(reference: Path, tmp_path: Path, where: str) -> None:
    kill_at(tmp_path, "killed", where, epoch=2)
    run = tmp_path / "killed"
    committed = load_checkpoint(run / "last.pt")["epoch"]
    assert committed == 2 if where == "after last.pt" else committed in (1, 2, 3)
    resume(run)
    assert_same_run(run, reference)


# ---------------------------------------------------------------------------------------------- killed mid-save
SAVER = textwrap.dedent("""
    import sys
    import numpy as np, torch
    from classicnets.checkpoint import save_checkpoint

    path, n, version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    while True:
        version += 1
        save_checkpoint(path, {"version": version, "model": {"w": torch.from_numpy(np.full(n, version, np.float32))}})
        print(version, flush=True)
""")


def kill_saver_rounds(tmp_path: Path, rounds: int, seed: int) -> tuple[int, int]:
    """Save versions of a 24 MB checkpoint in a loop and SIGKILL the saver at random moments, ``rounds``
    times; after each kill the file must load and hold one complete version, never older than the last.
    Returns (kills that left a half-written temp file, last version)."""
    path, n = tmp_path / "last.pt", 6_000_000
    save_checkpoint(path, {"version": 0, "model": {"w": torch.zeros(n)}})
    rng, version, mid_write = random.Random(seed), 0, 0
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(n), str(version)], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        t0 = time.monotonic()
        proc.stdout.readline()  # one complete save, to time it
        time.sleep(rng.uniform(0, 2.5 * (time.monotonic() - t0)))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        state = load_checkpoint(path)
        assert state["version"] >= version + 1
        assert torch.equal(state["model"]["w"], torch.full((n,), float(state["version"])))
        version = state["version"]
        leftovers = list(tmp_path.glob(".last.pt.*.tmp"))
        mid_write += bool(leftovers)
        for stale in leftovers:
            stale.unlink()
    return mid_write, version


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_sigkill_during_checkpoint_writes_keeps_a_complete_version(tmp_path: Path) -> None:
    kill_saver_rounds(tmp_path, rounds=2, seed=0)


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_during_checkpoint_writes_sweep(tmp_path: Path) -> None:
    mid_write, _ = kill_saver_rounds(tmp_path, rounds=20, seed=1)
    assert mid_write >= 1, "no kill landed inside a write: the sweep proved nothing"


class _Interrupted(BaseException):
    pass


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), _Interrupted()])
def test_exception_in_the_middle_of_a_checkpoint_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       exc: BaseException) -> None:  # fmt: skip
    import classicnets.checkpoint as checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(100_000)}, "epoch": 1})
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *args):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise exc

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(type(exc)):
        save_checkpoint(path, {"model": {"w": torch.zeros(100_000)}, "epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the half-written temp file is gone


def test_corrupt_or_truncated_checkpoints_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    w = torch.arange(50_000, dtype=torch.float32)
    save_checkpoint(path, {"model": {"w": w}, "epoch": 3})
    data = path.read_bytes()
    for cut in range(0, len(data), len(data) // 23):  # truncated anywhere
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="c.pt"):
            load_checkpoint(path)
    at = data.find(w[25_000:25_004].numpy().tobytes())  # one flipped bit inside a tensor
    assert at > 0
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
    with pytest.raises(CheckpointError, match="checksum mismatch|not a readable checkpoint"):
        load_checkpoint(path)
    state = torch.load(io.BytesIO(data), weights_only=True)  # re-saved with an edited value: only the checksum tells
    state["epoch"] = 4
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------- disk full
class Disk:
    """A folder on a small tmpfs that can be filled to the last byte (real ENOSPC), or, where this process may
    not mount, a plain folder where every fsync fails with ENOSPC once ``fill`` is called (checkpoints,
    metrics.csv, config.yaml and result.json are all fsynced)."""

    def __init__(self, path: Path, real: bool) -> None:
        self.path, self.real = path, real

    def fill(self, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        if self.real:
            fill_disk(self.path)
        else:
            assert monkeypatch is not None

            def fsync(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", fsync)

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)


def fill_disk(folder: Path) -> None:
    with open(folder / "filler", "ab", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.fixture
def disk(tmp_path: Path):
    path = tmp_path / "disk"
    path.mkdir()
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0  # fmt: skip
    yield Disk(path, real=mounted)
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


FILL_AFTER = textwrap.dedent("""
    import sys
    import classicnets.train.engine as engine
    from classicnets.commands import main

    folder, epoch, real = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    line = engine._epoch_line

    def fill():
        if real:
            with open(folder + "/filler", "ab", buffering=0) as f:
                for chunk in (1 << 16, 4096, 512, 1):
                    try:
                        while True:
                            f.write(bytes(chunk))
                    except OSError:
                        pass
        else:
            import errno, os
            def fsync(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync = fsync

    def epoch_line(row, total):  # called once the epoch is committed
        if row["epoch"] == epoch:
            fill()
        return line(row, total)

    engine._epoch_line = epoch_line
    sys.exit(main(sys.argv[4:]))
""")


@pytest.mark.processes
@pytest.mark.timeout(300)
def test_disk_full_at_a_checkpoint_stops_cleanly_and_resume_finishes_the_run(reference: Path, disk: Disk) -> None:
    result = subprocess.run([sys.executable, "-c", FILL_AFTER, str(disk.path), "1", "1" if disk.real else "0",
                             *train_args(disk.path, "run")], capture_output=True, text=True, timeout=300, env=ENV)
    run = disk.path / "run"
    assert result.returncode == 1, result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("classicnets train: stopped: could not write ")
    assert "No space left on device" in err and f"--resume {run}" in err and "intact" in err
    assert f"{run}/best.pt" in err or f"{run}/last.pt" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp"))
    assert [r["epoch"] for r in metrics(run)][:1] == ["1"]
    disk.free()
    resume(run)
    assert_same_run(run, reference)


def quick(out: Path, **overrides):
    values = dict(model="lenet5_modern", data="fashion-mnist", subset=256, epochs=2, batch_size=64, out_dir=str(out),
                  name="run", progress=False, tensorboard=False, val_fraction=0.01, threads=1)  # fmt: skip
    values.update(overrides)
    return config_from_dict(values)


def _fill_after_epoch(disk: Disk, monkeypatch: pytest.MonkeyPatch, epoch: int):
    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch:>3}/"):
            disk.fill(monkeypatch)

    return log


@pytest.mark.processes
def test_disk_full_before_the_first_write_names_config_yaml(disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    disk.fill(monkeypatch)
    with pytest.raises(TrainingError, match=r"could not write .*config.yaml.*: No space left on device; no "
                                            r"checkpoint had been written yet.*Free some space.*start the run again"):
        fit(quick(disk.path), log=lambda _: None)


@pytest.mark.processes
def test_disk_full_at_result_json_then_resume_writes_it(disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    run = disk.path / "run"
    with pytest.raises(TrainingError, match=r"could not write .*result.json.*previous checkpoint .*last.pt and the "
                                            r"metrics so far are intact.*--resume"):
        fit(quick(disk.path), log=_fill_after_epoch(disk, monkeypatch, 2))
    assert not (run / "result.json").exists() and not list(run.glob(".*.tmp"))
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and len(metrics(run)) == 2
    monkeypatch.undo()
    disk.free()
    result = fit(quick(disk.path), resume=run, log=lambda _: None)
    assert json.loads((run / "result.json").read_text())["test_acc"] == result.test_acc is not None


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's writer thread
@pytest.mark.parametrize("target", ["metrics.csv", "curves.png", "tensorboard"])
def test_disk_full_in_the_run_log_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   target: str) -> None:  # fmt: skip
    """ENOSPC injected where each log file is written, from epoch 2 on (a tmpfs cannot single these out)."""
    import classicnets.train.runlog as runlog

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

    fake = Os()
    if target == "metrics.csv":
        fake.fsync = _enospc  # the per-epoch append is fsynced
    elif target == "curves.png":
        fake.replace = _enospc  # the plot is written to a temp file and renamed
    armed = {"on": False}

    def log(line: str) -> None:
        if line.startswith("epoch   1/") and not armed["on"]:
            armed["on"] = True
            if target == "tensorboard":
                from tensorboard.summary.writer.record_writer import RecordWriter

                monkeypatch.setattr(RecordWriter, "write", _enospc)  # fails in TensorBoard's writer thread
            else:
                monkeypatch.setattr(runlog, "os", fake)

    run = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        fit(quick(tmp_path, tensorboard=target == "tensorboard"), log=log)
    message = str(info.value)
    assert f"could not write {run / target}: No space left on device" in message, message
    assert f"--resume {run}" in message and "intact" in message
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.tmp.png"))
    monkeypatch.undo()
    fit(quick(tmp_path, tensorboard=target == "tensorboard"), resume=run, log=lambda _: None)
    assert [int(r["epoch"]) for r in metrics(run)] == [1, 2]


def test_tensorboard_keeps_every_epoch_across_a_resume(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(quick(tmp_path, epochs=3, tensorboard=True), stop_after_epoch=2, log=lambda _: None)
    fit(quick(tmp_path, epochs=3, tensorboard=True), resume=tmp_path / "run", log=lambda _: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_loss")] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- divergence
@pytest.mark.processes
def test_divergence_through_the_cli_exits_1_and_keeps_the_checkpoint(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    good = (run / "last.pt").read_bytes()
    result = cli("train", "--resume", str(run), "--epochs", "6", "--set", "lr=1e30", "--set", "schedule=constant",
                 "--threads", "1", "--no-progress")  # fmt: skip
    assert result.returncode == 1, result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.search(r"classicnets train: stopped: loss became -?(nan|inf) at step 6[45] \(epoch 5\) with lr 1e\+30", err)
    assert f"the last good checkpoint is {run / 'last.pt'}" in err and "--set lr=" in err and "grad_clip" in err
    assert (run / "last.pt").read_bytes() == good


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"at step \d+ \(epoch 1\) with lr 1e\+30; no checkpoint was written yet"):
        fit(quick(tmp_path, lr=1e30, schedule="constant"), log=lambda _: None)
    assert not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------------------------------------- downloads
class _CutHandler(http.server.BaseHTTPRequestHandler):
    """Sends the first half of the body without a Content-Length, then closes: only the digest can tell."""

    body = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body if self.path == "/full" else self.body[: len(self.body) // 2])
        self.wfile.flush()
        self.close_connection = True


def test_a_download_cut_mid_body_without_content_length_never_passes(tmp_path: Path) -> None:
    from classicnets.data import ChecksumError, download

    body = os.urandom(300_000)
    _CutHandler.body = body
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    digest = hashlib.sha256(body).hexdigest()
    try:
        with pytest.raises(ChecksumError, match="sha256 mismatch"):
            download(f"{url}/cut", tmp_path / "dl" / "f.gz", sha256=digest, quiet=True, timeout=10)
        assert list((tmp_path / "dl").iterdir()) == []  # neither the file nor its .part
        got = download(f"{url}/full", tmp_path / "dl" / "f.gz", sha256=digest, quiet=True, timeout=10)
        assert got.read_bytes() == body
    finally:
        httpd.shutdown()
        httpd.server_close()
