"""Checkpoint naming: parameters as plain named arrays (`hidden.0.w`, `out.b`, ...) and back.

One entry per layer whatever the stack plan: a scanned stack is saved unstacked, and restacked
when read into a model that scans. The files themselves are written by `runs.RunDir`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from dnnlab import models


def _name(path: tuple) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """{"hidden.0.w": array, ...}: the host copy of `params` under plain names."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(models.unstack_params(params)))[0]
    return {_name(path): np.asarray(v) for path, v in leaves}


def unflatten_params(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of `flatten_params` with the structure of `like` (restacked if `like` is)."""
    unrolled = jax.eval_shape(models.unstack_params, like)  # the structure only
    paths, treedef = jax.tree_util.tree_flatten_with_path(unrolled)
    leaves = []
    for path, shape in paths:
        name = _name(path)
        if name not in arrays:
            raise ValueError(f"the checkpoint has no `{name}`: it belongs to another model")
        if tuple(arrays[name].shape) != tuple(shape.shape):
            raise ValueError(f"`{name}` has shape {tuple(arrays[name].shape)}; this model needs {tuple(shape.shape)}")
        leaves.append(jax.device_put(arrays[name]))  # not jnp.asarray: an eager asarray compiles per shape
    out = jax.tree_util.tree_unflatten(treedef, leaves)
    return models.stack_params(out) if "stack" in like else out
