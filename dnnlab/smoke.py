"""`dnnlab check`: a smoke test of a config in seconds, before spending a training budget.

The checks follow the usual "before you train" list: the initial loss is near ln(C) (near 1, the
cost of predicting the mean, on the standardized targets of `data.task: regression`), a few
steps keep the loss and the gradients finite, the model can overfit one small batch, and it
does better on real inputs than on zeroed ones (so the inputs reach the output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Callable, Optional

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


@dataclass(frozen=True)
class SmokeCheck:
    """One check of `CHECKS`: its `name` (formatted with the bench's `facts`), what it
    `measures` (ok and the numbers behind it), the `advice` added when it fails, and the
    `task` it is for (None: both)."""

    name: str
    measure: Callable[[_Bench], tuple[bool, str]]
    advice: str = ""
    task: Optional[str] = None

    def verdict(self, ok: bool, detail: str, **facts: Any) -> Check:
        return Check(self.name.format(**facts), ok, detail if ok or not self.advice else f"{detail}: {self.advice}")


def _loss_and_acc(model, params, x, y):
    logits, _ = model.apply(params, x, train=False)
    loss, correct = losses.loss_and_correct(logits, y, jnp.ones(y.shape[0]))
    return loss / y.shape[0], correct / y.shape[0]


class _Bench:
    """What the checks share: the model at initialization and its loss on a probe batch, the
    training key, and one stream of random numbers that the checks draw from in `CHECKS`' order."""

    def __init__(self, cfg: Config, data: Dataset) -> None:
        self.cfg, self.data = cfg, data
        self.model = models.build(cfg.model, data.input_shape, data.num_classes)
        self.params = self.model.init(jax.random.PRNGKey(cfg.seed))
        self.trainable = models.split_stats(self.params)[0]
        self.rng = np.random.default_rng(cfg.seed)
        self.n = len(data.train)
        self.evaluate = jax.jit(partial(_loss_and_acc, self.model))
        probe = self.rng.permutation(self.n)[: min(512, self.n)]
        self.init_loss = float(self.evaluate(self.params, data.train.x[probe], data.train.y[probe])[0])
        self.key = jax.random.PRNGKey(cfg.seed + 1)
        self.facts = {"single": min(SINGLE_BATCH, self.n)}

    def fresh_state(self, steps_per_epoch: int, constant_lr: bool = False):
        """An optimizer and a training state at the initial parameters."""
        cfg = self.cfg
        # the single-batch check runs at the schedule's peak lr: it tests the model, not the schedule
        opt = cfg.optimizer.model_copy(update={"schedule": "constant"}) if constant_lr else cfg.optimizer
        tx, _ = make_optimizer(
            opt, cfg.regularization, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs,
            decay_mask=losses.regularized_mask(self.trainable, cfg.regularization.include_biases),
        )
        params = jax.tree_util.tree_map(jnp.copy, self.params)
        return tx, TrainState(params, tx.init(self.trainable), jnp.zeros((), jnp.int32))

    @cached_property
    def single_batch(self) -> tuple[Any, Any, Any]:
        """One batch of `facts["single"]` training examples, and the parameters after
        OVERFIT_STEPS steps on it alone."""
        cfg = self.cfg
        single = self.rng.permutation(self.n)[: self.facts["single"]]
        xs, ys = jnp.asarray(self.data.train.x[single]), jnp.asarray(self.data.train.y[single])
        tx, state = self.fresh_state(1, constant_lr=True)
        step = jax.jit(partial(train_step, model=self.model, tx=tx, reg=cfg.regularization))
        w, key = jnp.ones(len(single)), self.key
        if training_loop(cfg) == "steps":
            for _ in range(OVERFIT_STEPS):
                state = step(state, xs, ys, w, key)[0]
        else:
            state = jax.jit(
                lambda state: jax.lax.fori_loop(0, OVERFIT_STEPS, lambda i, s: step(s, xs, ys, w, key)[0], state)
            )(state)
        return xs, ys, state.params


def _initial_cross_entropy(bench: _Bench) -> tuple[bool, str]:
    ln_c, loss = math.log(bench.data.num_classes), bench.init_loss
    ok = math.isfinite(loss) and 0.5 * ln_c <= loss <= 2 * ln_c
    return ok, (
        f"{loss:.3f} at initialization; ln({bench.data.num_classes}) = {ln_c:.3f} "
        f"(allowed {0.5 * ln_c:.2f}-{2 * ln_c:.2f})"
    )


def _initial_mse(bench: _Bench) -> tuple[bool, str]:
    # standardized targets: predicting the mean (0) costs 1; a fresh net's outputs add their variance
    loss = bench.init_loss
    ok = math.isfinite(loss) and INITIAL_MSE[0] <= loss <= INITIAL_MSE[1]
    return ok, (
        f"{loss:.3f} at initialization; predicting the mean costs 1 (allowed {INITIAL_MSE[0]:g}-{INITIAL_MSE[1]:g})"
    )


def _few_steps(bench: _Bench) -> tuple[bool, str]:
    cfg, data, n = bench.cfg, bench.data, bench.n
    batch = min(cfg.data.batch_size, n)
    tx, state = bench.fresh_state(max(1, n // batch))
    step = jax.jit(partial(train_step, model=bench.model, tx=tx, reg=cfg.regularization))
    ones = jnp.ones(batch)
    limit = baselines.divergence_limit(cfg.train.divergence_factor, bench.init_loss, data.num_classes, data.regression)
    for i in range(FEW_STEPS):
        idx = bench.rng.integers(0, n, batch)
        state, out = step(state, data.train.x[idx], data.train.y[idx], ones, bench.key)
        loss = float(out["ce_sum"]) / batch
        if not (math.isfinite(loss) and all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(state.params))):
            return False, f"non-finite loss or weights at step {i + 1}: lower optimizer.lr or set optimizer.clip_norm"
        if loss > limit:
            return False, (
                f"loss {loss:.3g} at step {i + 1} is over {cfg.train.divergence_factor:g}x the initial loss: "
                "lower optimizer.lr"
            )
    return True, f"loss {loss:.3f} after {FEW_STEPS} steps"


def _overfit_one_batch(bench: _Bench) -> tuple[bool, str]:
    xs, ys, params = bench.single_batch
    start_loss = float(bench.evaluate(bench.params, xs, ys)[0])
    end_loss, end_acc = (float(v) for v in bench.evaluate(params, xs, ys))
    regression = bench.data.regression
    ok = math.isfinite(end_loss) and ((end_acc == 1.0 and not regression) or end_loss < 0.1 * start_loss)
    shown = f"MAE {end_acc:.3f} (standardized)" if regression else f"accuracy {end_acc:.2f}"
    return ok, f"loss {start_loss:.3f} -> {end_loss:.3f}, {shown} after {OVERFIT_STEPS} steps"


def _real_beat_zeroed(bench: _Bench) -> tuple[bool, str]:
    xs, ys, params = bench.single_batch
    real_loss = float(bench.evaluate(params, xs, ys)[0])
    zeroed_loss = float(bench.evaluate(params, jnp.zeros_like(xs), ys)[0])
    return _inputs_reach_output(real_loss, zeroed_loss)


def _inputs_reach_output(real_loss: float, zeroed_loss: float) -> tuple[bool, str]:
    bound = (1 - INPUTS_MARGIN) * zeroed_loss
    ok = math.isfinite(real_loss) and math.isfinite(zeroed_loss) and real_loss < bound
    return ok, (
        f"loss {real_loss:.3f} on the batch vs {zeroed_loss:.3f} with its inputs zeroed "
        f"(must be at least {INPUTS_MARGIN:.0%} lower, under {bound:.3f})"
    )


# the checks in the order they run and print; each draws the random numbers it needs after the ones before it
CHECKS: tuple[SmokeCheck, ...] = (
    SmokeCheck("initial loss near ln(C)", _initial_cross_entropy, task="classification"),
    SmokeCheck("initial loss near 1 (standardized targets)", _initial_mse, task="regression"),
    SmokeCheck(f"{FEW_STEPS} training steps stay finite and bounded", _few_steps),
    SmokeCheck(
        "can overfit one batch of {single}", _overfit_one_batch,
        advice="the model cannot even memorize a few examples; training will fail (see `dnnlab run` diagnosis)",
    ),
    SmokeCheck("real inputs beat zeroed inputs", _real_beat_zeroed, advice="the output ignores the input"),
)


def run_checks(cfg: Config, data: Dataset) -> list[Check]:
    """Run every check of `CHECKS` for the data's task; each reports ok and the numbers behind it."""
    bench = _Bench(cfg, data)
    return [
        check.verdict(*check.measure(bench), **bench.facts)
        for check in CHECKS
        if check.task in (None, data.task)
    ]


def inputs_check(real_loss: float, zeroed_loss: float) -> Check:
    """The check that the inputs reach the output: the loss on the real batch is at least
    INPUTS_MARGIN (relative) below the loss on the same batch with its inputs zeroed."""
    return CHECKS[-1].verdict(*_inputs_reach_output(real_loss, zeroed_loss))
