"""Why dnnlab trains CNNs with a per-step loop on the CPU, measured: the Fashion-MNIST CNN step
(2 conv+pool blocks 32/64, dense 256, batch 128) called from Python against the same step inside
a `lax.scan` (what `train.loop: scan` compiles), XLA's convolution forward against its
gradients, and two ways of computing the filter gradient with matrix products instead of XLA's
convolution (tried to close the gap to PyTorch on the CPU; neither did, see docs/speed.md):
im2col (`lax.conv_general_dilated_patches`, then one matrix product) and one matrix product per
kernel offset of the shifted inputs.

    python bench/conv.py [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp

from dnnlab import config, models, train
from dnnlab.optim import make_optimizer


def timed(fn, *args, reps: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    batch = 128
    cfg = config.validate({"model": {"arch": "cnn", "channels": [32, 64], "hidden": [256]}, "optimizer": {"name": "adam"}})
    net = models.build(cfg.model, (28, 28, 1), 10)
    params = net.init(jax.random.PRNGKey(0))
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=args.steps, epochs=1)
    fresh = lambda: train.TrainState(jax.tree_util.tree_map(jnp.copy, params), tx.init(params), jnp.zeros((), jnp.int32))  # noqa: E731
    n = batch * args.steps
    x = jax.random.uniform(jax.random.PRNGKey(1), (n, 784))
    y = jnp.arange(n) % 10
    key = jax.random.PRNGKey(2)

    step = jax.jit(partial(train.indexed_step, model=net, tx=tx, reg=cfg.regularization))
    idx, w = train.batches(n, batch, key)
    state = fresh()
    per_step = timed(lambda: step(state, x, y, idx[0], w[0], key)[1]["ce_sum"])

    scan = jax.jit(partial(train.train_epoch, model=net, tx=tx, reg=cfg.regularization, batch_size=batch))
    jax.block_until_ready(scan(fresh(), x, y, key, key)[0])
    t0 = time.perf_counter()
    jax.block_until_ready(scan(fresh(), x, y, key, key)[0])
    in_scan = (time.perf_counter() - t0) / args.steps

    print(f"device {train.device_name()}, jax {jax.__version__}; Fashion CNN step, batch {batch}")
    print(f"  jitted step called from Python: {1000 * per_step:8.1f} ms")
    print(f"  the same step inside lax.scan:  {1000 * in_scan:8.1f} ms  ({in_scan / per_step:.1f}x)")
    for h, cin, cout in ((28, 1, 32), (14, 32, 64)):
        xs = jax.random.uniform(jax.random.PRNGKey(3), (batch, h, h, cin))
        ws = jax.random.normal(jax.random.PRNGKey(4), (3, 3, cin, cout)) * 0.1
        loss = lambda a, b: jnp.sum(models.conv2d(a, b) ** 2)  # noqa: E731
        fwd = timed(jax.jit(models.conv2d), xs, ws)
        dw = timed(jax.jit(jax.grad(loss, argnums=1)), xs, ws)
        dx = timed(jax.jit(jax.grad(loss, argnums=0)), xs, ws)
        print(f"  conv {h}x{h} {cin}->{cout}: forward {1000 * fwd:.1f} ms, "
              f"filter gradient {1000 * dw:.1f} ms, input gradient {1000 * dx:.1f} ms (each with its forward)")
        # the filter gradient alone, given the output's gradient: XLA's against the matrix-product forms
        dy = jax.random.normal(jax.random.PRNGKey(5), (batch, h, h, cout))
        xla_dw = jax.jit(lambda d: jax.vjp(models.conv2d, xs, ws)[1](d)[1])
        want = xla_dw(dy)
        row = [f"XLA {1000 * timed(xla_dw, dy):.1f} ms"]
        for name, form in (("im2col", filter_gradient_im2col), ("shifted products", filter_gradient_shifted)):
            got = jax.jit(partial(form, xs))
            err = float(jnp.max(jnp.abs(got(dy) - want)) / jnp.max(jnp.abs(want)))
            row.append(f"{name} {1000 * timed(got, dy):.1f} ms (relative difference {err:.0e})")
        print("    filter gradient alone: " + ", ".join(row))


def filter_gradient_im2col(x_BHWC: jax.Array, dy_BHWO: jax.Array, k: int = 3) -> jax.Array:
    """dL/dw of a 'SAME' 3x3 convolution as one matrix product of the input's patches (HWIO)."""
    patches = jax.lax.conv_general_dilated_patches(x_BHWC, (k, k), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    g_PO = jnp.einsum("bhwp,bhwo->po", patches, dy_BHWO)  # patch features ordered (C, kh, kw)
    return g_PO.reshape(x_BHWC.shape[-1], k, k, -1).transpose(1, 2, 0, 3)


def filter_gradient_shifted(x_BHWC: jax.Array, dy_BHWO: jax.Array, k: int = 3) -> jax.Array:
    """dL/dw as one matrix product per kernel offset: the padded input shifted by it, against dy."""
    pad, (h, w) = k // 2, x_BHWC.shape[1:3]
    xp = jnp.pad(x_BHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = [jnp.einsum("bhwc,bhwo->co", xp[:, i : i + h, j : j + w, :], dy_BHWO) for i in range(k) for j in range(k)]
    return jnp.stack(rows).reshape(k, k, x_BHWC.shape[-1], -1)


if __name__ == "__main__":
    main()
