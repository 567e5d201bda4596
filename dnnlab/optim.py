"""`make_optimizer(cfg) -> optax.GradientTransformation`: every optimizer is an optax chain.

The chain is: [clip_by_global_norm] -> the optimizer's scaling -> [add_decayed_weights]
-> scale_by_learning_rate(schedule), the same order as optax's own aliases (adamw), so that
decoupled weight decay is multiplied by the learning rate: w <- w - lr * (update + wd * w).
"""

from __future__ import annotations

from typing import Any, Callable

import optax

from dnnlab.config import OptimizerConfig, RegularizationConfig


def _scaling(cfg: OptimizerConfig) -> optax.GradientTransformation:
    if cfg.name == "sgd":
        return optax.identity()
    if cfg.name in ("momentum", "nesterov"):
        return optax.trace(decay=cfg.momentum, nesterov=cfg.name == "nesterov")
    if cfg.name == "adagrad":
        return optax.scale_by_rss(initial_accumulator_value=0.0, eps=cfg.eps)
    if cfg.name == "rmsprop":
        # bias correction makes sigma_0 = |g_0|, as in the lecture's RMSProp
        return optax.scale_by_rms(decay=cfg.rho, eps=cfg.eps, bias_correction=True)
    if cfg.name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def make_schedule(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """The learning rate as a function of the global step."""
    total = max(steps_per_epoch * epochs, 1)
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "step":
        return optax.exponential_decay(
            cfg.lr, transition_steps=cfg.step_epochs * steps_per_epoch, decay_rate=cfg.step_factor, staircase=True
        )
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.lr, decay_steps=total, alpha=cfg.min_lr_ratio)
    if cfg.schedule == "warmup_cosine":
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup_steps=warmup, decay_steps=total, end_value=cfg.lr * cfg.min_lr_ratio
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def make_optimizer(
    cfg: OptimizerConfig,
    reg: RegularizationConfig,
    *,
    steps_per_epoch: int,
    epochs: int,
    decay_mask: Any = None,
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """Build the optax chain and its learning-rate schedule.

    Args:
        cfg, reg: the optimizer and regularization sections.
        steps_per_epoch, epochs: to lay schedules out over the run.
        decay_mask: pytree of bools (or a callable) selecting the leaves that weight decay touches.
    Returns:
        (transformation, schedule).
    """
    schedule = make_schedule(cfg, steps_per_epoch, epochs)
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(_scaling(cfg))
    if reg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(reg.weight_decay, mask=decay_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts), schedule
