"""The architecture registry. A model is a pair of pure functions over plain pytrees:

    init(key) -> params
    apply(params, x, *, key, train) -> (logits, aux)

`aux` holds, per hidden layer, the pre-activations (`pre`) and outputs (`post`) that the
diagnostics read; under jit, whatever nobody reads is dropped by XLA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import activations
from dnnlab.config import ModelConfig, residual_blocks

Params = Any  # a pytree: {"hidden": [{"w", "b", ...}, ...], "out": {"w", "b"}}

INITIALIZERS: dict[str, Callable[[], jax.nn.initializers.Initializer]] = {
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "he_uniform": jax.nn.initializers.he_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "lecun_normal": jax.nn.initializers.lecun_normal,
}


@dataclass(frozen=True)
class Model:
    init: Callable[[jax.Array], Params]
    apply: Callable[..., tuple[jax.Array, dict[str, Any]]]
    activation: activations.Activation
    widths: tuple[int, ...]


def dropout(x: jax.Array, rate: float, key: Optional[jax.Array], train: bool) -> jax.Array:
    """Inverted dropout: keep each unit with probability 1 - rate and scale it by 1/(1 - rate).

    The expected activation in training equals the evaluation activation, so evaluation is the
    identity (the same as classic dropout's weights-times-(1 - rate) at test; see the tests).
    """
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout in training needs a PRNG key")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _initializer(cfg: ModelConfig, act: activations.Activation) -> jax.nn.initializers.Initializer:
    if cfg.init != "auto":
        return INITIALIZERS[cfg.init]()
    if act.family == "saturating":
        return jax.nn.initializers.glorot_uniform()
    # the max of k Gaussian pieces keeps about all of their variance (ReLU keeps half), so
    # He's factor 2 would double the signal at every maxout layer: LeCun's 1/fan_in instead
    return jax.nn.initializers.lecun_normal() if act.name == "maxout" else jax.nn.initializers.he_normal()


def conv2d(x_BHWC: jax.Array, w_KKIO: jax.Array) -> jax.Array:
    """'SAME' convolution, stride 1, NHWC inputs and HWIO kernels."""
    return jax.lax.conv_general_dilated(x_BHWC, w_KKIO, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def max_pool(x_BHWC: jax.Array, size: int = 2) -> jax.Array:
    """Non-overlapping size x size max pooling ('VALID': a ragged edge is dropped). The gradient
    reaches each window's maximum only, as maxout's reaches only the winning piece. Written as
    a reshape and a max: on the CPU, XLA's reduce_window gradient (select-and-scatter) is ~4x
    slower than this."""
    b, h, w, c = x_BHWC.shape
    h2, w2 = h // size, w // size
    x = x_BHWC[:, : h2 * size, : w2 * size, :].reshape(b, h2, size, w2, size, c)
    return jnp.max(x, axis=(2, 4))


def build_feedforward(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """The MLP, and the CNN (conv blocks, then the MLP's dense layers) when `cfg.arch` is cnn.

    Params: {"conv": [{"w", "b", ...}], "hidden": [{"w", "b", ...}], "out": {"w", "b"}}.
    """
    act = activations.get(cfg)
    widths = cfg.layer_widths
    w_init = _initializer(cfg, act)
    # the classifier gets glorot under `auto`: He-scaled logits start far from ln(C)
    out_init = jax.nn.initializers.glorot_uniform() if cfg.init == "auto" else w_init
    channels = tuple(cfg.channels) if cfg.arch == "cnn" else ()
    if channels and len(input_shape) != 3:
        raise ValueError(f"a cnn needs image inputs (H, W, C); got input shape {input_shape}")
    flat_in = int(np.prod(input_shape))
    blocks = set(residual_blocks(widths)) if cfg.residual else set()
    closes_block = {i + 1 for i in blocks}
    pool = cfg.pool == "max"

    def conv_out_dim() -> int:
        h, w = input_shape[0], input_shape[1]
        for _ in channels:
            if pool:
                h, w = h // 2, w // 2
        return h * w * channels[-1]

    def init(key: jax.Array) -> Params:
        keys = jax.random.split(key, len(channels) + len(widths) + 1)
        conv, c_in = [], input_shape[-1] if channels else 0
        for k, c_out in zip(keys[: len(channels)], channels):
            block = {
                "w": w_init(k, (cfg.kernel, cfg.kernel, c_in, c_out * act.pieces), jnp.float32),
                "b": jnp.zeros((c_out * act.pieces,), jnp.float32),
            }
            block.update(act.extra_params(c_out))
            conv.append(block)
            c_in = c_out
        hidden, fan_in = [], conv_out_dim() if channels else flat_in
        for i, (k, width) in enumerate(zip(keys[len(channels) : -1], widths)):
            # the last layer of each residual branch starts at zero, so that every block is the
            # identity at initialization (SkipInit / Fixup); plain He-initialized branches explode
            init_fn = jax.nn.initializers.zeros if i in closes_block else w_init
            layer = {
                "w": init_fn(k, (fan_in, width * act.pieces), jnp.float32),
                "b": jnp.zeros((width * act.pieces,), jnp.float32),
            }
            layer.update(act.extra_params(width))
            hidden.append(layer)
            fan_in = width
        out = {"w": out_init(keys[-1], (fan_in, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
        return {"conv": conv, "hidden": hidden, "out": out}

    def apply(params: Params, x: jax.Array, *, key: Optional[jax.Array] = None, train: bool = False):
        n_keys = 1 + len(channels) + len(widths)
        keys = jax.random.split(key, n_keys) if (train and key is not None) else [None] * n_keys
        h = dropout(x, cfg.input_dropout, keys[0], train)
        pre, post = [], []
        if channels:
            h = h.reshape((-1,) + tuple(input_shape))
            for block, k in zip(params["conv"], keys[1 : 1 + len(channels)]):
                z = conv2d(h, block["w"]) + block["b"]
                h = act.fn(z, block)
                pre.append(z)
                post.append(h)
                if pool:
                    h = max_pool(h)
                h = dropout(h, cfg.dropout, k, train)
            h = h.reshape(h.shape[0], -1)
        shortcut = None
        for i, (layer, k) in enumerate(zip(params["hidden"], keys[1 + len(channels) :])):
            if i in blocks:
                shortcut = h
            z = h @ layer["w"] + layer["b"]
            if i in closes_block:
                # each of a unit's pieces gets the shortcut: max_k(z_k + s) = s + max_k z_k
                z = z + (jnp.repeat(shortcut, act.pieces, axis=-1) if act.pieces > 1 else shortcut)
            h = act.fn(z, layer)
            pre.append(z)
            post.append(h)
            h = dropout(h, cfg.dropout, k, train)
        logits = h @ params["out"]["w"] + params["out"]["b"]
        return logits, {"pre": pre, "post": post}

    return Model(init, apply, act, widths)


ARCHITECTURES: dict[str, Callable[[ModelConfig, tuple[int, ...], int], Model]] = {
    "mlp": build_feedforward,
    "cnn": build_feedforward,
}


def build(cfg: ModelConfig, input_shape: tuple[int, ...] | int, num_classes: int) -> Model:
    """The Model named by `cfg.arch` for inputs of `input_shape` ((H, W, C) images, or (D,)) and
    `num_classes` outputs. Inputs arrive flattened; a CNN reshapes them to `input_shape`."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    return ARCHITECTURES[cfg.arch](cfg, shape, num_classes)


def param_count(params: Params) -> int:
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))
