"""Compile time and step time against depth: MLPs of 10, 20 and 56 hidden layers (width 256),
as dnnlab builds them today (the hidden layers unrolled in the traced program).

    python bench/depth.py [--depths 10 20 56] [--steps 200]

compile = first epoch minus a steady epoch (the issue's definition); step = steady epoch / steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import config, models, train
from dnnlab.optim import make_optimizer


def measure(depth: int, steps: int, batch: int, activation: str, reps: int) -> tuple[float, float]:
    cfg = config.validate({"model": {"depth": depth, "width": 256, "activation": activation}, "optimizer": {"name": "adam"}})
    net = models.build(cfg.model, 784, 10)
    params = net.init(jax.random.PRNGKey(0))
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=steps, epochs=1)
    state = train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((steps * batch, 784), np.float32))
    y = jax.device_put(rng.integers(0, 10, steps * batch).astype(np.int32))
    run = jax.jit(partial(train.train_epoch, model=net, tx=tx, reg=cfg.regularization, batch_size=batch), donate_argnums=0)
    times = []
    for e in range(reps + 1):
        t0 = time.perf_counter()
        state, _ = run(state, x, y, jax.random.PRNGKey(e), jax.random.PRNGKey(99))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    return times[0] - steady, steady / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 56])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"device {train.device_name()}, jax {jax.__version__}; MLP width 256, {args.activation}, batch {args.batch}, {args.steps} steps per epoch")
    print(f"{'depth':>6}{'compile s':>11}{'step ms':>9}")
    for depth in args.depths:
        compile_s, step_s = measure(depth, args.steps, args.batch, args.activation, args.reps)
        print(f"{depth:>6}{compile_s:>11.2f}{1000 * step_s:>9.2f}")


if __name__ == "__main__":
    main()
