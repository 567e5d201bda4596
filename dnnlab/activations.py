"""The activation registry: name -> Activation, each built from the model config.

An activation maps the affine output of a layer, shape (..., width * pieces), and that
layer's own parameters to the layer's output, shape (..., width). Maxout has `pieces` > 1;
PReLU carries a learned slope per unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp

from dnnlab.config import ModelConfig

Params = dict[str, jax.Array]


@dataclass(frozen=True)
class Activation:
    name: str
    family: str  # "saturating" (sigmoid, tanh) or "rectifier" (the ReLU family): picks the init
    fn: Callable[[jax.Array, Params], jax.Array]
    pieces: int = 1  # affine outputs per unit (maxout)
    extra_params: Callable[[int], Params] = field(default=lambda width: {})
    bounds: tuple[float, float] | None = None  # saturating range, for the diagnostics


def _prelu_fn(z: jax.Array, p: Params) -> jax.Array:
    # jax.nn has no PReLU: it is leaky_relu with a learned per-unit slope
    return jnp.where(z >= 0, z, p["slope"] * z)


def _maxout(cfg: ModelConfig) -> Activation:
    k = cfg.maxout_pieces

    def fn(z: jax.Array, p: Params) -> jax.Array:
        # unit j owns the k adjacent columns j*k .. j*k+k-1; the same op as 1-D max pooling
        return jnp.max(z.reshape(z.shape[:-1] + (z.shape[-1] // k, k)), axis=-1)

    return Activation("maxout", "rectifier", fn, pieces=k)


REGISTRY: dict[str, Callable[[ModelConfig], Activation]] = {
    "sigmoid": lambda cfg: Activation("sigmoid", "saturating", lambda z, p: jax.nn.sigmoid(z), bounds=(0.0, 1.0)),
    "tanh": lambda cfg: Activation("tanh", "saturating", lambda z, p: jnp.tanh(z), bounds=(-1.0, 1.0)),
    "relu": lambda cfg: Activation("relu", "rectifier", lambda z, p: jax.nn.relu(z)),
    "leaky_relu": lambda cfg: Activation(
        "leaky_relu", "rectifier", lambda z, p: jax.nn.leaky_relu(z, negative_slope=cfg.leaky_slope)
    ),
    "prelu": lambda cfg: Activation(
        "prelu", "rectifier", _prelu_fn, extra_params=lambda width: {"slope": jnp.full((width,), 0.25)}
    ),
    "maxout": _maxout,
    "elu": lambda cfg: Activation("elu", "rectifier", lambda z, p: jax.nn.elu(z)),
    "gelu": lambda cfg: Activation("gelu", "rectifier", lambda z, p: jax.nn.gelu(z)),
}


def get(cfg: ModelConfig) -> Activation:
    """The Activation named by `cfg.activation`."""
    try:
        return REGISTRY[cfg.activation](cfg)
    except KeyError:
        raise ValueError(f"unknown activation {cfg.activation!r}; known: {', '.join(REGISTRY)}") from None
