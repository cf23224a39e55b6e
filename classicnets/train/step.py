"""One training step, the evaluation pass and the weight EMA: the pieces every training loop shares.

``fit`` (the engine), the studies and the benchmarks all train with :func:`train_step` at the learning rate
:func:`set_lr` sets from :func:`classicnets.train.schedule.lr_at`, and measure with :func:`evaluate`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import autocast


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Any, num_classes: int, *, amp: torch.dtype | None = None, tta_flip: bool = False,
    predictions: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Loss, top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted).

    ``loader`` yields model-ready ``(x, y)`` batches. ``amp`` is the autocast dtype (None: fp32), ``tta_flip``
    averages the logits of each image and its mirror. ``predictions=True`` adds ``pred`` (N,) and ``logits``
    (N, K), in the loader's order, on the CPU.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    outputs = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = predict_logits(model, x, amp, tta_flip)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        if predictions:
            outputs.append(logits.cpu())
    model.train(was_training)
    n = int(confusion.sum())
    if n == 0:
        raise ValueError("evaluate: the loader yielded no images")
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    metrics = {
        "loss": float(loss_sum) / n, "acc": float(confusion.diag().sum()) / n, "top5": float(top5) / n,
        "n": n, "per_class_acc": per_class.tolist(), "confusion": confusion.cpu(),
    }  # fmt: skip
    if predictions:
        metrics["logits"] = torch.cat(outputs)
        metrics["pred"] = metrics["logits"].argmax(1)
    return metrics


def predict_logits(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None = None, tta_flip: bool = False) -> torch.Tensor:
    """float32 logits (B, K) of a model-ready batch, as :func:`evaluate` computes them (eval mode is the
    caller's job): under autocast ``amp``, averaged with the mirrored batch's when ``tta_flip``."""
    with autocast(x.device, amp):
        logits = model(x).float()
        if tta_flip:
            logits = (logits + model(x.flip(3)).float()) / 2
    return logits


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` times its ``lr_scale`` (1 unless set)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    amp: torch.dtype | None = None,
    forward: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    ema: EMA | None = None,
    diverged: Callable[[float], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the model-ready batch ``(x, y)``; returns the loss and the logits.

    Forward under autocast ``amp`` through ``forward`` (the model itself by default, or its DDP / compiled
    wrapper; ``model`` is what is clipped and averaged), a finite-loss check (``diverged(loss)`` is called,
    and should raise, before anything is updated; without it a non-finite loss raises FloatingPointError),
    backward (scaled for fp16), optional gradient clipping, the step and the EMA update.
    """
    with autocast(x.device, amp):
        logits = (model if forward is None else forward)(x)  # a compiled module has no truth value
        loss = loss_fn(logits.float(), y)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        if diverged is not None:
            diverged(loss_value)
        raise FloatingPointError(f"the loss became {loss_value}")
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
