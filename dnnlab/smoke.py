"""`dnnlab check`: a smoke test of a config in seconds, before spending a training budget.

The checks follow the usual "before you train" list: the initial loss is near ln(C) (near 1, the
cost of predicting the mean, on the standardized targets of `data.task: regression`), a few
steps keep the loss and the gradients finite, the model can overfit one small batch, and it
does better on real inputs than on zeroed ones (so the inputs reach the output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import baselines, losses, models
from dnnlab.config import Config, training_loop
from dnnlab.data import Dataset
from dnnlab.optim import make_optimizer
from dnnlab.train import TrainState, train_step

SINGLE_BATCH = 32
OVERFIT_STEPS = 300
FEW_STEPS = 10
# how much lower (relative) the loss on real inputs must be than on zeroed ones: equal losses, or
# a difference in the third digit, mean the output ignores the input
INPUTS_MARGIN = 0.01
# the initial loss allowed on standardized regression targets: 1 for predicting the mean, plus the
# variance of a fresh net's outputs, minus twice their (chance) covariance with the target; at
# most (1 + 1)^2, outputs as spread as the target and against it, at least (1 - 0.5)^2
INITIAL_MSE = (0.25, 4.0)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _loss_and_acc(model, params, x, y):
    logits, _ = model.apply(params, x, train=False)
    loss, correct = losses.loss_and_correct(logits, y, jnp.ones(y.shape[0]))
    return loss / y.shape[0], correct / y.shape[0]


def run_checks(cfg: Config, data: Dataset) -> list[Check]:
    """Run every check; each reports ok and the numbers behind it."""
    model = models.build(cfg.model, data.input_shape, data.num_classes)
    params = model.init(jax.random.PRNGKey(cfg.seed))
    rng = np.random.default_rng(cfg.seed)
    n = len(data.train)
    ln_c = math.log(data.num_classes)
    checks: list[Check] = []
    evaluate = jax.jit(partial(_loss_and_acc, model))

    probe = rng.permutation(n)[: min(512, n)]
    init_loss = float(evaluate(params, data.train.x[probe], data.train.y[probe])[0])
    if data.regression:
        # standardized targets: predicting the mean (0) costs 1; a fresh net's outputs add their variance
        ln_c = 1.0
        ok = math.isfinite(init_loss) and INITIAL_MSE[0] <= init_loss <= INITIAL_MSE[1]
        checks.append(Check(
            "initial loss near 1 (standardized targets)", ok,
            f"{init_loss:.3f} at initialization; predicting the mean costs 1 (allowed {INITIAL_MSE[0]:g}-{INITIAL_MSE[1]:g})",
        ))
    else:
        ok = math.isfinite(init_loss) and 0.5 * ln_c <= init_loss <= 2 * ln_c
        checks.append(Check("initial loss near ln(C)", ok, f"{init_loss:.3f} at initialization; ln({data.num_classes}) = {ln_c:.3f} (allowed {0.5 * ln_c:.2f}-{2 * ln_c:.2f})"))

    def fresh_state(steps_per_epoch: int, constant_lr: bool = False):
        # the single-batch check runs at the schedule's peak lr: it tests the model, not the schedule
        opt = cfg.optimizer.model_copy(update={"schedule": "constant"}) if constant_lr else cfg.optimizer
        tx, _ = make_optimizer(
            opt, cfg.regularization, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs,
            decay_mask=losses.regularized_mask(trainable, cfg.regularization.include_biases),
        )
        return tx, TrainState(jax.tree_util.tree_map(jnp.copy, params), tx.init(trainable), jnp.zeros((), jnp.int32))

    trainable = models.split_stats(params)[0]

    batch = min(cfg.data.batch_size, n)
    tx, state = fresh_state(max(1, n // batch))
    step = jax.jit(partial(train_step, model=model, tx=tx, reg=cfg.regularization))
    key = jax.random.PRNGKey(cfg.seed + 1)
    ones = jnp.ones(batch)
    limit = baselines.divergence_limit(cfg.train.divergence_factor, init_loss, data.num_classes, data.regression)
    problem = ""
    for i in range(FEW_STEPS):
        idx = rng.integers(0, n, batch)
        state, out = step(state, data.train.x[idx], data.train.y[idx], ones, key)
        loss = float(out["ce_sum"]) / batch
        if not (math.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(state.params))):
            problem = f"non-finite loss or weights at step {i + 1}: lower optimizer.lr or set optimizer.clip_norm"
        elif loss > limit:
            problem = f"loss {loss:.3g} at step {i + 1} is over {cfg.train.divergence_factor:g}x the initial loss: lower optimizer.lr"
        if problem:
            break
    checks.append(Check(
        f"{FEW_STEPS} training steps stay finite and bounded", not problem, problem or f"loss {loss:.3f} after {FEW_STEPS} steps",
    ))

    single = rng.permutation(n)[: min(SINGLE_BATCH, n)]
    xs, ys = jnp.asarray(data.train.x[single]), jnp.asarray(data.train.y[single])
    tx, state = fresh_state(1, constant_lr=True)
    step = jax.jit(partial(train_step, model=model, tx=tx, reg=cfg.regularization))
    w = jnp.ones(len(single))

    if training_loop(cfg) == "steps":
        for _ in range(OVERFIT_STEPS):
            state = step(state, xs, ys, w, key)[0]
    else:
        state = jax.jit(
            lambda state: jax.lax.fori_loop(0, OVERFIT_STEPS, lambda i, s: step(s, xs, ys, w, key)[0], state)
        )(state)
    start_loss = float(evaluate(params, xs, ys)[0])
    end_loss, end_acc = (float(v) for v in evaluate(state.params, xs, ys))
    ok = math.isfinite(end_loss) and ((end_acc == 1.0 and not data.regression) or end_loss < 0.1 * start_loss)
    shown = f"MAE {end_acc:.3f} (standardized)" if data.regression else f"accuracy {end_acc:.2f}"
    checks.append(Check(
        f"can overfit one batch of {len(single)}", ok,
        f"loss {start_loss:.3f} -> {end_loss:.3f}, {shown} after {OVERFIT_STEPS} steps"
        + ("" if ok else ": the model cannot even memorize a few examples; training will fail (see `dnnlab run` diagnosis)"),
    ))

    zero_loss = float(evaluate(state.params, jnp.zeros_like(xs), ys)[0])
    checks.append(inputs_check(end_loss, zero_loss))
    return checks


def inputs_check(real_loss: float, zeroed_loss: float) -> Check:
    """The check that the inputs reach the output: the loss on the real batch is at least
    INPUTS_MARGIN (relative) below the loss on the same batch with its inputs zeroed."""
    bound = (1 - INPUTS_MARGIN) * zeroed_loss
    ok = math.isfinite(real_loss) and math.isfinite(zeroed_loss) and real_loss < bound
    return Check(
        "real inputs beat zeroed inputs", ok,
        f"loss {real_loss:.3f} on the batch vs {zeroed_loss:.3f} with its inputs zeroed "
        f"(must be at least {INPUTS_MARGIN:.0%} lower, under {bound:.3f})"
        + ("" if ok else ": the output ignores the input"),
    )
