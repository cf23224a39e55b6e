"""The training engine: ``fit(config) -> Result`` and ``evaluate(model, loader) -> metrics``.

Read it top to bottom: set up (seed, device, data, model, optimizer), optionally resume, then for each
epoch train, validate, log and checkpoint; finally pick the best-validation weights and evaluate them on
the test set, once. The test set plays no part in any choice the run makes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model, model_card
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, save_config
from .data_setup import DataBundle, build_data
from .hardware import (
    DistInfo, all_reduce_sum, allocator, amp_dtype, autocast, barrier, init_distributed, resolve_device,
    seed_everything,
)  # fmt: skip
from .runlog import RunLog
from .schedule import lr_at


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
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d.pop("history")
        return d


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
    tta_flip: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Loss, top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with autocast(device, amp):
            logits = model(x).float()
            if tta_flip:
                logits = (logits + model(x.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
    model.train(was_training)
    n = int(confusion.sum())
    if n == 0:
        raise ValueError("evaluate: the loader yielded no images")
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    return {
        "loss": float(loss_sum) / n, "acc": float(confusion.diag().sum()) / n, "top5": float(top5) / n,
        "n": n, "per_class_acc": per_class.tolist(), "confusion": confusion.cpu(),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- EMA
class EMA:
    """An exponential moving average of the weights (buffers such as BN statistics are copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


# ---------------------------------------------------------------------------------------------- setup
def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (1 unless set)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_step(
    model: nn.Module,
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
    diverged: Callable[[float], None],
    *,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    ema: EMA | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step, the body of :func:`fit`'s loop. ``train_model`` runs the forward pass (``model``
    itself, or its DDP / compiled wrapper); ``model`` is what is clipped and averaged. Forward under autocast, a finite-loss check
    (``diverged(loss)`` is called, and should raise, before anything is updated), backward (scaled for
    fp16), optional gradient clipping, the step and the EMA update. Returns the loss and the logits."""
    with autocast(device, dtype):
        logits = train_model(x)
        loss = loss_fn(logits.float(), y)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        diverged(loss_value)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if ema is not None:
        ema.update(model)
    return loss, logits


def _default_name(config: TrainConfig) -> str:
    data = config.data.replace("folder:", "").strip("/").replace("/", "_")
    return f"{config.model}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _shared_name(config: TrainConfig, info: DistInfo) -> str:
    """Rank 0's default run name, so every process writes to (and reads from) the same directory."""
    import torch.distributed as dist

    box = [_default_name(config) if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def _run_dir(config: TrainConfig, resume: Path | None) -> Path:
    if resume is not None:
        return resume
    name = config.name or _default_name(config)
    run_dir = Path(config.out_dir) / name
    if (run_dir / "last.pt").exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                          "another --name")  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
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


def _pretrained(config: TrainConfig, data: DataBundle, say: Callable[[str], None]) -> nn.Module:
    """The model built at the shape of ``config.weights``, loaded strictly, then adapted to ``data``."""
    from ..transfer import adapt, find_first_conv, load_state, read_state_dict

    state, source = read_state_dict(config.weights)
    with torch.device("meta"):
        probe = create_model(config.model, **config.model_kwargs)
    conv_name, _ = find_first_conv(probe)
    head = probe.get_classifier()
    head_name = next(n for n, m in probe.named_modules() if m is head)
    # The source model's channels and classes, read off its first conv and its head (LeNet-5's RBF head
    # has no weight: its fixed centres give the class count).
    head_tensor = f"{head_name}.weight" if list(head.parameters()) else f"{head_name}.centres"
    src = {}
    for key, tensor_name, dim in (("in_chans", f"{conv_name}.weight", 1), ("num_classes", head_tensor, 0)):
        if tensor_name not in state:
            raise ValueError(f"{config.weights} has no tensor {tensor_name!r}, so it is not a {config.model} "
                             f"state dict ({source}); pass weights saved from a {config.model}")  # fmt: skip
        src[key] = state[tensor_name].shape[dim]
    model = create_model(config.model, **{**config.model_kwargs, **src})
    load_state(model, state, source=source, path=config.weights, strict=True)  # the file is read once
    report = adapt(model, num_classes=len(data.classes), in_chans=data.in_chans)
    say(f"loaded {config.weights} ({source}); {report}")
    return model


def _model_kwargs(config: TrainConfig, data: DataBundle) -> dict[str, Any]:
    return {"num_classes": len(data.classes), "in_chans": data.in_chans, **config.model_kwargs}


def _load_resume(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ConfigError(f"resume directory {run_dir} does not exist; pass the run directory a training run "
                          "created (runs/NAME)")  # fmt: skip
    path = run_dir / "last.pt"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: nothing to resume from (a run writes last.pt after its "
                          "first epoch); start a new run instead")  # fmt: skip
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        good = run_dir / "best.pt"
        hint = f"; {good} may still be loadable" if good.is_file() else ""
        raise CheckpointError(f"cannot resume: {exc}{hint}") from None
    for stale in run_dir.glob(".*.tmp"):  # half-written files of a process killed mid-write
        stale.unlink(missing_ok=True)
    return state


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
    config = copy.deepcopy(config).validate()
    started = time.time()
    info = init_distributed(config.device)
    device = resolve_device(config.device, info.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed + info.rank, config.deterministic)
    say = (log or _print) if info.is_main else _quiet

    resume_state = _load_resume(Path(resume)) if resume is not None else None
    if info.enabled and config.name is None and resume is None:
        config.name = _shared_name(config, info)
    run_dir = _run_dir(config, Path(resume) if resume is not None else None)
    card = model_card(config.model)  # unknown model: ValueError with close matches, before any data work
    with torch.device("meta"):  # only its minimum input size is needed: no weights allocated or initialised
        probe = create_model(config.model, **{**config.model_kwargs, "in_chans": card.default_input_size[0]})
    data = build_data(config, probe.min_input_size[0], card.default_input_size[1], device, info)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    if config.weights and resume_state is None:
        model = _pretrained(config, data, say).to(device)
    else:
        model = create_model(config.model, **_model_kwargs(config, data)).to(device)
    if config.freeze:
        from ..transfer import freeze

        freeze(model, up_to=None if config.freeze == "backbone" else config.freeze)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(config, model)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    start_epoch, step, best_acc, best_epoch = 0, 0, None, None
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if ema is not None and "ema" in resume_state:
            ema.model.load_state_dict(resume_state["ema"])
        start_epoch, step = resume_state["epoch"], resume_state["step"]
        best_acc, best_epoch = resume_state.get("best_val_acc"), resume_state.get("best_epoch")
        torch.set_rng_state(resume_state["rng"]["torch"])
        if "cuda" in resume_state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(resume_state["rng"]["cuda"], device)
    train_model: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)
    eval_model = ema.model if ema is not None else model

    dtype = amp_dtype(config.amp, device)
    steps_per_epoch = len(data.train)
    total_steps = min(config.epochs * steps_per_epoch, config.max_steps or math.inf)
    total_epochs = math.ceil(total_steps / steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    runlog = None
    if info.is_main:
        with _writing(run_dir / "config.yaml", run_dir):
            save_config(config, run_dir / "config.yaml")
        with _writing(run_dir / "metrics.csv", run_dir):
            runlog = RunLog(run_dir, config.tensorboard, resume_epoch=start_epoch if resume_state else None)
        say(f"{config.model} on {data.name} ({data.sizes['train']:,} train / {data.sizes['val']:,} val / "
            f"{data.sizes['test']:,} test; {data.plan.note()}) on {device}"
            f"{', ' + str(dtype).replace('torch.', '') + ' autocast' if dtype else ''}, {allocator()}"
            f"{f', {info.world_size} processes' if info.enabled else ''} -> {run_dir}")  # fmt: skip
        if resume_state:
            say(f"resuming after epoch {start_epoch} (step {step})")

    history = list(runlog.rows) if runlog else []
    images_per_s = 0.0
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    progress = config.progress if config.progress is not None else sys.stderr.isatty()
    epoch, lr = start_epoch, 0.0

    def diverged(loss_value: float) -> None:  # reads the loop's current step, epoch and lr when called
        last = run_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise TrainingError(
            f"loss became {loss_value} at step {step} (epoch {epoch + 1}) with lr {lr:.4g}; "
            f"{kept}. Try a lower lr (--set lr={lr / 10:.3g}), "
            "a warm-up (--set warmup_epochs=1) or gradient clipping (--set grad_clip=1.0)"
        )  # fmt: skip

    for epoch in range(start_epoch, total_epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
        data.train.set_epoch(epoch)
        train_model.train()
        if config.freeze:
            from ..transfer import set_frozen_bn_eval

            set_frozen_bn_eval(model)  # frozen BatchNorm keeps its statistics
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen, lr = 0, lr_at(step, config, steps_per_epoch, total_steps)
        bar = _progress(data.train, epoch, total_epochs, progress and info.is_main)
        for x, y in bar:
            if step >= total_steps:
                break
            lr = lr_at(step, config, steps_per_epoch, total_steps)
            set_lr(optimizer, lr)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = data.transform(x)
            loss, logits = train_step(model, train_model, optimizer, loss_fn, x, y, device, dtype, diverged,
                                      scaler=scaler, grad_clip=config.grad_clip, ema=ema)  # fmt: skip
            step += 1
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if progress and info.is_main and step % 10 == 0:
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix_str(f"loss {float(loss_sum) / seen:.4f} acc {float(correct) / seen:.2%} "
                                    f"{rate:,.0f} img/s")  # fmt: skip
        train_time = time.perf_counter() - t0
        totals = all_reduce_sum(torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=device,
                                                                                       dtype=torch.float64)]), info)
        images_per_s = float(totals[2]) / train_time
        row: dict[str, Any] = {
            "epoch": epoch + 1, "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
            "val_loss": None, "val_acc": None, "lr": lr, "images_per_s": images_per_s,
        }  # fmt: skip
        if data.val is not None:
            val = evaluate(eval_model, data.val, len(data.classes), device, dtype, config.tta_flip, data.transform)
            row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
        row["seconds"] = time.perf_counter() - t0
        improved = row["val_acc"] is not None and (best_acc is None or row["val_acc"] > best_acc)
        if improved or (data.val is None):
            best_acc, best_epoch = row["val_acc"], epoch + 1
        if info.is_main:
            # last.pt is written last: it is the commit point. A kill before it resumes from the previous epoch,
            # which redoes this one and rewrites best.pt and this epoch's metrics row (RunLog drops later rows).
            state = _state(config, data, model, ema, optimizer, epoch + 1, step, best_acc, best_epoch, row, device)
            if improved or data.val is None:
                _save(run_dir / "best.pt", {**state, "model": eval_model.state_dict()})
            with _writing(run_dir / "metrics.csv", run_dir):
                runlog.log_epoch(row)
            _save(run_dir / "last.pt", state)
            history.append(row)
            say(_epoch_line(row, total_epochs))
        barrier(info)

    result = _finish(config, data, run_dir, model, eval_model, device, dtype, info, step, best_acc, best_epoch,
                     started, images_per_s, history, stopped_early=stop_after_epoch is not None)  # fmt: skip
    if runlog is not None:
        runlog.close()
    return result


def _finish(config, data, run_dir, model, eval_model, device, dtype, info, step, best_acc, best_epoch, started,
            images_per_s, history, stopped_early: bool) -> Result:  # fmt: skip
    """Evaluate the best-validation weights on the test set (once) and write result.json."""
    test = None
    best_path = run_dir / "best.pt"
    if data.test is not None and not stopped_early and best_path.is_file():
        barrier(info)
        best = load_checkpoint(best_path, map_location=device)
        eval_model.load_state_dict(best["model"])
        test = evaluate(eval_model, data.test, len(data.classes), device, dtype, config.tta_flip, data.transform)
    result = Result(
        run_dir=run_dir, model=config.model, data=config.data, epochs=len(history), steps=step,
        best_val_acc=best_acc, best_epoch=best_epoch, test_acc=test and test["acc"], test_top5=test and test["top5"],
        test_loss=test and test["loss"], wall_time_s=time.time() - started, train_images_per_s=images_per_s,
        input_note=data.plan.note(), history=history,
    )  # fmt: skip
    if info.is_main and not stopped_early:
        payload = result.to_dict()
        payload["note"] = ("test accuracy of the best-validation checkpoint (best.pt); the test set was used for "
                           "this final evaluation only") if data.val is not None else \
                          "no validation split (val_fraction=0): test accuracy of the last epoch's weights"
        if test is not None:
            payload["test_per_class_acc"] = dict(zip(data.classes, test["per_class_acc"]))
        with _writing(run_dir / "result.json", run_dir):
            atomic_write_bytes(run_dir / "result.json", json.dumps(payload, indent=2).encode())
    return result


def _state(config, data, model, ema, optimizer, epoch, step, best_acc, best_epoch, row, device) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = {
        "model_name": config.model, "model_kwargs": _model_kwargs(config, data), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "rng": rng, "config": config.to_dict(),
        "classes": data.classes, "data": data.describe(), "metrics": row, "best_val_acc": best_acc,
        "best_epoch": best_epoch,
    }  # fmt: skip
    if ema is not None:
        state["ema"] = ema.model.state_dict()
    return state


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
