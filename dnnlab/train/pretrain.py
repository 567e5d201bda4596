"""Greedy layer-wise pretraining (`model.pretrain: rbm`): the lecture's first remedy for
vanishing gradients in deep sigmoid nets, from before ReLU.

Each hidden layer of a sigmoid MLP in turn is trained as a Bernoulli-Bernoulli restricted
Boltzmann machine with contrastive divergence (CD-k; Hinton 2002; Hinton, Osindero & Teh 2006)
on the hidden probabilities of the layer below (the first on the inputs, which must lie in
[0, 1]: data.normalize unit; `config.pretrain_problem` refuses anything else before any JAX
work). Its weights and hidden biases then initialize that layer; the classifier keeps its
ordinary initialization, and ordinary training (fine-tuning) follows.

The compiled programs, each compiled once per layer shape: an epoch of CD-k updates as one
`lax.scan` over reshuffled minibatches (`rbm_epoch`), the start of an RBM (`rbm_start`) and
the probabilities handed to the next layer (`hidden_probabilities`). The keys come from the
run's seed (`pretrain_key`, folded with the layer and the epoch), apart from those of the
initialization, the shuffling and dropout: the same seed gives the same bits, and a run
without pretraining draws what it always drew. Nothing here prints.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnnlab import interrupt, models
from dnnlab.config import Config, PretrainConfig

PRETRAIN_STREAM = 0x52424D  # "RBM": folded into the seed's key, a stream of its own
VISIBLE_CLIP = 1e-3  # the visible biases' start: the logit of the mean input, clipped to [1e-3, 1 - 1e-3]


class RBM(NamedTuple):
    """A Bernoulli-Bernoulli RBM: weights `w` (visible x hidden), and the biases of each side."""

    w: jax.Array
    visible: jax.Array
    hidden: jax.Array


def pretrain_key(seed: jax.Array, layer: jax.Array, epoch: jax.Array) -> jax.Array:
    """The key of one epoch of one layer's RBM: the seed's key folded with PRETRAIN_STREAM, the
    layer (0-based) and the epoch (1-based)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), PRETRAIN_STREAM)
    return jax.random.fold_in(jax.random.fold_in(base, layer), epoch)


def hidden_probabilities(w_VxH: jax.Array, hidden_H: jax.Array, v_NxV: jax.Array) -> jax.Array:
    """p(h = 1 | v): what a sigmoid layer with these weights and biases computes."""
    return jax.nn.sigmoid(v_NxV @ w_VxH + hidden_H)


def cd_gradients(rbm: RBM, v0_BxV: jax.Array, weight_B: jax.Array, uniforms_KxBxH: jax.Array) -> tuple[RBM, jax.Array]:
    """The CD-k estimate of the gradient of the negative log-likelihood, and the summed squared
    reconstruction error of the first step (sum of weight * (v0 - p(v | h0))^2).

    The chain starts at the data: h0 is sampled from p(h | v0); each step reconstructs the
    visible units as their probabilities (Hinton 2010, "A practical guide to training RBMs",
    3.2: less sampling noise) and samples the hidden units again from them, except the last,
    whose probabilities enter the statistics. A hidden unit is on where its uniform draw is
    below its probability (`uniforms_KxBxH[i]` for the i-th sampling). Examples of weight 0 (the
    padding of the last batch) count nowhere.

    Returns:
        (the gradient as an RBM, for an optax descent: -(<v h>_data - <v h>_model) and the
        biases' likewise, averaged over the weighted examples; the squared error sum).
    """
    k = uniforms_KxBxH.shape[0]
    ph0 = hidden_probabilities(rbm.w, rbm.hidden, v0_BxV)
    h = (uniforms_KxBxH[0] < ph0).astype(jnp.float32)
    pv = jax.nn.sigmoid(h @ rbm.w.T + rbm.visible)
    ph = hidden_probabilities(rbm.w, rbm.hidden, pv)
    wt = weight_B[:, None]
    error = jnp.sum(wt * (v0_BxV - pv) ** 2)

    def gibbs(i: jax.Array, chain: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        _, ph = chain
        h = (uniforms_KxBxH[i] < ph).astype(jnp.float32)
        pv = jax.nn.sigmoid(h @ rbm.w.T + rbm.visible)
        return pv, hidden_probabilities(rbm.w, rbm.hidden, pv)

    pv, ph = jax.lax.fori_loop(1, k, gibbs, (pv, ph))
    n = jnp.maximum(jnp.sum(weight_B), 1.0)
    v0, vk = v0_BxV * wt, pv * wt
    grads = RBM(
        w=-(v0.T @ ph0 - vk.T @ ph) / n,
        visible=-jnp.sum(v0 - vk, axis=0) / n,
        hidden=-jnp.sum(wt * (ph0 - ph), axis=0) / n,
    )
    return grads, error


def rbm_start(w_VxH: jax.Array, v_NxV: jax.Array, init_scale: jax.Array) -> RBM:
    """An RBM's starting point: `init_scale` times the layer's ordinary initial weights, hidden
    biases 0, visible biases the logit of each visible unit's mean (Hinton 2010, section 8)."""
    p = jnp.clip(jnp.mean(v_NxV, axis=0), VISIBLE_CLIP, 1.0 - VISIBLE_CLIP)
    return RBM(init_scale * w_VxH, jnp.log(p / (1.0 - p)), jnp.zeros((w_VxH.shape[1],), jnp.float32))


def rbm_epoch(
    rbm: RBM, v_NxV: jax.Array, seed: jax.Array, layer: jax.Array, epoch: jax.Array, lr: jax.Array, *, k: int,
    batch_size: int,
) -> tuple[RBM, jax.Array]:
    """One epoch of CD-k updates (plain SGD, optax.sgd) over reshuffled minibatches, as one
    lax.scan; the last, partial batch is padded with weight-0 repeats.

    Returns:
        (the RBM after the epoch, the mean squared reconstruction error per visible unit over
        the epoch's examples, each measured before its update).
    """
    n, n_visible = v_NxV.shape
    n_hidden = rbm.w.shape[1]
    order_key, draw_key = jax.random.split(pretrain_key(seed, layer, epoch))
    steps = -(-n // batch_size)
    flat = jnp.arange(steps * batch_size)
    idx_SxB = jax.random.permutation(order_key, n)[flat % n].reshape(steps, batch_size)
    weight_SxB = (flat < n).astype(jnp.float32).reshape(steps, batch_size)
    tx = optax.sgd(lr)

    def body(carry: tuple[RBM, Any], item: tuple[jax.Array, ...]) -> tuple[tuple[RBM, Any], jax.Array]:
        rbm, opt_state = carry
        i, idx_B, weight_B = item
        uniforms = jax.random.uniform(jax.random.fold_in(draw_key, i), (k, batch_size, n_hidden))
        grads, error = cd_gradients(rbm, v_NxV[idx_B], weight_B, uniforms)
        updates, opt_state = tx.update(grads, opt_state, rbm)
        return (optax.apply_updates(rbm, updates), opt_state), error

    (rbm, _), error_S = jax.lax.scan(body, (rbm, tx.init(rbm)), (jnp.arange(steps), idx_SxB, weight_SxB))
    return rbm, jnp.sum(error_S) / (n * n_visible)


# one compiled program per layer shape (jax.jit keeps one per input shape); k and the batch
# size are the only constants, the rest arrive as inputs
_start_jit = jax.jit(rbm_start)
_epoch_jit = jax.jit(rbm_epoch, static_argnames=("k", "batch_size"))
_propagate_jit = jax.jit(hidden_probabilities)


def train_rbm(
    w_init_VxH: Any, v_NxV: jax.Array, seed: int, layer: int, settings: PretrainConfig,
) -> tuple[RBM, list[float], list[float]]:
    """Train layer `layer`'s RBM on `v_NxV` for `settings.epochs` epochs of CD-`settings.cd_steps`.

    Args:
        w_init_VxH: the layer's ordinary initial weights (the RBM starts at init_scale times them).
        v_NxV: the visible data on the device: the inputs, or the layer below's probabilities.
        seed: the run's seed; layer: 0-based.
    Returns:
        (the trained RBM, the mean squared reconstruction error of each epoch, the seconds of
        each epoch: the first includes compiling the layer shape's programs, once per process).
    """
    rbm = _start_jit(jax.device_put(np.asarray(w_init_VxH, np.float32)), v_NxV, np.float32(settings.init_scale))
    batch = min(settings.batch_size, v_NxV.shape[0])
    errors: list[float] = []
    seconds: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        rbm, error = _epoch_jit(
            rbm, v_NxV, np.int32(seed), np.int32(layer), np.int32(epoch), np.float32(settings.lr),
            k=settings.cd_steps, batch_size=batch,
        )
        errors.append(float(error))  # waits for the epoch
        seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        interrupt.stop_point()
    return rbm, errors, seconds


def pretrain(params: Any, x_NxD: Any, cfg: Config, seed: int) -> tuple[Any, dict[str, Any]]:
    """Greedy layer-wise pretraining of `params`' hidden layers on the training inputs `x_NxD`.

    Args:
        params: one seed's initial parameters (host or device arrays, any stack layout).
        x_NxD: the training inputs, in [0, 1].
        cfg: the run's config (model.pretrain rbm, the pretrain section).
        seed: the run's seed.
    Returns:
        (the parameters with each hidden layer's w and b from its RBM, the rest unchanged;
        the record for summary.json: the settings, seconds in all, and per layer its shape,
        its seconds, and each epoch's seconds and reconstruction error). Ctrl-C stops between
        epochs (KeyboardInterrupt).
    """
    settings = cfg.pretrain
    t_start = time.perf_counter()
    host = jax.device_get(params)
    hidden = [dict(layer) for layer in models.unstack_params(host)["hidden"]]
    v = jax.device_put(np.asarray(x_NxD, np.float32).reshape(len(x_NxD), -1))
    layers: list[dict[str, Any]] = []
    for i, layer in enumerate(hidden):
        t0 = time.perf_counter()
        rbm, errors, epoch_seconds = train_rbm(layer["w"], v, seed, i, settings)
        if i + 1 < len(hidden):
            v = jax.block_until_ready(_propagate_jit(rbm.w, rbm.hidden, v))  # the next layer's data
        w, b = jax.device_get((rbm.w, rbm.hidden))
        layer.update(w=np.asarray(w), b=np.asarray(b))
        layers.append({
            "layer": i + 1, "visible": int(w.shape[0]), "hidden": int(w.shape[1]),
            "seconds": time.perf_counter() - t0, "epoch_seconds": epoch_seconds, "reconstruction_error": errors,
        })
    record = {
        "method": "rbm", **settings.model_dump(mode="json"), "train_size": int(v.shape[0]),
        "seconds": time.perf_counter() - t_start, "layers": layers,
    }
    return models.replace_hidden(host, hidden), record


def into_state(state: Any, seeds: list[int], x_NxD: Any, cfg: Config, put: Callable[[Any], Any], vmapped: bool) -> tuple[Any, list[dict[str, Any]]]:
    """The train state of `seeds` (one, or a vmapped group) with pretrained parameters.

    Each seed is pretrained on its own, whatever the seed mode, so a vmapped seed starts from
    the same bits as its sequential run. Only the parameters change: the optimizer's initial
    state depends on their shapes alone.

    Returns:
        (the state with its parameters on the device via `put`, one record per seed).
    """
    host = jax.device_get(state.params)
    records, trained = [], []
    for i, seed in enumerate(seeds):
        one = jax.tree_util.tree_map(lambda a: a[i], host) if vmapped else host
        params, record = pretrain(one, x_NxD, cfg, seed)
        trained.append(params)
        records.append(record)
    new = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trained) if vmapped else trained[0]
    return state._replace(params=jax.tree_util.tree_map(lambda a: put(np.asarray(a)), new)), records
