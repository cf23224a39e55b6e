"""Learning-rate schedules as a pure function of the step, so a resumed run needs only the step count."""

from __future__ import annotations

import math

from .config import TrainConfig


def lr_at(step: int, config: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Warm-up (if any) ramps linearly from ``warmup_factor * lr`` to ``lr`` over ``warmup_epochs``, then the
    schedule takes over: constant; step (``gamma`` every ``step_size`` epochs); multistep (``gamma`` at each
    milestone, in epochs or steps); cosine (to zero at the end); onecycle (a 30% linear rise from lr/25,
    then a cosine fall to lr/1e4, as Smith & Topin; it carries its own warm-up).
    """
    base, epoch = config.lr, step / steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup_steps and config.schedule != "onecycle":
        frac = step / warmup_steps
        return base * (config.warmup_factor + (1 - config.warmup_factor) * frac)
    if config.schedule == "constant":
        return base
    if config.schedule == "step":
        return base * config.gamma ** math.floor(epoch / config.step_size)
    if config.schedule == "multistep":
        position = step if config.milestone_unit == "step" else epoch
        return base * config.gamma ** sum(1 for m in config.milestones if position >= m)
    if config.schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    # onecycle
    rise = max(1, round(0.3 * total_steps))
    if step < rise:
        return base / 25 + (base - base / 25) * step / rise
    frac = min(1.0, (step - rise) / max(1, total_steps - rise))
    low = base / 1e4
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * frac))
