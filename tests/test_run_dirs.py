"""A run directory belongs to one run; a user's file is never overwritten; a stopped run says what it kept.

Provoked for real: two training processes racing for one --name, a live process holding a run's lock, a
SIGKILLed holder, SIGTERM / SIGINT sent to a training process, an existing file at ``export --out``. The
processes run this checkout's code (``python -m classicnets`` with this tree first on PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from classicnets.checkpoint import load_checkpoint
from classicnets.commands import main
from classicnets.train.config import ConfigError, config_from_dict
from classicnets.train.engine import _default_name, fit
from classicnets.train.runlock import RunLock, is_locked

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CLASSICNETS_ALLOCATOR": "system",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}  # fmt: skip
# A few hundred images per epoch: an epoch takes a fraction of a second, so "after epoch N" comes quickly.
TRAIN = ["train", "lenet5_modern", "--data", "fashion-mnist", "--subset", "256", "--batch-size", "64", "--threads",
         "1", "--no-progress", "--set", "tensorboard=false", "--set", "val_fraction=0"]  # fmt: skip


def quick(out: Path, **overrides):
    values = dict(model="lenet5_modern", data="fashion-mnist", subset=256, epochs=1, batch_size=64, out_dir=str(out),
                  tensorboard=False, name="run", progress=False, val_fraction=0.0)  # fmt: skip
    values.update(overrides)
    return config_from_dict(values)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "classicnets", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- names and dirs
def test_default_names_are_unique_and_sortable_by_time() -> None:
    config = quick(Path("unused"))
    names = []
    for i in range(200):
        names.append(_default_name(config))
        if i % 50 == 0:
            time.sleep(0.002)
    assert len(set(names)) == len(names), "two runs started together would share a directory"
    stamps = [n.rsplit("-", 1)[0] for n in names]  # drop the random suffix: the rest sorts by start time
    assert stamps == sorted(stamps)


def test_a_new_run_never_writes_into_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    (tmp_path / "empty").mkdir()
    for name, what in (("mine", "holds notes.txt"), ("empty", "is empty")):
        code = main([*TRAIN, "--epochs", "1", "--out-dir", str(tmp_path), "--name", name])
        line = one_line(capsys.readouterr().err)
        assert code == 2 and what in line and "choose another --name" in line, line
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and (user / "notes.txt").read_text() == "my notes"
    assert not list((tmp_path / "empty").iterdir())


def test_the_leftover_of_a_run_killed_before_its_first_checkpoint_is_started_again(tmp_path: Path) -> None:
    """What a run writes before its first last.pt (no live holder) is reused by the same command; nothing else."""
    left = tmp_path / "run"
    left.mkdir()
    (left / ".lock").write_text("999999 elsewhere\n")
    (left / "config.yaml").write_text("model: lenet5_modern\n")
    (left / "metrics.csv").write_text("epoch,train_loss\n1,2.0\n")
    (left / ".last.pt.abc.tmp").write_bytes(b"half")
    result = fit(quick(tmp_path), log=lambda _: None)
    assert result.run_dir == left and load_checkpoint(left / "last.pt")["epoch"] == 1
    assert not list(left.glob(".*.tmp")) and not is_locked(left)


def test_a_run_sigkilled_before_its_first_checkpoint_is_recovered_by_the_same_command(tmp_path: Path) -> None:
    args = [*TRAIN, "--epochs", "1", "--subset", "4096", "--out-dir", str(tmp_path), "--name", "early"]
    run = tmp_path / "early"
    proc = start(*args)
    try:
        wait_for(run / "config.yaml", proc)  # set up, training its first epoch
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (run / "last.pt").exists()
    again = subprocess.run([sys.executable, "-m", "classicnets", *args], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=240)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_two_processes_racing_for_one_name(tmp_path: Path) -> None:
    args = [*TRAIN, "--epochs", "2", "--out-dir", str(tmp_path), "--name", "same"]
    procs = [start(*args), start(*args)]
    outcomes = [(p.wait(timeout=240), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = one_line(next(err for code, err in outcomes if code == 2))
    assert str(tmp_path / "same") in loser and ("in use by another training process (pid" in loser
                                                or "already holds a run" in loser), loser  # fmt: skip
    assert load_checkpoint(tmp_path / "same" / "last.pt")["epoch"] == 2


def test_a_live_holder_refuses_resume_and_a_sigkilled_one_frees_the_run(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    fit(quick(tmp_path), log=lambda _: None)
    run, young = tmp_path / "run", tmp_path / "young"  # young: a live run before its first checkpoint
    young.mkdir()
    (young / "config.yaml").write_text("model: lenet5_modern\n")
    holder = subprocess.Popen([sys.executable, "-c", "import time; from classicnets.train.runlock import RunLock; "
                               f"locks = [RunLock.acquire(d) for d in ({str(run)!r}, {str(young)!r})]; "
                               "print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (run / "last.pt").read_bytes()
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"in use by another training process (pid {holder.pid} on " in line, line
        assert (run / "last.pt").read_bytes() == before
        with pytest.raises(ConfigError, match=f"pid {holder.pid}.*or choose another --name"):
            fit(quick(tmp_path, name="young"), log=lambda _: None)
        assert sorted(p.name for p in young.iterdir()) == [".lock", "config.yaml"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert not is_locked(run)  # the kernel dropped the dead holder's lock
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "epochs=2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_stops_training_with_one_line_and_a_resumable_run(tmp_path: Path, sig: int, code: int,
                                                                   name: str) -> None:  # fmt: skip
    run = tmp_path / "sig"
    proc = start(*TRAIN, "--epochs", "500", "--out-dir", str(tmp_path), "--name", "sig")
    try:
        wait_for(run / "last.pt", proc)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    epoch = load_checkpoint(run / "last.pt")["epoch"]
    assert one_line(err) == (f"classicnets train: interrupted ({name}) after epoch {epoch}; {run / 'last.pt'} is "
                             f"kept: continue with --resume {run}")  # fmt: skip
    assert not is_locked(run)
    assert main(["train", "--resume", str(run), "--no-progress", "--set", f"epochs={epoch + 1}"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == epoch + 1


# ---------------------------------------------------------------------------------------------- resume
def test_resume_with_another_net_or_recipe_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(quick(tmp_path), log=lambda _: None)
    run = tmp_path / "run"
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for args, message in (
        (["--set", "model=resnet20"], "with model resnet20: it was trained with model lenet5_modern"),
        (["lenet5"], "with model lenet5: it was trained with model lenet5_modern"),
        (["--set", "model_kwargs={dropout: 0.5}"], "model arguments"),
        (["--recipe", "cifar-resnet"], "--recipe cannot change a run being resumed"),
    ):
        assert main(["train", *args, "--resume", str(run), "--no-progress"]) == 2, args
        assert message in one_line(capsys.readouterr().err), args
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files  # nothing rewritten


def test_an_override_that_fails_on_resume_is_not_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(quick(tmp_path), log=lambda _: None)
    run = tmp_path / "run"
    config = (run / "config.yaml").read_text()
    code = main(["train", "--resume", str(run), "--no-progress", "--set", "epochs=2", "--set", "lr=1e30"])
    assert code == 1 and "loss became" in one_line(capsys.readouterr().err)
    assert (run / "config.yaml").read_text() == config  # the failed lr never reached config.yaml
    assert main(["train", "--resume", str(run), "--no-progress", "--set", "epochs=2"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # kept once an epoch committed


# ---------------------------------------------------------------------------------------------- export, reports
def test_export_never_replaces_a_file_without_force(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from classicnets import export as export_module

    out = tmp_path / "model.safetensors"
    out.write_text("the user's file")
    args = ["export", "--weights", "fashion-mnist:lenet5", "--format", "safetensors", "--out", str(out)]
    assert main(args) == 2
    assert "already exists; pass --force" in one_line(capsys.readouterr().err)
    assert out.read_text() == "the user's file"

    def torn(model, path, meta):  # the export dies half-way through writing
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_export_safetensors", torn)
    assert main([*args, "--force"]) == 2  # one line: could not write ... No space left on device
    assert "could not write" in one_line(capsys.readouterr().err)
    assert out.read_text() == "the user's file" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    monkeypatch.undo()
    assert main([*args, "--force"]) == 0 and "bit-identical" in capsys.readouterr().out
    assert out.read_bytes() != b"the user's file" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_study_report_is_never_replaced_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    args = ["study", "identity", "--steps", "20", "--out", str(out)]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    (out / "report.md").write_text(report + "\nmy edits\n")
    assert main(args) == 2
    assert "already holds a report" in one_line(capsys.readouterr().err)
    assert (out / "report.md").read_text().endswith("my edits\n")
    assert main([*args, "--force"]) == 0 and (out / "report.md").read_text() == report
    assert not list(out.glob(".*.tmp"))
    assert main(["compare", "lenet5", "--data", "fashion-mnist", "--out", str(out)]) == 2
    assert "compare never replaces one" in one_line(capsys.readouterr().err)
