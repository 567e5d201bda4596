"""`make_optimizer(cfg) -> optax.GradientTransformation`: every optimizer is an optax chain.

The chain is: [clip_by_global_norm] -> the optimizer's scaling -> [add_decayed_weights]
-> scale_by_learning_rate(schedule), the same order as optax's own aliases (adamw), so that
decoupled weight decay is multiplied by the learning rate: w <- w - lr * (update + wd * w).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax.numpy as jnp
import optax

from dnnlab.config import OPTIMIZER_KEYS, OptimizerConfig, RegularizationConfig

ScalingBuilder = Callable[[OptimizerConfig], optax.GradientTransformation]
ScheduleBuilder = Callable[[OptimizerConfig, int, int], optax.Schedule]  # (cfg, steps_per_epoch, total steps)


def _rmsprop(cfg: OptimizerConfig) -> optax.GradientTransformation:
    # bias correction makes sigma_0 = |g_0|, as in the lecture's RMSProp
    return optax.scale_by_rms(decay=cfg.rho, eps=cfg.eps, bias_correction=True)


def _adam(cfg: OptimizerConfig) -> optax.GradientTransformation:
    # adamw is adam's scaling; its decoupled decay is regularization.weight_decay, added in the chain
    return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


# `optimizer.name` -> the optimizer's scaling of the gradient (before weight decay and the lr);
# the names are config.OptimizerName's (tests/test_registries.py holds them equal).
OPTIMIZERS: dict[str, ScalingBuilder] = {
    "sgd": lambda cfg: optax.identity(),
    "momentum": lambda cfg: optax.trace(decay=cfg.momentum, nesterov=False),
    "nesterov": lambda cfg: optax.trace(decay=cfg.momentum, nesterov=True),
    "adagrad": lambda cfg: optax.scale_by_rss(initial_accumulator_value=0.0, eps=cfg.eps),
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adam,
}


def _warmup_cosine(cfg: OptimizerConfig, steps_per_epoch: int, total: int) -> optax.Schedule:
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, warmup_steps=warmup, decay_steps=total, end_value=cfg.lr * cfg.min_lr_ratio
    )


# `optimizer.schedule` -> the learning rate as a function of the global step; the names are
# config.ScheduleName's (tests/test_registries.py holds them equal).
SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": lambda cfg, steps_per_epoch, total: optax.constant_schedule(cfg.lr),
    "step": lambda cfg, steps_per_epoch, total: optax.exponential_decay(
        cfg.lr, transition_steps=cfg.step_epochs * steps_per_epoch, decay_rate=cfg.step_factor, staircase=True
    ),
    "cosine": lambda cfg, steps_per_epoch, total: optax.cosine_decay_schedule(
        cfg.lr, decay_steps=total, alpha=cfg.min_lr_ratio
    ),
    "warmup_cosine": _warmup_cosine,
}


def _scaling(cfg: OptimizerConfig) -> optax.GradientTransformation:
    try:
        builder = OPTIMIZERS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown optimizer {cfg.name!r}; known: {', '.join(OPTIMIZERS)}") from None
    return builder(cfg)


def make_schedule(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """The learning rate as a function of the global step."""
    try:
        builder = SCHEDULES[cfg.schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}") from None
    return builder(cfg, steps_per_epoch, max(steps_per_epoch * epochs, 1))


# The numeric settings that reach the compiled training program as values in the optimizer's state
# (optax.inject_hyperparams) instead of constants folded into it: runs that differ only in them (a
# learning-rate sweep) share one compiled program. The decay rates b1, b2 and rho stay constants:
# optax computes 1 - decay in float32 from a traced value, which rounds differently from Python's
# double and would change every Adam and RMSProp result in its last bits. The schedules' own
# numbers (step_factor, min_lr_ratio) stay constants too, and so does the learning rate of
# warmup_cosine: optax's schedules branch on them in Python.
INJECTED = ("lr", "momentum", "eps", "clip_norm")
LR_INJECTED = ("constant", "step", "cosine")  # the schedules that take a traced learning rate


def hyperparameters(cfg: OptimizerConfig, reg: RegularizationConfig) -> dict[str, float]:
    """The injected settings of `cfg` and `reg` (see INJECTED) that the chain reads."""
    used = set(INJECTED) & ({"clip_norm"} | set(OPTIMIZER_KEYS.get(cfg.name, ())))
    if cfg.schedule in LR_INJECTED:
        used.add("lr")
    values = {k: float(getattr(cfg, k)) for k in INJECTED if k in used and getattr(cfg, k) is not None}
    if reg.weight_decay > 0:
        values["weight_decay"] = float(reg.weight_decay)
    return values


def make_optimizer(
    cfg: OptimizerConfig,
    reg: RegularizationConfig,
    *,
    steps_per_epoch: int,
    epochs: int,
    decay_mask: Any = None,
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """Build the optax chain and its learning-rate schedule.

    The chain is wrapped in `optax.inject_hyperparams`: the values of `hyperparameters(cfg, reg)`
    live in its state (`with_hyperparameters` sets them), so the compiled update does not depend
    on them.

    Args:
        cfg, reg: the optimizer and regularization sections.
        steps_per_epoch, epochs: to lay schedules out over the run.
        decay_mask: pytree of bools (or a callable) selecting the leaves that weight decay touches.
    Returns:
        (transformation, schedule): the schedule, with the configured numbers, is for the records.
    """
    schedule = make_schedule(cfg, steps_per_epoch, epochs)  # raises on an unknown schedule
    _scaling(cfg)  # ... and on an unknown optimizer, before anything is traced

    def chain(**values: Any) -> optax.GradientTransformation:
        c = cfg.model_copy(update={k: v for k, v in values.items() if k != "weight_decay"})
        parts = []
        if cfg.clip_norm is not None:
            parts.append(optax.clip_by_global_norm(c.clip_norm))
        parts.append(_scaling(c))
        if reg.weight_decay > 0:
            parts.append(optax.add_decayed_weights(values["weight_decay"], mask=decay_mask))
        parts.append(optax.scale_by_learning_rate(make_schedule(c, steps_per_epoch, epochs)))
        return optax.chain(*parts)

    values = hyperparameters(cfg, reg)
    # inject_hyperparams reads the factory's signature: one named parameter per injected value
    chain.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in values]
    )
    tx = optax.inject_hyperparams(chain, hyperparam_dtype=jnp.float32)(**values)
    return tx, schedule


def with_hyperparameters(opt_state: Any, values: dict[str, Any]) -> Any:
    """`opt_state` (of a `make_optimizer` chain) with its injected settings replaced by `values`
    (arrays, traced or not; a leading seed axis is kept)."""
    old = opt_state.hyperparams
    if set(old) != set(values):
        raise ValueError(f"the optimizer state holds {sorted(old)}; got {sorted(values)}")
    new = {k: jnp.broadcast_to(jnp.asarray(values[k], old[k].dtype), old[k].shape) for k in old}
    return opt_state._replace(hyperparams=new)
