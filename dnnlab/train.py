"""Training: the pure jitted epoch and evaluation functions, early stopping and `fit`.

One jitted call runs a whole epoch (`lax.scan` over minibatches of device-resident data,
reshuffled with `jax.random` each epoch); one more evaluates the train, validation and test
splits in evaluation mode. The host loop fetches one small dict per epoch. Nothing here
prints: output goes through a `runs.Writer`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dnnlab
from dnnlab import baselines, distributed, interrupt, losses, models, pretrain, probes, stored
from dnnlab.config import Config, EarlyStoppingConfig, RegularizationConfig, data_seed, training_loop
from dnnlab.data import Dataset
from dnnlab.optim import hyperparameters, make_optimizer, with_hyperparameters
from dnnlab.checkpoints import flatten_params, unflatten_params
from dnnlab.runs import FINISHED, METRICS, StateError, Writer, cache_root, compiled_cache_off

class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # global step, int32


def loss_fn(trainable, stats, x, y, w, key, *, model: models.Model, reg: RegularizationConfig, class_weights=None):
    """Mean cross-entropy over the real (w = 1) examples plus the regularization terms; with
    `class_weights` (one per class, an input of the program), the class-weighted mean, and the
    summed cross-entropy it returns is weighted too. Without them the loss is exactly the
    unweighted one.

    `stats` are batch norm's running statistics (None without batch norm): read-only here, the
    updated ones come back in the aux output.
    """
    logits, aux = model.apply(models.merge_stats(trainable, stats), x, key=key, train=True)
    ce_sum, correct = losses.loss_and_correct(logits, y, w)
    terms = losses.regularization_terms(trainable, reg)
    if class_weights is None:
        total = ce_sum / jnp.maximum(jnp.sum(w), 1.0) + sum(terms.values())
    else:
        ce_sum, weight_sum = losses.weighted_cross_entropy(logits, y, w, class_weights)
        total = ce_sum / jnp.maximum(weight_sum, 1e-12) + sum(terms.values())
    return total, (ce_sum, correct, aux.get("batch_stats"))


def train_step(state: TrainState, x, y, w, dropout_key, class_weights=None, *, model, tx, reg) -> tuple[TrainState, dict]:
    """One optimizer step on one minibatch; the dropout key is folded with the global step.
    The optimizer updates the trainable parameters; batch norm's running statistics are
    replaced by the step's new running averages. `class_weights`: see `loss_fn`."""
    key = jax.random.fold_in(dropout_key, state.step)
    trainable, stats = models.split_stats(state.params)
    grads, (ce_sum, correct, new_stats) = jax.grad(loss_fn, has_aux=True)(
        trainable, stats, x, y, w, key, model=model, reg=reg, class_weights=class_weights
    )
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = models.merge_stats(optax.apply_updates(trainable, updates), new_stats)
    return TrainState(params, opt_state, state.step + 1), {"ce_sum": ce_sum, "correct": correct}


def batches(n: int, batch_size: int, shuffle_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reshuffled epoch as (steps, batch) example indices and weights; the last, partial batch
    is padded with weight-0 repeats."""
    steps = -(-n // batch_size)
    perm = jax.random.permutation(shuffle_key, n)
    flat = jnp.arange(steps * batch_size)
    return perm[flat % n].reshape(steps, batch_size), (flat < n).astype(jnp.float32).reshape(steps, batch_size)


def indexed_step(state, x_N, y_N, idx_B, w_B, dropout_key, class_weights=None, *, model, tx, reg, shard=None):
    """`train_step` on the examples `idx_B` of device-resident data (for the per-step loop)."""
    x_B, y_B, w_B = _batch(x_N, y_N, idx_B, w_B, shard)
    return train_step(state, x_B, y_B, w_B, dropout_key, class_weights, model=model, tx=tx, reg=reg)


def _batch(x_N, y_N, idx_B, w_B, shard: Optional[Callable[[Any], Any]]):
    """The examples `idx_B` of the data; with several devices (`shard`), laid out as a batch split
    over them: each device computes its share, and the sums over the batch (the loss, the
    gradient, batch norm's statistics) become all-reduces."""
    x_B, y_B = x_N[idx_B], y_N[idx_B]
    if shard is None:
        return x_B, y_B, w_B
    return shard(x_B), shard(y_B), shard(w_B)


def stepwise_epoch(
    state, x_N, y_N, shuffle_key, dropout_key, *, step_fn, batches_fn, on_step=None, every=1, class_weights=None,
    total_weight=None,
):
    """The same epoch as `train_epoch`, as a Python loop over a jitted step: on the CPU, XLA runs
    convolutions inside a while loop (lax.scan) about 11x slower than outside one
    (bench/conv.py), so convolutional models train this way. `class_weights`: see `loss_fn`;
    `total_weight`, the training examples' summed class weight, divides the running loss."""
    idx_SxB, w_SxB = batches_fn(shuffle_key)
    ce_sum = correct = 0.0
    weighted = () if class_weights is None else (class_weights,)
    for i in range(idx_SxB.shape[0]):
        interrupt.stop_point()
        state, out = step_fn(state, x_N, y_N, idx_SxB[i], w_SxB[i], dropout_key, *weighted)
        ce_sum, correct = ce_sum + out["ce_sum"], correct + out["correct"]
        if on_step is not None and (i + 1) % every == 0:
            on_step(i + 1)
    n = x_N.shape[0]
    total = n if class_weights is None else total_weight
    return state, {"running_loss": ce_sum / total, "running_accuracy": correct / n}


def stepwise_evaluate(params, splits, *, chunk_fn, chunk: int, multiple: int = 1) -> dict[str, jax.Array]:
    """`evaluate_splits` as a Python loop over jitted chunks (see `stepwise_epoch`)."""
    out = {}
    for name, (x, y) in splits.items():
        n = x.shape[0]
        size = _chunk_size(chunk, n, multiple)
        sums: tuple = ()
        for start in range(0, n, size):
            part = chunk_fn(params, x, y, np.int32(start), size=size)
            sums = tuple(part) if not sums else tuple(a + b for a, b in zip(sums, part))
        loss, correct, *per_class = sums
        out[f"{name}_loss"], out[f"{name}_accuracy"] = loss / n, correct / n
        out.update(_class_outputs(name, per_class))
    return out


def _class_outputs(split: str, per_class: list[Any]) -> dict[str, Any]:
    """The per-class sums of a split's evaluation (`losses.class_sums`) by name:
    `<split>_class_correct` and, when the loss is class-weighted, `<split>_class_loss`."""
    return dict(zip((f"{split}_class_correct", f"{split}_class_loss"), per_class))


def _chunk_size(chunk: int, n: int, multiple: int) -> int:
    """Examples per evaluation chunk: at most the split, rounded up to a multiple of the device
    count (the rounding's extra examples weigh 0)."""
    return -(-min(chunk, n) // multiple) * multiple


def chunk_at(params, x_N, y_N, start, *, size: int, model, shard=None, num_classes=None, class_loss=False):
    """`chunk_sums` of the `size` examples from `start` (past the end: weight-0 repeats)."""
    n = x_N.shape[0]
    flat = start + jnp.arange(size)
    return chunk_sums(
        params, x_N, y_N, jnp.minimum(flat, n - 1), (flat < n).astype(jnp.float32), model=model, shard=shard,
        num_classes=num_classes, class_loss=class_loss,
    )


def chunk_sums(params, x_N, y_N, idx, w, *, model, shard=None, num_classes=None, class_loss=False):
    """Summed loss and correct count of one evaluation chunk; with `num_classes`, then each
    class's correct count (and, with `class_loss`, its summed loss: `losses.class_sums`)."""
    x_C, y_C, w = _batch(x_N, y_N, idx, w, shard)
    logits, _ = model.apply(params, x_C, train=False)
    sums = losses.loss_and_correct(logits, y_C, w)
    if num_classes is None:
        return sums
    return (*sums, *losses.class_sums(logits, y_C, w, num_classes, class_loss))


def train_epoch(
    state: TrainState,
    x_N: jax.Array,
    y_N: jax.Array,
    shuffle_key: jax.Array,
    dropout_key: jax.Array,
    *,
    model: models.Model,
    tx: optax.GradientTransformation,
    reg: RegularizationConfig,
    batch_size: int,
    shard: Optional[Callable[[Any], Any]] = None,
) -> tuple[TrainState, dict]:
    """A whole epoch as one loop (`train_steps` from the first step to the last).

    Returns:
        (new state, {"running_loss", "running_accuracy"}) with the dropout-on running averages.
    """
    steps = -(-x_N.shape[0] // batch_size)
    state, _, running = train_steps(
        state, new_epoch(steps, batch_size, ()), x_N, y_N, shuffle_key, dropout_key, jnp.int32(0), jnp.int32(steps),
        model=model, tx=tx, reg=reg, batch_size=batch_size, shard=shard,
    )
    return state, running


def new_epoch(steps: int, batch_size: int, lead: tuple[int, ...]) -> tuple[Any, ...]:
    """What `train_steps` carries from one slice of an epoch to the next, before the first: the
    order of the examples (drawn by the first slice) and each step's sums (cross-entropy, correct)."""
    return (
        np.zeros((*lead, steps, batch_size), np.int32),
        np.zeros((*lead, steps, batch_size), np.float32),
        np.zeros((*lead, steps), np.float32),
        np.zeros((*lead, steps), np.float32),
    )


def train_steps(
    state: TrainState,
    carry: tuple[jax.Array, ...],
    x_N: jax.Array,
    y_N: jax.Array,
    shuffle_key: jax.Array,
    dropout_key: jax.Array,
    first: jax.Array,
    last: jax.Array,
    class_weights: Optional[jax.Array] = None,
    *,
    model: models.Model,
    tx: optax.GradientTransformation,
    reg: RegularizationConfig,
    batch_size: int,
    shard: Optional[Callable[[Any], Any]] = None,
) -> tuple[TrainState, tuple[jax.Array, ...], dict]:
    """Steps `first` to `last` - 1 of the epoch whose order `shuffle_key` draws, as one loop.
    The last, partial batch is padded with weight-0 repeats. With several devices, `shard`
    splits each batch over them (`distributed.constrain`).

    `first` and `last` are inputs of the program, not constants: an epoch run in one call and
    the same epoch run in slices (to show progress between them) are one compiled program and
    give the same numbers. `carry` (`new_epoch` before the first slice) holds the epoch's order
    of the examples, drawn by the slice that starts at step 0 (a permutation of 60,000 takes 40
    ms on 2 cores: once an epoch, not once a slice), and each step's summed cross-entropy and
    correct count. `class_weights` (an input, like `first`): see `loss_fn`; the running loss is
    then the class-weighted mean.

    Returns:
        (new state, the carry, {"running_loss", "running_accuracy"}: the dropout-on running
        averages of the steps so far, over the whole epoch's examples).
    """
    n = x_N.shape[0]
    idx_SxB, w_SxB, ce_S, correct_S = carry
    idx_SxB, w_SxB = jax.lax.cond(
        first == 0, lambda: batches(n, batch_size, shuffle_key), lambda: (idx_SxB, w_SxB)
    )

    def body(loop):
        i, state, ce_S, correct_S = loop
        x_B, y_B, w_B = _batch(x_N, y_N, idx_SxB[i], w_SxB[i], shard)
        state, out = train_step(state, x_B, y_B, w_B, dropout_key, class_weights, model=model, tx=tx, reg=reg)
        return i + 1, state, ce_S.at[i].set(out["ce_sum"]), correct_S.at[i].set(out["correct"])

    _, state, ce_S, correct_S = jax.lax.while_loop(lambda c: c[0] < last, body, (first, state, ce_S, correct_S))
    total = n if class_weights is None else jnp.sum(class_weights[y_N])  # every example once an epoch
    running = {"running_loss": jnp.sum(ce_S) / total, "running_accuracy": jnp.sum(correct_S) / n}
    return state, (idx_SxB, w_SxB, ce_S, correct_S), running


def _measure_all(params, opt_state, splits, probe_x, probe_y, *, evaluate_all, instruments) -> dict[str, jax.Array]:
    """The evaluation of every split and the instruments on the probe batch, in one program."""
    return {**evaluate_all(params, splits), **instruments(params, opt_state, probe_x, probe_y)}


def _folded(steps_fn: Callable[..., Any]) -> Callable[..., Any]:
    """`train_steps` taking the seed's base shuffle key and the epoch number: the epoch's key is
    `fold_in(base, epoch)`, computed inside the compiled program."""

    def run(state, carry, x_N, y_N, shuffle_base, epoch, dropout_key, first, last, class_weights=None):
        return steps_fn(state, carry, x_N, y_N, jax.random.fold_in(shuffle_base, epoch), dropout_key, first, last, class_weights)

    return run


# a slice of an epoch shown as progress should take about this long (`_Programs.scan_epoch`)
PROGRESS_SECONDS = 0.2


def evaluate(
    params, x_N: jax.Array, y_N: jax.Array, *, model: models.Model, chunk: int, shard=None, multiple: int = 1,
    num_classes: Optional[int] = None, class_loss: bool = False,
) -> tuple[jax.Array, ...]:
    """Mean loss and accuracy in evaluation mode: sums over chunks, divided once. With several
    devices, each chunk is split over them (`shard`; chunks a multiple of their count). With
    `num_classes`, then each class's correct count (and, with `class_loss`, its summed loss), as
    sums (`chunk_sums`)."""
    n = x_N.shape[0]
    if n == 0:
        nan = (jnp.float32(jnp.nan), jnp.float32(jnp.nan))
        return nan if num_classes is None else nan + (jnp.full(num_classes, jnp.nan),) * (2 if class_loss else 1)
    chunk = _chunk_size(chunk, n, multiple)
    steps = -(-n // chunk)
    flat = jnp.arange(steps * chunk)
    idx_SxC = jnp.minimum(flat, n - 1).reshape(steps, chunk)
    w_SxC = (flat < n).astype(jnp.float32).reshape(steps, chunk)

    def body(carry, inputs):
        sums = chunk_sums(params, x_N, y_N, *inputs, model=model, shard=shard, num_classes=num_classes, class_loss=class_loss)
        return tuple(c + s for c, s in zip(carry, sums)), None

    per_class = () if num_classes is None else (jnp.zeros(num_classes, jnp.float32),) * (2 if class_loss else 1)
    (loss_sum, correct, *class_sums), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0), *per_class), (idx_SxC, w_SxC))
    return (loss_sum / n, correct / n, *class_sums)


def evaluate_splits(
    params, splits: dict[str, tuple[jax.Array, jax.Array]], *, model, chunk, shard=None, multiple: int = 1,
    num_classes: Optional[int] = None, class_loss: bool = False,
) -> dict[str, jax.Array]:
    """{"<split>_loss", "<split>_accuracy"} for every split, in one compiled call; with
    `num_classes`, also `<split>_class_correct` (and `<split>_class_loss`: `_class_outputs`)."""
    out = {}
    for name, (x, y) in splits.items():
        out[f"{name}_loss"], out[f"{name}_accuracy"], *per_class = evaluate(
            params, x, y, model=model, chunk=chunk, shard=shard, multiple=multiple, num_classes=num_classes,
            class_loss=class_loss,
        )
        out.update(_class_outputs(name, per_class))
    return out


class EarlyStopping:
    """Keras semantics: an improvement beats the best by more than min_delta; stop after
    `patience` epochs without one. Also tracks the best epoch when stopping is disabled."""

    def __init__(self, cfg: EarlyStoppingConfig, monitor: Optional[str] = None) -> None:
        self.cfg = cfg
        self.monitor = monitor or cfg.monitor
        self.sign = -1.0 if self.monitor.endswith("accuracy") else 1.0
        self.best = math.inf  # of sign * value
        self.best_epoch: Optional[int] = None
        self.wait = 0
        self.should_stop = False

    def update(self, epoch: int, value: Optional[float]) -> bool:
        """Record one epoch's monitored value; return True if it is the new best."""
        improved = value is not None and math.isfinite(value) and self.sign * value < self.best - self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = self.sign * value, epoch, 0
        else:
            self.wait += 1
            if self.cfg.enabled and self.wait >= self.cfg.patience:
                self.should_stop = True
        return improved


def use_compile_cache() -> Optional[Path]:
    """Keep compiled programs in `<cache>/xla` (JAX's persistent compilation cache), so a rerun
    or a sweep member in a new process loads them instead of compiling; off with
    DNNLAB_NO_COMPILE_CACHE=1, or when the cache folder cannot be written
    (`runs.compiled_cache_off`). Returns the folder, or None when off."""
    from jax.experimental.compilation_cache import compilation_cache

    folder = None if compiled_cache_off() else cache_root() / "xla"
    if jax.config.jax_compilation_cache_dir != (str(folder) if folder else None):
        # a new folder in the same process (tests, benchmarks): JAX's cache object keeps the
        # folder it was first opened on unless it is reset
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", str(folder) if folder else None)
    if folder is not None:
        # every program: a run's are small, and compiling them is most of a small run's time
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# LLVM's -O1 for a program that runs once (the initialization): its compile takes half the time
# of the default level's, and the numbers are the same bits (no fast-math, so no level may
# reorder floating-point arithmetic; tests/test_train.py compares them)
ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


def on_cpu(options: dict[str, Any]) -> Optional[dict[str, Any]]:
    """`options` (ONCE_OPTIONS, QUICK_OPTIONS) on the CPU, where they were measured; the
    defaults elsewhere."""
    return dict(options) if jax.default_backend() == "cpu" else None


# LLVM's -O0 for a small fit whose result is a yardstick (the linear reference on a small
# dataset): its programs compile in half the time (2.0 s -> 1.0 s for the digits' reference) and
# a small fit runs as fast, but a large one about 2x slower, and the numbers may differ from a
# default compile in their last bits
QUICK_OPTIONS = {"xla_backend_optimization_level": 0}


def device_name() -> str:
    return distributed.describe(1)


@dataclass
class FitResult:
    summary: dict[str, Any]
    params: Any  # the final model (the best epoch's when early stopping restored it)
    history: list[dict[str, Any]]


def _to_python(fetched: dict[str, Any]) -> dict[str, Any]:
    """Scalars to floats, per-layer vectors to lists of floats."""
    return {k: (float(v) if np.ndim(v) == 0 else [float(x) for x in np.ravel(v)]) for k, v in fetched.items()}


def _pick(record: Optional[dict[str, Any]], recall: Optional[dict[str, list]] = None) -> Optional[dict[str, Any]]:
    """The six metrics of an epoch's record, and each split's balanced accuracy from its per-class
    recall (`_SeedRecord.recall`)."""
    if record is None:
        return None
    out = {k: record.get(k) for k in METRICS}
    for split, per_class in (recall or {}).items():
        out[f"{split}_balanced_accuracy"] = baselines.balanced_accuracy(per_class)
    return out


def _is_diverged(record: dict[str, Any], limit: float) -> bool:
    for key in ("running_loss", "train_loss"):
        value = record.get(key)
        if value is not None and (not math.isfinite(value) or value > limit):
            return True
    return False


@dataclass
class _Setup:
    """What every seed of a run shares: the model, the optimizer, the data on the device."""

    model: models.Model
    tx: optax.GradientTransformation
    schedule: Callable[[Any], Any]
    x_N: jax.Array
    y_N: jax.Array
    splits: dict[str, tuple[jax.Array, jax.Array]]
    probe: Optional[tuple[jax.Array, jax.Array]]
    n: int
    batch_size: int
    steps_per_epoch: int
    loop: str
    monitor: str
    info: dict[str, Any]
    mesh: Any = None  # the 1-D ("data",) mesh of several devices; None for one device
    devices: int = 1
    num_classes: Optional[int] = None  # the evaluation's per-class sums (None: not computed)
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # examples of each class per evaluated split
    train_counts: list[int] = field(default_factory=list)  # ... in the whole training split: the prior
    weights: Optional[list[float]] = None  # the loss's class weights (`train.class_weight`); None: unweighted
    class_weights: Any = None  # ... on the device: an input of the training programs
    class_aware: bool = False  # each split's balanced accuracy goes into every record (`class_aware`)
    pretrain_x: Any = None  # the training inputs on the host, for model.pretrain (else None)

    def put(self, array: Any) -> jax.Array:
        """A host array on the device, or whole on every device of the mesh."""
        return jax.device_put(array) if self.mesh is None else distributed.upload(self.mesh, array)


def _setup(cfg: Config, data: Dataset) -> _Setup:
    """Build the model and optimizer and upload the data, once for every seed of `cfg`."""
    devices = distributed.resolve_devices(cfg)
    mesh = distributed.data_mesh(devices)
    # the data are whole on every device (`_Setup.put`): each device gathers its share of a batch
    # from them, and no batch crosses between devices or hosts (docs/scale.md)
    put = jax.device_put if mesh is None else partial(distributed.upload, mesh)
    plan = models.plan_stack(cfg.model, cfg.train.stack, cfg.train.unroll)
    model = models.build(cfg.model, data.input_shape, data.num_classes, plan)
    shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))  # a key's shape: nothing runs
    trainable = models.split_stats(shapes)[0]
    n = len(data.train)
    # a training set smaller than the batch: one batch, padded with weight-0 repeats to a
    # multiple of the device count
    batch_size = min(cfg.data.batch_size, -(-n // devices) * devices)
    steps_per_epoch = -(-n // batch_size)
    tx, schedule = make_optimizer(
        cfg.optimizer,
        cfg.regularization,
        steps_per_epoch=steps_per_epoch,
        epochs=cfg.train.epochs,
        decay_mask=losses.regularized_mask(trainable, cfg.regularization.include_biases),
    )
    # the probe batch and the training-metrics subset follow the data split's seed
    split_seed = data_seed(cfg)
    x_N, y_N = put(data.train.x), put(data.train.y)
    splits = {"train": (x_N, y_N)}
    evaluated_y = {"train": data.train.y}
    if cfg.train.train_eval_size is not None and cfg.train.train_eval_size < n:
        # a fixed subset: the training metrics of a large set at a fraction of the cost
        subset = np.sort(np.random.default_rng(split_seed + 1).permutation(n)[: cfg.train.train_eval_size])
        splits["train"] = (put(data.train.x[subset]), put(data.train.y[subset]))
        evaluated_y["train"] = data.train.y[subset]
    if data.val is not None:
        splits["val"] = (put(data.val.x), put(data.val.y))
        evaluated_y["val"] = data.val.y
    splits["test"] = (put(data.test.x), put(data.test.y))
    evaluated_y["test"] = data.test.y
    probe = None
    if cfg.diagnosis.instruments:
        # a fixed, seeded probe batch of training examples, the same every epoch
        probe_idx = np.sort(np.random.default_rng(split_seed).permutation(n)[: cfg.diagnosis.probe_size])
        probe = (put(data.train.x[probe_idx]), put(data.train.y[probe_idx]))
    loop = training_loop(cfg)
    monitor = cfg.train.early_stopping.monitor if data.val is not None else "train_loss"
    # the classes: the examples of each class in every evaluated split, the loss's class weights
    # (an input of the programs, not a constant: `class_aware`)
    train_counts = _counts(data.train.y, data.num_classes)
    weights = baselines.class_weights(cfg.train.class_weight, train_counts, data.classes)
    class_counts = {name: _counts(y, data.num_classes) for name, y in evaluated_y.items()}
    info = {
        "epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch, "params": models.param_count(shapes),
        "device": distributed.describe(devices), "devices": devices, "processes": distributed.process_count(),
        "train_size": n, "batch_size": batch_size, "loop": loop,
        "stack": ("scanned" if plan.scanned else "unrolled") + (f" (unroll {plan.unroll})" if plan.scanned else ""),
    }
    pretrain_x = data.train.x if cfg.model.pretrain != "none" else None
    return _Setup(
        model, tx, schedule, x_N, y_N, splits, probe, n, batch_size, steps_per_epoch, loop, monitor, info, mesh, devices,
        num_classes=data.num_classes, class_counts=class_counts, train_counts=train_counts, weights=weights,
        class_weights=None if weights is None else put(np.asarray(weights, np.float32)),
        class_aware=class_aware(cfg, train_counts, weights), pretrain_x=pretrain_x,
    )


def _counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(y), minlength=num_classes).tolist()


def class_aware(cfg: Config, train_counts: list[int], weights: Optional[list[float]]) -> bool:
    """Whether every record carries each split's balanced accuracy: when the loss is
    class-weighted (the fit is judged on it), early stopping monitors it, or the data are
    imbalanced (`diagnosis.imbalance_share`). Otherwise the records are what they always were,
    and only the kept model's per-class recall is in summary.json."""
    imbalanced = baselines.Baselines(tuple(train_counts)).imbalanced(cfg.diagnosis.imbalance_share)
    return weights is not None or cfg.train.early_stopping.monitor == "val_balanced_accuracy" or imbalanced


def init_state(
    seed: jax.Array, hyperparameters: dict[str, jax.Array], *, model: models.Model, tx: optax.GradientTransformation
) -> tuple[TrainState, jax.Array, jax.Array]:
    """The initial state and the (shuffle, dropout) keys of one seed: one compiled program (run
    eagerly, initialization would compile every initializer's ops one by one). The optimizer's
    injected settings (`optim.hyperparameters`) arrive as arguments, so that runs that differ
    only in them share this program, as they share the epoch's."""
    init_key, shuffle_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init(init_key)
    opt_state = with_hyperparameters(tx.init(models.split_stats(params)[0]), hyperparameters)
    state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
    return state, shuffle_key, dropout_key


class _SeedRecord:
    """One seed's host-side bookkeeping: history, early stopping, divergence, checkpoints."""

    def __init__(self, cfg: Config, setup: _Setup, writer: Writer, num_classes: int) -> None:
        self.cfg, self.setup, self.writer, self.num_classes = cfg, setup, writer, num_classes
        self.history: list[dict[str, Any]] = []
        self.stopper = EarlyStopping(cfg.train.early_stopping, setup.monitor)
        self.best_arrays: Optional[dict[str, np.ndarray]] = None
        self.last_arrays: Optional[dict[str, np.ndarray]] = None
        self.status = "completed"
        self.active = True
        self.limit = math.inf
        self.t_start = time.perf_counter()
        self.pretrain: Optional[dict[str, Any]] = None  # the pretraining's record (`pretrain.pretrain`)
        self.recall: dict[int, dict[str, list]] = {}  # epoch -> split -> each class's recall

    def _classes(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        """`record` without the evaluation's per-class sums, which are kept here as each class's
        recall (the kept model's go into summary.json). With class weights each split's loss
        becomes the class-weighted mean; where the classes are watched (`class_aware`), each
        split's balanced accuracy goes into the record."""
        setup, recall = self.setup, {}
        for split in ("train", "val", "test"):
            correct, per_class_loss = record.pop(f"{split}_class_correct", None), record.pop(f"{split}_class_loss", None)
            if correct is None:
                continue
            counts = setup.class_counts[split]
            recall[split] = baselines.class_recall(correct, counts)
            if per_class_loss is not None and setup.weights is not None:
                total = sum(w * n for w, n in zip(setup.weights, counts))
                loss = sum(w * v for w, v in zip(setup.weights, per_class_loss))
                record[f"{split}_loss"] = loss / total if total > 0 else math.nan
            if setup.class_aware:
                record[f"{split}_balanced_accuracy"] = baselines.balanced_accuracy(recall[split])
        self.recall[epoch] = recall
        return record

    def initial(self, record: dict[str, Any]) -> None:
        record = self._classes(0, record)
        self.history.append({"epoch": 0, **record})
        self.writer.write(0, record)
        initial_loss = record["train_loss"]
        self.limit = self.cfg.train.divergence_factor * max(initial_loss, math.log(self.num_classes))
        if not math.isfinite(initial_loss):
            self.status, self.active = "diverged", False

    def epoch(self, epoch: int, record: dict[str, Any], state: Callable[[], TrainState]) -> None:
        """Record one epoch; `state()` fetches this seed's state when it is needed."""
        record = self._classes(epoch, record)
        self.history.append({"epoch": epoch, **record})
        self.writer.write(epoch, record)
        if _is_diverged(record, self.limit):
            self.status, self.active = "diverged", False
            return
        host = jax.device_get(state())
        arrays = flatten_params(host.params)
        self.last_arrays = arrays
        improved = self.stopper.update(epoch, record.get(self.setup.monitor))
        if improved:
            self.best_arrays = arrays
        if self.stopper.should_stop:
            self.status, self.active = "stopped_early", False
        # what continuing needs, before the checkpoints: a kill between the two leaves a state
        # that `resume` can rewrite them from
        kept_recall = {e: self.recall[e] for e in (0, self.stopper.best_epoch, epoch) if e in self.recall}
        self.writer.state(resume_arrays(epoch, host, self.stopper, self.best_arrays, kept_recall, self.pretrain))
        self.writer.checkpoint("last", arrays)
        if improved:
            self.writer.checkpoint("best", arrays)

    def resume_from(self, resume: "Resume") -> None:
        """Continue after `resume.epoch`: its records, early stopping and best model."""
        self.history = [dict(r) for r in resume.history]
        initial_loss = self.history[0]["train_loss"]
        self.limit = self.cfg.train.divergence_factor * max(initial_loss, math.log(self.num_classes))
        self.stopper.best, self.stopper.best_epoch, self.stopper.wait = resume.early_stopping
        self.best_arrays = resume.best
        self.last_arrays = resume.last
        self.pretrain = resume.pretrain
        self.recall = dict(resume.recall)
        self.stopper.should_stop = self.cfg.train.early_stopping.enabled and self.stopper.wait >= self.cfg.train.early_stopping.patience
        if self.stopper.should_stop:  # killed after early stopping decided, before the summary
            self.status, self.active = "stopped_early", False
        # the checkpoints as of the state (a kill may have come between the state and them)
        self.writer.checkpoint("last", self.last_arrays)
        if self.best_arrays is not None:
            self.writer.checkpoint("best", self.best_arrays)

    def finish(self, data: Dataset, like: Any) -> FitResult:
        cfg, setup, history, stopper = self.cfg, self.setup, self.history, self.stopper
        status = self.status
        final_params = None
        if status in FINISHED and self.last_arrays is not None:
            final_params = unflatten_params(like, self.last_arrays)
        restored = False
        es = cfg.train.early_stopping
        if es.enabled and es.restore_best and self.best_arrays is not None and status in FINISHED:
            final_params = unflatten_params(like, self.best_arrays)
            restored = stopper.best_epoch != history[-1]["epoch"]
        by_epoch = {h["epoch"]: h for h in history}
        last = history[-1] if len(history) > 1 else None
        kept_epoch = stopper.best_epoch if restored else (last["epoch"] if last else None)
        penalty = losses.penalty(self.last_arrays, cfg.regularization) if self.last_arrays is not None else {}
        summary = {
            "name": cfg.name,
            "seed": cfg.seed,
            "status": status,
            "epochs_run": len(history) - 1 if history else 0,
            "best_epoch": stopper.best_epoch,
            "monitor": setup.monitor,
            "restored_best": restored,
            "final": _pick(last, self.recall.get(last["epoch"]) if last else None),
            "best": _pick(by_epoch.get(stopper.best_epoch), self.recall.get(stopper.best_epoch)) if stopper.best_epoch else None,
            "initial": _pick(history[0], self.recall.get(0)) if history else None,
            # the kept model's recall of each class (output i is data.classes[i])
            "per_class": {"epoch": kept_epoch, "recall": self.recall.get(kept_epoch, {})} if kept_epoch else None,
            # the reported losses (train_loss, ...) are class-weighted means when weights are set
            "loss": {"class_weight": cfg.train.class_weight, "class_weights": setup.weights, "weighted": setup.weights is not None},
            **({"penalty": {**penalty, "epoch": history[-1]["epoch"]}} if penalty else {}),
            "wall_seconds": time.perf_counter() - self.t_start,
            "params": setup.info["params"],
            "versions": {"jax": jax.__version__, "optax": optax.__version__, "dnnlab": dnnlab.__version__},
            "device": setup.info["device"],
            "devices": setup.devices,
            **({"processes": setup.info["processes"]} if setup.info["processes"] > 1 else {}),
            "loop": setup.loop,
            "stack": setup.info["stack"],
            **({"pretrain": self.pretrain} if self.pretrain is not None else {}),
            "data": {
                "dataset": data.name, "source": data.source, "train": setup.n,
                "train_eval": int(setup.splits["train"][1].shape[0]),
                "val": len(data.val) if data.val is not None else 0, "test": len(data.test),
                "num_classes": data.num_classes,
                **({"classes": list(data.classes)} if data.classes else {}),  # output i is classes[i]
                # the largest class holds more than diagnosis.imbalance_share of the training split
                "imbalanced": baselines.Baselines(tuple(setup.train_counts)).imbalanced(cfg.diagnosis.imbalance_share),
                # examples of each class: the training split's (the prior), the evaluated ones
                "class_counts": {
                    **setup.class_counts, "train": setup.train_counts,
                    **({"train_eval": setup.class_counts["train"]} if setup.splits["train"][1] is not setup.y_N else {}),
                },
            },
        }
        self.writer.finish(summary)
        return FitResult(summary, final_params, history)


def resume_arrays(
    epoch: int, state: TrainState, stopper: EarlyStopping, best: Optional[dict[str, np.ndarray]],
    recall: Optional[dict[int, dict[str, list]]] = None,
    pretrained: Optional[dict[str, Any]] = None,
) -> dict[str, np.ndarray]:
    """state.npz: the train state's leaves (parameters, optimizer state, step), the epoch, early
    stopping's state, the best model and the per-class recall of the epochs a summary may need
    (`recall.<epoch>.<split>`, NaN for a class without examples), as plain arrays, and the
    pretraining's record (JSON text) when the run was pretrained. The RNG keys follow from the seed."""
    out = {f"state.{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(state))}
    out["epoch"] = np.asarray(epoch)
    out["early_stopping"] = np.asarray([stopper.best, -1 if stopper.best_epoch is None else stopper.best_epoch, stopper.wait], np.float64)
    for name, value in (best or {}).items():
        out[f"best.{name}"] = value
    for e, splits in (recall or {}).items():
        for split, values in splits.items():
            out[f"recall.{e}.{split}"] = np.asarray([math.nan if v is None else v for v in values], np.float64)
    if pretrained is not None:
        out["pretrain"] = np.asarray(json.dumps(pretrained))
    return out


@dataclass
class Resume:
    """Where a run continues: its records up to `epoch`, its state then, and the best model."""

    epoch: int
    history: list[dict[str, Any]]
    leaves: list[np.ndarray]
    early_stopping: tuple[float, Optional[int], int]
    best: Optional[dict[str, np.ndarray]]
    last: dict[str, np.ndarray]
    recall: dict[int, dict[str, list]] = field(default_factory=dict)  # `_SeedRecord.recall` of the epochs kept
    pretrain: Optional[dict[str, Any]] = None  # the pretraining's record, when the run was pretrained

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], history: list[dict[str, Any]]) -> "Resume":
        """Raises ValueError when the arrays are not a state or the records stop before them."""
        try:
            epoch = int(arrays["epoch"])
            best, best_epoch, wait = (float(x) for x in arrays["early_stopping"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a resume state ({type(exc).__name__}: {exc})") from None
        leaves = [arrays[k] for k in sorted(k for k in arrays if k.startswith("state."))]
        kept = [r for r in history if r["epoch"] <= epoch]
        if [r["epoch"] for r in kept] != list(range(epoch + 1)):
            raise ValueError(f"metrics.jsonl does not hold epochs 0..{epoch}, which the state continues")
        best_arrays = {k[len("best."):]: v for k, v in arrays.items() if k.startswith("best.")} or None
        try:
            pretrained = json.loads(str(arrays["pretrain"])) if "pretrain" in arrays else None
        except ValueError as exc:
            raise ValueError(f"not a resume state (its pretraining record: {exc})") from None
        recall: dict[int, dict[str, list]] = {}
        for k, v in arrays.items():
            if k.startswith("recall."):
                _, e, split = k.split(".")
                recall.setdefault(int(e), {})[split] = [None if math.isnan(x) else float(x) for x in v]
        return cls(epoch, kept, leaves, (best, None if best_epoch < 0 else int(best_epoch), int(wait)), best_arrays, {}, recall, pretrained)


class _Programs:
    """The compiled epoch and measurement of a run, for one seed at a time or for N seeds
    vmapped over a leading axis (parameters, optimizer state and keys; the data is shared)."""

    def __init__(self, cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False, key: Optional[str] = None) -> None:
        """The programs of `cfg`, bound to `setup`; the epoch reports its steps to the `on_step`
        of the fit it is bound to (`bind`), if any; `quick`: compiled with QUICK_OPTIONS; `key`
        (`program_key`): the programs are kept on disk under it (`stored`), where that is on."""
        model, tx, reg = setup.model, setup.tx, cfg.regularization
        options = on_cpu(QUICK_OPTIONS) if quick else None
        self.vmapped, self.setup = vmapped, setup
        self.values = _injected(cfg)
        self.on_step: Optional[Callable[[Any], None]] = None
        every = max(1, setup.steps_per_epoch // 20)
        # several devices: batches split over the mesh (the one-device programs stay as they were)
        shard = None if setup.mesh is None else distributed.constrain(setup.mesh)
        if vmapped and shard is not None:
            raise distributed.DeviceError(
                f"train.seed_mode: vmap runs on one device; this run has {setup.devices} (train.devices): "
                "set train.seed_mode to sequential (or auto), or train.devices to 1"
            )
        # `epoch_fn(state, x_N, y_N, shuffle_base, epoch, dropout_key)`: the epoch's shuffle key is
        # folded from the seed's base key inside the program (an eager fold_in would be two more
        # compilations and a dispatch per epoch)
        if setup.loop == "scan":
            steps_fn = partial(train_steps, model=model, tx=tx, reg=reg, batch_size=setup.batch_size, shard=shard)
            evaluate_all = partial(
                evaluate_splits, model=model, chunk=cfg.train.eval_batch_size, shard=shard, multiple=setup.devices,
                num_classes=setup.num_classes, class_loss=setup.weights is not None,
            )
            evaluate_one = evaluate_all  # one seed's (vmapped with the instruments below)
            if vmapped:
                steps_fn = jax.vmap(_folded(steps_fn), in_axes=(0, 0, None, None, 0, None, 0, None, None, None))
                evaluate_all = jax.vmap(evaluate_all, in_axes=(0, None))
            else:
                steps_fn = _folded(steps_fn)
            # no host callback inside: a program with one is never kept in the persistent cache
            self.steps_jit = stored.wrap(jax.jit(steps_fn, donate_argnums=(0, 1), compiler_options=options), "epoch", key)
            self.step_seconds: Optional[float] = None
            self.epoch_fn = self.scan_epoch
            self.eval_fn = stored.wrap(jax.jit(evaluate_all, compiler_options=options), "evaluation", key)
        else:  # the per-step loop (convolutional nets on the CPU); never vmapped
            step_jit = stored.wrap(
                jax.jit(partial(indexed_step, model=model, tx=tx, reg=reg, shard=shard), donate_argnums=0, compiler_options=options), "step", key
            )
            n, batch_size = setup.n, setup.batch_size
            batches_jit = stored.wrap(
                jax.jit(lambda base, e: batches(n, batch_size, jax.random.fold_in(base, e)), compiler_options=options), "batches", key
            )
            stepwise = partial(stepwise_epoch, step_fn=step_jit, batches_fn=lambda keys: batches_jit(*keys), on_step=self._step, every=every)
            # the class weights of the fit the programs are bound to (`bind`), read at each call
            self.epoch_fn = lambda state, x_N, y_N, base, e, dropout_key: stepwise(
                state, x_N, y_N, (base, e), dropout_key, class_weights=self.setup.class_weights,
                total_weight=None if self.setup.weights is None else float(np.dot(self.setup.weights, self.setup.train_counts)),
            )
            chunk_jit = jax.jit(
                partial(chunk_at, model=model, shard=shard, num_classes=setup.num_classes, class_loss=setup.weights is not None),
                static_argnames="size", compiler_options=options,
            )
            self.eval_fn = partial(
                stepwise_evaluate, chunk_fn=chunk_jit, chunk=cfg.train.eval_batch_size, multiple=setup.devices
            )
        init = partial(init_state, model=model, tx=tx)
        self.init_jit = stored.wrap(
            jax.jit(jax.vmap(init, in_axes=(0, None)) if vmapped else init, compiler_options=options or on_cpu(ONCE_OPTIONS)), "init", key
        )
        self.probe_fn = self.measure_fn = None
        if setup.probe is not None:
            instruments = partial(probes.probe, model=model, tx=tx, reg=reg)
            if shard is not None and setup.probe[1].shape[0] % setup.devices == 0:
                whole = instruments  # the probe batch split over the devices, as a training batch
                instruments = lambda p, o, x, y: whole(p, o, shard(x), shard(y))  # noqa: E731
            if setup.loop == "scan":
                # the evaluation and the instruments as one program (one compilation fewer)
                self.eval_fn = None
                measure_all = partial(_measure_all, evaluate_all=evaluate_one, instruments=instruments)
                self.measure_fn = stored.wrap(
                    jax.jit(jax.vmap(measure_all, in_axes=(0, 0, None, None, None)) if vmapped else measure_all, compiler_options=options),
                    "measure", key,
                )
            else:
                self.probe_fn = stored.wrap(
                    jax.jit(jax.vmap(instruments, in_axes=(0, 0, None, None)) if vmapped else instruments, compiler_options=options), "probe", key
                )

    def bind(self, cfg: Config, setup: Optional[_Setup], on_step: Optional[Callable[[Any], None]]) -> "_Programs":
        """These programs for a fit of `cfg` on `setup` (a config that differs from the one they
        were built for only in injected numbers: `program_key`)."""
        self.setup, self.on_step, self.values = setup, on_step, _injected(cfg)
        return self

    def _step(self, step: Any) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def scan_epoch(self, state: TrainState, x_N: Any, y_N: Any, base: Any, epoch: Any, dropout_key: Any) -> tuple[TrainState, dict]:
        """One epoch of the scan loop: one call of the steps program, or, when the fit shows
        progress in one process, slices of about PROGRESS_SECONDS each, reporting the steps done
        after each (the same program, so the same numbers)."""
        steps = self.setup.steps_per_epoch
        carry = new_epoch(steps, self.setup.batch_size, tuple(state.step.shape))
        if self.on_step is None or distributed.process_count() > 1:
            # several processes make every call together, and only process 0 shows progress:
            # the whole epoch in one call, reported when it ends
            state, _, running = self.steps_jit(
                state, carry, x_N, y_N, base, epoch, dropout_key, np.int32(0), np.int32(steps), self.setup.class_weights
            )
            self._step(steps)
            return state, running
        first = 0
        while first < steps:
            if self.step_seconds is None:  # the first slice: the usual twentieth of an epoch
                size = max(1, steps // 20)
            else:
                size = max(1, min(steps, int(PROGRESS_SECONDS / max(self.step_seconds, 1e-6))))
            size = min(size, steps - first)
            t0 = time.perf_counter()
            state, carry, running = self.steps_jit(
                state, carry, x_N, y_N, base, epoch, dropout_key, np.int32(first), np.int32(first + size), self.setup.class_weights
            )
            jax.block_until_ready(carry)
            if first > 0 or epoch > 1:  # the first slice of a fit may include compiling
                self.step_seconds = (time.perf_counter() - t0) / size
            first += size
            self._step(first)
        return state, running

    def init_fn(self, seeds: Any) -> tuple[TrainState, jax.Array, jax.Array]:
        """The initial state and keys of `seeds` (one, or a vector when vmapped)."""
        if self.setup.mesh is None:
            return self.init_jit(seeds, self.values)
        # the one-device program (compiled once, the same numbers), then the parameters, the
        # optimizer state and the keys placed whole on every device
        return jax.tree_util.tree_map(self.setup.put, jax.device_get(self.init_jit(seeds, self.values)))

    def measure(self, state: TrainState) -> dict[str, Any]:
        """Evaluation-mode metrics of every split, and the instruments when they are on."""
        if self.measure_fn is not None:
            return self.measure_fn(state.params, state.opt_state, self.setup.splits, *self.setup.probe)
        out = self.eval_fn(state.params, self.setup.splits)
        if self.probe_fn is not None:
            out = {**out, **self.probe_fn(state.params, state.opt_state, *self.setup.probe)}
        return out

    def per_seed(self, fetched: dict[str, Any], n_seeds: int) -> list[dict[str, Any]]:
        if not self.vmapped:
            return [_to_python(fetched)]
        return [_to_python({k: v[i] for k, v in fetched.items()}) for i in range(n_seeds)]

    def seed_state(self, state: TrainState, i: int) -> TrainState:
        return jax.tree_util.tree_map(lambda a: a[i], state) if self.vmapped else state

    def last_step(self, state: TrainState) -> int:
        return int(state.step[0] if self.vmapped else state.step) - 1


def _injected(cfg: Config) -> dict[str, np.float32]:
    """The injected numbers of `cfg` (`optim.hyperparameters`) as the programs' inputs."""
    return {k: np.float32(v) for k, v in hyperparameters(cfg.optimizer, cfg.regularization).items()}


# the programs of the last few fits in this process, by `program_key`: a sweep member that
# differs from an earlier one only in injected numbers (a learning rate) reuses its programs
# without tracing them again
_PROGRAMS: "OrderedDict[str, _Programs]" = OrderedDict()
PROGRAMS_KEPT = 4


def program_key(cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False) -> str:
    """What decides a fit's programs: the config but for its injected numbers (their presence
    counts), the name, seed and logging; the data's shapes; the devices; and which thread fits
    (the linear reference trains in a thread of its own, beside a run)."""
    raw = cfg.model_dump(mode="json")
    injected = hyperparameters(cfg.optimizer, cfg.regularization)
    for section in ("optimizer", "regularization"):
        raw[section] = {k: ("<injected>" if k in injected else v) for k, v in raw[section].items()}
    for key in ("name", "seed", "logging", "sweep", "pretrain"):
        raw.pop(key, None)
    raw["model"].pop("pretrain", None)  # pretraining runs in programs of its own (dnnlab/pretrain.py)
    # class weights are an input of the programs (`loss_fn`): only whether there are any counts
    raw["train"]["class_weight"] = "none" if setup.weights is None else "<injected>"
    shapes = [(tuple(a.shape), str(a.dtype)) for a in (setup.x_N, setup.y_N, *(setup.probe or ()))]
    shapes += [(name, tuple(x.shape), tuple(y.shape)) for name, (x, y) in setup.splits.items()]
    facts = [setup.n, setup.batch_size, setup.steps_per_epoch, setup.loop, setup.devices, distributed.process_count(), vmapped, quick, setup.num_classes]
    helper = threading.current_thread() is not threading.main_thread()
    return json.dumps([raw, repr(shapes), facts, helper], sort_keys=True, default=str)


def programs_for(cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False) -> _Programs:
    """The fit's programs: those of an earlier fit with the same `program_key`, else new ones."""
    key = program_key(cfg, setup, vmapped=vmapped, quick=quick)
    # programs over several devices or processes are left to jax.jit (and JAX's cache)
    keep = key if setup.mesh is None and distributed.process_count() == 1 else None
    programs = _PROGRAMS.pop(key, None) or _Programs(cfg, setup, vmapped=vmapped, quick=quick, key=keep)
    _PROGRAMS[key] = programs
    while len(_PROGRAMS) > PROGRAMS_KEPT:
        _PROGRAMS.popitem(last=False)
    return programs


def _train_group(
    recs: list[_SeedRecord], seeds: list[int], programs: _Programs, cfg: Config, setup: _Setup, current: dict[str, Any],
    resume: Optional[Resume] = None,
) -> Any:
    """The training loop: train the seeds of one group (one seed, or N vmapped) to the end.

    Every seed of a vmapped group runs every epoch inside the one program; a seed that stopped
    (early stopping, divergence) is no longer recorded, so its records equal those of its own
    run. Returns the parameters' shapes (for the checkpoints). Ctrl-C marks the active seeds
    interrupted and returns.
    """
    if programs.vmapped:
        state, shuffle_key, dropout_key = programs.init_fn(np.asarray(seeds, np.int32))
    else:
        state, shuffle_key, dropout_key = programs.init_fn(np.int32(seeds[0]))
    if resume is None and setup.pretrain_x is not None:  # model.pretrain: before the first record
        state, pretrained = pretrain.into_state(state, seeds, setup.pretrain_x, cfg, setup.put, programs.vmapped)
        for r, record in zip(recs, pretrained):
            r.pretrain = record
    # the state's buffers are donated: keep the parameters' shapes (of one seed)
    like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:] if programs.vmapped else a.shape, a.dtype), state.params)
    start = 1
    if resume is not None:  # one seed: the saved state replaces the initial one, the keys stay
        treedef = jax.tree_util.tree_structure(state)
        if len(resume.leaves) != treedef.num_leaves:
            raise StateError(f"the resume state holds {len(resume.leaves)} arrays; this model's state has {treedef.num_leaves}")
        for i, (saved, fresh) in enumerate(zip(resume.leaves, jax.tree_util.tree_leaves(state))):
            if saved.shape != fresh.shape or saved.dtype != fresh.dtype:
                raise StateError(
                    f"the resume state's array state.{i:04d} is {saved.dtype} of shape {saved.shape}; this model's state "
                    f"needs {fresh.dtype} of shape {tuple(fresh.shape)}: the state belongs to another run or config"
                )
        state = jax.tree_util.tree_unflatten(treedef, [setup.put(a) for a in resume.leaves])
        resume.last = flatten_params(jax.device_get(state.params))
        recs[0].resume_from(resume)
        start = resume.epoch + 1
    try:
        for r in recs:
            r.writer.start({**setup.info, "seeds": len(seeds), "seed_mode": "vmap"} if programs.vmapped else setup.info)
        if resume is None:
            t0 = time.perf_counter()
            fetched = jax.device_get(programs.measure(state))
            seconds = time.perf_counter() - t0
            for r, record in zip(recs, programs.per_seed(fetched, len(seeds))):
                record.update(lr=float(setup.schedule(0)), seconds=seconds)
                r.initial(record)
            interrupt.stop_point()
        for epoch in range(start, cfg.train.epochs + 1):
            if not any(r.active for r in recs):
                break
            current["epoch"] = epoch
            t0 = time.perf_counter()
            state, running = programs.epoch_fn(state, setup.x_N, setup.y_N, shuffle_key, np.int32(epoch), dropout_key)
            fetched = jax.device_get({**running, **programs.measure(state)})
            seconds = time.perf_counter() - t0
            lr = float(setup.schedule(programs.last_step(state)))
            for i, (r, record) in enumerate(zip(recs, programs.per_seed(fetched, len(seeds)))):
                if r.active:
                    record.update(lr=lr, seconds=seconds)
                    r.epoch(epoch, record, partial(programs.seed_state, state, i))
            interrupt.stop_point()
    except KeyboardInterrupt:
        for r in recs:
            if r.active:
                r.status = "interrupted"
    return like


def fit(
    cfg: Config, data: Dataset, writer: Writer = Writer(), *, progress: bool = True, resume: Optional[Resume] = None,
    quick: bool = False,
) -> FitResult:
    """Train `cfg`'s model on `data` (one seed: `cfg.seed`), reporting every epoch to `writer`.

    Args:
        cfg: the validated config.
        data: the loaded dataset (train, optional validation, test).
        writer: receives start, each epoch's metrics, checkpoints and the summary.
        progress: report steps within an epoch to the writer (`_Programs.scan_epoch`: every
            PROGRESS_SECONDS or so; the per-step loop: about 20 times an epoch).
        resume: continue a run from its saved state (`runs` reads it): the records from then
            on equal those of the run that was never stopped, bit for bit on one machine.
        quick: compile for a short fit (QUICK_OPTIONS): the linear reference on small data.
    Returns:
        FitResult; `summary["status"]` is completed, stopped_early, diverged or interrupted.
        Ctrl-C is caught here so that the summary is still written.
    """
    results = _fit(cfg, [cfg], data, [writer], progress=progress, vmapped=False, resume=resume, quick=quick)
    if not results:
        raise KeyboardInterrupt  # before the first record; the writer has an interrupted summary
    return results[0]


def fit_seeds(cfg: Config, data: Dataset, writers: list[Writer], *, mode: str, progress: bool = True) -> list[FitResult]:
    """Train the `train.seeds` copies of `cfg` that differ only in their seed.

    Args:
        writers: one per seed (seed, seed + 1, ...).
        mode: vmap (one compiled program over a leading seed axis: parameters, optimizer state
            and keys) or sequential (one after another, sharing the uploaded data and the
            compiled programs): `experiment.seeds_mode` decides. Both give the same records.
    Returns:
        One FitResult per seed that started, in seed order; after Ctrl-C the seeds that had
        not started are missing.
    """
    return _fit(cfg, seed_configs(cfg), data, writers, progress=progress, vmapped=mode == "vmap")


def _fit(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], *, progress: bool, vmapped: bool,
    resume: Optional[Resume] = None, quick: bool = False,
) -> list[FitResult]:
    """`fit` and `fit_seeds`: one setup and one set of compiled programs for every seed, then
    the training loop over one vmapped group of seeds, or over each seed in turn."""
    use_compile_cache()
    with interrupt.deferred():
        return _fit_deferred(cfg, cfgs, data, writers, progress=progress, vmapped=vmapped, resume=resume, quick=quick)


def _fit_deferred(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], *, progress: bool, vmapped: bool,
    resume: Optional[Resume] = None, quick: bool = False,
) -> list[FitResult]:
    setup = _setup(cfg, data)
    current: dict[str, Any] = {"epoch": 0, "writer": writers[0]}

    def on_step(step: Any) -> None:
        current["writer"].progress(current["epoch"], int(step))

    programs = programs_for(cfg, setup, vmapped=vmapped, quick=quick).bind(cfg, setup, on_step if progress else None)
    try:
        return _fit_groups(cfg, cfgs, data, writers, programs, setup, current, resume)
    finally:
        programs.bind(cfg, None, None)  # kept for a later fit, without this one's data


def _fit_groups(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], programs: _Programs, setup: _Setup,
    current: dict[str, Any], resume: Optional[Resume],
) -> list[FitResult]:
    groups = [list(range(len(cfgs)))] if programs.vmapped else [[i] for i in range(len(cfgs))]
    results: list[FitResult] = []
    for group in groups:
        recs = [_SeedRecord(cfgs[i], setup, writers[i], data.num_classes) for i in group]
        current.update(epoch=0, writer=writers[group[0]])
        try:
            like = _train_group(recs, [cfgs[i].seed for i in group], programs, cfg, setup, current, resume)
        except KeyboardInterrupt:
            # Ctrl-C before this group's first record: its seeds get an interrupted summary
            for r in recs:
                r.writer.finish({"name": r.cfg.name, "seed": r.cfg.seed, "status": "interrupted", "epochs_run": 0})
            break
        results += [r.finish(data, like) for r in recs]
        if any(r.status == "interrupted" for r in recs):
            break
    return results


# ---------------------------------------------------------------- several seeds


def seed_configs(cfg: Config) -> list[Config]:
    """The configs of a `train.seeds: N` run: seed, seed + 1, ..., each with seeds 1."""
    train_cfg = cfg.train.model_copy(update={"seeds": 1})
    data_cfg = cfg.data.model_copy(update={"split_seed": data_seed(cfg)})
    return [
        cfg.model_copy(update={"seed": cfg.seed + i, "train": train_cfg, "data": data_cfg}) for i in range(cfg.train.seeds)
    ]
