"""The loss: softmax cross-entropy (class-weighted when `train.class_weight` sets weights), or the
mean squared error on standardized targets under `data.task: regression`, plus the named
regularization terms of the config."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from dnnlab.config import RegularizationConfig

WEIGHT_NAMES = ("w",)
BIAS_NAMES = ("b",)


def regularized_mask(params: Any, include_biases: bool) -> Any:
    """A pytree of bools like `params`: True for weights (and biases when asked).

    Learned activation parameters (PReLU slopes) are never regularized.
    """
    names = WEIGHT_NAMES + (BIAS_NAMES if include_biases else ())

    def leaf_name(path: tuple) -> str:
        last = path[-1]
        return str(getattr(last, "key", getattr(last, "name", last)))

    return jax.tree_util.tree_map_with_path(lambda path, _: leaf_name(path) in names, params)


def cross_entropy_sum(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Sum over the batch of weight * cross-entropy (weights are 0 for padding)."""
    return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def regression(labels: jax.Array) -> bool:
    """Whether a batch's labels are regression targets: float (standardized targets, data.task:
    regression) rather than int32 classes. The dtype is static under jit, so each task traces
    its own program and the classification programs are what they were."""
    return jnp.issubdtype(labels.dtype, jnp.floating)


def squared_and_absolute(outputs: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(summed weighted squared error, summed weighted absolute error) of a batch of one-unit
    linear outputs (B, 1) against standardized targets (B,)."""
    err = outputs[:, 0] - targets
    return jnp.sum(weights * jnp.square(err)), jnp.sum(weights * jnp.abs(err))


def mean_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The unweighted mean loss of a batch: cross-entropy, or squared error for regression targets."""
    if regression(labels):
        return jnp.mean(jnp.square(logits[:, 0] - labels))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def loss_and_correct(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(summed weighted cross-entropy, weighted count of correct predictions) of a batch: the
    sums that training, evaluation, the smoke checks and `evaluate` divide once. For regression
    targets (`regression`): (summed squared error, summed absolute error), in standardized units."""
    if regression(labels):
        return squared_and_absolute(logits, labels, weights)
    correct = jnp.sum(weights * (jnp.argmax(logits, -1) == labels))
    return cross_entropy_sum(logits, labels, weights), correct


def class_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array, num_classes: int, loss: bool = False) -> tuple[jax.Array, ...]:
    """Each class's weighted count of correct predictions (and, with `loss`, its summed
    cross-entropy) in a batch: (correct_C,) or (correct_C, loss_C), the sums that per-class recall
    and the class-weighted mean loss divide."""
    onehot_BxC = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weights[:, None]
    correct_C = jnp.sum(onehot_BxC * (jnp.argmax(logits, -1) == labels)[:, None], axis=0)
    if not loss:
        return (correct_C,)
    return correct_C, jnp.sum(onehot_BxC * optax.softmax_cross_entropy_with_integer_labels(logits, labels)[:, None], axis=0)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array, class_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of weight * class weight * cross-entropy, sum of weight * class weight) of a batch:
    their ratio is the class-weighted mean loss. The class weights are an input (traced), so
    runs that differ only in them share one compiled program."""
    w = weights * class_weights[labels]
    return cross_entropy_sum(logits, labels, w), jnp.sum(w)


def regularization_terms(params: Any, cfg: RegularizationConfig) -> dict[str, jax.Array]:
    """The loss-side terms: l2/2 * ||w||^2 and l1 * ||w||_1 over the masked leaves."""
    mask = regularized_mask(params, cfg.include_biases)
    leaves = [p for p, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m]
    terms: dict[str, jax.Array] = {}
    if cfg.l2 > 0:
        terms["l2"] = 0.5 * cfg.l2 * sum(jnp.sum(jnp.square(p)) for p in leaves)
    if cfg.l1 > 0:
        terms["l1"] = cfg.l1 * sum(jnp.sum(jnp.abs(p)) for p in leaves)
    return terms


def penalty(arrays: dict[str, Any], cfg: RegularizationConfig) -> dict[str, float]:
    """`regularization_terms` of a checkpoint's named host arrays (`checkpoints.flatten_params`:
    `hidden.0.w`, ...), as floats in float64: the penalty a run's last epoch paid, computed once
    after training with NumPy (nothing to compile). The same leaves as `regularized_mask`."""
    import numpy as np

    names = WEIGHT_NAMES + (BIAS_NAMES if cfg.include_biases else ())
    leaves = [np.asarray(a, np.float64) for k, a in arrays.items() if k.rsplit(".", 1)[-1] in names]
    out: dict[str, float] = {}
    if cfg.l2 > 0:
        out["l2"] = 0.5 * cfg.l2 * float(sum(np.sum(np.square(p)) for p in leaves))
    if cfg.l1 > 0:
        out["l1"] = cfg.l1 * float(sum(np.sum(np.abs(p)) for p in leaves))
    return out
