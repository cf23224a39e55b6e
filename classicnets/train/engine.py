"""The training engine: ``fit(config) -> Result``.

Read :func:`fit` top to bottom: set up (seed, device, data, model, optimizer; resume if asked), then for
each epoch train, validate and commit (best.pt, the metrics row, then last.pt: the commit point); finally
evaluate the best-validation weights on the test set, once. The test set plays no part in any choice the
run makes. What changes as training goes lives in one :class:`TrainState`; what is fixed for the run in
one :class:`Run`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import CheckpointError, RunRecord, atomic_write_bytes, load_checkpoint, read_record, save_checkpoint
from ..models import ModelCard, create_model, model_card
from .config import ConfigError, TrainConfig, save_config
from .data import DataBundle, build_data
from .runlock import LOCK_NAME, RunBusyError, RunLock
from .runlog import RunLog
from .runtime import (
    DistInfo,
    all_reduce_sum,
    allocator,
    amp_dtype,
    barrier,
    device_class,
    elastic_restarts,
    init_distributed,
    resolve_device,
    seed_everything,
)
from .schedule import lr_at
from .step import EMA, evaluate, set_lr, train_step


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (divergence, a full disk); nothing saved is lost."""


@dataclass
class Result:
    run_dir: Path
    model: str
    data: str
    epochs: int
    steps: int
    best_val_acc: float | None
    best_epoch: int | None
    test_acc: float | None
    test_top5: float | None
    test_loss: float | None
    wall_time_s: float
    train_images_per_s: float
    input_note: str
    input_size: tuple[int, int, int]  # (C, H, W) the model was trained at
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d["input_size"] = list(self.input_size)
        d.pop("history")
        return d


@dataclass
class Run:
    """What is fixed for the whole run once it is set up."""

    config: TrainConfig
    info: DistInfo
    device: torch.device
    amp: torch.dtype | None
    data: DataBundle
    record: RunRecord
    run_dir: Path
    steps_per_epoch: int
    total_steps: int
    say: Callable[[str], None]
    runlog: RunLog | None = None  # rank 0 only
    lock: RunLock | None = None  # rank 0 only: held for the life of the run
    config_pending: bool = False  # a resume writes config.yaml with its first committed epoch
    committed_epoch: int = 0  # the epoch of the last.pt on disk (what an interruption keeps)

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclass
class TrainState:
    """What changes as training goes. ``last.pt`` saves the model, optimizer, EMA, position and best so far;
    ``lr`` is recomputed from the step, ``history`` is metrics.csv, and an fp16 GradScaler restarts."""

    model: nn.Module  # the bare model: what is saved, clipped and averaged
    optimizer: torch.optim.Optimizer
    ema: EMA | None = None
    scaler: torch.amp.GradScaler | None = None
    forward: nn.Module | None = None  # what runs the forward pass: the model, or its DDP / compiled wrapper
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    lr: float = 0.0
    best_val_acc: float | None = None
    best_epoch: int | None = None
    images_per_s: float = 0.0  # the last epoch's training throughput, over all ranks
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


# ---------------------------------------------------------------------------------------------- fit
def fit(
    config: TrainConfig,
    resume: str | Path | None = None,
    stop_after_epoch: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Result:
    """Train ``config.model`` on ``config.data``; returns the Result also written to ``result.json``.

    ``resume`` continues the run in that directory from its ``last.pt`` (model, optimizer, schedule
    position, RNG, epoch). ``stop_after_epoch`` ends the run early, as an interruption would (for tests).
    """
    started = time.time()
    run, state = _setup(copy.deepcopy(config).validate(), resume, log)
    try:
        for epoch in range(state.epoch, run.total_epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            t0 = time.perf_counter()
            row = _train_epoch(run, state, epoch)
            if run.data.val is not None:
                val = evaluate(state.eval_model, run.data.val, len(run.data.classes), amp=run.amp,
                               tta_flip=run.config.tta_flip)  # fmt: skip
                row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            row["seconds"] = time.perf_counter() - t0
            _commit_epoch(run, state, row)
        result = _finish(run, state, started, stopped_early=stop_after_epoch is not None)
        if run.runlog is not None:  # (not on the way out of a failure: a full disk would mask its message)
            run.runlog.close()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into one by the command: say what is kept
        exc.run_dir, exc.epoch = run.run_dir, run.committed_epoch  # type: ignore[attr-defined]
        raise
    finally:
        if run.lock is not None:
            run.lock.release()
    return result


# ---------------------------------------------------------------------------------------------- setup
def _setup(config: TrainConfig, resume: str | Path | None, log: Callable[[str], None] | None) -> tuple[Run, TrainState]:
    restart, max_restarts = elastic_restarts()
    if max_restarts > 0 and resume is None and config.name is None:  # each attempt would pick a new default name
        raise ConfigError("elastic runs need --name so a restarted group finds its run (torchrun --max-restarts "
                          f"{max_restarts} restarts the workers with the same command line)")  # fmt: skip
    info = init_distributed(config.device)
    device = resolve_device(config.device, info.local_rank)
    _check_sync_bn(config, info, device)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed + info.rank, config.deterministic)
    say = (log or _print) if info.is_main else _quiet
    if info.enabled and config.name is None and resume is None:
        config.name = _shared_name(config, info)
    if restart > 0 and resume is None:  # torchrun restarted the group: continue the run it started, if it committed
        resume = _elastic_resume(config, info)
        if resume is not None:
            say(f"torchrun restart {restart}: continuing {resume} from its last.pt")
    lock, run_dir = None, Path(resume) if resume is not None else Path(config.out_dir) / str(config.name)
    if info.is_main:  # rank 0 alone creates the directory and holds its lock; the others learn the outcome
        try:
            if resume is None:
                run_dir, lock = _new_run_dir(config)
            else:  # a run directory with a checkpoint, locked before anything in it is read or tidied
                lock = RunLock.acquire(_resumable(run_dir))
        except Exception as exc:  # (any failure: the other ranks must not wait for a directory forever)
            _share_outcome(info, str(exc))
            raise
        _share_outcome(info, None)
    else:
        _share_outcome(info, None)
    saved = None
    try:
        saved = _load_resume(run_dir, tidy=info.is_main) if resume is not None else None
        run, state = _setup_run(config, info, device, say, saved, run_dir)
    except BaseException as exc:
        if lock is not None:
            lock.release()
        if isinstance(exc, KeyboardInterrupt) and lock is not None:
            exc.run_dir, exc.epoch = run_dir, saved["epoch"] if saved else 0  # type: ignore[attr-defined]
        raise
    run.lock = lock
    return run, state


def _elastic_resume(config: TrainConfig, info: DistInfo) -> Path | None:
    """After a torchrun restart: the run directory (``out_dir/name``) if it holds a last.pt, resumed as
    ``--resume`` would; None (a restart before the first checkpoint) starts the run again in the leftover
    directory, which :func:`_new_run_dir` allows. Rank 0 looks; every rank gets its answer."""
    run_dir = Path(config.out_dir) / str(config.name)
    box = [(run_dir / "last.pt").is_file() if info.is_main else None]
    if info.enabled:
        import torch.distributed as dist

        dist.broadcast_object_list(box, src=0)
    return run_dir if box[0] else None


def _check_sync_bn(config: TrainConfig, info: DistInfo, device: torch.device) -> None:
    """sync_bn converts BatchNorm to SyncBatchNorm under torchrun on CUDA. In one process there is nothing to
    synchronise (BatchNorm already sees the whole batch): ignored. On CPU PyTorch's SyncBatchNorm refuses
    to run, so the run is refused before anything is written."""
    if config.sync_bn and info.enabled and device.type != "cuda":
        raise ConfigError(f"sync_bn=true needs CUDA: PyTorch's SyncBatchNorm does not run on {device.type} tensors "
                          "(gloo); without it each rank normalises BatchNorm over its own part of the batch "
                          "(per-rank batch = batch_size / processes); drop --set sync_bn=true to train that way")  # fmt: skip


def _setup_run(config: TrainConfig, info: DistInfo, device: torch.device, say: Callable[[str], None],
               saved: dict[str, Any] | None, run_dir: Path) -> tuple[Run, TrainState]:  # fmt: skip
    card = model_card(config.model)  # unknown model: ValueError with close matches, before any data work
    data = build_data(config, card, device, info)
    record = _record(config, data)
    if saved is not None:
        _check_same_net(run_dir, read_record(saved), record)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = _build_model(config, card, data, say, pretrained=saved is None).to(device)
    if config.sync_bn and info.enabled:  # (CUDA only: _check_sync_bn); same Parameters and state-dict keys
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    amp = amp_dtype(config.amp, device)
    state = TrainState(
        model=model, optimizer=build_optimizer(config, model), ema=EMA(model, config.ema_decay) if config.ema_decay else None,
        scaler=torch.amp.GradScaler(device.type) if amp is torch.float16 else None,
    )  # fmt: skip
    if saved is not None:
        _restore(state, saved, device)
    state.forward = _wrap(model, config, info, device)
    steps_per_epoch = len(data.train)
    total_steps = min(config.epochs * steps_per_epoch, config.max_steps or math.inf)
    run = Run(config, info, device, amp, data, record, run_dir, steps_per_epoch, total_steps, say)
    run.committed_epoch = state.epoch
    if info.is_main:
        # A new run records its config at once; a resume only with its first committed epoch, so overrides
        # that crash the resumed run (a --set lr that diverges at once) never reach config.yaml.
        run.config_pending = saved is not None
        if not run.config_pending:
            _save_config(run)
        with _writing(run_dir / "metrics.csv", run_dir):
            run.runlog = RunLog(run_dir, config.tensorboard, resume_epoch=state.epoch if saved else None)
        state.history = list(run.runlog.rows)
        say(_header(run))
        if saved:
            say(f"resuming after epoch {state.epoch} (step {state.step})")
    return run, state


def _save_config(run: Run) -> None:
    with _writing(run.run_dir / "config.yaml", run.run_dir):
        save_config(run.config, run.run_dir / "config.yaml")
    run.config_pending = False


def _share_outcome(info: DistInfo, error: str | None) -> None:
    """Under torchrun: rank 0 tells the others whether it got the run directory (else they raise too)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None and not info.is_main:
        raise ConfigError(box[0])


def _check_same_net(run_dir: Path, saved: RunRecord, now: RunRecord) -> None:
    """A resume continues the same network on the same classes; anything else is a new run."""
    for what, was, is_ in (("model", saved.model, now.model), ("model arguments", saved.model_kwargs, now.model_kwargs),
                           ("classes", list(saved.classes), list(now.classes))):  # fmt: skip
        if was != is_:
            raise ConfigError(f"cannot resume {run_dir} with {what} {is_}: it was trained with {what} {was}; "
                              "to train another net start a new run (without --resume, with another --name)")  # fmt: skip


def _record(config: TrainConfig, data: DataBundle) -> RunRecord:
    kwargs = {**config.model_kwargs, "num_classes": len(data.classes), "in_chans": data.in_chans}
    return RunRecord(
        model=config.model, model_kwargs=kwargs, classes=tuple(data.classes), preprocessing=data.preprocessing,
        data=config.data, data_dir=config.data_dir, seed=config.seed, val_fraction=config.val_fraction,
        amp=config.amp, tta_flip=config.tta_flip, sizes=dict(data.sizes),
    )  # fmt: skip


def _build_model(config: TrainConfig, card: ModelCard, data: DataBundle, say: Callable[[str], None],
                 pretrained: bool) -> nn.Module:  # fmt: skip
    """The model at the data's classes and channels: fresh, or from ``config.weights`` (not on resume: the
    checkpoint's weights replace them), frozen and in channels_last as configured."""
    if config.weights and pretrained:
        model = _pretrained(config, card, data, say)
    else:
        kwargs = {**config.model_kwargs, "num_classes": len(data.classes), "in_chans": data.in_chans}
        model = create_model(config.model, **kwargs)
    if config.freeze:
        from ..transfer import freeze

        freeze(model, up_to=None if config.freeze == "backbone" else config.freeze)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _pretrained(config: TrainConfig, card: ModelCard, data: DataBundle, say: Callable[[str], None]) -> nn.Module:
    """The model built at the shape of ``config.weights`` (channels and classes read off the tensors the card
    names), loaded strictly, then adapted to ``data``."""
    from ..transfer import adapt, load_state, read_state_dict

    state, source = read_state_dict(config.weights)
    shapes = {}
    for key, tensor_name, dim in (("in_chans", card.first_conv + ".weight", 1), ("num_classes", card.classifier_tensor, 0)):
        if tensor_name not in state:
            raise ValueError(f"{config.weights} has no tensor {tensor_name!r}, so it is not a {config.model} "
                             f"state dict ({source}); pass weights saved from a {config.model}")  # fmt: skip
        shapes[key] = state[tensor_name].shape[dim]
    model = create_model(config.model, **{**config.model_kwargs, **shapes})
    load_state(model, state, source=source, path=config.weights, strict=True)  # the file is read once
    report = adapt(model, num_classes=len(data.classes), in_chans=data.in_chans)
    say(f"loaded {config.weights} ({source}); {report}")
    return model


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; with ``backbone_lr_scale != 1`` the backbone and head get separate lr groups.

    Each group remembers its ``lr_scale`` so the schedule can set ``lr * lr_scale`` every step.
    """
    if config.backbone_lr_scale != 1.0:
        from ..transfer import param_groups

        groups = param_groups(model, config.lr, config.backbone_lr_scale, config.weight_decay, no_decay_1d=False)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    if not any(g["params"] for g in groups):
        raise ConfigError(f"nothing to train: every parameter of {config.model} is frozen; freeze less")
    for group in groups:
        group["lr_scale"] = group["lr"] / config.lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)  # fmt: skip
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _wrap(model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """What runs the forward pass: the model, in DDP under torchrun, compiled if asked."""
    forward: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(forward) if config.compile else forward


def _resumable(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise ConfigError(f"resume directory {run_dir} does not exist; pass the run directory a training run "
                          "created (runs/NAME)")  # fmt: skip
    path = run_dir / "last.pt"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: nothing to resume from (a run writes last.pt after its "
                          "first epoch); start a new run instead")  # fmt: skip
    return run_dir


def _load_resume(run_dir: Path, tidy: bool = True) -> dict[str, Any]:
    path = _resumable(run_dir) / "last.pt"
    try:
        state = load_checkpoint(path)
        read_record(state, path)
    except CheckpointError as exc:
        good = run_dir / "best.pt"
        hint = f"; {good} may still be loadable" if good.is_file() else ""
        raise CheckpointError(f"cannot resume: {exc}{hint}") from None
    for stale in run_dir.glob(".*.tmp") if tidy else ():  # half-written files of a process killed mid-write
        stale.unlink(missing_ok=True)  # (safe: this process holds the run's lock, so no writer is alive)
    return state


def _restore(state: TrainState, saved: dict[str, Any], device: torch.device) -> None:
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.ema is not None and "ema" in saved:
        state.ema.model.load_state_dict(saved["ema"])
    state.epoch, state.step = saved["epoch"], saved["step"]
    state.best_val_acc, state.best_epoch = saved.get("best_val_acc"), saved.get("best_epoch")
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(saved["rng"]["cuda"], device)


def _default_name(config: TrainConfig) -> str:
    """``MODEL-DATA-YYYYmmdd-HHMMSS-ffffff-xxxx``: sortable by start time (to the microsecond), and two runs
    started in the same microsecond still differ by the random suffix (a collision anyway would be refused
    by ``mkdir``, never shared)."""
    data = config.data.replace("folder:", "").strip("/").replace("/", "_")
    return f"{config.model}-{data}-{datetime.now():%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"


def _shared_name(config: TrainConfig, info: DistInfo) -> str:
    """Rank 0's default run name, so every process writes to (and reads from) the same directory."""
    import torch.distributed as dist

    box = [_default_name(config) if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


# What a run writes before its first checkpoint: a directory holding only these (and no last.pt) is the
# leftover of a run stopped before its first epoch ended, and the same command may start it again.
_FIRST_EPOCH_FILES = {LOCK_NAME, "config.yaml", "metrics.csv", "best.pt", "curves.png", "tensorboard"}


def _new_run_dir(config: TrainConfig) -> tuple[Path, RunLock]:
    """Create the run directory and lock it. Never writes into an existing directory, except the leftover of
    a run of ours that died before its first checkpoint (only its own files, no last.pt, no live holder)."""
    run_dir = Path(config.out_dir) / (config.name or _default_name(config))
    retry = f"continue it with --resume {run_dir} or choose another --name"
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        pass
    except OSError as exc:  # a parent that cannot be created: read-only, /proc, a file in the way
        raise ConfigError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}; choose an --out-dir "
                          "you can write (default: runs)") from None  # fmt: skip
    else:
        return run_dir, RunLock.acquire(run_dir)  # (a racer that finds it first is refused by the lock below)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a directory; choose another --name or --out-dir")
    if (run_dir / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; {retry}")
    names = {p.name for p in run_dir.iterdir()}
    foreign = sorted(n for n in names if n not in _FIRST_EPOCH_FILES and not (n.startswith(".") and ".tmp" in n))
    if foreign or not names & {LOCK_NAME, "config.yaml"}:
        what = f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}" if foreign else "is empty"
        raise ConfigError(f"{run_dir} already exists and {what}, so it is not the leftover of a classicnets run; a new "
                          "run never writes into an existing directory: choose another --name (or --out-dir)")  # fmt: skip
    try:
        lock = RunLock.acquire(run_dir)
    except RunBusyError as exc:  # a live run still before its first checkpoint: refused, naming its pid
        raise RunBusyError(f"{exc}; or choose another --name") from None
    for stale in run_dir.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)
    return run_dir, lock


# ---------------------------------------------------------------------------------------------- one epoch
def _train_epoch(run: Run, state: TrainState, epoch: int) -> dict[str, Any]:
    """Train one epoch; returns its metrics row (train loss/acc over all ranks, lr, images/s)."""
    config, device = run.config, run.device
    run.data.train.set_epoch(epoch)
    state.forward.train()
    if config.freeze:
        from ..transfer import set_frozen_bn_eval

        set_frozen_bn_eval(state.model)  # frozen BatchNorm keeps its statistics
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    progress = (config.progress if config.progress is not None else sys.stderr.isatty()) and run.info.is_main
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    bar = _progress(run.data.train, epoch, run.total_epochs, progress)
    for x, y in bar:  # model-ready batches: padded, augmented, normalised, resized by the loader
        if state.step >= run.total_steps:
            break
        state.lr = lr_at(state.step, config, run.steps_per_epoch, run.total_steps)
        set_lr(state.optimizer, state.lr)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = train_step(
            state.model, state.optimizer, x, y, loss_fn=loss_fn, amp=run.amp, forward=state.forward,
            scaler=state.scaler, grad_clip=config.grad_clip, ema=state.ema, diverged=lambda v: _diverged(run, state, epoch, v),
        )  # fmt: skip
        state.step += 1
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if progress and state.step % 10 == 0:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix_str(f"loss {float(loss_sum) / seen:.4f} acc {float(correct) / seen:.2%} {rate:,.0f} img/s")
    train_time = time.perf_counter() - t0
    counts = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    loss_total, correct_total, seen_total = all_reduce_sum(counts, run.info).tolist()
    state.images_per_s = seen_total / train_time
    return {
        "epoch": epoch + 1, "train_loss": loss_total / seen_total, "train_acc": correct_total / seen_total,
        "val_loss": None, "val_acc": None, "lr": state.lr, "images_per_s": state.images_per_s,
    }  # fmt: skip


def _diverged(run: Run, state: TrainState, epoch: int, loss_value: float) -> None:
    last = run.run_dir / "last.pt"
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    lr = state.lr
    raise TrainingError(
        f"loss became {loss_value} at step {state.step} (epoch {epoch + 1}) with lr {lr:.4g}; "
        f"{kept}. Try a lower lr (--set lr={lr / 10:.3g}), "
        "a warm-up (--set warmup_epochs=1) or gradient clipping (--set grad_clip=1.0)"
    )


def _commit_epoch(run: Run, state: TrainState, row: dict[str, Any]) -> None:
    """Record the epoch. last.pt is written last: it is the commit point. A kill before it resumes from the
    previous epoch, which redoes this one and rewrites best.pt and this epoch's metrics row (RunLog drops
    later rows)."""
    improved = row["val_acc"] is None or state.best_val_acc is None or row["val_acc"] > state.best_val_acc
    if improved:  # without a validation split every epoch is "best": best.pt holds the last weights
        state.best_val_acc, state.best_epoch = row["val_acc"], row["epoch"]
    state.epoch = row["epoch"]
    if run.info.is_main:
        checkpoint = _checkpoint(run, state, row)
        if improved:
            _save(run.run_dir / "best.pt", {**checkpoint, "model": state.eval_model.state_dict()})
        with _writing(run.run_dir / "metrics.csv", run.run_dir):
            run.runlog.log_epoch(row)
        if run.config_pending:  # a resume's overrides are kept once an epoch trained with them commits
            _save_config(run)
        _save(run.run_dir / "last.pt", checkpoint)
        run.committed_epoch = state.epoch
        state.history.append(row)
        run.say(_epoch_line(row, run.total_epochs))
    barrier(run.info)


def _checkpoint(run: Run, state: TrainState, row: dict[str, Any]) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    checkpoint = {
        "record": run.record.to_dict(), "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "epoch": state.epoch, "step": state.step, "rng": rng, "config": run.config.to_dict(), "metrics": row,
        "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
    }  # fmt: skip
    if state.ema is not None:
        checkpoint["ema"] = state.ema.model.state_dict()
    return checkpoint


# ---------------------------------------------------------------------------------------------- finish
def _finish(run: Run, state: TrainState, started: float, stopped_early: bool) -> Result:
    """Evaluate the best-validation weights on the test set (once) and write result.json."""
    data, test = run.data, None
    best_path = run.run_dir / "best.pt"
    if data.test is not None and not stopped_early and best_path.is_file():
        barrier(run.info)
        state.eval_model.load_state_dict(load_checkpoint(best_path, map_location=run.device)["model"])
        test = evaluate(state.eval_model, data.test, len(data.classes), amp=run.amp, tta_flip=run.config.tta_flip)
    result = Result(
        run_dir=run.run_dir, model=run.config.model, data=run.config.data, epochs=len(state.history), steps=state.step,
        best_val_acc=state.best_val_acc, best_epoch=state.best_epoch, test_acc=test and test["acc"],
        test_top5=test and test["top5"], test_loss=test and test["loss"], wall_time_s=time.time() - started,
        train_images_per_s=state.images_per_s,
        input_note=data.preprocessing.note(), input_size=run.record.input_size, classes=list(data.classes),
        history=state.history,
    )  # fmt: skip
    if run.info.is_main and not stopped_early:
        payload = result.to_dict()
        payload["note"] = ("test accuracy of the best-validation checkpoint (best.pt); the test set was used for "
                           "this final evaluation only") if data.val is not None else \
                          "no validation split (val_fraction=0): test accuracy of the last epoch's weights"
        if test is not None:
            payload["test_per_class_acc"] = dict(zip(data.classes, test["per_class_acc"]))
        with _writing(run.run_dir / "result.json", run.run_dir):
            atomic_write_bytes(run.run_dir / "result.json", json.dumps(payload, indent=2).encode())
    return result


# ---------------------------------------------------------------------------------------------- writing and output
@contextlib.contextmanager
def _writing(path: Path, run_dir: Path):
    """Turn a failed write (full disk, permissions) into a TrainingError naming the file and what is kept."""
    try:
        yield
    except OSError as exc:
        last = run_dir / "last.pt"
        kept, then = (f"the previous checkpoint {last} and the metrics so far are intact", f"continue with --resume {run_dir}") \
            if last.is_file() else ("no checkpoint had been written yet", "start the run again")  # fmt: skip
        raise TrainingError(f"could not write {exc.filename or path}: {exc.strerror or exc}; {kept}. Free some space "
                            f"(or fix the permissions) and {then}") from None  # fmt: skip


def _save(path: Path, state: dict[str, Any]) -> None:
    with _writing(path, path.parent):
        save_checkpoint(path, state)


def _header(run: Run) -> str:
    data, sizes = run.data, run.data.sizes
    amp = f", {str(run.amp).replace('torch.', '')} autocast" if run.amp else ""
    procs = f", {run.info.world_size} processes" if run.info.enabled else ""
    return (f"{run.config.model} on {data.name} ({sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} "
            f"test; {data.preprocessing.note()}) on {run.device} ({device_class(run.device)}){amp}, {allocator()}{procs} "
            f"-> {run.run_dir}")


def _progress(loader: Any, epoch: int, total: int, enabled: bool):
    if not enabled:
        return _Silent(loader)
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{total}", leave=False, dynamic_ncols=True, unit="batch")


class _Silent:
    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix_str(self, _: str) -> None:
        pass


def _epoch_line(row: dict[str, Any], total: int) -> str:
    val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}" if row["val_acc"] is not None else ""
    return (f"epoch {row['epoch']:>3}/{total}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}{val}"
            f"  lr {row['lr']:.3g}  {row['images_per_s']:,.0f} img/s  {row['seconds']:.1f} s")  # fmt: skip


def _print(message: str) -> None:
    print(message, flush=True)


def _quiet(message: str) -> None:
    pass
