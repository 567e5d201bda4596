"""Instruments computed inside jit on a fixed probe batch of training examples, once per epoch.

They are the evidence the diagnosis reads: per-layer gradient RMS (vanishing / exploding
gradients), dead and saturated units, pre-activation statistics, weight norms and sparsity,
update-to-weight ratios, PReLU slopes and how evenly maxout's pieces win. Layers are listed
input to output; the weight statistics include the classifier as the last entry.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from dnnlab import losses, models
from dnnlab.config import RegularizationConfig

SATURATION_MARGIN = 0.02  # a sigmoid/tanh output within this of its bounds is saturated
SATURATION_PRE = 5.0  # DeepDiagnosis: |pre-activation| beyond 5 is saturated
NEAR_ZERO = 1e-3  # |w| below this counts as zero (the sparsity L1 gives)


def weight_layers(tree: Any) -> list[jax.Array]:
    """The weight matrices of a params-shaped tree, input to output (classifier last)."""
    return [layer["w"] for layer in models.layers(tree)] + [tree["out"]["w"]]


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(x)))


def probe(
    params: Any,
    opt_state: Any,
    x_P: jax.Array,
    y_P: jax.Array,
    *,
    model: models.Model,
    tx: optax.GradientTransformation,
    reg: RegularizationConfig,
) -> dict[str, jax.Array]:
    """All instruments for one epoch, on the probe batch in evaluation mode (no dropout).

    Returns:
        Arrays keyed by instrument name: per-layer vectors and a few scalars.
    """

    trainable, stats = models.split_stats(params)

    def loss(p):
        logits, aux = model.apply(models.merge_stats(p, stats), x_P, train=False)
        if losses.regression(y_P):
            ce = losses.mean_loss(logits, y_P)
        else:
            ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y_P))
        return ce + sum(losses.regularization_terms(p, reg).values()), aux

    grads, aux = jax.grad(loss, has_aux=True)(trainable)
    # the step the optimizer would take from here: its size against the weights' size
    updates, _ = tx.update(grads, opt_state, trainable)
    ws, gs, us = weight_layers(trainable), weight_layers(grads), weight_layers(updates)
    out: dict[str, jax.Array] = {
        "grad_rms": jnp.stack([jnp.sqrt(jnp.mean(jnp.square(g))) for g in gs]),
        "weight_norm": jnp.stack([_norm(w) for w in ws]),
        "near_zero_fraction": jnp.stack([jnp.mean(jnp.abs(w) < NEAR_ZERO) for w in ws]),
        "update_ratio": jnp.stack([_norm(u) / (_norm(w) + 1e-12) for u, w in zip(us, ws)]),
    }
    out["grad_ratio"] = out["grad_rms"][0] / (out["grad_rms"][-1] + 1e-30)
    pre, post = aux["pre"], aux["post"]
    if not pre:
        return out
    act = model.activation
    out["pre_mean"] = jnp.stack([jnp.mean(z) for z in pre])
    out["pre_std"] = jnp.stack([jnp.std(z) for z in pre])
    if act.bounds is not None:
        lo, hi = act.bounds
        out["saturated_fraction"] = jnp.stack(
            [jnp.mean((h < lo + SATURATION_MARGIN) | (h > hi - SATURATION_MARGIN)) for h in post]
        )
        out["saturated_pre_fraction"] = jnp.stack([jnp.mean(jnp.abs(z) > SATURATION_PRE) for z in pre])
    elif act.name != "maxout":
        # a ReLU-family unit (a conv channel) is dead when its pre-activation is <= 0 for every
        # probe example (and position)
        out["dead_fraction"] = jnp.stack([jnp.mean(jnp.all(z <= 0, axis=tuple(range(z.ndim - 1)))) for z in pre])
        out["nonpositive_fraction"] = jnp.stack([jnp.mean(z <= 0) for z in pre])
    if act.name == "prelu":
        out["prelu_slope"] = jnp.stack([jnp.mean(layer["slope"]) for layer in models.layers(params)])
    if act.name == "maxout":
        k = act.pieces
        evenness = []
        for z in pre:
            wins = jnp.argmax(z.reshape(z.shape[0], -1, k), axis=-1)
            share = jnp.stack([jnp.mean(wins == i) for i in range(k)])
            entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(share), 0.0))
            evenness.append(entropy / jnp.log(k))
        out["maxout_evenness"] = jnp.stack(evenness)  # 1: every piece wins equally often
    return out
