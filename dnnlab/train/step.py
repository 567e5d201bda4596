"""The pure functions of training: the loss, one step, an epoch as one loop over device-resident
data (or stepwise for convolutions on the CPU), and evaluation that sums and divides once.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnnlab import interrupt, losses, models
from dnnlab.config import RegularizationConfig


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
