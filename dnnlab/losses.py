"""The loss: softmax cross-entropy plus the named regularization terms of the config."""

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


def loss_and_correct(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(summed weighted cross-entropy, weighted count of correct predictions) of a batch: the
    sums that training, evaluation, the smoke checks and `evaluate` divide once."""
    correct = jnp.sum(weights * (jnp.argmax(logits, -1) == labels))
    return cross_entropy_sum(logits, labels, weights), correct


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
